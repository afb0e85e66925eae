"""--mode train: overlay the training curves of several runs (or trials), compare them, TensorBoard."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_framework.errors import DataError

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Subplot title -> (metric key, line dash); one colour per run across all panels.
PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "Loss": (("train_loss", "dash"), ("val_loss", "solid")),
    "Accuracy": (("train_acc", "dash"), ("val_acc", "solid")),
    "Learning rate": (("lr", "solid"),),
    "Validation F1": (("val_f1", "solid"),),
}
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True)
class RunMetrics:
    name: str
    path: Path
    history: list[dict[str, Any]]
    monitor: str | None = None
    monitor_mode: str | None = None
    best_epoch: int | None = None
    best: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False


def load_run(path: str | Path, name: str | None = None) -> RunMetrics:
    """Read `<run>/metrics.json`; a missing or malformed file is a `DataError` naming it."""
    path = Path(path)
    mfile = path / "metrics.json"
    if not path.is_dir():
        raise DataError(f"run dir {path} does not exist")
    if not mfile.is_file():
        raise DataError(f"{path} has no metrics.json: is it a run dir of ml-train or a study trial?")
    try:
        raw = json.loads(mfile.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{mfile} is not valid JSON: {e}") from e
    history = raw.get("history") if isinstance(raw, dict) else None
    if not isinstance(history, list):
        raise DataError(f"{mfile} has no 'history' list of per-epoch metrics")
    return RunMetrics(
        name=name or path.name,
        path=path,
        history=sorted(
            (h for h in history if isinstance(h, dict) and "epoch" in h), key=lambda h: h["epoch"]
        ),
        monitor=raw.get("monitor"),
        monitor_mode=raw.get("monitor_mode"),
        best_epoch=raw.get("best_epoch"),
        best=raw.get("best") or {},
        final=raw.get("final") or {},
        test=raw.get("test") or {},
        stopped_early=bool(raw.get("stopped_early", False)),
    )


def run_names(paths: Sequence[str | Path]) -> list[str]:
    """Short unique names: the dir name, or the path below the common parent when names clash."""
    paths = [Path(p) for p in paths]
    names = [p.name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath([str(p.resolve()) for p in paths]))
    return [str(p.resolve().relative_to(common)) or p.name for p in paths]


def load_runs(paths: Sequence[str | Path]) -> list[RunMetrics]:
    if not paths:
        raise DataError("--mode train needs run dirs: --runs runs/A runs/B ...")
    return [load_run(p, n) for p, n in zip(paths, run_names(paths), strict=True)]


@dataclass(frozen=True)
class Series:
    run: str
    metric: str
    epochs: list[int]
    values: list[float]


def curves(runs: Sequence[RunMetrics]) -> dict[str, list[Series]]:
    """Panel title -> one series per (run, metric) that has values; panels without data are left out."""
    out: dict[str, list[Series]] = {}
    for title, metrics in PANELS.items():
        panel = []
        for run in runs:
            for metric, _ in metrics:
                pts = [(h["epoch"], float(h[metric])) for h in run.history if h.get(metric) is not None]
                if pts:
                    panel.append(Series(run.name, metric, [e for e, _ in pts], [v for _, v in pts]))
        if panel:
            out[title] = panel
    return out


COMPARISON_COLUMNS: tuple[str, ...] = (
    "run", "epochs", "final train_loss", "final val_loss", "final val_acc", "best epoch",
    "best val_loss", "best val_acc", "best val_f1", "test_acc", "stopped early",
)  # fmt: skip


def comparison_rows(runs: Sequence[RunMetrics]) -> list[dict[str, Any]]:
    """Final and best metrics per run (best = at the run's best epoch by its monitor)."""
    rows = []
    for r in runs:
        final = r.final or (r.history[-1] if r.history else {})
        best = r.best or {}
        rows.append(
            {
                "run": r.name,
                "epochs": final.get("epoch", len(r.history)),
                "final train_loss": final.get("train_loss"),
                "final val_loss": final.get("val_loss"),
                "final val_acc": final.get("val_acc"),
                "best epoch": r.best_epoch or best.get("epoch"),
                "best val_loss": best.get("val_loss"),
                "best val_acc": best.get("val_acc"),
                "best val_f1": best.get("val_f1"),
                "test_acc": r.test.get("test_acc"),
                "stopped early": r.stopped_early,
            }
        )
    return rows


def draw_curves(runs: Sequence[RunMetrics]) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = curves(runs)
    if not panels:
        raise DataError("none of the runs has per-epoch metrics in its metrics.json history")
    titles = list(panels)
    cols = 2 if len(titles) > 1 else 1
    rows = -(-len(titles) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles)
    color = {r.name: COLORS[i % len(COLORS)] for i, r in enumerate(runs)}
    dash = {m: d for metrics in PANELS.values() for m, d in metrics}
    for i, title in enumerate(titles):
        r, c = i // cols + 1, i % cols + 1
        for s in panels[title]:
            fig.add_trace(
                go.Scatter(
                    x=s.epochs,
                    y=s.values,
                    mode="lines+markers",
                    name=f"{s.run} {s.metric}",
                    legendgroup=s.run,
                    line={"color": color[s.run], "dash": dash[s.metric]},
                    marker={"size": 4},
                ),
                row=r,
                col=c,
            )
        fig.update_xaxes(title_text="epoch", row=r, col=c)
        if title == "Learning rate":
            fig.update_yaxes(type="log", row=r, col=c)
    fig.update_layout(
        title=f"Training curves: {', '.join(color)} (dashed = train, solid = val)", height=420 * rows
    )
    return fig


def _spec_name(name: str) -> str:
    return re.sub(r"[:,\s]+", "_", name)


def tensorboard_args(runs: Sequence[RunMetrics]) -> list[str]:
    """`--logdir DIR` for one run, else `--logdir_spec name:dir,...` so runs keep their names."""
    if len(runs) == 1:
        return ["--logdir", str(runs[0].path)]
    return ["--logdir_spec", ",".join(f"{_spec_name(r.name)}:{r.path}" for r in runs)]


def tensorboard_command(runs: Sequence[RunMetrics]) -> str:
    return shlex.join(["tensorboard", *tensorboard_args(runs)])


def launch_tensorboard(runs: Sequence[RunMetrics], port: int = 6006) -> subprocess.Popen[bytes]:
    """Start TensorBoard from this interpreter's environment (no PATH lookup)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", *tensorboard_args(runs), "--port", str(port)]
    )
