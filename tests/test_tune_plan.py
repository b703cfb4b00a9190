"""`lepton tune`'s search space and plan: Hydra's sweep grammar, and every mistake named
before anything starts (no Ray)."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from engine.errors import ConfigError
from engine.tune.plan import plan_sweep
from engine.tune.space import format_value, grid_size, split_overrides, to_search_space

VISION = ["task=vision", "scaling.num_workers=1"]


def test_sweep_overrides_are_split_from_plain_ones_with_hydras_grammar():
    plain, params = split_overrides(
        [
            "task=vision",
            "optimizer.lr=tag(log,interval(1e-4,1e-1))",
            "task.model.width=choice(32,64,128)",
            "trainer.batch_size=16,32",
            "trainer.epochs=range(1,4)",
            "task.model.dropout=interval(0,0.3)",
        ]
    )
    assert plain == ["task=vision"]
    lr, width, batch, epochs, dropout = params.values()
    assert (lr.kind, lr.low, lr.high, lr.log) == ("interval", 1e-4, 1e-1, True)
    assert width.values() == [32, 64, 128]
    assert batch.values() == [16, 32]
    assert epochs.values() == [1, 2, 3]  # end-exclusive, as Hydra
    assert (dropout.kind, dropout.log) == ("interval", False)


def test_search_space_maps_to_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer

    _, params = split_overrides(
        ["a=tag(log,interval(1e-4,1e-1))", "b=choice(1,2)", "c=range(2,8)", "d=range(0,10,5)"]
    )
    space = to_search_space(params, grid=False)
    assert isinstance(space["a"], Float) and "LogUniform" in type(space["a"].sampler).__name__
    assert isinstance(space["b"], Categorical) and space["b"].categories == [1, 2]
    assert isinstance(space["c"], Integer) and (space["c"].lower, space["c"].upper) == (2, 8)
    assert isinstance(space["d"], Categorical) and space["d"].categories == [0, 5]


def test_grid_enumerates_choices_and_ranges_and_refuses_an_interval():
    _, params = split_overrides(["b=choice(1,2)", "c=range(0,3)"])
    space = to_search_space(params, grid=True)
    assert space["b"] == {"grid_search": [1, 2]} and space["c"] == {"grid_search": [0, 1, 2]}
    assert grid_size(params) == 6
    _, params = split_overrides(["a=interval(0,1)"])
    with pytest.raises(ConfigError, match="cannot be enumerated"):
        to_search_space(params, grid=True)


@pytest.mark.parametrize("value", [3, 0.001, 1e-5, "sgd", "it's odd", True, None, "null", [1, 2]])
def test_a_sampled_value_reads_back_as_itself_through_hydra(value):
    parsed = OverridesParser.create().parse_override(f"k={format_value(value)}")
    assert parsed.value() == (list(value) if isinstance(value, list) else value)


def test_plan_takes_metric_and_mode_from_the_task_and_plain_overrides_for_every_trial():
    plan, base, info = plan_sweep(
        [*VISION, "trainer.epochs=2", "optimizer.lr=choice(0.01,0.001)", "tune.num_samples=3"]
    )
    assert (plan.metric, plan.mode, plan.epochs) == ("val/accuracy", "max", 2)
    assert plan.trial_overrides == [*VISION, "trainer.epochs=2"]  # no tune.* key in a trial
    assert plan.settings.samples() == 3 and base.trainer.epochs == 2


def test_a_sweep_config_supplies_the_search_space_and_the_command_line_adds_to_it():
    plan, _, _ = plan_sweep([*VISION, "sweep=vision_small", "optimizer.lr=choice(0.1,0.01)"])
    assert set(plan.params) == {"optimizer.lr", "task.model.width", "task.model.dropout"}
    assert plan.params["optimizer.lr"].text == "choice(0.1,0.01)"  # the command line wins


def test_a_min_mode_task_metric_is_kept_min():
    plan, _, _ = plan_sweep(["task=recsys_explicit", "optimizer.lr=choice(0.01,0.001)"])
    assert plan.mode == "min" and plan.metric.startswith("val/")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["optimizer.lr=interval(0.1"], "Cannot parse 'optimizer.lr=interval(0.1'"),
        (["task.model.nope=choice(1,2)"], "task.model.nope"),
        (["task.model.name=interval(0,1)"], "task.model.name"),
        (["trainer.epochs=interval(1,3)"], "trainer.epochs"),
        (["optimizer=adamw,nope"], "No option 'nope' in config group 'optimizer'"),
        (["optimizer.lr=choice(0.1)", "tune.num_samples=0"], "tune.num_samples"),
        (["optimizer.lr=choice(0.1)", "tune.metric=val/nope"], "val/nope"),
        (["optimizer.lr=choice(0.1)", "tune.scheduler=hyperband"], "tune.scheduler"),
        (["optimizer.lr=choice(0.1)", "tune.nope=1"], "tune.nope"),
        (["optimizer.lr=tag(log,interval(0,1))"], "positive low end"),
        (["optimizer.lr=range(5,1)"], "holds no values"),
        ([], "Nothing to sweep"),
    ],
)
def test_mistakes_are_named_before_anything_starts(overrides, named):
    with pytest.raises(ConfigError) as caught:
        plan_sweep([*VISION, *overrides])
    assert named in str(caught.value)
