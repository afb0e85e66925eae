"""Plot inputs as plain data: pure functions over a list of Optuna `FrozenTrial`s.

Nothing here imports Optuna or plotly: trial states are compared by name (`"COMPLETE"`, `"PRUNED"`,
`"FAIL"`, `"RUNNING"`, `"WAITING"`), so tests check values, ordering and which trials appear
without drawing anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ml_framework.errors import ConfigError, unknown_key_message
from ml_framework.search.best import best_trials, is_better

COMPLETE, PRUNED, FAIL, RUNNING, WAITING = "COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"
STATES: tuple[str, ...] = (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)


def state_name(trial: Any) -> str:
    return trial.state.name


def completed(trials: Sequence[Any]) -> list[Any]:
    return [t for t in trials if state_name(t) == COMPLETE]


def last_intermediate(trial: Any) -> tuple[int, float] | None:
    """(step, value) of the last reported intermediate value, or None."""
    iv = trial.intermediate_values
    if not iv:
        return None
    step = max(iv)
    return step, float(iv[step])


def objective_names(user_attrs: Mapping[str, Any], n_objectives: int) -> list[str]:
    """Objective names from the study user attrs (`metrics`, else `metric`), else 'objective_i'."""
    names = user_attrs.get("metrics")
    if isinstance(names, list) and len(names) == n_objectives:
        return [str(n) for n in names]
    if n_objectives == 1 and user_attrs.get("metric"):
        return [str(user_attrs["metric"])]
    return [f"objective_{i}" for i in range(n_objectives)]


def param_names(trials: Sequence[Any]) -> list[str]:
    """Every parameter any trial sampled, sorted."""
    return sorted({p for t in trials for p in t.params})


def resolve_params(requested: Sequence[str] | None, available: Sequence[str]) -> list[str] | None:
    """Map `--params` names to study params: exact dotted key, or a unique last part (`lr`)."""
    if not requested:
        return None
    out: list[str] = []
    for name in requested:
        if name in available:
            out.append(name)
            continue
        by_leaf = [p for p in available if p.rsplit(".", 1)[-1] == name]
        if len(by_leaf) == 1:
            out.append(by_leaf[0])
            continue
        if len(by_leaf) > 1:
            raise ConfigError(f"--params: '{name}' is ambiguous, it matches {', '.join(by_leaf)}")
        raise ConfigError(
            unknown_key_message(name, available, "--params")
            + f" Parameters of this study: {', '.join(available) or 'none'}"
        )
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------- trial table and summary


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]
    duration_s: float | None
    started: datetime | None
    last_epoch: int | None
    best_epoch: int | None
    run_dir: str | None
    error: str | None


def trial_rows(trials: Sequence[Any]) -> list[TrialRow]:
    """One row per trial, ordered by trial number; last epoch falls back to the last report."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        ua = t.user_attrs
        last = ua.get("last_epoch")
        if last is None and (li := last_intermediate(t)) is not None:
            last = li[0]
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_start and t.datetime_complete
            else None
        )
        rows.append(
            TrialRow(
                number=t.number,
                state=state_name(t),
                values=tuple(float(v) for v in t.values) if t.values is not None else None,
                params=dict(t.params),
                duration_s=duration,
                started=t.datetime_start,
                last_epoch=last,
                best_epoch=ua.get("best_epoch"),
                run_dir=ua.get("run_dir"),
                error=ua.get("error") or t.system_attrs.get("fail_reason"),
            )
        )
    return rows


@dataclass(frozen=True)
class StudySummary:
    study_name: str
    objectives: list[str]
    directions: list[str]
    n_trials: int
    counts: dict[str, int]
    best_numbers: list[int]
    best_values: list[tuple[float, ...]]
    wall_time_s: float | None
    sampler: str
    pruner: str
    params: list[str] = field(default_factory=list)


def study_summary(
    study_name: str,
    trials: Sequence[Any],
    directions: Sequence[str],
    user_attrs: Mapping[str, Any],
    now: datetime | None = None,
) -> StudySummary:
    """Counts per state, best trial(s), wall time from the first start to the last finish."""
    counts = {s: 0 for s in STATES}
    for t in trials:
        counts[state_name(t)] = counts.get(state_name(t), 0) + 1
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete or now or datetime.now() for t in trials if t.datetime_start]
    best = best_trials(trials, directions)
    return StudySummary(
        study_name=study_name,
        objectives=objective_names(user_attrs, len(directions)),
        directions=list(directions),
        n_trials=len(trials),
        counts=counts,
        best_numbers=[t.number for t in best],
        best_values=[tuple(float(v) for v in t.values) for t in best],
        wall_time_s=(max(ends) - min(starts)).total_seconds() if starts else None,
        sampler=str(user_attrs.get("sampler") or "unknown"),
        pruner=str(user_attrs.get("pruner") or "unknown"),
        params=param_names(trials),
    )


# ---------------------------------------------------------------- optimization history


@dataclass(frozen=True)
class HistoryPoint:
    number: int
    state: str
    value: float | None  # objective (COMPLETE), last reported value (PRUNED), else None
    step: int | None = None  # epoch of a pruned trial's last report


@dataclass(frozen=True)
class HistorySeries:
    objective: str
    direction: str
    points: list[HistoryPoint]
    best_so_far: list[tuple[int, float]]  # (trial number, best completed value up to it)


def optimization_history(
    trials: Sequence[Any], directions: Sequence[str], names: Sequence[str]
) -> list[HistorySeries]:
    """One series per objective: every finished trial in number order, with the running best.

    Pruned trials carry their last reported value (the study metric, so objective 0 only);
    failed trials appear without a value so the plot can mark them.
    """
    ordered = [t for t in sorted(trials, key=lambda t: t.number) if state_name(t) in (COMPLETE, PRUNED, FAIL)]
    series = []
    for i, (direction, name) in enumerate(zip(directions, names, strict=True)):
        points: list[HistoryPoint] = []
        best: list[tuple[int, float]] = []
        current: float | None = None
        for t in ordered:
            state = state_name(t)
            if state == COMPLETE:
                value = float(t.values[i])
                points.append(HistoryPoint(t.number, state, value))
                if current is None or is_better(value, current, direction):
                    current = value
                best.append((t.number, current))
            elif state == PRUNED and i == 0 and (li := last_intermediate(t)) is not None:
                points.append(HistoryPoint(t.number, state, li[1], li[0]))
            else:
                points.append(HistoryPoint(t.number, state, None))
        series.append(HistorySeries(name, direction, points, best))
    return series


# ---------------------------------------------------------------- intermediate values


@dataclass(frozen=True)
class Curve:
    number: int
    state: str
    steps: list[int]
    values: list[float]


def intermediate_curves(trials: Sequence[Any]) -> list[Curve]:
    """Per-epoch study metric of every trial that reported one, in trial-number order."""
    curves = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.intermediate_values:
            steps = sorted(t.intermediate_values)
            curves.append(
                Curve(t.number, state_name(t), steps, [float(t.intermediate_values[s]) for s in steps])
            )
    return curves


# ---------------------------------------------------------------- slice


@dataclass(frozen=True)
class SlicePoint:
    number: int
    state: str
    param_value: Any
    value: float


def slice_points(trials: Sequence[Any], param: str, objective: int = 0) -> list[SlicePoint]:
    """(param value, objective) of completed trials, plus pruned ones at their last reported value."""
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if param not in t.params:
            continue
        state = state_name(t)
        if state == COMPLETE:
            out.append(SlicePoint(t.number, state, t.params[param], float(t.values[objective])))
        elif state == PRUNED and objective == 0 and (li := last_intermediate(t)) is not None:
            out.append(SlicePoint(t.number, state, t.params[param], li[1]))
    return out


# ---------------------------------------------------------------- applicability

MIN_COMPLETED = 2


def need_completed(trials: Sequence[Any], n: int = MIN_COMPLETED) -> str | None:
    found = len(completed(trials))
    return None if found >= n else f"needs at least {n} completed trial(s), found {found}"


def need_params(params: Sequence[str], n: int) -> str | None:
    if len(params) >= n:
        return None
    listed = f": {', '.join(params)}" if params else ""
    return f"needs at least {n} parameter(s), found {len(params)}{listed}"


def first_reason(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r), None)
