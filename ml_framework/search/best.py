"""The best trial and dominance: one definition for the study outputs, search early stopping,
checkpoint pruning and the plots.

Pure over trial-like objects (`.number`, `.state.name`, `.values`) and direction names
("maximize"/"minimize"), so the plot inputs use it without importing Optuna."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def is_better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """`a` is no worse than `b` in every objective and better in at least one."""
    pairs = list(zip(a, b, directions, strict=True))
    return all(not is_better(y, x, d) for x, y, d in pairs) and any(is_better(x, y, d) for x, y, d in pairs)


def best_trials(trials: Sequence[Any], directions: Sequence[str]) -> list[Any]:
    """Among COMPLETE trials with finite values, by number: one objective, the best (the earliest on
    ties); several, the Pareto front (every trial no other dominates)."""
    done = sorted(
        (
            t
            for t in trials
            if t.state.name == "COMPLETE" and t.values and all(math.isfinite(v) for v in t.values)
        ),
        key=lambda t: t.number,
    )
    if not done:
        return []
    if len(directions) == 1:
        best = done[0]
        for t in done[1:]:
            if is_better(t.values[0], best.values[0], directions[0]):
                best = t
        return [best]
    return [t for t in done if not any(dominates(o.values, t.values, directions) for o in done)]


def study_directions(study: Any) -> list[str]:
    return [d.name.lower() for d in study.directions]


def best_trial(study: Any) -> Any | None:
    """The best trial of a single-objective study (None with several objectives or none finished)."""
    directions = study_directions(study)
    if len(directions) > 1:
        return None
    found = best_trials(study.get_trials(deepcopy=False), directions)
    return found[0] if found else None


def pareto_trials(study: Any) -> list[Any]:
    """The non-dominated COMPLETE trials of the study, by number."""
    return best_trials(study.get_trials(deepcopy=False), study_directions(study))
