"""Search spaces: the `search.search_space` YAML mapping -> ordered `optuna.distributions`.

Parameters are named by the dotted config key they set (`optimizer.lr`). Everything here is pure
(no study, no storage); Optuna is imported inside functions so CLIs that import this module stay fast.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from ml_framework.errors import ConfigError, closest, unknown_key_message

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

WHERE = "search.search_space"

# type -> (distribution family, keys allowed besides `type` and `condition`).
# `continuous`/`discrete` are the names used by `--param` and accepted in YAML too.
_RANGE_KEYS = frozenset({"low", "high", "step", "log"})
SPEC_TYPES: dict[str, tuple[str, frozenset[str]]] = {
    "categorical": ("categorical", frozenset({"choices"})),
    "uniform": ("float", _RANGE_KEYS),
    "float": ("float", _RANGE_KEYS),
    "continuous": ("float", _RANGE_KEYS),
    "loguniform": ("loguniform", frozenset({"low", "high"})),
    "int": ("int", _RANGE_KEYS),
    "discrete": ("int", _RANGE_KEYS),
}
# Types that may be given with an explicit `values:` list instead of a range.
_VALUES_TYPES = ("categorical", "int", "discrete", "float", "uniform", "continuous")
_COMMON_KEYS = frozenset({"type", "condition", "values"})
_CONDITION_KEYS = ("parameter", "value", "values")

OPTIMIZER_PARAMS: dict[str, set[str]] = {
    "sgd": {"momentum", "nesterov", "weight_decay", "lr"},
    "adam": {"betas", "weight_decay", "lr"},
    "adamw": {"betas", "weight_decay", "lr"},
    "rmsprop": {"momentum", "weight_decay", "lr"},
}
SCHEDULER_PARAMS: dict[str, set[str]] = {
    "step": {"step_size", "gamma"},
    "cosine": {"min_lr"},
    "warmup_cosine": {"warmup_epochs", "min_lr"},
    "plateau": {"gamma", "patience", "min_lr"},
    "none": set(),
}
# section -> (the key that picks the component, which component uses which keys)
_COMPONENT_PARAMS: dict[str, tuple[str, dict[str, set[str]]]] = {
    "optimizer": ("optimizer.name", OPTIMIZER_PARAMS),
    "scheduler": ("scheduler.name", SCHEDULER_PARAMS),
}


@dataclass(frozen=True)
class Condition:
    """Sample the parameter only when `parameter` was sampled with one of `values`."""

    parameter: str
    values: tuple[Any, ...]

    def holds(self, sampled: Mapping[str, Any]) -> bool:
        return self.parameter in sampled and sampled[self.parameter] in self.values

    def describe(self) -> str:
        return f"when {self.parameter} in [{', '.join(map(str, self.values))}]"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    distribution: BaseDistribution
    condition: Condition | None = None


@dataclass(frozen=True)
class SearchSpace:
    """Parameters in sampling order: every parent before the parameters conditioned on it."""

    params: tuple[ParamSpec, ...]

    def __iter__(self) -> Iterator[ParamSpec]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.params)

    def __getitem__(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]


# ---------------------------------------------------------------------------------------------
# Parsing


def to_plain(data: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (a composed config hands us DictConfig)."""
    if isinstance(data, DictConfig | ListConfig):
        return OmegaConf.to_container(data, resolve=True)
    return data


def _number(where: str, key: str, value: Any, integer: bool) -> int | float:
    """A bound or step: a number, or a numeric string (PyYAML reads `1e-5` as a str)."""
    num: int | float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        num = value
    elif isinstance(value, str):
        for convert in (int, float):
            try:
                num = convert(value.strip())
                break
            except ValueError:
                pass
    if num is None or (isinstance(num, float) and not math.isfinite(num)):
        raise ConfigError(f"{where}: `{key}` must be a number, got {value!r}")
    if integer:
        if isinstance(num, float) and not num.is_integer():
            raise ConfigError(f"{where}: type int needs integer `{key}`, got {value!r} (use type float)")
        return int(num)
    return float(num)


def _bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: `{key}` must be true or false, got {value!r}")
    return value


def _scalars(where: str, key: str, items: Any) -> tuple[Any, ...]:
    """A non-empty list of distinct scalars, as Optuna can store them."""
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{where}: `{key}` must be a list like [a, b, c], got {items!r}")
    if not items:
        raise ConfigError(f"{where}: `{key}` is empty; give at least one value")
    for item in items:
        if item is not None and not isinstance(item, bool | int | float | str):
            raise ConfigError(
                f"{where}: `{key}` holds {item!r}; values must be scalars (null, bool, int, float, str)"
            )
    seen: list[Any] = []
    for item in items:
        # `1` and `True` compare equal in Python but are different settings.
        if any(item == s and type(item) is type(s) for s in seen):
            raise ConfigError(f"{where}: `{key}` lists {item!r} more than once")
        seen.append(item)
    return tuple(items)


def _range(where: str, spec: Mapping[str, Any], integer: bool) -> tuple[Any, Any, Any, bool]:
    """low, high, step (or None), log, with the checks common to float and int."""
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{where}: missing `{key}`")
    low = _number(where, "low", spec["low"], integer)
    high = _number(where, "high", spec["high"], integer)
    step = _number(where, "step", spec["step"], integer) if spec.get("step") is not None else None
    log = _bool(where, "log", spec.get("log", False))
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be less than high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got low={low}")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{where}: step must be positive, got {step}")
        if step > high - low:
            raise ConfigError(f"{where}: step ({step}) is larger than the range [{low}, {high}]")
        n = (high - low) / step
        if abs(n - round(n)) > 1e-9 * max(1.0, n):
            fit = float(f"{low + math.floor(n + 1e-9) * step:.12g}")
            raise ConfigError(
                f"{where}: the range [{low}, {high}] is not a whole number of steps of {step}; "
                f"use high: {int(fit) if integer else fit}"
            )
        if log and (not integer or step != 1):
            raise ConfigError(f"{where}: `step` and `log` cannot be combined; drop one")
    return low, high, step, log


def _float_dist(where: str, spec: Mapping[str, Any]) -> BaseDistribution:
    from optuna.distributions import FloatDistribution

    low, high, step, log = _range(where, spec, integer=False)
    return FloatDistribution(low, high, log=log, step=step)


def _loguniform_dist(where: str, spec: Mapping[str, Any]) -> BaseDistribution:
    return _float_dist(where, {**spec, "log": True})


def _int_dist(where: str, spec: Mapping[str, Any]) -> BaseDistribution:
    from optuna.distributions import IntDistribution

    low, high, step, log = _range(where, spec, integer=True)
    return IntDistribution(int(low), int(high), log=log, step=int(step or 1))


def _categorical_dist(where: str, spec: Mapping[str, Any]) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution

    if "choices" not in spec:
        raise ConfigError(f"{where}: type categorical needs `choices: [a, b, ...]`")
    return CategoricalDistribution(_scalars(where, "choices", spec["choices"]))


_BUILDERS: dict[str, Callable[[str, Mapping[str, Any]], BaseDistribution]] = {
    "categorical": _categorical_dist,
    "float": _float_dist,
    "loguniform": _loguniform_dist,
    "int": _int_dist,
}


def _values_dist(where: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """An explicit `values:` list: a categorical over exactly these values (grid-friendly)."""
    from optuna.distributions import CategoricalDistribution

    values = _scalars(where, "values", spec["values"])
    family = SPEC_TYPES[spec["type"]][0] if "type" in spec else "categorical"
    if family in ("int", "float"):
        for v in values:
            if v is not None:  # null is fine for optional keys (`training.grad_clip_norm`)
                _number(where, "values", v, integer=family == "int")
    return CategoricalDistribution(values)


def _check_type(where: str, spec: Mapping[str, Any]) -> None:
    if "type" in spec:
        kind = spec["type"]
        if not isinstance(kind, str) or kind not in SPEC_TYPES:
            near = closest(str(kind), SPEC_TYPES)
            hint = f" Did you mean {near[0]}?" if near else ""
            raise ConfigError(
                f"{where}: unknown type {kind!r}.{hint} Valid types: {', '.join(SPEC_TYPES)} "
                "(or give `values: [...]`)"
            )
        if "values" in spec and kind not in _VALUES_TYPES:
            raise ConfigError(f"{where}: `values` cannot be combined with type {kind}")
    elif "values" not in spec:
        raise ConfigError(f"{where}: missing `type` (one of {', '.join(SPEC_TYPES)}) or `values: [...]`")


def _parse_condition(where: str, raw: Any) -> Condition:
    raw = to_plain(raw)
    if not isinstance(raw, Mapping) or "parameter" not in raw:
        raise ConfigError(f"{where}: `condition` must look like {{parameter: optimizer.name, value: sgd}}")
    for key in raw:
        if key not in _CONDITION_KEYS:
            raise ConfigError(unknown_key_message(str(key), _CONDITION_KEYS, f"{where}.condition"))
    if ("value" in raw) == ("values" in raw):
        raise ConfigError(f"{where}.condition: give exactly one of `value` or `values`")
    value = raw.get("value", raw.get("values"))
    values = value if isinstance(value, list | tuple) else [value]
    return Condition(str(raw["parameter"]), _scalars(f"{where}.condition", "value", values))


def _parse_param(name: str, spec: Any, here: str) -> ParamSpec:
    spec = to_plain(spec)
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{here}: expected a mapping such as {{type: loguniform, low: 1e-5, high: 1e-1}} "
            f"or {{values: [16, 32]}}, got {spec!r}"
        )
    _check_type(here, spec)
    family = SPEC_TYPES[spec["type"]][0] if "type" in spec else "categorical"
    allowed = _COMMON_KEYS | (frozenset() if "values" in spec else SPEC_TYPES[spec["type"]][1])
    if "values" in spec and "choices" in spec:
        raise ConfigError(f"{here}: give `choices` or `values`, not both")
    for key in spec:
        if key not in allowed:
            raise ConfigError(unknown_key_message(str(key), sorted(allowed), here))
    builder = _values_dist if "values" in spec else _BUILDERS[family]
    condition = _parse_condition(here, spec["condition"]) if spec.get("condition") is not None else None
    return ParamSpec(name, builder(here, spec), condition)


def _order(params: dict[str, ParamSpec], where: str) -> list[ParamSpec]:
    """Parents before children, otherwise in the order written; reject cycles."""
    ordered: list[ParamSpec] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            loop = " -> ".join([*chain[chain.index(name) :], name])
            raise ConfigError(f"{where}: conditions form a cycle: {loop}")
        state[name] = "visiting"
        cond = params[name].condition
        if cond is not None:
            visit(cond.parameter, [*chain, name])
        state[name] = "done"
        ordered.append(params[name])

    for name in params:
        visit(name, [])
    return ordered


def _check_parents(params: dict[str, ParamSpec], where: str) -> None:
    from optuna.distributions import CategoricalDistribution

    for p in params.values():
        if p.condition is None:
            continue
        here = f"{where}.{p.name}.condition"
        parent = params.get(p.condition.parameter)
        if parent is None:
            raise ConfigError(
                f"{here}: parameter '{p.condition.parameter}' is not in the search space; "
                f"conditions refer to searched categorical parameters ({', '.join(params)})"
            )
        if not isinstance(parent.distribution, CategoricalDistribution):
            raise ConfigError(f"{here}: parent '{parent.name}' must be categorical to condition on it")
        choices = parent.distribution.choices
        for v in p.condition.values:
            if not any(v == c and type(v) is type(c) for c in choices):
                raise ConfigError(
                    f"{here}: {v!r} is not one of the choices of '{parent.name}' "
                    f"[{', '.join(map(str, choices))}]"
                )


def parse_search_space(spec: Mapping[str, Any], *, where: str = WHERE) -> SearchSpace:
    """Parse a `search.search_space` mapping; every problem is a ConfigError naming the parameter."""
    spec = to_plain(spec)
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: must be a mapping of dotted.key -> {{type: ..., ...}}, got {spec!r}")
    params: dict[str, ParamSpec] = {}
    for name, param in spec.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: parameter names must be dotted config keys, got {name!r}")
        params[name] = _parse_param(name, param, f"{where}.{name}" if where else name)
    _check_parents(params, where)
    return SearchSpace(tuple(_order(params, where)))


# ---------------------------------------------------------------------------------------------
# Checks against the training config


def _endpoints(dist: BaseDistribution) -> list[Any]:
    """The values that bound what a distribution can produce (enough to check types)."""
    choices = getattr(dist, "choices", None)
    return list(choices) if choices is not None else [dist.low, dist.high]  # type: ignore[attr-defined]


def validate_search_space(space: SearchSpace, cfg: DictConfig) -> None:
    """Every parameter must name a settable config key and every value must fit its type."""
    from ml_framework.config import config_keys, is_known_key, set_value
    from ml_framework.config.loader import CHOICES

    trial_cfg = copy.deepcopy(cfg)
    for p in space:
        here = f"{WHERE}.{p.name}"
        if p.name == "search" or p.name.startswith("search."):
            raise ConfigError(f"{here}: search.* keys configure the search itself and cannot be searched")
        if not is_known_key(p.name, cfg):
            candidates = [k for k in config_keys(cfg) if not k.startswith("search.")]
            raise ConfigError(unknown_key_message(p.name, candidates, WHERE))
        for value in _endpoints(p.distribution):
            try:
                set_value(trial_cfg, p.name, value, where=here)
            except ConfigError as e:
                raise ConfigError(f"{e}; fix the parameter's range or choices") from e
            allowed = CHOICES.get(p.name)
            if allowed is not None and value not in allowed:
                raise ConfigError(f"{here}: {value!r} is not one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------
# Sampling


_SUGGEST: dict[str, Callable[[optuna.Trial, str, Any], Any]] = {
    "FloatDistribution": lambda t, n, d: t.suggest_float(n, d.low, d.high, step=d.step, log=d.log),
    "IntDistribution": lambda t, n, d: t.suggest_int(n, d.low, d.high, step=d.step, log=d.log),
    "CategoricalDistribution": lambda t, n, d: t.suggest_categorical(n, d.choices),
}


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample every parameter whose condition holds, in order; returns {dotted.key: value}."""
    sampled: dict[str, Any] = {}
    for p in space:
        if p.condition is None or p.condition.holds(sampled):
            sampled[p.name] = _SUGGEST[type(p.distribution).__name__](trial, p.name, p.distribution)
    return sampled


# ---------------------------------------------------------------------------------------------
# Grids


def _finite_values(dist: BaseDistribution) -> list[Any] | None:
    """All values a distribution can take, or None for a continuous range."""
    choices = getattr(dist, "choices", None)
    if choices is not None:
        return list(choices)
    low, high, step = dist.low, dist.high, dist.step  # type: ignore[attr-defined]
    if step is None:
        return None
    if isinstance(low, int) and isinstance(step, int):
        return list(range(low, high + 1, step))
    n = math.floor((high - low) / step + 1e-9)
    return [float(f"{low + i * step:.12g}") for i in range(n + 1)]


def _continuous_error(name: str, dist: BaseDistribution, sampler: str) -> ConfigError:
    return ConfigError(
        f"{WHERE}.{name}: {sampler} needs a finite set of values, but this is a continuous range "
        f"[{dist.low}, {dist.high}]; add `step` (e.g. step: {(dist.high - dist.low) / 4:g}) "  # type: ignore[attr-defined]
        "or use `values: [...]`"
    )


def finite_values(space: SearchSpace, sampler: str) -> dict[str, list[Any]]:
    """Every value of every parameter; a continuous range is an error for `sampler`."""
    out: dict[str, list[Any]] = {}
    for p in space:
        values = _finite_values(p.distribution)
        if values is None:
            raise _continuous_error(p.name, p.distribution, sampler)
        out[p.name] = values
    return out


def grid_points(space: SearchSpace) -> dict[str, list[Any]]:
    """The `search_space` argument of optuna's GridSampler."""
    for p in space:
        if p.condition is not None:
            raise ConfigError(
                f"{WHERE}.{p.name}: GridSampler needs unconditional parameters (it enumerates every "
                f"combination up front), but this one has a condition ({p.condition.describe()}); "
                "drop the condition, or use BruteForceSampler which handles conditional spaces"
            )
    if not space.params:
        raise ConfigError(f"{WHERE}: GridSampler needs at least one parameter")
    return finite_values(space, "GridSampler")


def grid_size(space: SearchSpace) -> int | None:
    """Number of distinct parameter sets (conditions counted exactly); None when infinite."""
    counts: dict[str, int] = {}
    for p in space:
        values = _finite_values(p.distribution)
        if values is None:
            return None
        counts[p.name] = len(values)

    def size(p: ParamSpec) -> int:
        children = [c for c in space if c.condition is not None and c.condition.parameter == p.name]
        if not children:
            return counts[p.name]
        return sum(
            math.prod(size(c) for c in children if choice in c.condition.values)  # type: ignore[union-attr]
            for choice in p.distribution.choices  # type: ignore[attr-defined]
        )

    return math.prod(size(p) for p in space if p.condition is None)


# ---------------------------------------------------------------------------------------------
# Inline `--param NAME=TYPE:SPEC`

INLINE_SYNTAX = """expected NAME=TYPE:SPEC, for example
  optimizer.lr=continuous:0.0001-0.1:log      (float range, log scale)
  model.dropout=continuous:0.1-0.5            (float range; add :STEP for a grid, e.g. :0.1)
  training.batch_size=discrete:16-128:16      (int range with step)
  training.batch_size=discrete:16,32,64       (exact values)
  model.architecture=categorical:simple_cnn,resnet18
TYPE is one of continuous, float, uniform, loguniform, discrete, int, categorical, values"""

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUM})\s*-\s*({_NUM})\s*$")


def _inline_scalar(text: str, item: str) -> Any:
    item = item.strip()
    if not item:
        raise ConfigError(f"--param '{text}': empty value in list; {INLINE_SYNTAX}")
    if item == "None":  # Python spelling of YAML null, as in `discrete:5,10,None`
        return None
    try:
        value = yaml.safe_load(item)
    except yaml.YAMLError as e:
        reason = str(e).splitlines()[0]
        raise ConfigError(f"--param '{text}': cannot read value {item!r} ({reason}); {INLINE_SYNTAX}") from e
    if isinstance(value, dict | list):
        raise ConfigError(f"--param '{text}': {item!r} is not a single value; {INLINE_SYNTAX}")
    return value


def _inline_list(text: str, body: str) -> list[Any]:
    return [_inline_scalar(text, item) for item in body.split(",")]


def _inline_number(text: str) -> int | float:
    """A number matched by `_NUM` (YAML would read `1e-5` as a string)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _inline_range(text: str, kind: str, body: str) -> dict[str, Any]:
    parts = body.split(":")
    match = _RANGE.match(parts[0])
    if match is None or len(parts) > 2:
        raise ConfigError(
            f"--param '{text}': cannot read range {body!r} (LOW-HIGH[:log|:STEP]); {INLINE_SYNTAX}"
        )
    spec: dict[str, Any] = {"type": kind, "low": _inline_number(match[1]), "high": _inline_number(match[2])}
    if len(parts) == 2:
        extra = parts[1].strip()
        if extra.lower() == "log":
            spec["log"] = True
        elif re.fullmatch(_NUM, extra):
            spec["step"] = _inline_number(extra)
        else:
            raise ConfigError(f"--param '{text}': {extra!r} is neither `log` nor a step; {INLINE_SYNTAX}")
    return spec


def _inline_numeric(family: str) -> Callable[[str, str], dict[str, Any]]:
    def parse(text: str, body: str) -> dict[str, Any]:
        # `16,32,64` (or a single `16`) is a values list; anything with a dash or a `:` a range.
        if "," in body or ("-" not in body.lstrip("+-") and ":" not in body):
            return {"type": family, "values": _inline_list(text, body)}
        return _inline_range(text, family, body)

    return parse


_INLINE: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "continuous": _inline_numeric("float"),
    "float": _inline_numeric("float"),
    "uniform": _inline_numeric("float"),
    "loguniform": lambda text, body: _inline_range(text, "loguniform", body),
    "discrete": _inline_numeric("int"),
    "int": _inline_numeric("int"),
    "categorical": lambda text, body: {"type": "categorical", "choices": _inline_list(text, body)},
    "values": lambda text, body: {"values": _inline_list(text, body)},
}


def parse_inline_param(text: str) -> tuple[str, dict[str, Any]]:
    """`optimizer.lr=continuous:0.0001-0.1:log` -> ('optimizer.lr', {type: float, low, high, log})."""
    name, sep, rest = text.partition("=")
    kind, colon, body = rest.partition(":")
    name, kind = name.strip(), kind.strip().lower()
    if not sep or not colon or not name or not body.strip():
        raise ConfigError(f"--param '{text}': {INLINE_SYNTAX}")
    if kind not in _INLINE:
        near = closest(kind, _INLINE)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ConfigError(f"--param '{text}': unknown type {kind!r}{hint}; {INLINE_SYNTAX}")
    spec = _INLINE[kind](text, body)
    try:
        _parse_param(name, spec, f"--param '{text}'")  # the same checks as the YAML form
    except ConfigError as e:
        raise ConfigError(f"{e}\n{INLINE_SYNTAX}") from e
    return name, spec


# ---------------------------------------------------------------------------------------------
# Warnings and descriptions


def _possible(space: SearchSpace, cfg: DictConfig, key: str) -> list[Any]:
    """Values `key` can take in the search: its choices when searched, else the configured value."""
    if key in space:
        return _finite_values(space[key].distribution) or _endpoints(space[key].distribution)
    return [OmegaConf.select(cfg, key)]


def _restriction(space: SearchSpace, p: ParamSpec, key: str) -> tuple[Any, ...] | None:
    """Values of `key` that a parameter's condition chain requires, or None if it does not."""
    cond = p.condition
    while cond is not None:
        if cond.parameter == key:
            return cond.values
        cond = space[cond.parameter].condition
    return None


def _component_warning(space: SearchSpace, cfg: DictConfig, p: ParamSpec) -> str | None:
    section, _, leaf = p.name.partition(".")
    if section not in _COMPONENT_PARAMS:
        return None
    key, table = _COMPONENT_PARAMS[section]
    users = [n for n, keys in table.items() if leaf in keys]
    if not users:  # `optimizer.name` itself, or a key no component reads
        return None
    restricted = _restriction(space, p, key)
    active = list(restricted) if restricted is not None else _possible(space, cfg, key)
    used_by = ", ".join(users) or "none"
    if not any(a in users for a in active):
        how = "is conditioned on" if restricted is not None else "runs with"
        return (
            f"{p.name} is searched but the search {how} {key} in [{', '.join(map(str, active))}], which "
            f"never uses it (used by: {used_by}); searching it changes nothing"
        )
    if any(a not in users for a in active):
        return (
            f"{p.name} only matters when {key} is one of [{used_by}], but {key} is searched over "
            f"[{', '.join(map(str, active))}]; add `condition: {{parameter: {key}, value: "
            f"[{', '.join(a for a in active if a in users)}]}}` so other trials do not vary it in vain"
        )
    return None


def _epochs_warning(space: SearchSpace, cfg: DictConfig, name: str, scheduler: str, what: str) -> str | None:
    if name not in space or scheduler not in _possible(space, cfg, "scheduler.name"):
        return None
    epochs = max(_possible(space, cfg, "training.num_epochs"))
    values = _endpoints(space[name].distribution)
    low, high = min(values), max(values)
    if low >= epochs:
        return (
            f"{name}: every value ({low} and up) is >= training.num_epochs ({epochs}), so {what}; "
            f"search values below {epochs}"
        )
    if high >= epochs:
        return f"{name}: values from {epochs} to {high} are >= training.num_epochs ({epochs}), so {what}"
    return None


def effect_warnings(space: SearchSpace, cfg: DictConfig) -> list[str]:
    """Searched settings that cannot change anything in the configured run (wasted trials)."""
    warnings = [
        _epochs_warning(space, cfg, "scheduler.step_size", "step", "the StepLR step never fires"),
        _epochs_warning(
            space, cfg, "scheduler.warmup_epochs", "warmup_cosine", "the warm-up never ends within the run"
        ),
    ]
    warnings.extend(_component_warning(space, cfg, p) for p in space)
    return [w for w in warnings if w]


def _describe_dist(dist: BaseDistribution) -> str:
    choices = getattr(dist, "choices", None)
    if choices is not None:
        return f"categorical [{', '.join(map(str, choices))}]"
    log, step = dist.log, dist.step  # type: ignore[attr-defined]
    is_int = type(dist).__name__ == "IntDistribution"
    kind = "int" if is_int else ("loguniform" if log else "uniform")
    text = f"{kind} [{dist.low:g}, {dist.high:g}]"  # type: ignore[attr-defined]
    if step is not None and not (is_int and step == 1):
        text += f" step {step:g}"
    if is_int and log:
        text += " log"
    return text


def describe(space: SearchSpace) -> list[tuple[str, str]]:
    """(name, 'loguniform [1e-05, 0.1]' / 'categorical [16, 32]' + ', when x in [a]') per parameter."""
    return [
        (p.name, _describe_dist(p.distribution) + (f", {p.condition.describe()}" if p.condition else ""))
        for p in space
    ]
