"""Resuming: which checkpoint a worker starts from, and loading it into the run.

A worker resumes after a worker-group restart (Ray Train hands over its checkpoint)
or when the run is continued with ``resume=true``; either way from the newest whole
checkpoint in the run, with the optimizer, LR schedule and grad-scaler state it saved.
That checkpoint is checked first (every file's size and SHA-256, and that it is this
run's task): a damaged one stops the run with a CheckpointError naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.errors import CheckpointError
from engine.runs.checkpoint import (
    is_complete,
    load_training_state,
    load_weights,
    read_meta,
    verify_checkpoint,
)
from engine.runs.layout import latest_checkpoint
from engine.runs.local_copies import local_copy
from engine.runs.storage import Location, first_line
from engine.train.prepare import Prepared
from engine.train.worker_context import WorkerContext


@dataclass
class Start:
    """Where training starts: a fresh run, or after the newest whole checkpoint."""

    epoch: int = 0
    global_step: int = 0
    #: Where the checkpoint resumed from lives (None for a fresh start).
    resumed_from: str | None = None


def restore(run_dir: str, resume: bool, ctx: WorkerContext, run: Prepared) -> Start:
    """Load the checkpoint to resume from, if any, into ``run``; where training starts."""
    start = Start()
    with resume_checkpoint(run_dir, resume, ctx) as found:
        if found is not None:
            start.resumed_from, local = found
            # A check is remembered only for a checkpoint read in place (not a download).
            in_place = Location.parse(run_dir).is_local and (
                Location.parse(start.resumed_from) == Location.parse(local)
            )
            meta = verify_checkpoint(local, task=run.task.name, remember=in_place)
            load_weights(run.plain_model, local)
            state = load_training_state(local) or {}
            try:
                if "optimizer" in state:
                    run.optimizer.load_state_dict(state["optimizer"])
                if "scheduler" in state:
                    run.scheduler.load_state_dict(state["scheduler"])
                if "scaler" in state and run.precision.use_scaler:
                    run.scaler.load_state_dict(state["scaler"])
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(
                    f"Checkpoint {start.resumed_from}: its training state does not fit this "
                    f"run's optimizer or schedule ({type(exc).__name__}: {first_line(exc)}).",
                    hint="Resume with the optimizer and scheduler the run was started with.",
                ) from None
            start.epoch = int(state.get("epoch", meta["epoch"])) + 1
            start.global_step = int(state.get("global_step", 0))
    if start.resumed_from is not None and ctx.is_rank_zero:
        print(
            f"[lepton] resumed from {start.resumed_from} ({start.epoch} epoch(s) done)",
            flush=True,
        )
    return start


@contextmanager
def resume_checkpoint(
    run_dir: str, resume: bool, ctx: WorkerContext
) -> Iterator[tuple[str, Path] | None]:
    """The newest whole checkpoint to resume from, as (where it lives, a local copy).

    After a worker-group restart Ray hands over its own pointer, which can be one
    checkpoint behind the newest one in the run when a failure follows a report
    closely; training resumes from whichever is newer. With ``resume=true`` the run's
    newest whole checkpoint is used. Remote checkpoints are downloaded for the block.
    Only the run's own files are used: a pointer of Ray's into another directory (a run
    that was copied or moved) is taken as the checkpoint of the same name in this run.
    """
    with ctx.restored_checkpoint() as ray_restored:
        restored = _own_checkpoint(run_dir, ray_restored)
        if restored is None and not resume:
            yield None
            return
        newest = latest_checkpoint(run_dir)
        if newest is not None and (
            restored is None or read_meta(newest)["epoch"] >= read_meta(restored)["epoch"]
        ):
            with local_copy(newest) as path:
                yield newest.uri, path
        elif restored is not None:
            yield str(restored), restored
        else:
            yield None


def _own_checkpoint(run_dir: str, restored: Path | None) -> Path | None:
    """``restored`` when it is in ``run_dir`` (or a download: a remote run), else the
    checkpoint of the same name in ``run_dir``."""
    run = Location.parse(run_dir)
    if (
        restored is None
        or not run.is_local
        or restored.parent.resolve() == run.local_path.resolve()
    ):
        return restored
    own = run / restored.name
    if restored.name.startswith("checkpoint_") and is_complete(own):
        return own.local_path
    if restored.name.startswith("checkpoint_"):
        raise CheckpointError(
            f"Ray Train restored checkpoint {restored}, which is not in run {run} "
            f"(the run was copied or moved?), and {own} is not a whole checkpoint.",
            hint=f"Resume from the run's original directory, or copy {restored.name} into {run}.",
        )
    return restored
