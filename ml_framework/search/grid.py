"""Grid search that runs exactly the grid: every point once, with any number of workers, machines
or resumes, seeded or not.

Optuna's GridSampler maps a trial to a point by its number over a seeded shuffle, so workers with
different seeds, a re-seeded resume or a failed trial repeat some points and skip others. Instead
the worker loop, holding the study's budget lock, queues the next point no trial holds
(`study.enqueue_trial`); every trial of a grid study is such a queued trial."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna

from ml_framework.search.space import SearchSpace, grid_points

State = optuna.trial.TrialState
DONE = (State.COMPLETE, State.PRUNED)
HELD = (*DONE, State.RUNNING, State.WAITING)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)  # 1, 1.0 and True stay distinct


def trial_point(trial: optuna.trial.FrozenTrial) -> str:
    """The grid point a trial runs: its queued values (a WAITING trial has no params yet) and params."""
    return _key({**trial.system_attrs.get("fixed_params", {}), **trial.params})


@dataclass
class GridPlan:
    """Every point of the grid in a fixed order (a seeded shuffle with a seed). A point is taken by
    a COMPLETE, PRUNED, RUNNING or WAITING trial; a FAIL point is run again, but only once per
    session (`since`), so a point that always fails does not loop."""

    points: list[dict[str, Any]]
    since: datetime = field(default_factory=datetime.now)

    @classmethod
    def from_space(cls, space: SearchSpace, seed: int | None = None) -> GridPlan:
        values = grid_points(space)
        points = [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]
        if seed is not None:  # with n_trials below the grid size, a seed picks which points run
            random.Random(seed).shuffle(points)
        return cls(points)

    def todo(self, trials: Iterable[optuna.trial.FrozenTrial]) -> int:
        """Points no COMPLETE or PRUNED trial holds: the budget of a grid study."""
        done = {trial_point(t) for t in trials if t.state in DONE}
        return sum(_key(p) not in done for p in self.points)

    def next_point(self, trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
        held = {
            trial_point(t)
            for t in trials
            if t.state in HELD
            or (t.state == State.FAIL and t.datetime_start is not None and t.datetime_start >= self.since)
        }
        return next((p for p in self.points if _key(p) not in held), None)

    def queue_next(self, study: optuna.Study) -> bool:
        """Under the budget lock: make sure a trial is waiting for the next `study.optimize`.
        False when every point is taken (the grid is done, or its last points are running)."""
        trials = study.get_trials(deepcopy=False)
        if any(t.state == State.WAITING for t in trials):
            return True  # a retry of a dead trial, or an --enqueue set, runs first
        point = self.next_point(trials)
        if point is None:
            return False
        study.enqueue_trial(point)
        return True
