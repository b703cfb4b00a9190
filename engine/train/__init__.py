"""Training on Ray Train.

Driver side: :mod:`~engine.train.driver` (``train``: a typed config to a finished run),
:mod:`~engine.train.trainer` (``build_trainer``: the ``TorchTrainer`` for a run),
:mod:`~engine.train.cluster` (joining or starting Ray, pre-flight checks) and
:mod:`~engine.train.progress` (what the driver prints). Worker side:
:mod:`~engine.train.loop` (the per-worker loop) and its steps
(:mod:`~engine.train.prepare`, :mod:`~engine.train.resume`,
:mod:`~engine.train.batches`, :mod:`~engine.train.workers_record`),
:mod:`~engine.train.worker_context` (Ray Train or this process),
:mod:`~engine.train.optim`, :mod:`~engine.train.precision` and
:mod:`~engine.train.tracking`.
"""
