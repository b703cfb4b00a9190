"""One model version on a Ray Serve replica: weights loaded from a checkpoint, the task's
predictor, dynamic batching, and a weight swap that drops no request.

Which checkpoint a replica serves is its deployment's *user config*
(``{"checkpoint": PATH}``), not an init argument: ``lepton serve update`` changes only
that, so Ray Serve calls :meth:`ModelServer.reconfigure` on the running replicas instead of
replacing them. ``reconfigure`` loads and checks the new weights on a thread while the old
predictor keeps answering, then swaps the two in one assignment: a request is answered by
the old or by the new weights, never fails for the swap.

Weights load through :func:`engine.runs.checkpoint.load_model`: safetensors files checked
against the SHA-256 sums in ``task.json``; nothing from the checkpoint is executed or
unpickled. Requests reach :meth:`predict` validated (:mod:`engine.serve.validation`);
while the predictor runs on them, :mod:`engine.serve.path_guard` refuses to open any file a
request names, so a client can never make the server read one of its files.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from ray import serve

from engine.errors import DataError, LeptonError
from engine.serve.path_guard import refusing_paths_in

log = logging.getLogger("lepton.serve")

#: What ``predict`` may raise for an input it cannot use: a 4xx for that request alone.
#: (``DataError`` is the contract; the others are a predictor's plain Python errors on an
#: input the schema let through. Anything else is the server's fault: a 5xx.)
UNUSABLE_INPUT = (DataError, ValueError, TypeError, IndexError, KeyError, OverflowError)


@dataclass
class Loaded:
    """A predictor and what describes it (the checkpoint, its record, its signature)."""

    predictor: Any
    checkpoint: str
    info: dict[str, Any]
    signature: dict[str, Any]
    #: ``(input, prediction) -> summary`` for the prediction log (:mod:`.input_summary`).
    summarize: Any = None


def load(checkpoint: str, device: str) -> Loaded:
    from engine.runs.checkpoint import load_model
    from engine.serve.input_summary import summarizer
    from engine.serve.models import model_info
    from engine.serve.signature import Signature

    loaded = load_model(checkpoint)
    predictor = loaded.predictor(_device(device))
    signature = Signature.from_predictor(predictor)
    summarize = summarizer(
        signature.kind, signature.input_schema, loaded.info.task, loaded.artifacts
    )
    return Loaded(
        predictor, checkpoint, model_info(loaded.meta, checkpoint), signature.to_dict(), summarize
    )


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ModelServer:
    """The deployment class behind every served model version (see the module doc)."""

    def __init__(
        self,
        name: str,
        version: str,
        device: str = "auto",
        max_batch_size: int = 32,
        batch_wait_timeout_s: float = 0.005,
        log_settings: dict[str, Any] | None = None,
    ) -> None:
        from engine.serve.prediction_log import open_log

        self.name, self.version, self.device = name, version, device
        self._loaded: Loaded | None = None
        self._swap_lock = asyncio.Lock()
        self._threads_set = False
        batched: Any = self._batched  # serve.batch's wrapper takes the sizes at run time
        batched.set_max_batch_size(max_batch_size)
        batched.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._metrics = _Metrics(name, version)
        #: The prediction log (``serve.log``), written off the request path; None: off.
        self._log = open_log(log_settings, name, version)

    def __del__(self) -> None:
        """Serve's graceful shutdown: write the log's last records."""
        log_ = getattr(self, "_log", None)
        if log_ is not None:
            log_.close()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Point this replica at ``user_config["checkpoint"]``: load it first, then swap."""
        checkpoint = str(user_config["checkpoint"])
        async with self._swap_lock:
            if self._loaded is not None and self._loaded.checkpoint == checkpoint:
                return
            if self._log is not None:  # the old weights' records go out first
                await asyncio.to_thread(self._log.flush)
            started = time.perf_counter()
            fresh = await asyncio.to_thread(load, checkpoint, self.device)
            old = self._loaded
            if old is not None and fresh.info.get("task") != old.info.get("task"):
                raise LeptonError(
                    f"{checkpoint} is a {fresh.info.get('task')} model; {self.name} serves "
                    f"{old.info.get('task')}: a swap keeps the task."
                )
            self._loaded = fresh  # one assignment: requests see the old or the new
            log.info(
                "model %s version %s now serves %s (loaded in %.2f s)",
                self.name,
                self.version,
                checkpoint,
                time.perf_counter() - started,
            )

    def _current(self) -> Loaded:
        if self._loaded is None:
            raise LeptonError(f"Model {self.name} version {self.version} has no weights yet.")
        return self._loaded

    async def describe(self) -> dict[str, Any]:
        """Signature, checkpoint record and lineage of what this replica serves now."""
        loaded = self._current()
        return {"signature": loaded.signature, "info": loaded.info}

    async def predict(self, inputs: list[Any], request_id: str = "") -> dict[str, Any]:
        """Predictions for one request's (validated) inputs: ``{"predictions": [...],
        "checkpoint": PATH}``, or ``{"error": message}`` for a DataError (a 4xx)."""
        started = time.perf_counter()
        result: dict[str, Any] = await self._batched((inputs, request_id))
        elapsed = time.perf_counter() - started
        self._metrics.request(elapsed, "error" not in result)
        if self._log is not None and "error" not in result:
            summarize = self._loaded.summarize if self._loaded is not None else None
            result["logged"] = self._log.add(
                request_id, inputs, result["predictions"], elapsed, result["checkpoint"], summarize
            )
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batched(self, requests: list[tuple[list[Any], str]]) -> list[dict[str, Any]]:
        loaded = self._current()  # one predictor for the whole batch, even mid-swap
        self._metrics.batch(sum(len(inputs) for inputs, _ in requests))
        return await asyncio.to_thread(self._run, loaded, requests)

    def _run(self, loaded: Loaded, requests: list[tuple[list[Any], str]]) -> list[dict[str, Any]]:
        if not self._threads_set:  # a replica's CPUs are its own: torch would take all cores
            _limit_torch_threads()
            self._threads_set = True
        flat = [x for inputs, _ in requests for x in inputs]
        try:
            with refusing_paths_in(flat):
                predictions = loaded.predictor.predict(flat)
        except UNUSABLE_INPUT:
            if len(requests) == 1:
                return [self._one(loaded, *requests[0])]
            return [self._one(loaded, inputs, rid) for inputs, rid in requests]
        out, at = [], 0
        for inputs, _ in requests:
            out.append(_answer(predictions[at : at + len(inputs)], loaded))
            at += len(inputs)
        return out

    def _one(self, loaded: Loaded, inputs: list[Any], request_id: str) -> dict[str, Any]:
        try:
            with refusing_paths_in(inputs):
                predictions = loaded.predictor.predict(inputs)
        except DataError as exc:
            log.info("request %s: %s", request_id or "-", exc.message)
            return {"error": exc.message}
        except UNUSABLE_INPUT as exc:  # schema-valid, yet the predictor could not use it
            log.warning("request %s: the predictor raised", request_id or "-", exc_info=True)
            return {
                "error": f"The model could not use this input ({type(exc).__name__}: {exc})."[:500]
            }
        return _answer(predictions, loaded)


def _answer(predictions: list[Any], loaded: Loaded) -> dict[str, Any]:
    """One request's answer; a 4xx when a prediction is not a finite number (NaN or
    infinity: what extreme input values give, and what JSON cannot carry)."""
    import json

    try:
        json.dumps(predictions, allow_nan=False)
    except ValueError:
        return {
            "error": "The model's prediction for this input is not a finite number (NaN or "
            "infinity): check the input's values (a number far out of the training range?)."
        }
    except TypeError as exc:  # a predictor bug: not JSON-ready
        raise LeptonError(f"The predictor returned a value that is not JSON-ready: {exc}") from None
    return {"predictions": predictions, "checkpoint": loaded.checkpoint}


def _limit_torch_threads() -> None:
    import os

    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") or 1
    torch.set_num_threads(max(1, int(cpus)))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, int(cpus))))


class _Metrics:
    """Request count, latency and batch size per model version (``ray.serve.metrics``:
    exported to Prometheus by Ray's metrics agent)."""

    _lock = threading.Lock()

    def __init__(self, name: str, version: str) -> None:
        from ray.serve.metrics import Counter, Histogram

        tags = {"model": name, "model_version": version}
        self.requests = Counter(
            "lepton_model_requests",
            description="Requests a model version answered, by outcome.",
            tag_keys=("model", "model_version", "outcome"),  # type: ignore[arg-type]
        )
        self.requests.set_default_tags(dict(tags))  # Serve adds its own tags into the dict
        self.latency = Histogram(
            "lepton_model_latency_ms",
            description="Time from a request reaching the replica to its answer.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
            tag_keys=("model", "model_version"),  # type: ignore[arg-type]
        )
        self.latency.set_default_tags(dict(tags))
        self.batch_size = Histogram(
            "lepton_model_batch_size",
            description="Inputs per predictor call (dynamic batching).",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256],
            tag_keys=("model", "model_version"),  # type: ignore[arg-type]
        )
        self.batch_size.set_default_tags(dict(tags))

    def request(self, seconds: float, ok: bool) -> None:
        self.requests.inc(tags={"outcome": "ok" if ok else "client_error"})
        self.latency.observe(seconds * 1000)

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)
