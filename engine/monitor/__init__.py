"""``lepton monitor``: what a served model did, read from its prediction log
(``serve.log.dir``): volume, latency and the live metric on requests with feedback."""
