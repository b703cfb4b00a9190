"""Both recsys tasks pass the engine's contract kit on a tiny synthetic log."""

from __future__ import annotations

import pytest

from engine.testing import check_task_contract

TINY = [
    "task.data.synthetic.num_users=120",
    "task.data.synthetic.num_items=60",
    "task.data.synthetic.num_interactions=2400",
    "trainer.batch_size=64",
]


SASREC = ["task.model.name=sasrec", "task.model.dim=16", "task.model.max_len=10"]


@pytest.mark.parametrize(
    ("task", "extra", "metric"),
    [
        ("recsys", [], "val/ndcg@10"),
        ("recsys", SASREC, "val/ndcg@10"),
        ("recsys_explicit", [], "val/rmse"),
    ],
)
def test_recsys_tasks_pass_the_contract_kit(tmp_path, task, extra, metric):
    report = check_task_contract(task, [*TINY, *extra], tmp_path)
    print(report.summary())
    assert report.metric == metric
    assert report.losses[-1] < report.losses[0]
    assert report.rejected_input is not None
    assert any(p["cold_start"] for p in report.predictions)
