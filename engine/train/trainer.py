"""The Ray Train ``TorchTrainer`` for one run, built from its typed config.

Used by ``lepton train`` (:func:`engine.train.driver.train`); a sweep builds one per
trial the same way, with its own ``run_dir`` (the trial's directory under the sweep).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.config.schema import LeptonConfig
from engine.runs.storage import Location
from engine.train.loop import LoopSpec, train_loop_per_worker

if TYPE_CHECKING:
    from ray.train.torch import TorchTrainer


def build_trainer(
    cfg: LeptonConfig,
    spec: LoopSpec,
    run_dir: Location,
    loop: Callable[[dict[str, Any]], None] = train_loop_per_worker,
    *,
    callbacks: Sequence[Any] = (),
    datasets: Mapping[str, Any] | None = None,
) -> TorchTrainer:
    """A ``TorchTrainer`` that runs ``loop`` with ``spec`` on ``cfg.scaling`` workers.

    What it sets up:

    - workers: ``scaling.num_workers`` of them, each reserving ``cpus_per_worker`` CPUs
      (and ``gpus_per_worker`` GPUs with ``use_gpu``), placed per ``placement_strategy``;
    - the process group: NCCL on GPUs, Gloo on CPUs, with ``trainer.collective_timeout_s``;
    - storage: Ray Train writes into ``run_dir`` itself (``storage_path`` is its parent,
      ``name`` its last part), local or on an object store, so its checkpoints land in
      the same directory as the engine's own run files;
    - checkpoints: the newest ``trainer.keep_checkpoints`` by ``spec.metric`` /
      ``spec.mode`` are kept;
    - failures: up to ``trainer.max_failures`` worker-group restarts, each resuming
      from the newest checkpoint;
    - Ray Train's own logs at WARNING and above;
    - ``callbacks``: Ray Train ``UserCallback`` s (a sweep trial passes Tune's report bridge);
    - ``datasets``: streamed data (:mod:`engine.train.streaming`), Ray Data datasets by
      name, with its ``DataConfig`` (train split across workers, validation not).

    ``spec`` reaches every worker as ``train_loop_config={"spec": spec}``. Nothing
    starts until the caller runs ``fit()`` inside a Ray cluster.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s, t = cfg.scaling, cfg.trainer
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    streamed: dict[str, Any] = {}
    if datasets:
        from engine.train.streaming import data_config

        streamed = {"datasets": dict(datasets), "dataset_config": data_config()}
    return TorchTrainer(
        loop,
        train_loop_config={"spec": spec},
        **streamed,
        torch_config=TorchConfig(
            backend="nccl" if s.use_gpu else "gloo", timeout_s=t.collective_timeout_s
        ),
        scaling_config=ScalingConfig(
            num_workers=s.num_workers,
            use_gpu=s.use_gpu,
            resources_per_worker=resources,
            placement_strategy=s.placement_strategy,
        ),
        run_config=RunConfig(  # type: ignore[call-arg]  # mypy sees the V1 signature
            name=run_dir.name,
            storage_path=run_dir.parent.uri,
            failure_config=FailureConfig(max_failures=t.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(
                num_to_keep=t.keep_checkpoints,
                checkpoint_score_attribute=spec.metric,
                checkpoint_score_order=spec.mode,
            ),
        ),
    )
