"""Sampler and pruner tables: `search.sampler` / `search.pruner` mappings -> Optuna objects.

A spec is `{type: <class name or alias>, **constructor kwargs}`. The names are plain data so CLIs can
resolve `--sampler`/`--pruner` without importing Optuna; `SAMPLERS`/`PRUNERS` (name -> class) import it
on first access.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from ml_framework.errors import ConfigError, closest
from ml_framework.search.space import SearchSpace, finite_values, grid_points, to_plain

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler

SAMPLER_NAMES: tuple[str, ...] = (
    "TPESampler",
    "RandomSampler",
    "GridSampler",
    "CmaEsSampler",
    "QMCSampler",
    "GPSampler",
    "NSGAIISampler",
    "NSGAIIISampler",
    "BruteForceSampler",
)
SAMPLER_ALIASES: dict[str, str] = {
    "tpe": "TPESampler",
    "optuna": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "cma_es": "CmaEsSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "bayesian": "GPSampler",
    "nsga2": "NSGAIISampler",
    "nsgaii": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "nsgaiii": "NSGAIIISampler",
    "bruteforce": "BruteForceSampler",
    "brute_force": "BruteForceSampler",
}
PRUNER_NAMES: tuple[str, ...] = (
    "MedianPruner",
    "PercentilePruner",
    "SuccessiveHalvingPruner",
    "HyperbandPruner",
    "ThresholdPruner",
    "PatientPruner",
    "WilcoxonPruner",
    "NopPruner",
)
PRUNER_ALIASES: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "sha": "SuccessiveHalvingPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "asha": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "patient": "PatientPruner",
    "wilcoxon": "WilcoxonPruner",
    "none": "NopPruner",
    "nop": "NopPruner",
}
# Optional packages a sampler needs at sampling time; checked up front for a clear message.
SAMPLER_REQUIRES: dict[str, tuple[str, ...]] = {
    "CmaEsSampler": ("cmaes",),
    "GPSampler": ("scipy", "torch"),
    "QMCSampler": ("scipy",),
}


@cache
def _classes(module: str, names: tuple[str, ...]) -> dict[str, type]:
    mod = importlib.import_module(module)
    return {name: getattr(mod, name) for name in names}


def __getattr__(name: str) -> Any:
    """`SAMPLERS` and `PRUNERS` (name -> class) are built on first use: Optuna is slow to import."""
    if name == "SAMPLERS":
        return _classes("optuna.samplers", SAMPLER_NAMES)
    if name == "PRUNERS":
        return _classes("optuna.pruners", PRUNER_NAMES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve(name: str, names: tuple[str, ...], aliases: Mapping[str, str], what: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    by_lower = {n.lower(): n for n in names}
    if key in by_lower:
        return by_lower[key]
    if key in aliases:
        return aliases[key]
    valid = [*aliases, *names]
    near = closest(str(name), valid)
    hint = f" Did you mean {near[0]}?" if near else ""
    raise ConfigError(f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}")


def resolve_sampler_name(name: str) -> str:
    """`tpe`, `Bayesian`, `TPESampler` -> the Optuna class name."""
    return _resolve(name, SAMPLER_NAMES, SAMPLER_ALIASES, "sampler")


def resolve_pruner_name(name: str) -> str:
    """`median`, `sha`, `none`, `MedianPruner` -> the Optuna class name."""
    return _resolve(name, PRUNER_NAMES, PRUNER_ALIASES, "pruner")


def _split(spec: Any, where: str, resolve: Callable[[str], str]) -> tuple[str, dict[str, Any]]:
    """A spec (mapping with `type`, or a bare name) -> (class name, kwargs)."""
    spec = to_plain(spec)
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {{type: ..., <constructor arguments>}}")
    if "type" not in spec:
        raise ConfigError(f"{where}: missing `type`")
    kwargs = {str(k): v for k, v in spec.items() if k != "type"}
    try:
        return resolve(spec["type"]), kwargs
    except ConfigError as e:
        raise ConfigError(f"{where}.type: {e}") from e


def _nsgaii_operator(kind: str) -> Callable[[Any, str], Any]:
    """`crossover: SBXCrossover` or `{type: BLXAlphaCrossover, alpha: 0.3}` -> the operator object."""

    def build(value: Any, where: str) -> Any:
        import optuna.samplers.nsgaii as nsgaii

        valid = [n for n in dir(nsgaii) if n.endswith(kind) and not n.startswith("Base")]

        def resolve(name: str) -> str:
            if name not in valid:
                raise ConfigError(f"expected one of {', '.join(valid)}, got {name!r}")
            return name

        name, kwargs = _split(value, where, resolve)
        return _construct(getattr(nsgaii, name), kwargs, where)

    return build


def _array(value: Any, where: str) -> Any:
    import numpy as np

    return np.asarray(to_plain(value), dtype=float)


# Constructor arguments that must be Optuna objects, built from their YAML form.
_OBJECT_ARGS: dict[str, Callable[[Any, str], Any]] = {
    "independent_sampler": lambda v, where: create_sampler(v, SearchSpace(()), where=where),
    "wrapped_pruner": lambda v, where: None if v is None else create_pruner(v, where=where),
    "crossover": _nsgaii_operator("Crossover"),
    "mutation": _nsgaii_operator("Mutation"),
    "reference_points": _array,
}


def _construct(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    """cls(**kwargs) with every argument checked against the constructor's signature."""
    params = inspect.signature(cls).parameters
    listing = ", ".join(params) or "none"
    for key in kwargs:
        if key not in params:
            near = closest(key, params)
            hint = f" Did you mean {near[0]}?" if near else ""
            raise ConfigError(
                f"{where}: {cls.__name__} has no parameter '{key}'.{hint} Parameters: {listing}"
            )
        if "Callable" in str(params[key].annotation) and key not in _OBJECT_ARGS:
            raise ConfigError(f"{where}.{key}: {cls.__name__} expects a Python function here; not settable")
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and n not in kwargs
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if missing:
        raise ConfigError(f"{where}: {cls.__name__} needs {', '.join(f'`{m}`' for m in missing)}")
    built = {
        k: _OBJECT_ARGS[k](v, f"{where}.{k}") if k in _OBJECT_ARGS else to_plain(v) for k, v in kwargs.items()
    }
    try:
        return cls(**built)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: cannot create {cls.__name__} with {kwargs}: {e}") from e


def _check_installed(name: str, where: str) -> None:
    missing = [m for m in SAMPLER_REQUIRES.get(name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"{where}: {name} needs the package(s) {', '.join(missing)}: pip install {' '.join(missing)}"
        )


def create_sampler(
    spec: Mapping[str, Any] | str,
    space: SearchSpace,
    *,
    seed: int | None = None,
    n_workers: int = 1,
    where: str = "search.sampler",
) -> BaseSampler:
    """Build the sampler of `search.sampler`; `seed` fills `seed` when the spec sets none."""
    name, kwargs = _split(spec, where, resolve_sampler_name)
    cls = _classes("optuna.samplers", SAMPLER_NAMES)[name]
    _check_installed(name, where)
    if name == "GridSampler":
        if "search_space" in kwargs:
            raise ConfigError(
                f"{where}: GridSampler takes its grid from search.search_space, not search_space"
            )
        kwargs["search_space"] = grid_points(space)
    if name == "BruteForceSampler":
        finite_values(space, name)  # conditional parameters are fine, continuous ranges are not
    if seed is not None and "seed" not in kwargs and "seed" in inspect.signature(cls).parameters:
        kwargs["seed"] = seed
    if name == "TPESampler" and n_workers > 1:
        kwargs.setdefault("constant_liar", True)  # parallel workers should not all pick the same point
    return _construct(cls, kwargs, where)


def switch_type(spec: Mapping[str, Any] | str, new_type: str, kind: str) -> tuple[dict[str, Any], list[str]]:
    """`--sampler`/`--pruner` over the config's `search.<kind>` spec: the new type keeps the spec's
    arguments its constructor takes (seed, n_startup_trials, ...). Returns the new spec and the
    names of the arguments it cannot take."""
    resolve, names, module = {
        "sampler": (resolve_sampler_name, SAMPLER_NAMES, "optuna.samplers"),
        "pruner": (resolve_pruner_name, PRUNER_NAMES, "optuna.pruners"),
    }[kind]
    _, kwargs = _split(spec, f"search.{kind}", resolve)
    name = resolve(new_type)
    params = inspect.signature(_classes(module, names)[name]).parameters
    kept = {k: v for k, v in kwargs.items() if k in params}
    return {"type": name, **kept}, sorted(set(kwargs) - set(kept))


def create_pruner(spec: Mapping[str, Any] | str, *, where: str = "search.pruner") -> BasePruner:
    """Build the pruner of `search.pruner`; PatientPruner's `wrapped_pruner` is itself a spec."""
    name, kwargs = _split(spec, where, resolve_pruner_name)
    return _construct(_classes("optuna.pruners", PRUNER_NAMES)[name], kwargs, where)


# pruner -> (argument, default, what it delays) for pruners that cannot prune before that step.
_WARMUP_ARGS: dict[str, tuple[str, int | str, str]] = {
    "MedianPruner": ("n_warmup_steps", 0, "pruning starts"),
    "PercentilePruner": ("n_warmup_steps", 0, "pruning starts"),
    "ThresholdPruner": ("n_warmup_steps", 0, "pruning starts"),
    "SuccessiveHalvingPruner": ("min_resource", "auto", "the first rung is reached"),
    "HyperbandPruner": ("min_resource", 1, "the first rung is reached"),
    "PatientPruner": ("patience", 0, "a trial can run out of patience"),
    "WilcoxonPruner": ("n_startup_steps", 2, "pruning starts"),
}


def pruner_warnings(
    spec: Mapping[str, Any] | str, num_epochs: int, *, where: str = "search.pruner"
) -> list[str]:
    """Pruner settings that cannot work within `num_epochs` (steps are epochs 1..num_epochs)."""
    name, kwargs = _split(spec, where, resolve_pruner_name)
    warnings: list[str] = []
    if name in _WARMUP_ARGS:
        arg, default, what = _WARMUP_ARGS[name]
        value = kwargs.get(arg, default)
        if isinstance(value, int) and not isinstance(value, bool) and value >= num_epochs:
            warnings.append(
                f"{where}: {name} {arg}={value} but runs report steps 1..{num_epochs} (training.num_epochs), "
                f"so {what} at the last epoch (never pruned) or later: no pruning; use {arg} < {num_epochs}"
            )
    max_resource = kwargs.get("max_resource")
    if name == "HyperbandPruner" and isinstance(max_resource, int) and max_resource > num_epochs:
        warnings.append(
            f"{where}: HyperbandPruner max_resource={max_resource} is more than training.num_epochs "
            f"({num_epochs}), so its brackets are sized for steps no trial reaches; "
            f"use 'auto' or {num_epochs}"
        )
    if name == "PatientPruner" and kwargs.get("wrapped_pruner") is not None:
        warnings.extend(
            pruner_warnings(kwargs["wrapped_pruner"], num_epochs, where=f"{where}.wrapped_pruner")
        )
    return warnings
