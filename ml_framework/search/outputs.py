"""Study outputs, rewritten after every finished trial so a killed search leaves them current:
best_config.yaml, best_params.json, trial_history.csv, summary.json (all written atomically, from
the storage alone, so concurrent workers always leave a consistent snapshot)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from ml_framework.config import save_config
from ml_framework.fileio import atomic_write_csv, atomic_write_text
from ml_framework.search.objective import trial_config

State = optuna.trial.TrialState


def state_counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    counts = {
        s.name.lower(): 0 for s in (State.COMPLETE, State.PRUNED, State.FAIL, State.RUNNING, State.WAITING)
    }
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial with a finite value (single objective), else None."""
    if len(study.directions) > 1:
        return None
    try:
        trial = study.best_trial
    except ValueError:
        return None
    return trial if trial.value is not None and math.isfinite(trial.value) else None


def trial_history_rows(
    trials: list[optuna.trial.FrozenTrial], metric_names: list[str]
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of trial_history.csv: number, state, value(s), every param, duration, last epoch."""
    params: list[str] = []
    for t in trials:
        params.extend(p for p in t.params if p not in params)
    value_cols = ["value"] if len(metric_names) == 1 else [f"value_{m}" for m in metric_names]
    has_cv = any("cv_scores" in t.user_attrs for t in trials)
    header = ["number", "state", *value_cols, *params, "duration_s", "last_epoch"] + (
        ["cv_scores"] if has_cv else []
    )
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        values = t.values if t.values is not None else [None] * len(value_cols)
        duration = t.duration.total_seconds() if t.duration is not None else None
        last_epoch = t.user_attrs.get("last_epoch", t.last_step)
        row = [t.number, t.state.name, *values, *(t.params.get(p) for p in params), duration, last_epoch]
        if has_cv:
            row.append(json.dumps(t.user_attrs.get("cv_scores")))
        rows.append(row)
    return header, rows


def write_outputs(
    study: optuna.Study,
    base_cfg: DictConfig,
    out_dir: Path,
    metric_names: list[str],
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every output file from the study's current state; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    header, rows = trial_history_rows(trials, metric_names)
    atomic_write_csv(out_dir / "trial_history.csv", header, rows)

    best = best_trial(study)
    directions = [d.name.lower() for d in study.directions]
    if best is not None:
        cfg = trial_config(base_cfg, best.params, metric_names[0], directions[0])
        header_text = (
            f"Best config of study '{study.study_name}': trial {best.number}, "
            f"{metric_names[0]}={best.value:.6g}.\n"
            f"Run it with: ml-train --config {out_dir / 'best_config.yaml'}"
        )
        save_config(cfg, out_dir / "best_config.yaml", drop_search=True, header=header_text)
        best_params = {
            "study": study.study_name,
            "trial": best.number,
            "metric": metric_names[0],
            "direction": directions[0],
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        }
        atomic_write_text(out_dir / "best_params.json", json.dumps(best_params, indent=2))

    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "metric": metric_names[0] if len(metric_names) == 1 else metric_names,
        "direction": directions[0] if len(directions) == 1 else directions,
        "n_trials": len(trials),
        **{f"n_{k}": v for k, v in state_counts(trials).items()},
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": best.params if best else None,
        "wall_time_s": (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0,
        "sampler": study.user_attrs.get("sampler"),
        "pruner": study.user_attrs.get("pruner"),
        **(extra_summary or {}),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
