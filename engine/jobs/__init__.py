"""Cluster jobs: ``lepton submit`` and ``lepton jobs`` over Ray's Jobs API.

- :mod:`engine.jobs.client`: the cluster's Jobs API address (``--address`` or
  ``RAY_ADDRESS``, ``http://<head>:8265``), Ray's auth token, and every answer the
  server can give turned into a message a user can act on.
- :mod:`engine.jobs.upload`: the pre-flight of the project directory that travels as
  the job's ``working_dir`` (what goes, biggest first; refused over the Jobs API's
  100 MiB), packed into the zip that is uploaded, so what is listed is what is sent.
- :mod:`engine.jobs.submit_command`: check the command locally, pack, submit, follow.
- :mod:`engine.jobs.jobs_command`: list, status, logs and stop, as tables or JSON.
- :mod:`engine.jobs.cluster_config` (``cluster.yaml`` checked as ``ray up`` does) and
  :mod:`engine.jobs.local_cluster` (``make cluster-up``: a multi-node cluster on this machine).

The jobs are Ray's own: ``ray job list`` / ``ray job logs`` see the same ones.
"""
