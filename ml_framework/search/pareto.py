"""Pareto outputs of a study with several objectives: pareto_front.csv, one config per Pareto trial
(pareto/trial_<n>.yaml), the `pareto_front` entry of summary.json and the console table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from ml_framework.config import save_config
from ml_framework.fileio import atomic_write_csv
from ml_framework.search.best import pareto_trials, study_directions
from ml_framework.search.objective import SPEED_ATTR, trial_config
from ml_framework.search.objectives import monitor_metric
from ml_framework.search.outputs import cv_note, format_values


def write_pareto_outputs(
    study: optuna.Study, base_cfg: DictConfig, out_dir: Path, metrics: Sequence[str]
) -> dict[str, Any]:
    """pareto_front.csv + pareto/trial_<n>.yaml when the study has several objectives.
    Returns the entries these add to summary.json."""
    if len(study.directions) < 2:
        return {}
    directions = study_directions(study)
    front = pareto_trials(study)
    names = sorted({p for t in front for p in t.params})
    atomic_write_csv(
        out_dir / "pareto_front.csv",
        ["number", *metrics, *names],
        [[t.number, *t.values, *(t.params.get(p) for p in names)] for t in front],
    )
    pareto_dir = out_dir / "pareto"
    pareto_dir.mkdir(exist_ok=True)
    monitor = monitor_metric(metrics, directions, base_cfg.training)
    for t in front:
        path = pareto_dir / f"trial_{t.number}.yaml"
        if not path.exists():
            header = (
                f"Pareto trial {t.number} of study '{study.study_name}': {format_values(t, metrics)}\n"
                f"{cv_note(t, base_cfg)}"
            )
            cfg = trial_config(base_cfg, t.params, *monitor, t.user_attrs.get(SPEED_ATTR))
            save_config(cfg, path, drop_search=True, header=header)
    for stale in set(pareto_dir.glob("trial_*.yaml")) - {
        pareto_dir / f"trial_{t.number}.yaml" for t in front
    }:
        stale.unlink(missing_ok=True)  # dominated by a later trial
    return {
        "pareto_front": [
            {"trial": t.number, "values": dict(zip(metrics, t.values, strict=True)), "params": t.params}
            for t in front
        ]
    }


def pareto_table(study: optuna.Study, metrics: Sequence[str]) -> Any:
    """The Pareto front as a rich table."""
    from rich.table import Table

    front = pareto_trials(study)
    table = Table(title=f"Pareto front: {len(front)} non-dominated trials")
    table.add_column("trial", justify="right")
    for m, d in zip(metrics, study_directions(study), strict=True):
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
