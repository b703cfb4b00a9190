"""The ``recsys`` and ``recsys_explicit`` tasks: recommendation from interactions.

One class, two registered names with their own defaults (``conf/task/*.yaml``):
``recsys`` trains an implicit-feedback ranking model (``bpr``; checkpoints ranked by
``val/ndcg@10``, max), ``recsys_explicit`` a rating model (``mf``; ``val/rmse``, min).
The model named in the config decides the metric either way (:meth:`metric_for`), so
``task=recsys task.model.name=mf`` ranks checkpoints by rmse too. Implicit models are
reported beside three baselines ranked with the same code (most popular, item-kNN,
EASE: :mod:`lepton_recsys.baselines`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, DataError, clip_repr
from engine.task import DataBundle, ExportSpec, StreamingData
from lepton_recsys.config import RecsysConfig

if TYPE_CHECKING:
    import torch

    from engine.task_monitoring import LabelledInput, TrainingDataWritten
    from lepton_recsys.predictor import RecsysPredictor


class RecsysTask:
    name = "recsys"
    config_class = RecsysConfig
    default_metric = "val/ndcg@10"
    metric_mode = "max"

    def metric_for(self, cfg: RecsysConfig) -> tuple[str, str]:
        """The checkpoint metric for this config: rmse (min) for mf, NDCG@K (max) otherwise."""
        return cfg.metric()

    def metric_mode_for(self, metric: str, cfg: RecsysConfig) -> str | None:
        """Errors (rmse, mae and their baselines) are minimised, ranking scores maximised."""
        name = metric.removeprefix("val/").removeprefix("baseline_")
        name = name.removeprefix("knn_").removeprefix("ease_")
        if name in ("rmse", "mae"):
            return "min"
        return "max" if name.startswith(("ndcg@", "hr@")) else None

    # -- driver ----------------------------------------------------------------------

    def check(self, cfg: RecsysConfig) -> None:
        from lepton_recsys.baselines import check_ease_size
        from lepton_recsys.loaders import (
            MOVIELENS_FILES,
            check_columns,
            check_ids,
            read_ids,
            resolve,
            role_columns,
        )

        data = cfg.data
        if data.extra is not None:
            from lepton_recsys.feedback_data import check_extra

            check_extra(data, cfg.model.explicit)
        ease = "ease" in cfg.baseline_names()
        if data.format == "synthetic":
            n = cfg.eval.num_negatives
            if n is not None and n >= data.synthetic.num_items:
                raise ConfigError(
                    f"task.eval.candidates={n} is not below the catalogue size "
                    f"{data.synthetic.num_items}.",
                    hint="Use fewer sampled candidates, or task.eval.candidates=all.",
                )
            if ease:
                check_ease_size(data.synthetic.num_items, cfg.baselines.ease)
            return
        uses_min_rating = data.implicit_min_rating is not None and not cfg.model.explicit
        if uses_min_rating and data.rating_column is None and data.format != "movielens":
            raise ConfigError(
                "task.data.implicit_min_rating is set but task.data.rating_column is null.",
                hint="Set task.data.rating_column, or task.data.implicit_min_rating=null.",
            )
        for which in ("train", "val") if data.presplit else ("path",):
            source = resolve(data, which)
            if source.kind in MOVIELENS_FILES:
                _check_movielens(source.path, source.kind)
                names = {"user": "user", "item": "item"}
            else:
                check_columns(source, role_columns(data, cfg.model.explicit))
                names = {"user": data.user_column, "item": data.item_column}
            ids = read_ids(source, data)  # two columns: cheap next to Ray's start-up
            for role, name in names.items():
                check_ids(ids[role], source.path, name)
            if ease and which != "val":  # the catalogue is the train file's (or the log's)
                items = int(ids["item"].nunique())
                check_ease_size(items, cfg.baselines.ease, where=f"{source.path} (item ids)")

    # -- workers ---------------------------------------------------------------------

    def build_data(
        self, cfg: RecsysConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
    ) -> DataBundle | StreamingData:
        """With a trained model's ``artifacts``, its id maps encode the data. With
        ``task.data.streaming=true`` (the driver of ``lepton train``, Ray up): Ray Data
        datasets, see :mod:`lepton_recsys.streaming`."""
        from lepton_recsys.build import build_bundle

        if cfg.data.streaming and artifacts is None:
            from lepton_recsys.streaming import build_streaming

            return build_streaming(cfg, seed=seed)

        return build_bundle(cfg, seed=seed, artifacts=artifacts)

    def build_model(self, cfg: RecsysConfig, artifacts: Mapping[str, Any]) -> torch.nn.Module:
        from lepton_recsys.models import build

        return build(cfg, artifacts)

    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        from lepton_recsys.steps import training_loss

        return training_loss(model, batch)

    def build_metrics(self, cfg: RecsysConfig, artifacts: Mapping[str, Any]) -> Any:
        from lepton_recsys.steps import build_metrics

        return build_metrics(cfg)

    def validation_step(self, model: torch.nn.Module, batch: Any, metrics: Any) -> torch.Tensor:
        from lepton_recsys.steps import validation_step

        return validation_step(model, batch, metrics)

    def build_predictor(
        self,
        model: torch.nn.Module,
        cfg: RecsysConfig,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> RecsysPredictor:
        from lepton_recsys.predictor import RecsysPredictor

        return RecsysPredictor(model, artifacts, device, cfg.model.name)

    # -- lepton export ------------------------------------------------------------------

    def export_spec(
        self, model: torch.nn.Module, batch: Any, cfg: RecsysConfig, artifacts: Mapping[str, Any]
    ) -> ExportSpec:
        """The exported graph is ``score_all(users)``: see :mod:`lepton_recsys.export`."""
        from lepton_recsys.export import export_spec

        return export_spec(model, batch)

    def exported_model(
        self, runtime: torch.nn.Module, cfg: RecsysConfig, artifacts: Mapping[str, Any]
    ) -> torch.nn.Module:
        """An export as a model the predictor and validation use (scores from its graph)."""
        from lepton_recsys.export import exported_model

        return exported_model(runtime, cfg, artifacts)

    # -- lepton monitor export ----------------------------------------------------------

    def write_training_data(
        self,
        cfg: RecsysConfig,
        artifacts: Mapping[str, Any],
        examples: Sequence[LabelledInput],
        directory: Path,
    ) -> TrainingDataWritten:
        """``<directory>/interactions.csv`` in the model's columns, for
        ``task.data.extra``: see :mod:`lepton_recsys.feedback_data`."""
        from lepton_recsys.feedback_data import write_interactions

        return write_interactions(cfg, artifacts, examples, directory)

    # -- lepton predict / evaluate ------------------------------------------------------

    def read_inputs(self, path: Path, cfg: RecsysConfig) -> Iterator[tuple[str, Any]]:
        """Requests for ``lepton predict``: see :func:`lepton_recsys.inputs.read_inputs`."""
        from lepton_recsys.inputs import read_inputs

        return read_inputs(Path(path), cfg)

    def inputs_from_rows(self, rows: Mapping[str, Any], cfg: RecsysConfig) -> list[tuple[str, Any]]:
        """A batch of Parquet rows for ``lepton predict -o OUT.parquet``: one top-K request
        per row, the user from ``task.data.user_column`` (and ``k`` from a ``k`` column, if
        any); ids from an ``id`` column, else the user id."""
        from engine.task_streaming import ID_COLUMN, column_of

        users = [
            u.item() if hasattr(u, "item") else u
            for u in column_of(rows, cfg.data.user_column, "task.data.user_column")
        ]
        ks = rows.get("k")
        requests: list[Any] = (
            users
            if ks is None
            else [{"user": u, "k": int(k)} for u, k in zip(users, ks, strict=True)]
        )
        ids = [str(v) for v in rows[ID_COLUMN]] if ID_COLUMN in rows else [str(u) for u in users]
        return list(zip(ids, requests, strict=True))

    def evaluation_extras(
        self,
        model: torch.nn.Module,
        loader: Any,
        cfg: RecsysConfig,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> dict[str, Any]:
        """The evaluation protocol, the item-kNN and EASE baselines on the data evaluated
        (fitted on its train part, ranked with the model's protocol; their metrics are also
        ``val/baseline_knn_…`` / ``val/baseline_ease_…``), and the baselines recorded when
        the model was trained."""
        from lepton_recsys.baselines import NAMES
        from lepton_recsys.build import summarize

        extras: dict[str, Any] = {
            "protocol": artifacts.get("eval", {}).get("protocol"),
            "baseline_at_training": artifacts.get("baseline"),
            "baselines_at_training": artifacts.get("baselines"),
            "catalogue_items": artifacts.get("num_items"),
        }
        dataset = getattr(loader, "dataset", None)
        ranks = getattr(dataset, "baseline_ranks", None)
        if ranks:
            extras["baselines"] = {NAMES[n]: summarize(r, cfg) for n, r in ranks.items()}
        if "sequence" in artifacts:
            extras["sequence"] = artifacts["sequence"]
        return extras


class RecsysExplicitTask(RecsysTask):
    """Rating prediction by default (``conf/task/recsys_explicit.yaml``: ``mf``)."""

    name = "recsys_explicit"
    default_metric = "val/rmse"
    metric_mode = "min"


def _check_movielens(path: Path, kind: str) -> None:
    """The first data line has the layout's four fields, the last three numeric."""
    with open(path, encoding="latin-1") as fh:
        first = fh.readline()
        if kind == "ratings.csv":
            header = first.strip()
            if not header.startswith("userId,movieId,rating"):
                raise DataError(
                    f"{path}: header is {clip_repr(header)}, expected "
                    "userId,movieId,rating,timestamp."
                )
            first = fh.readline()
    if not first.strip():
        raise DataError(f"{path} holds no interactions.")
    sep = {"u.data": "\t", "ratings.dat": "::", "ratings.csv": ","}[kind]
    fields = first.strip().split(sep)
    if len(fields) != 4:
        raise DataError(
            f"{path}: first data line {clip_repr(first.strip())} has {len(fields)} fields; "
            f"MovieLens {kind} has 4 (user, item, rating, timestamp)."
        )
    for name, value in zip(("rating", "timestamp"), fields[2:], strict=True):
        try:
            float(value)
        except ValueError:
            raise DataError(
                f"{path}: {name} {clip_repr(value)} in the first line is not a number."
            ) from None
