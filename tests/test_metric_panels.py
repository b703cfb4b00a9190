"""The report's metrics plot: each metric's baselines in its panel (unit tier)."""

from __future__ import annotations

from engine.runs.metric_panels import baseline_label, panels
from engine.runs.report import _metric_grid

RECSYS = [
    "val/ndcg@10",
    "val/hr@10",
    "val/baseline_ndcg@10",
    "val/baseline_hr@10",
    "val/baseline_knn_ndcg@10",
    "val/baseline_ease_ndcg@10",
    "val/baseline_ease_hr@10",
    "val/baseline_orphan_mrr",
]


def test_a_baseline_joins_its_metrics_panel_and_an_orphan_keeps_its_own():
    assert panels(RECSYS) == {
        "val/ndcg@10": [
            "val/baseline_ndcg@10",
            "val/baseline_knn_ndcg@10",
            "val/baseline_ease_ndcg@10",
        ],
        "val/hr@10": ["val/baseline_hr@10", "val/baseline_ease_hr@10"],
        "val/baseline_orphan_mrr": [],
    }
    assert panels(["val/accuracy", "val/f1"]) == {"val/accuracy": [], "val/f1": []}


def test_baseline_labels():
    assert baseline_label("val/baseline_knn_ndcg@10", "val/ndcg@10") == "knn"
    assert baseline_label("val/baseline_ease_hr@10", "val/hr@10") == "ease"
    assert baseline_label("val/baseline_ndcg@10", "val/ndcg@10") == "baseline"


def test_the_grid_renders_one_panel_per_metric(tmp_path):
    import matplotlib.image

    series = {k: [0.1 * (i + 1), 0.2 * (i + 1)] for i, k in enumerate(RECSYS)}
    _metric_grid(tmp_path / "metrics.png", [1, 2], series)
    height, width, _ = matplotlib.image.imread(tmp_path / "metrics.png").shape
    assert width > height > 0
