"""Study-level strategy outputs and controls: the Pareto front (table, pareto_front.csv, one config per
Pareto trial), cv_scores.csv, search early stopping, warm-start parameter sets (`--enqueue`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import DictConfig

from ml_framework.config import save_config
from ml_framework.errors import ConfigError
from ml_framework.fileio import atomic_write_csv
from ml_framework.search.objective import trial_config
from ml_framework.search.objectives import cv_summary, monitor_metric
from ml_framework.search.space import SearchSpace

State = optuna.trial.TrialState


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Optuna's non-dominated COMPLETE trials, by number."""
    return sorted(study.best_trials, key=lambda t: t.number)


def format_values(trial: optuna.trial.FrozenTrial, metrics: Sequence[str]) -> str:
    """`val_acc=0.9512 latency_ms=0.41`, with `(cv 0.95 ± 0.01 (3 folds))` when cross-validated."""
    text = " ".join(f"{m}={v:.4g}" for m, v in zip(metrics, trial.values or (), strict=False))
    scores = trial.user_attrs.get("cv_scores")
    return f"{text} (cv {cv_summary(scores)})" if scores else text


def write_strategy_outputs(
    study: optuna.Study, base_cfg: DictConfig, out_dir: Path, metrics: Sequence[str]
) -> dict[str, Any]:
    """pareto_front.csv + pareto/trial_<n>.yaml (several objectives), cv_scores.csv (cross-validation).
    Returns the entries these add to summary.json."""
    extra: dict[str, Any] = {}
    trials = study.get_trials(deepcopy=False)
    cv_rows = [
        [t.number, k, s]
        for t in sorted(trials, key=lambda t: t.number)
        for k, s in enumerate(t.user_attrs.get("cv_scores") or [])
    ]
    if cv_rows:
        atomic_write_csv(out_dir / "cv_scores.csv", ["trial", "fold", "score"], cv_rows)
    if len(study.directions) < 2:
        return extra
    directions = [d.name.lower() for d in study.directions]
    front = pareto_trials(study)
    atomic_write_csv(
        out_dir / "pareto_front.csv",
        ["number", *metrics, *sorted({p for t in front for p in t.params})],
        [
            [t.number, *t.values, *(t.params.get(p) for p in sorted({p for t in front for p in t.params}))]
            for t in front
        ],
    )
    pareto_dir = out_dir / "pareto"
    pareto_dir.mkdir(exist_ok=True)
    monitor = monitor_metric(metrics, directions, (metrics[0], directions[0]))
    for t in front:
        path = pareto_dir / f"trial_{t.number}.yaml"
        if not path.exists():
            header = f"Pareto trial {t.number} of study '{study.study_name}': {format_values(t, metrics)}"
            save_config(trial_config(base_cfg, t.params, *monitor), path, drop_search=True, header=header)
    for stale in set(pareto_dir.glob("trial_*.yaml")) - {
        pareto_dir / f"trial_{t.number}.yaml" for t in front
    }:
        stale.unlink(missing_ok=True)  # dominated by a later trial
    extra["pareto_front"] = [
        {"trial": t.number, "values": dict(zip(metrics, t.values, strict=True)), "params": t.params}
        for t in front
    ]
    return extra


def pareto_table(study: optuna.Study, metrics: Sequence[str]) -> Any:
    """The Pareto front as a rich table."""
    from rich.table import Table

    front = pareto_trials(study)
    directions = [d.name.lower() for d in study.directions]
    table = Table(title=f"Pareto front: {len(front)} non-dominated trials")
    table.add_column("trial", justify="right")
    for m, d in zip(metrics, directions, strict=True):
        table.add_column(f"{m} ({d[:3]})", justify="right")
    names = sorted({p for t in front for p in t.params})
    for name in names:
        table.add_column(name)
    for t in front:
        params = [
            f"{t.params[n]:.4g}" if isinstance(t.params.get(n), float) else str(t.params.get(n))
            for n in names
        ]
        table.add_row(str(t.number), *(f"{v:.4g}" for v in t.values), *params)
    return table


# ---------------------------------------------------------------------------------------------
# Search early stopping


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[int]) -> bool:
    return all(s * x >= s * y for x, y, s in zip(a, b, signs, strict=True)) and any(
        s * x > s * y for x, y, s in zip(a, b, signs, strict=True)
    )


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
        signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
        finished = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED))
        finished.sort(key=lambda t: (t.datetime_complete, t.number))
        seen: list[Sequence[float]] = []
        since = 0
        for t in finished:
            values = t.values if t.state == State.COMPLETE else None
            if values is None:
                since += 1
                continue
            if len(signs) == 1:
                better = not seen or signs[0] * (values[0] - seen[0][0]) > self.min_delta
                if better:
                    seen = [values]
            else:
                better = not any(_dominates(s, values, signs) or list(s) == list(values) for s in seen)
                seen.append(values)
            since = 0 if better else since + 1
        return since

    def should_stop(self, study: optuna.Study) -> bool:
        return self.trials_without_improvement(study) >= self.patience


# ---------------------------------------------------------------------------------------------
# Warm start


def load_enqueue_file(path: Path, space: SearchSpace) -> list[dict[str, Any]]:
    """A YAML list of parameter mappings (dotted keys of the search space), checked against the space."""
    if not Path(path).is_file():
        raise ConfigError(f"--enqueue: no file {path}")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--enqueue {path}: not valid YAML: {str(e).splitlines()[0]}") from e
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ConfigError(f"--enqueue {path}: expected a list of mappings like [{{optimizer.lr: 0.01}}]")
    for i, params in enumerate(data):
        for key, value in params.items():
            if key not in space:
                raise ConfigError(
                    f"--enqueue {path}: entry {i} sets '{key}', which is not in the search space "
                    f"({', '.join(space.names)})"
                )
            dist = space[key].distribution
            try:
                dist.to_internal_repr(value)
                ok = dist._contains(dist.to_internal_repr(value))
            except (ValueError, TypeError, IndexError):
                ok = False
            if not ok:
                raise ConfigError(f"--enqueue {path}: entry {i}: {key}={value!r} is outside {dist}")
    return data


def enqueue(study: optuna.Study, param_sets: Sequence[dict[str, Any]]) -> int:
    """Queue each set once (a resumed study does not run it again); returns how many are waiting."""
    for params in param_sets:
        study.enqueue_trial(params, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False, states=(State.WAITING,)))
