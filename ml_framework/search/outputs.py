"""Study outputs, rewritten as trials finish (at most every runner.OUTPUT_INTERVAL_S, and at the end) so
a killed search leaves them current: best_config.yaml, best_params.json, trial_history.csv, summary.json,
cv_scores.csv (cross-validation), all written atomically from the storage alone, so concurrent workers
always leave a consistent snapshot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from ml_framework.config import save_config
from ml_framework.fileio import atomic_write_csv, atomic_write_text
from ml_framework.search.best import best_trial
from ml_framework.search.objective import SPEED_ATTR, trial_config
from ml_framework.search.objectives import cv_summary, monitor_metric
from ml_framework.search.pbt_schedule import schedule_note

State = optuna.trial.TrialState


def state_counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    counts = {
        s.name.lower(): 0 for s in (State.COMPLETE, State.PRUNED, State.FAIL, State.RUNNING, State.WAITING)
    }
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def format_values(trial: optuna.trial.FrozenTrial, metrics: Sequence[str]) -> str:
    """`val_acc=0.9512 latency_ms=0.41`, with `(cv 0.95 ± 0.01 (3 folds))` when cross-validated."""
    text = " ".join(f"{m}={v:.4g}" for m, v in zip(metrics, trial.values or (), strict=False))
    scores = trial.user_attrs.get("cv_scores")
    return f"{text} (cv {cv_summary(scores)})" if scores else text


def cv_note(trial: optuna.trial.FrozenTrial, base_cfg: DictConfig) -> str:
    """Header lines of a trial's config saying which folds its value came from ("" without CV)."""
    scores = trial.user_attrs.get("cv_scores")
    if not scores:
        return ""
    cv = base_cfg.search.cross_validation if base_cfg.search is not None else None
    how = cv.aggregation if cv is not None else "aggregate"
    return (
        f"The value is the {how} over {len(scores)} cross-validation folds (fold 0-{len(scores) - 1}: "
        f"{', '.join(f'{v:.4g}' for v in scores)}; trial_{trial.number}/fold_<k>/).\n"
        "This config trains once on the fixed train/val split, so its own val score differs.\n"
    )


JSON_ATTRS = ("cv_scores", "pbt_history")  # trial user attrs with a JSON column in trial_history.csv


def trial_history_rows(
    trials: list[optuna.trial.FrozenTrial], metric_names: list[str]
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of trial_history.csv: number, state, value(s), every param, duration, last epoch."""
    params: list[str] = []
    for t in trials:
        params.extend(p for p in t.params if p not in params)
    value_cols = ["value"] if len(metric_names) == 1 else [f"value_{m}" for m in metric_names]
    json_cols = [a for a in JSON_ATTRS if any(a in t.user_attrs for t in trials)]
    header = ["number", "state", *value_cols, *params, "duration_s", "last_epoch", *json_cols]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        values = t.values if t.values is not None else [None] * len(value_cols)
        duration = t.duration.total_seconds() if t.duration is not None else None
        last_epoch = t.user_attrs.get("last_epoch", t.last_step)
        row = [t.number, t.state.name, *values, *(t.params.get(p) for p in params), duration, last_epoch]
        row.extend(json.dumps(t.user_attrs.get(a), default=str) for a in json_cols)
        rows.append(row)
    return header, rows


# (study, trial, value) of the best config each output dir got from this process: after most trials the
# best is unchanged and its config is not rebuilt (a new process, e.g. a resumed search, writes it again).
_written_best: dict[Path, tuple[str, int, Any]] = {}


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
    cv_rows = [  # one row per fold, with the trial's mean ± std over its folds so far
        [t.number, k, score, statistics.fmean(scores), statistics.stdev(scores) if len(scores) > 1 else 0.0]
        for t in sorted(trials, key=lambda t: t.number)
        for scores in [t.user_attrs.get("cv_scores") or []]
        for k, score in enumerate(scores)
    ]
    if cv_rows:
        atomic_write_csv(out_dir / "cv_scores.csv", ["trial", "fold", "score", "mean", "std"], cv_rows)

    best = best_trial(study)
    directions = [d.name.lower() for d in study.directions]
    best_key = None if best is None else (study.study_name, best.number, best.value)
    if best is not None and not (
        _written_best.get(out_dir) == best_key and (out_dir / "best_config.yaml").is_file()
    ):
        monitor = monitor_metric(metric_names, directions, base_cfg.training)  # one ml-train accepts
        cfg = trial_config(base_cfg, best.params, *monitor, best.user_attrs.get(SPEED_ATTR))
        header_text = (
            f"Best config of study '{study.study_name}': trial {best.number}, "
            f"{metric_names[0]}={best.value:.6g}.\n{cv_note(best, base_cfg)}"
            f"{schedule_note(trials, best, out_dir, base_cfg.training.num_epochs)}"
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
        _written_best[out_dir] = best_key

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
