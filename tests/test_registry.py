"""Sampler and pruner tables: names, construction from specs, real studies, warnings."""

# One table row per line reads best:
# ruff: noqa: E501

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

import optuna
import pytest
import yaml

from ml_framework.errors import ConfigError
from ml_framework.search import registry
from ml_framework.search.registry import (
    PRUNER_NAMES,
    SAMPLER_NAMES,
    create_pruner,
    create_sampler,
    pruner_warnings,
    resolve_pruner_name,
    resolve_sampler_name,
)
from ml_framework.search.space import SearchSpace, parse_search_space, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

FINITE = parse_search_space(
    yaml.safe_load(
        """
        optimizer.lr: {values: [0.1, 0.01]}
        training.batch_size: {type: int, low: 16, high: 32, step: 16}
        model.dropout: {type: float, low: 0.0, high: 0.2, step: 0.1}
        """
    )
)
CONTINUOUS = parse_search_space(
    {
        "optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
        "model.width": {"type": "int", "low": 8, "high": 64},
    }
)


def run_study(
    sampler: optuna.samplers.BaseSampler, space: SearchSpace, tmp_path, n_trials: int | None = 4, **kw: Any
) -> optuna.Study:
    """A real study on SQLite whose objective is a function of the suggested params."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'reg.db'}", sampler=sampler, **kw)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        return sum(float(v) for v in params.values())

    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.parametrize(
    ("name", "expected"),
    [("tpe", "TPESampler"), ("TPE", "TPESampler"), ("optuna", "TPESampler"), ("random", "RandomSampler"),
     ("grid", "GridSampler"), ("cmaes", "CmaEsSampler"), ("qmc", "QMCSampler"), ("gp", "GPSampler"),
     ("Bayesian", "GPSampler"), ("nsga2", "NSGAIISampler"), ("nsga3", "NSGAIIISampler"),
     ("bruteforce", "BruteForceSampler"), ("brute-force", "BruteForceSampler"), ("tpesampler", "TPESampler"),
     ("GridSampler", "GridSampler")],
)  # fmt: skip
def test_resolve_sampler_name(name: str, expected: str) -> None:
    assert resolve_sampler_name(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("median", "MedianPruner"), ("percentile", "PercentilePruner"), ("sha", "SuccessiveHalvingPruner"),
     ("successive_halving", "SuccessiveHalvingPruner"), ("successive-halving", "SuccessiveHalvingPruner"),
     ("asha", "SuccessiveHalvingPruner"), ("Hyperband", "HyperbandPruner"), ("threshold", "ThresholdPruner"),
     ("patient", "PatientPruner"), ("wilcoxon", "WilcoxonPruner"), ("none", "NopPruner"), ("NOP", "NopPruner"),
     ("MedianPruner", "MedianPruner")],
)  # fmt: skip
def test_resolve_pruner_name(name: str, expected: str) -> None:
    assert resolve_pruner_name(name) == expected


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown sampler 'tpee'. Did you mean tpe\? Valid: tpe, .*TPESampler"
    ):
        resolve_sampler_name("tpee")
    with pytest.raises(ConfigError, match=r"unknown pruner 'medain'. Did you mean median\?.*NopPruner"):
        resolve_pruner_name("medain")


def test_tables_hold_the_optuna_classes() -> None:
    assert set(registry.SAMPLERS) == set(SAMPLER_NAMES)
    assert set(registry.PRUNERS) == set(PRUNER_NAMES)
    for name, cls in registry.SAMPLERS.items():
        assert cls is getattr(optuna.samplers, name) and issubclass(cls, optuna.samplers.BaseSampler)
    for name, cls in registry.PRUNERS.items():
        assert cls is getattr(optuna.pruners, name) and issubclass(cls, optuna.pruners.BasePruner)
    with pytest.raises(AttributeError):
        registry.NOT_A_TABLE  # noqa: B018


def test_importing_the_modules_does_not_import_optuna() -> None:
    code = (
        "import sys, ml_framework.search.registry, ml_framework.search.space; print('optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


SAMPLER_SPECS = [
    {"type": "TPESampler", "n_startup_trials": 2},
    {"type": "random"},
    {"type": "grid"},
    {"type": "qmc", "qmc_type": "halton"},
    {"type": "gp", "n_startup_trials": 3},
    {"type": "nsga2", "population_size": 4, "crossover": "SBXCrossover"},
    {"type": "nsga3", "population_size": 4, "crossover": {"type": "BLXAlphaCrossover", "alpha": 0.3}},
    {"type": "bruteforce"},
]
if importlib.util.find_spec("cmaes") is not None:
    SAMPLER_SPECS.append({"type": "cmaes", "n_startup_trials": 1})


@pytest.mark.parametrize("spec", SAMPLER_SPECS, ids=lambda s: s["type"])
def test_every_sampler_runs_a_real_study(spec: dict[str, Any], tmp_path) -> None:
    sampler = create_sampler(spec, FINITE, seed=0)
    assert type(sampler).__name__ == resolve_sampler_name(spec["type"])
    study = run_study(sampler, FINITE, tmp_path, n_trials=4)
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_grid_sampler_enumerates_the_grid(tmp_path) -> None:
    study = run_study(
        create_sampler({"type": "GridSampler"}, FINITE, seed=1), FINITE, tmp_path, n_trials=None
    )
    combos = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(study.trials) == len(combos) == 2 * 2 * 3


@pytest.mark.parametrize(
    ("spec", "space", "fragment"),
    [
        ({"type": "TPESampler", "n_startup_trial": 3}, FINITE,
         "search.sampler: TPESampler has no parameter 'n_startup_trial'. Did you mean n_startup_trials? Parameters: consider_prior"),
        ({"type": "RandomSampler", "sed": 3}, FINITE, "RandomSampler has no parameter 'sed'. Did you mean seed? Parameters: seed"),
        ({"type": "GridSampler"}, CONTINUOUS, "search.search_space.optimizer.lr: GridSampler needs a finite set of values"),
        ({"type": "GridSampler", "search_space": {"a": [1]}}, FINITE, "GridSampler takes its grid from search.search_space"),
        ({"type": "BruteForceSampler"}, CONTINUOUS, "BruteForceSampler needs a finite set of values"),
        ({"type": "TPESampler", "gamma": 0.1}, FINITE, "search.sampler.gamma: TPESampler expects a Python function"),
        ({"type": "NSGAIISampler", "population_size": 1}, FINITE, "cannot create NSGAIISampler"),
        ({"type": "QMCSampler", "qmc_type": "nope"}, FINITE, "cannot create QMCSampler"),
        ({"type": "NSGAIISampler", "crossover": "Nope"}, FINITE, "search.sampler.crossover.type: expected one of BLXAlphaCrossover"),
        ({"type": "GPSampler", "independent_sampler": {"type": "random", "sed": 1}}, FINITE,
         "search.sampler.independent_sampler: RandomSampler has no parameter 'sed'"),
        ({"n_startup_trials": 3}, FINITE, "search.sampler: missing `type`"),
        ({"type": "tpee"}, FINITE, "search.sampler.type: unknown sampler 'tpee'"),
        ([1, 2], FINITE, "expected a mapping like {type: ..."),
    ],
)  # fmt: skip
def test_sampler_errors(spec: Any, space: SearchSpace, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_sampler(spec, space)
    assert fragment in str(info.value)


def test_missing_optional_package_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setitem(registry.SAMPLER_REQUIRES, "RandomSampler", ("surely_not_installed_pkg",))
    with pytest.raises(
        ConfigError, match=r"RandomSampler needs the package.*pip install surely_not_installed_pkg"
    ):
        create_sampler({"type": "random"}, FINITE)


def _first_params(sampler: optuna.samplers.BaseSampler, tmp_path, name: str) -> list[dict[str, Any]]:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / name}", sampler=sampler)
    study.optimize(lambda t: sum(suggest(t, CONTINUOUS).values()), n_trials=3)
    return [t.params for t in study.trials]


def test_seed_fills_the_spec_unless_it_sets_one(tmp_path) -> None:
    a = _first_params(create_sampler({"type": "random"}, CONTINUOUS, seed=7), tmp_path, "a.db")
    b = _first_params(create_sampler({"type": "random"}, CONTINUOUS, seed=7), tmp_path, "b.db")
    c = _first_params(create_sampler({"type": "random", "seed": 8}, CONTINUOUS, seed=7), tmp_path, "c.db")
    d = _first_params(create_sampler({"type": "random", "seed": 8}, CONTINUOUS), tmp_path, "d.db")
    assert a == b
    assert c == d != a


@pytest.mark.parametrize(
    ("spec", "n_workers", "expected"),
    [
        ({"type": "tpe"}, 4, True),
        ({"type": "tpe", "constant_liar": False}, 4, False),
        ({"type": "tpe", "constant_liar": False}, 1, False),
    ],
)
def test_tpe_constant_liar_with_parallel_workers(
    spec: dict[str, Any], n_workers: int, expected: bool
) -> None:
    sampler = create_sampler(spec, FINITE, n_workers=n_workers)
    assert sampler._constant_liar is expected  # type: ignore[attr-defined]


def test_sampler_spec_may_be_a_name_or_omegaconf() -> None:
    from omegaconf import OmegaConf

    assert isinstance(create_sampler("random", FINITE), optuna.samplers.RandomSampler)
    spec = OmegaConf.create({"type": "GPSampler", "independent_sampler": {"type": "RandomSampler"}})
    sampler = create_sampler(spec, FINITE)
    assert isinstance(sampler._independent_sampler, optuna.samplers.RandomSampler)  # type: ignore[attr-defined]
    spec = OmegaConf.create({"type": "NSGAIIISampler", "reference_points": [[1.0, 0.0], [0.0, 1.0]]})
    strategy = create_sampler(spec, FINITE)._elite_population_selection_strategy  # type: ignore[attr-defined]
    assert strategy._reference_points.shape == (2, 2)


@pytest.mark.parametrize(
    ("spec", "cls"),
    [
        ({"type": "MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 5}, optuna.pruners.MedianPruner),
        ({"type": "percentile", "percentile": 25.0}, optuna.pruners.PercentilePruner),
        ({"type": "sha", "min_resource": 1, "reduction_factor": 3}, optuna.pruners.SuccessiveHalvingPruner),
        ({"type": "hyperband", "max_resource": "auto"}, optuna.pruners.HyperbandPruner),
        ({"type": "threshold", "lower": 0.1}, optuna.pruners.ThresholdPruner),
        (
            {"type": "patient", "patience": 2, "wrapped_pruner": {"type": "median", "n_warmup_steps": 1}},
            optuna.pruners.PatientPruner,
        ),
        ({"type": "patient", "patience": 2, "wrapped_pruner": None}, optuna.pruners.PatientPruner),
        ({"type": "wilcoxon", "p_threshold": 0.05}, optuna.pruners.WilcoxonPruner),
        ({"type": "none"}, optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
    ],
)
def test_create_pruner(spec: Any, cls: type) -> None:
    assert type(create_pruner(spec)) is cls


def test_patient_pruner_wraps_the_nested_pruner() -> None:
    pruner = create_pruner(
        {"type": "PatientPruner", "patience": 3, "wrapped_pruner": {"type": "percentile", "percentile": 10.0}}
    )
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.PercentilePruner)  # type: ignore[attr-defined]


def test_median_pruner_prunes_in_a_real_study(tmp_path) -> None:
    """Steps are 1-based epochs; a trial far below the median is pruned after the warm-up."""
    pruner = create_pruner({"type": "median", "n_startup_trials": 2, "n_warmup_steps": 2})
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize", pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        quality = 1.0 if trial.number < 3 else 0.0
        for epoch in range(1, 6):
            trial.report(quality * epoch, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return quality

    study.optimize(objective, n_trials=5)
    states = [t.state for t in study.trials]
    assert states[3:] == [optuna.trial.TrialState.PRUNED] * 2
    assert max(study.trials[3].intermediate_values) == 2  # pruned at step == n_warmup_steps


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "median", "n_warmup_steps": 1, "n_startup_trials": 0, "interval_step": 1}, "MedianPruner has no parameter 'interval_step'. Did you mean interval_steps?"),
        ({"type": "percentile"}, "search.pruner: PercentilePruner needs `percentile`"),
        ({"type": "patient", "wrapped_pruner": {"type": "median"}}, "PatientPruner needs `patience`"),
        ({"type": "patient", "patience": 1, "wrapped_pruner": {"type": "mediun"}}, "search.pruner.wrapped_pruner.type: unknown pruner 'mediun'"),
        ({"type": "median", "n_warmup_steps": -1}, "cannot create MedianPruner"),
        ({"type": "NopPruner", "n_warmup_steps": 1}, "NopPruner has no parameter 'n_warmup_steps'. Parameters: none"),
    ],
)  # fmt: skip
def test_pruner_errors(spec: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_pruner(spec)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("spec", "epochs", "fragments"),
    [
        ({"type": "median", "n_warmup_steps": 5}, 10, []),
        ({"type": "median", "n_warmup_steps": 10}, 10, ["MedianPruner n_warmup_steps=10 but runs report steps 1..10", "use n_warmup_steps < 10"]),
        ({"type": "percentile", "percentile": 25.0, "n_warmup_steps": 12}, 10, ["PercentilePruner n_warmup_steps=12"]),
        ({"type": "median"}, 1, []),  # the default warm-up of 0 is fine even for one epoch
        ({"type": "sha", "min_resource": 10}, 10, ["SuccessiveHalvingPruner min_resource=10"]),
        ({"type": "sha"}, 10, []),  # 'auto'
        ({"type": "hyperband", "min_resource": 3, "max_resource": 10}, 10, []),
        ({"type": "hyperband", "min_resource": 20}, 10, ["HyperbandPruner min_resource=20"]),
        ({"type": "hyperband", "max_resource": 100}, 10, ["max_resource=100 is more than training.num_epochs (10)", "use 'auto' or 10"]),
        ({"type": "threshold", "lower": 0.5, "n_warmup_steps": 3}, 3, ["ThresholdPruner n_warmup_steps=3"]),
        ({"type": "wilcoxon"}, 2, ["WilcoxonPruner n_startup_steps=2"]),
        ({"type": "patient", "patience": 2, "wrapped_pruner": {"type": "median", "n_warmup_steps": 8}}, 5,
         ["search.pruner.wrapped_pruner: MedianPruner n_warmup_steps=8"]),
        ({"type": "patient", "patience": 5, "wrapped_pruner": None}, 5, ["PatientPruner patience=5"]),
        ({"type": "nop"}, 1, []),
        ("none", 1, []),
    ],
)  # fmt: skip
def test_pruner_warnings(spec: Any, epochs: int, fragments: list[str]) -> None:
    found = pruner_warnings(spec, epochs)
    assert len(found) == (1 if fragments else 0), found
    for fragment in fragments:
        assert fragment in found[0]
