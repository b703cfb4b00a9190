"""A run's speed and cost (engine/runs/cost.py): phases, reserved and used hours, money.

Unit tier: crafted clocks, rows and ``timing.json`` records, one local loop without Ray;
the ray-marked test at the end checks a real two-worker run's ``result.json`` and
``report.md``.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from engine.config.load import load_config
from engine.errors import ConfigError
from engine.runs import clock as clock_module
from engine.runs.clock import RunClock, command_clock, command_started, process_start_time
from engine.runs.cost import PHASES, TIMING_FILE, RunCost, prices_for, record_cost, run_cost
from engine.runs.layout import RESULT_FILE, read_metrics, write_json_atomic
from engine.train.timing import GpuSampler

T0 = 1_000_000.0


def _scaling(workers=2, cpus=1.0, use_gpu=False, gpus=1.0):
    return SimpleNamespace(
        num_workers=workers, cpus_per_worker=cpus, use_gpu=use_gpu, gpus_per_worker=gpus
    )


def _prices(cpu=None, gpu=None, node_type=None, node_types=None):
    return SimpleNamespace(
        cpu_hour=cpu, gpu_hour=gpu, currency="USD", node_type=node_type, node_types=node_types
    )


def _run(**attempt_extra):
    """A two-epoch run: process start T0, fit 10..110 s, the worker in at 12 s, epochs
    begin at 20 s, end at 100 s; the cost is taken at 115 s."""
    clock = RunClock(
        process_started=T0, invocation="inv-1", fit_started=T0 + 10, fit_ended=T0 + 110
    )
    rows = [
        {
            "epoch": e,
            "pid": 7,
            "time": T0 + 40 + 40 * e,
            "train_time_s": 30.0,
            "val_time_s": 5.0,
            "cpu_s": 50.0,
            "samples": 3000,
            "samples_per_s": 100.0,
        }
        for e in range(2)
    ]
    attempt = {
        "invocation": "inv-1",
        "pid": 7,
        "worker_started": T0 + 12,
        "epochs_started": T0 + 20,
        "loop_ended": T0 + 100,
        "cpu_s": 150.0,
        "checkpoint_s": 4.0,
        **attempt_extra,
    }
    other = {"invocation": "an-earlier-driver", "pid": 3, "worker_started": T0 - 500, "cpu_s": 9e9}
    stale = {"epoch": 0, "pid": 3, "time": T0 - 400, "train_time_s": 1e6, "samples": 10**9}
    return clock, [stale, *rows], {"attempts": [other, attempt]}


def test_phases_add_up_to_the_wall_time():
    clock, rows, timing = _run()
    c = run_cost(clock, _scaling(), _prices(), rows, timing, now=T0 + 115)
    assert c.wall_s == pytest.approx(115)
    assert c.phases == pytest.approx(
        {
            "startup_driver": 10,
            "startup_workers": 2,
            "startup_prepare": 8,
            "training": 60,
            "validation": 10,
            "checkpointing": 4,
            "shutdown_workers": 10,
            "shutdown_driver": 5,
            "other": 6,
        }
    )
    assert sum(c.phases.values()) == pytest.approx(c.wall_s)
    assert c.samples == 6000  # the earlier driver's rows and attempt are not this run's
    assert c.samples_per_s == pytest.approx(100) and c.run_samples_per_s == pytest.approx(
        6000 / 115
    )


def test_reserved_cpu_hours_are_workers_times_cpus_times_window_and_priced():
    clock, rows, timing = _run()
    c = run_cost(
        clock, _scaling(workers=4, cpus=2.0), _prices(cpu=0.05), rows, timing, now=T0 + 115
    )
    window = 110 - 12  # first worker start → fit end
    assert c.reserved_window_s == pytest.approx(window)
    assert c.cpu_h_reserved == pytest.approx(4 * 2 * window / 3600)
    assert c.cpu_h_used == pytest.approx(150 / 3600)
    assert c.cpu_utilisation == pytest.approx(150 / (8 * window))
    assert c.money == pytest.approx(c.cpu_h_reserved * 0.05) and c.money_gpu is None
    assert c.gpu_h_reserved == 0 and c.gpu_note == "no GPU reserved (scaling.use_gpu=false)"
    unpriced = run_cost(clock, _scaling(), _prices(), rows, timing, now=T0 + 115)
    assert unpriced.money is None and unpriced.as_dict()["money"] is None


def test_the_window_starts_with_the_first_worker_process_but_not_before_fit():
    clock, rows, timing = _run(process_started=T0 + 11)
    c = run_cost(clock, _scaling(), _prices(), rows, timing, now=T0 + 115)
    assert c.reserved_window_s == pytest.approx(99) and c.clock
    assert c.clock["reserved_from"] == T0 + 11
    early, _, _ = _run()  # Ray handed out a worker process it had started before fit()
    timing["attempts"][-1]["process_started"] = T0 - 60
    c = run_cost(early, _scaling(), _prices(), rows, timing, now=T0 + 115)
    assert c.reserved_window_s == pytest.approx(100)
    assert c.phases["startup_workers"] == pytest.approx(2)  # phases: entry into the loop


def test_gpu_hours_use_the_node_types_price_and_the_sampled_utilisation():
    clock, rows, timing = _run(gpu_util=40.0)
    prices = _prices(
        cpu=0.05,
        gpu=9.0,
        node_type="a100",
        node_types={"a100": SimpleNamespace(cpu_hour=None, gpu_hour=2.5)},
    )
    assert prices_for(prices).gpu_hour == 2.5 and prices_for(prices).cpu_hour == 0.05
    c = run_cost(
        clock, _scaling(workers=2, use_gpu=True, gpus=1.0), prices, rows, timing, now=T0 + 115
    )
    assert c.gpu_h_reserved == pytest.approx(2 * 98 / 3600)
    assert c.gpu_util == 40.0 and c.gpu_h_used == pytest.approx(c.gpu_h_reserved * 0.4)
    assert c.money == pytest.approx(c.cpu_h_reserved * 0.05 + c.gpu_h_reserved * 2.5)
    assert c.node_type == "a100"


def test_gpu_without_utilisation_says_why():
    clock, rows, timing = _run(gpu_util=None, gpu_note="torch.cuda.utilization() failed: pynvml")
    c = run_cost(clock, _scaling(use_gpu=True), _prices(), rows, timing, now=T0 + 115)
    assert c.gpu_h_reserved > 0 and c.gpu_h_used is None and c.gpu_util is None
    assert "pynvml" in (c.gpu_note or "")


def test_without_a_timing_record_the_window_is_fit_and_rows_give_the_cpu():
    """A run stopped before the loop's first record: what the driver and rows know."""
    clock, rows, _ = _run()
    c = run_cost(clock, _scaling(), _prices(), rows[1:], None, now=T0 + 115)
    assert c.reserved_window_s == pytest.approx(100)  # fit start → fit end
    assert c.cpu_h_used == pytest.approx(100 / 3600)  # the rows' cpu_s
    assert c.phases["startup_workers"] == 0 and c.phases["shutdown_workers"] == 0
    assert c.phases["shutdown_driver"] == pytest.approx(5)
    assert sum(c.phases.values()) == pytest.approx(c.wall_s)


def test_a_crashed_attempt_counts_its_rows_cpu():
    clock, rows, timing = _run(cpu_s=None, loop_ended=None, checkpoint_s=None)
    c = run_cost(clock, _scaling(), _prices(), rows, timing, now=T0 + 115)
    assert c.cpu_h_used == pytest.approx(100 / 3600)


def test_costs_add_up_and_round_trip():
    clock, rows, timing = _run()
    one = run_cost(clock, _scaling(), _prices(cpu=0.05), rows, timing, now=T0 + 115)
    again = RunCost.from_dict(json.loads(json.dumps(one.as_dict())))
    assert again.as_dict() == one.as_dict()
    both = one.add(again)
    assert both.runs == 2 and both.wall_s == pytest.approx(230) and both.samples == 12000
    assert both.cpu_h_reserved == pytest.approx(2 * one.cpu_h_reserved)
    assert one.money is not None and both.money == pytest.approx(2 * one.money)
    assert both.phases == pytest.approx({p: 2 * one.phases[p] for p in PHASES})
    assert both.workers == 2 and both.clock is None
    other = RunCost(workers=4, cpu_h_reserved=1.0)
    mixed = one.add(other)
    assert mixed.workers is None and mixed.money == pytest.approx(one.money)


def test_record_cost_adds_the_earlier_invocations(tmp_path):
    clock, rows, timing = _run()
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json_atomic(tmp_path / TIMING_FILE, timing)
    cfg = SimpleNamespace(scaling=_scaling(), cost=_prices(cpu=0.05))
    first = record_cost(tmp_path, cfg, clock)
    assert first is not None and first["runs"] == 1 and first["cpu_h_reserved"] > 0
    total = record_cost(tmp_path, cfg, clock, earlier=first)
    assert total is not None and total["runs"] == 2
    assert total["cpu_h_reserved"] == pytest.approx(2 * first["cpu_h_reserved"])


def test_command_clock():
    assert command_started() is None
    start = process_start_time()
    assert start is None or start <= time.time()
    with command_clock(whole_process=True):
        assert command_started() == pytest.approx(start or time.time(), abs=1.0)
    before = time.time()
    with command_clock(whole_process=False):  # main([...]) in-process: the call's time
        assert before <= (command_started() or 0) <= time.time()
        assert RunClock.start().process_started == command_started()
    assert command_started() is None
    assert RunClock.start().process_started == pytest.approx(time.time(), abs=1.0)


def test_gpu_sampler_reports_why_it_has_no_samples(monkeypatch):
    assert GpuSampler(torch.device("cpu")).note == "not a CUDA device (cpu)"

    def no_pynvml(device=None):
        raise ModuleNotFoundError("pynvml does not seem to be installed or it can't be imported.")

    monkeypatch.setattr(torch.cuda, "utilization", no_pynvml)
    sampler = GpuSampler(torch.device("cuda", 0))
    assert sampler.take_epoch() is None and "pynvml" in (sampler.note or "")


def test_gpu_sampler_averages_its_samples(monkeypatch):
    values = iter([10.0, 30.0, 50.0, 70.0])
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: next(values, 70.0))
    sampler = GpuSampler(torch.device("cuda", 0), every_s=0.01)
    deadline = time.time() + 5
    while len(sampler._all) < 3 and time.time() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert sampler.note is None and sampler.take_epoch() is not None
    assert 10.0 <= (sampler.overall() or 0) <= 70.0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["cost.cpu_hour=-0.1"], "cost.cpu_hour"),
        (["cost.gpu_hour=-2"], "cost.gpu_hour"),
        (["cost.cpu_hour=cheap"], "cost.cpu_hour"),
        (["cost.node_types={a100: {gpu_hour: -1}}"], "cost.node_types.a100.gpu_hour"),
        (["cost.node_types={a100: {gpu_hour: 2}}", "cost.node_type=h100"], "'h100'"),
        (["cost.node_type=h100"], "'h100'"),
    ],
)
def test_bad_prices_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(["task=vision", *overrides])
    if "cost.node_type=h100" in overrides:
        assert ("a100" if len(overrides) == 2 else "none") in (err.value.hint or "")


def test_prices_compose_from_the_command_line():
    cfg = load_config(
        [
            "task=vision",
            "cost.cpu_hour=0.05",
            "cost.node_types={a100: {gpu_hour: 2.5}, c5: {cpu_hour: 0.04}}",
            "cost.node_type=c5",
        ]
    ).config
    assert prices_for(cfg.cost).cpu_hour == 0.04 and prices_for(cfg.cost).gpu_hour is None
    assert prices_for(load_config(["task=vision"]).config.cost).cpu_hour is None
    assert cfg.cost.node_types is not None and cfg.cost.node_types["a100"].gpu_hour == 2.5


def test_local_loop_rows_and_report_carry_the_cost(tmp_path):
    """The loop's additive row keys and timing.json; the report section from them."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "tests"))
    from run_fixtures import train_run

    from engine.runs.report import write_report

    clock = RunClock.start()
    run = train_run(tmp_path / "run", epochs=2)
    clock.fit_started, clock.fit_ended = clock.process_started, time.time()
    rows = read_metrics(run)
    for key in ("train_time_s", "val_time_s", "cpu_s", "samples"):
        assert all(isinstance(r[key], (int, float)) and r[key] > 0 for r in rows), key
    assert all("gpu_util" not in r for r in rows)
    timing = json.loads((run / TIMING_FILE).read_text())
    (attempt,) = timing["attempts"]
    assert attempt["cpu_s"] > 0 and attempt["loop_ended"] >= attempt["epochs_started"]
    attempt["invocation"] = clock.invocation  # run_local has no driver
    write_json_atomic(run / TIMING_FILE, timing)

    cfg = SimpleNamespace(scaling=_scaling(workers=1, cpus=2.0), cost=_prices(cpu=0.05))
    result = json.loads((run / RESULT_FILE).read_text())
    result["cost"] = record_cost(run, cfg, clock)
    write_json_atomic(run / RESULT_FILE, result)
    text = write_report(run).read_text()
    section = text.split("## Speed and cost", 1)[1].split("## Per epoch", 1)[0]
    assert "| training |" in section and "| checkpointing (save + report) |" in section
    assert "CPU-hours" in section and "USD" in section and "1 worker(s) × 2 CPU" in section

    del result["cost"]
    write_json_atomic(run / RESULT_FILE, result)
    assert "Not recorded for this run" in write_report(run).read_text()


def test_process_start_falls_back_off_linux(monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(clock_module, "open", no_proc, raising=False)
    assert process_start_time() is None
    with command_clock(whole_process=True):
        assert command_started() == pytest.approx(time.time(), abs=1.0)


@pytest.mark.ray
def test_two_worker_run_records_its_cost(ray_cluster, tmp_path):
    """A real run: result.json's cost against the run's own recorded times; report.md."""
    from engine.runs.report import write_report
    from engine.train.driver import train

    loaded = load_config(
        [
            "task=vision",
            f"run.dir={tmp_path}",
            "trainer.epochs=2",
            "scaling.num_workers=2",
            "cost.cpu_hour=0.05",
        ]
    )
    summary = train(loaded.config, loaded.info, loaded.yaml, echo=lambda s: None)
    result = json.loads((summary.run_dir.local_path / RESULT_FILE).read_text())
    cost, rows = result["cost"], read_metrics(summary.run_dir)
    clock = cost["clock"]
    (attempt,) = json.loads((summary.run_dir.local_path / TIMING_FILE).read_text())["attempts"]
    assert clock["reserved_from"] == max(clock["fit_started"], attempt["process_started"])

    # Training wall time: the first worker's start → fit's end, within the run's wall time
    # and longer than its epochs.
    window = clock["fit_ended"] - clock["reserved_from"]
    assert sum(r["epoch_time_s"] for r in rows) < window < result["wall_s"]
    assert clock["fit_started"] <= clock["reserved_from"] < attempt["worker_started"]
    assert attempt["loop_ended"] < clock["fit_ended"] <= clock["ended"]
    expected = 2 * 1.0 * window / 3600
    assert abs(cost["cpu_h_reserved"] - expected) <= 0.05 * expected
    assert cost["money"] == pytest.approx(cost["cpu_h_reserved"] * 0.05)
    assert cost["cpu_h_used"] > 0 and cost["gpu_h_reserved"] == 0

    assert sum(cost["phases"].values()) == pytest.approx(cost["wall_s"], rel=1e-6)
    assert cost["phases"]["training"] == pytest.approx(sum(r["train_time_s"] for r in rows))
    assert cost["phases"]["checkpointing"] > 0 and cost["phases"]["shutdown_workers"] > 0
    assert cost["samples"] == sum(r["samples"] for r in rows) > 0
    assert all(r["world_size"] == 2 and r["cpu_s"] > 0 for r in rows)

    text = write_report(summary.run_dir).read_text()
    assert "## Speed and cost" in text and "2 worker(s) × 1 CPU" in text
    assert f"{cost['money']:.4g} USD" in text
