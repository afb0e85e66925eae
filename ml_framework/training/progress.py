"""Console output of a training run: a rich progress bar with ETA and one line per epoch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

SHOWN = ("train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr")


def format_metrics(metrics: dict[str, float], keys: tuple[str, ...] = SHOWN) -> str:
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


def make_progress(console: Console) -> Progress:
    """The one progress-bar layout of every command: description, bar, M/N, elapsed, ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class RichProgress:
    """Epoch bar (with ETA for the run) and a transient batch bar."""

    def __init__(self, num_epochs: int, start_epoch: int = 0, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.num_epochs = num_epochs
        self._progress = make_progress(self.console)
        self._epochs = self._progress.add_task("epochs ", total=num_epochs, completed=start_epoch)
        self._batches = self._progress.add_task("batches", total=1)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        self._progress.reset(self._batches, total=n_batches, description=f"epoch {epoch}/{self.num_epochs}")

    def advance(self) -> None:
        self._progress.advance(self._batches)

    def end_epoch(self, metrics: dict[str, float], is_best: bool) -> None:
        self._progress.advance(self._epochs)
        star = " [green]*best[/]" if is_best else ""
        self.console.print(
            f"epoch {int(metrics['epoch']):>3}/{self.num_epochs}  {format_metrics(metrics)}  "
            f"({metrics['epoch_time']:.1f}s){star}"
        )


def results_table(
    best: dict[str, float], final: dict[str, float], test: dict[str, float], best_epoch: Any
) -> Table:
    table = Table(title="Results")
    table.add_column("metric")
    table.add_column(f"best (epoch {best_epoch})", justify="right")
    table.add_column("final", justify="right")
    for k, v in final.items():  # tables add val_roc_auc, val_rmse, ...
        if k.startswith(("train_", "val_")):
            table.add_row(k, f"{best.get(k, float('nan')):.4f}", f"{v:.4f}")
    for k, v in test.items():
        table.add_row(k, f"{v:.4f}", "")
    return table
