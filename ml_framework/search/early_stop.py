"""Search early stopping (`search.early_stopping`): stop a study whose best has stopped improving."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from ml_framework.errors import ConfigError
from ml_framework.search.best import dominates, study_directions

State = optuna.trial.TrialState


@dataclass
class EarlyStop:
    """Stop the study after `patience` finished trials without improving the best value by more than
    `min_delta` (several objectives: without a trial that joins the Pareto front of the trials before it).
    Computed from the storage, so every worker of a study agrees."""

    patience: int
    min_delta: float = 0.0

    @classmethod
    def from_config(cls, es: Any, where: str = "search.early_stopping") -> EarlyStop | None:
        if es is None or not es.enabled:
            return None
        if int(es.patience) < 1:
            raise ConfigError(f"{where}.patience: {es.patience}; it counts finished trials and must be >= 1")
        if float(es.min_delta) < 0:
            raise ConfigError(f"{where}.min_delta: {es.min_delta} must be >= 0")
        return cls(int(es.patience), float(es.min_delta))

    def trials_without_improvement(self, study: optuna.Study) -> int:
        directions = study_directions(study)
        sign = 1 if directions[0] == "maximize" else -1
        finished = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED))
        finished.sort(key=lambda t: (t.datetime_complete, t.number))
        seen: list[Sequence[float]] = []
        since = 0
        for t in finished:
            values = t.values if t.state == State.COMPLETE else None
            if values is None:
                since += 1
                continue
            if len(directions) == 1:
                better = not seen or sign * (values[0] - seen[0][0]) > self.min_delta
                if better:
                    seen = [values]
            else:
                better = not any(dominates(s, values, directions) or list(s) == list(values) for s in seen)
                seen.append(values)
            since = 0 if better else since + 1
        return since

    def should_stop(self, study: optuna.Study) -> bool:
        return self.trials_without_improvement(study) >= self.patience
