"""``lepton tune``: hyperparameter sweeps on Ray Tune, and what reads their results."""
