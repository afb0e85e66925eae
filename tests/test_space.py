"""Search-space parsing, validation against the config, sampling, grids, inline params, warnings."""

# One table row per line reads best:
# ruff: noqa: E501

from __future__ import annotations

from typing import Any

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ml_framework.config import from_container
from ml_framework.errors import ConfigError
from ml_framework.search.space import (
    Condition,
    describe,
    effect_warnings,
    grid_points,
    grid_size,
    parse_inline_param,
    parse_search_space,
    suggest,
    validate_search_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def one(yaml_text: str) -> Any:
    """The distribution of a one-parameter space written as YAML (so `1e-5` arrives as a str)."""
    return parse_search_space({"p": yaml.safe_load(yaml_text)})["p"].distribution


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{type: loguniform, low: 1e-5, high: 1e-1}", FloatDistribution(1e-5, 0.1, log=True)),
        ("{type: uniform, low: 0.8, high: 0.99}", FloatDistribution(0.8, 0.99)),
        ("{type: float, low: 0, high: 1, step: 0.25}", FloatDistribution(0.0, 1.0, step=0.25)),
        ("{type: float, low: 1e-6, high: 1e-2, log: true}", FloatDistribution(1e-6, 1e-2, log=True)),
        ("{type: continuous, low: 0.1, high: 0.5}", FloatDistribution(0.1, 0.5)),
        ("{type: int, low: 5, high: 15}", IntDistribution(5, 15)),
        ("{type: int, low: 16, high: 128, step: 16}", IntDistribution(16, 128, step=16)),
        ("{type: int, low: 1, high: 1024, log: true}", IntDistribution(1, 1024, log=True)),
        ("{type: int, low: '1e1', high: 2e2}", IntDistribution(10, 200)),
        ("{type: discrete, low: 1, high: 10}", IntDistribution(1, 10)),
        ("{type: categorical, choices: [16, 32, 64]}", CategoricalDistribution([16, 32, 64])),
        ("{type: categorical, choices: [adam, sgd]}", CategoricalDistribution(["adam", "sgd"])),
        ("{values: [0.1, 0.2]}", CategoricalDistribution([0.1, 0.2])),
        ("{type: discrete, values: [5, 10, null]}", CategoricalDistribution([5, 10, None])),
        ("{type: categorical, values: [true, false]}", CategoricalDistribution([True, False])),
    ],
)
def test_valid_specs(spec: str, expected: Any) -> None:
    assert one(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("{type: uniform, low: 0.5, high: 0.5}", "low (0.5) must be less than high (0.5)"),
        ("{type: int, low: 9, high: 2}", "must be less than high"),
        ("{type: loguniform, low: 0, high: 1}", "log scale needs low > 0"),
        ("{type: int, low: -1, high: 4, log: true}", "log scale needs low > 0"),
        ("{type: categorical, choices: []}", "`choices` is empty"),
        ("{type: categorical, choices: [a, b, a]}", "lists 'a' more than once"),
        ("{type: categorical, choices: [[0.9, 0.99], [0.8, 0.9]]}", "must be scalars"),
        ("{type: categorical, choices: sgd}", "must be a list"),
        ("{type: categorical}", "needs `choices"),
        ("{type: logunifrom, low: 1, high: 2}", "Did you mean loguniform? Valid types: categorical"),
        (
            "{type: uniform, low: 0.1, hgih: 0.5}",
            "unknown key 'hgih' in search.search_space.p. Did you mean: high",
        ),
        ("{type: loguniform, low: 1e-5, high: 1e-1, step: 1e-3}", "unknown key 'step'"),
        ("{type: int, low: 1, high: 5, step: 10}", "step (10) is larger than the range [1, 5]"),
        ("{type: float, low: 0, high: 1, step: 0}", "step must be positive"),
        ("{type: float, low: 0, high: 1, step: 0.3}", "not a whole number of steps of 0.3; use high: 0.9"),
        ("{type: int, low: 16, high: 100, step: 16}", "not a whole number of steps of 16; use high: 96"),
        ("{type: float, low: 0.1, high: 1, step: 0.1, log: true}", "`step` and `log` cannot be combined"),
        ("{type: int, low: 1.5, high: 5}", "type int needs integer `low`"),
        ("{type: int, values: [1, 2.5]}", "type int needs integer `values`"),
        ("{type: uniform, low: abc, high: 1}", "`low` must be a number, got 'abc'"),
        ("{type: uniform, high: 1}", "missing `low`"),
        ("{type: uniform, low: 0, high: 1, log: yes please}", "`log` must be true or false"),
        ("{low: 0, high: 1}", "missing `type`"),
        ("{type: [int], low: 0, high: 1}", "unknown type ['int']"),
        ("{type: loguniform, values: [1, 2]}", "`values` cannot be combined with type loguniform"),
        ("{type: categorical, choices: [a], values: [b]}", "give `choices` or `values`, not both"),
        ("0.01", "expected a mapping"),
        ("[16, 32]", "expected a mapping"),
    ],
)
def test_invalid_specs(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"search.search_space.p") as info:
        one(spec)
    assert fragment in str(info.value)


NAME = "optimizer.name: {type: categorical, choices: [adam, sgd, rmsprop]}\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "optimizer.momentum: {type: uniform, low: 0.5, high: 0.99, condition: {parameter: nope, value: a}}",
            "parameter 'nope' is not in the search space",
        ),
        (
            "optimizer.lr: {type: loguniform, low: 1e-4, high: 1e-1}\n"
            "optimizer.momentum: {values: [0.9], condition: {parameter: optimizer.lr, value: 0.1}}",
            "parent 'optimizer.lr' must be categorical",
        ),
        (
            NAME
            + "optimizer.momentum: {values: [0.9], condition: {parameter: optimizer.name, value: adamw}}",
            "'adamw' is not one of the choices of 'optimizer.name' [adam, sgd, rmsprop]",
        ),
        (
            "a: {values: [1, 2], condition: {parameter: b, value: 1}}\n"
            "b: {values: [1, 2], condition: {parameter: a, value: 2}}",
            "conditions form a cycle: a -> b -> a",
        ),
        ("a: {values: [1, 2], condition: {parameter: a, value: 1}}", "cycle: a -> a"),
        (
            NAME + "x: {values: [1], condition: {parameter: optimizer.name, valeu: sgd}}",
            "unknown key 'valeu' in search.search_space.x.condition. Did you mean: value",
        ),
        (
            NAME + "x: {values: [1], condition: {parameter: optimizer.name, value: sgd, values: [adam]}}",
            "exactly one of `value` or `values`",
        ),
        (NAME + "x: {values: [1], condition: optimizer.name}", "`condition` must look like"),
    ],
)
def test_invalid_conditions(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_search_space(yaml.safe_load(text))
    assert fragment in str(info.value)


def test_conditions_are_ordered_parents_first_and_accept_lists() -> None:
    space = parse_search_space(
        yaml.safe_load(
            """
            optimizer.momentum: {type: uniform, low: 0.5, high: 0.99,
                                 condition: {parameter: optimizer.nesterov, value: true}}
            optimizer.nesterov: {values: [true, false], condition: {parameter: optimizer.name, value: sgd}}
            optimizer.weight_decay: {type: loguniform, low: 1e-6, high: 1e-2,
                                     condition: {parameter: optimizer.name, values: [sgd, rmsprop]}}
            """
            + NAME
        )
    )
    assert space.names == [
        "optimizer.name",
        "optimizer.nesterov",
        "optimizer.momentum",
        "optimizer.weight_decay",
    ]
    assert space["optimizer.weight_decay"].condition == Condition("optimizer.name", ("sgd", "rmsprop"))
    assert space["optimizer.momentum"].condition == Condition("optimizer.nesterov", (True,))


def test_top_level_and_omegaconf_input() -> None:
    with pytest.raises(ConfigError, match=r"must be a mapping of dotted.key"):
        parse_search_space([1, 2])  # type: ignore[arg-type]
    assert len(parse_search_space(None)) == 0  # type: ignore[arg-type]
    cfg = OmegaConf.create({"training.batch_size": {"type": "categorical", "choices": [16, 32]}})
    assert parse_search_space(cfg)["training.batch_size"].distribution == CategoricalDistribution([16, 32])


CONDITIONAL = yaml.safe_load(
    """
    optimizer.name: {type: categorical, choices: [adam, sgd]}
    optimizer.nesterov: {values: [true, false], condition: {parameter: optimizer.name, value: sgd}}
    optimizer.momentum: {type: uniform, low: 0.5, high: 0.99,
                         condition: {parameter: optimizer.nesterov, value: true}}
    optimizer.lr: {type: loguniform, low: 1e-5, high: 1e-1}
    training.batch_size: {type: int, low: 16, high: 64, step: 16}
    """
)


def test_suggest_on_a_real_study_samples_conditional_params_only_when_they_apply(tmp_path) -> None:
    space = parse_search_space(CONDITIONAL)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'space.db'}", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    seen: set[tuple[str, bool | None]] = set()
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, space)
        assert params == trial.params
        assert 1e-5 <= params["optimizer.lr"] <= 0.1
        assert params["training.batch_size"] in (16, 32, 48, 64)
        assert ("optimizer.nesterov" in params) == (params["optimizer.name"] == "sgd")
        assert ("optimizer.momentum" in params) == (params.get("optimizer.nesterov") is True)
        seen.add((params["optimizer.name"], params.get("optimizer.nesterov")))
        study.tell(trial, params["optimizer.lr"])
    assert seen == {("adam", None), ("sgd", True), ("sgd", False)}
    stored = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'space.db'}")
    assert len(stored.trials) == 30


@pytest.mark.parametrize(
    ("spec", "points", "size"),
    [
        (
            "{a: {values: [1, 2]}, b: {type: categorical, choices: [x, y, z]}}",
            {"a": [1, 2], "b": ["x", "y", "z"]},
            6,
        ),
        ("{a: {type: int, low: 16, high: 64, step: 16}}", {"a": [16, 32, 48, 64]}, 4),
        ("{a: {type: int, low: 1, high: 3}}", {"a": [1, 2, 3]}, 3),
        ("{a: {type: float, low: 0.1, high: 0.5, step: 0.1}}", {"a": [0.1, 0.2, 0.3, 0.4, 0.5]}, 5),
        ("{a: {type: float, low: 0, high: 0.9, step: 0.3}}", {"a": [0.0, 0.3, 0.6, 0.9]}, 4),
        (
            "{a: {type: float, low: 1e-3, high: 1e-2, step: 1e-3}}",
            {"a": [i / 1000 for i in range(1, 11)]},
            10,
        ),
    ],
)
def test_grid_points_and_size(spec: str, points: dict[str, list[Any]], size: int) -> None:
    space = parse_search_space(yaml.safe_load(spec))
    assert grid_points(space) == points
    assert grid_size(space) == size


def test_grid_errors_and_sizes_of_non_grid_spaces() -> None:
    continuous = parse_search_space({"optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1}})
    with pytest.raises(ConfigError, match=r"GridSampler needs a finite set .* add `step` .* or use `values"):
        grid_points(continuous)
    assert grid_size(continuous) is None
    conditional = parse_search_space(CONDITIONAL | {"optimizer.momentum": {"values": [0.8, 0.9], **_cond()}})
    with pytest.raises(ConfigError, match=r"optimizer.nesterov: GridSampler needs unconditional parameters"):
        grid_points(conditional)
    assert grid_size(parse_search_space(CONDITIONAL)) is None
    # adam: 1; sgd: nesterov true (2 momenta) + nesterov false (1) = 3; times 4 batch sizes and 2 lrs.
    finite = {**CONDITIONAL, "optimizer.lr": {"values": [0.1, 0.01]}}
    finite["optimizer.momentum"] = {"values": [0.8, 0.9], **_cond()}
    assert grid_size(parse_search_space(finite)) == (1 + 3) * 4 * 2


def _cond() -> dict[str, Any]:
    return {"condition": {"parameter": "optimizer.nesterov", "value": True}}


@pytest.mark.parametrize(
    ("text", "name", "spec"),
    [
        ("optimizer.lr=continuous:0.0001-0.1:log", "optimizer.lr", {"type": "float", "low": 0.0001, "high": 0.1, "log": True}),
        ("model.dropout=continuous:0.1-0.5", "model.dropout", {"type": "float", "low": 0.1, "high": 0.5}),
        ("model.dropout=float:0.1-0.5:0.1", "model.dropout", {"type": "float", "low": 0.1, "high": 0.5, "step": 0.1}),
        ("training.batch_size=discrete:16-128:16", "training.batch_size", {"type": "int", "low": 16, "high": 128, "step": 16}),
        ("scheduler.step_size=discrete:2-8", "scheduler.step_size", {"type": "int", "low": 2, "high": 8}),
        ("scheduler.step_size=int:1-5", "scheduler.step_size", {"type": "int", "low": 1, "high": 5}),
        ("training.batch_size=discrete:16,32,64", "training.batch_size", {"type": "int", "values": [16, 32, 64]}),
        ("training.grad_clip_norm=float:0.5, 1.0, None", "training.grad_clip_norm", {"type": "float", "values": [0.5, 1.0, None]}),
        ("model.architecture=categorical:simple_cnn,resnet18", "model.architecture", {"type": "categorical", "choices": ["simple_cnn", "resnet18"]}),
        ("optimizer.nesterov=categorical:true,false", "optimizer.nesterov", {"type": "categorical", "choices": [True, False]}),
        ("scheduler.name=values:none,step", "scheduler.name", {"values": ["none", "step"]}),
        ("optimizer.lr=loguniform:1e-5-1e-1", "optimizer.lr", {"type": "loguniform", "low": 1e-5, "high": 0.1}),
        ("x=FLOAT:-1--0.5", "x", {"type": "float", "low": -1, "high": -0.5}),
        (" optimizer.lr = float:1E-4 - 2.5e-1", "optimizer.lr", {"type": "float", "low": 1e-4, "high": 0.25}),
    ],
)  # fmt: skip
def test_inline_params(text: str, name: str, spec: dict[str, Any]) -> None:
    assert parse_inline_param(text) == (name, spec)
    assert len(parse_search_space({name: spec})) == 1


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("optimizer.lr", "expected NAME=TYPE:SPEC"),
        ("optimizer.lr=0.1", "expected NAME=TYPE:SPEC"),
        ("=float:0-1", "expected NAME=TYPE:SPEC"),
        ("optimizer.lr=continous:0-1", "unknown type 'continous' (did you mean continuous?)"),
        ("optimizer.lr=float:0.1-abc", "cannot read range '0.1-abc'"),
        ("optimizer.lr=float:0.1-0.5:sometimes", "'sometimes' is neither `log` nor a step"),
        ("optimizer.lr=float:0.5-0.1", "low (0.5) must be less than high (0.1)"),
        ("optimizer.lr=loguniform:0-1", "log scale needs low > 0"),
        ("x=categorical:a,,b", "empty value in list"),
        ("x=categorical:a,a", "lists 'a' more than once"),
        ("x=categorical:[1, 2]", "cannot read value '[1'"),
        ("x=discrete:1,2.5", "type int needs integer"),
    ],
)
def test_invalid_inline_params(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_inline_param(text)
    assert fragment in str(info.value)
    assert f"--param '{text}'" in str(info.value)
    assert "optimizer.lr=continuous:0.0001-0.1:log" in str(info.value)  # the syntax is shown


def _cfg(**overrides: Any) -> Any:
    data: dict[str, Any] = {}
    for key, value in overrides.items():
        section, leaf = key.split("__")
        data.setdefault(section, {})[leaf] = value
    return from_container(data)


@pytest.mark.parametrize(
    "spec",
    [
        "{optimizer.lr: {type: loguniform, low: 1e-5, high: 1e-1}, training.batch_size: {values: [16, 32]}}",
        "{model.kwargs.drop_path_rate: {type: uniform, low: 0, high: 0.2}, model.architecture: {values: [mlp]}}",
        "{training.grad_clip_norm: {values: [null, 1.0]}, optimizer.name: {values: [sgd, adamw]}}",
        "{optimizer.lr: {type: int, low: 1, high: 2}}",  # ints are fine for a float key
    ],
)
def test_validate_accepts_settable_keys(spec: str) -> None:
    validate_search_space(parse_search_space(yaml.safe_load(spec)), _cfg())


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("{optimizer.lrr: {values: [0.1]}}", "unknown key 'optimizer.lrr' in search.search_space. Did you mean: optimizer.lr"),
        ("{optimizer: {values: [sgd]}}", "unknown key 'optimizer'"),
        ("{search.n_trials: {type: int, low: 1, high: 9}}", "search.* keys configure the search itself"),
        ("{training.batch_size: {values: [a]}}", "search.search_space.training.batch_size: invalid value 'a'"),
        ("{training.num_epochs: {type: float, low: 1, high: 5}}", "invalid value 1.0 for 'training.num_epochs'"),
        ("{optimizer.name: {values: [sgd, adamm]}}", "optimizer.name: 'adamm' is not one of sgd, adam"),
        ("{scheduler.name: {values: [cosine, linear]}}", "'linear' is not one of none, step"),
    ],
)  # fmt: skip
def test_validate_rejects(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_search_space(parse_search_space(yaml.safe_load(spec)), _cfg())
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("spec", "cfg", "fragments"),
    [
        # StepLR that never steps.
        ("{scheduler.step_size: {type: int, low: 10, high: 20}}", {"scheduler__name": "step", "training__num_epochs": 10},
         ["every value (10 and up) is >= training.num_epochs (10), so the StepLR step never fires"]),
        ("{scheduler.step_size: {type: int, low: 5, high: 15}}", {"scheduler__name": "step", "training__num_epochs": 10},
         ["values from 10 to 15 are >= training.num_epochs (10)"]),
        ("{scheduler.step_size: {type: int, low: 2, high: 8}}", {"scheduler__name": "step", "training__num_epochs": 10}, []),
        # num_epochs searched: its largest value counts.
        ("{scheduler.step_size: {type: int, low: 2, high: 8}, training.num_epochs: {values: [4, 20]}}",
         {"scheduler__name": "step"}, []),
        ("{scheduler.warmup_epochs: {type: int, low: 3, high: 6}}",
         {"scheduler__name": "warmup_cosine", "training__num_epochs": 3}, ["the warm-up never ends"]),
        # Parameters of components the run does not use.
        ("{optimizer.momentum: {type: uniform, low: 0.8, high: 0.99}}", {"optimizer__name": "adam"},
         ["optimizer.momentum is searched but the search runs with optimizer.name in [adam], which never uses it "
          "(used by: sgd, rmsprop)"]),
        ("{optimizer.momentum: {type: uniform, low: 0.8, high: 0.99}}", {"optimizer__name": "sgd"}, []),
        ("{optimizer.momentum: {type: uniform, low: 0.8, high: 0.99}, optimizer.name: {values: [adam, sgd]}}", {},
         ["optimizer.momentum only matters when optimizer.name is one of [sgd, rmsprop]",
          "add `condition: {parameter: optimizer.name, value: [sgd]}`"]),
        ("{optimizer.momentum: {type: uniform, low: 0.8, high: 0.99, "
         "condition: {parameter: optimizer.name, value: sgd}}, optimizer.name: {values: [adam, sgd]}}", {}, []),
        ("{optimizer.momentum: {type: uniform, low: 0.8, high: 0.99, "
         "condition: {parameter: optimizer.name, value: adam}}, optimizer.name: {values: [adam, sgd]}}", {},
         ["is conditioned on optimizer.name in [adam], which never uses it"]),
        ("{scheduler.gamma: {type: uniform, low: 0.1, high: 0.5}}", {"scheduler__name": "cosine"},
         ["scheduler.gamma is searched but the search runs with scheduler.name in [cosine]"]),
        ("{optimizer.lr: {type: loguniform, low: 1e-5, high: 1e-1}, scheduler.min_lr: {values: [0, 1e-6]}}",
         {"scheduler__name": "plateau"}, []),
        # StepLR searched only as one scheduler option: the step_size warning still applies.
        ("{scheduler.name: {values: [cosine, step]}, scheduler.step_size: {type: int, low: 12, high: 20, "
         "condition: {parameter: scheduler.name, value: step}}}", {"training__num_epochs": 10},
         ["StepLR step never fires"]),
    ],
)  # fmt: skip
def test_effect_warnings(spec: str, cfg: dict[str, Any], fragments: list[str]) -> None:
    warnings = effect_warnings(parse_search_space(yaml.safe_load(spec)), _cfg(**cfg))
    assert len(warnings) == (1 if fragments else 0), warnings
    for fragment in fragments:
        assert fragment in warnings[0]


def test_describe() -> None:
    space = parse_search_space(
        yaml.safe_load(
            """
            optimizer.lr: {type: loguniform, low: 1e-5, high: 1e-1}
            model.dropout: {type: uniform, low: 0.1, high: 0.5, step: 0.1}
            training.batch_size: {values: [16, 32, 64]}
            model.width: {type: int, low: 8, high: 64, log: true}
            model.depth: {type: int, low: 1, high: 5}
            optimizer.name: {type: categorical, choices: [adam, sgd]}
            optimizer.momentum: {type: uniform, low: 0.8, high: 0.99,
                                 condition: {parameter: optimizer.name, value: sgd}}
            """
        )
    )
    assert describe(space) == [
        ("optimizer.lr", "loguniform [1e-05, 0.1]"),
        ("model.dropout", "uniform [0.1, 0.5] step 0.1"),
        ("training.batch_size", "categorical [16, 32, 64]"),
        ("model.width", "int [8, 64] log"),
        ("model.depth", "int [1, 5]"),
        ("optimizer.name", "categorical [adam, sgd]"),
        ("optimizer.momentum", "uniform [0.8, 0.99], when optimizer.name in [sgd]"),
    ]
