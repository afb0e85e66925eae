"""What the trainer hands its epochs to, without torch: the callback protocol, early stopping and the
metric names a run may monitor. Table estimators (`training/tabular.py`) drive the same callbacks."""

from __future__ import annotations

import math
from typing import Any

from ml_framework.training.metrics import METRIC_NAMES


def check_metric(name: str, key: str) -> None:
    """A ConfigError (with the nearest names) unless the trainer emits a metric `name` every epoch."""
    if name not in METRIC_NAMES:
        from ml_framework.errors import ConfigError, closest

        near = closest(name, METRIC_NAMES)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"{key}: '{name}' is not a metric.{hint} Choose from {', '.join(METRIC_NAMES)}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite in epoch `epoch` (1-based)."""

    def __init__(self, message: str, epoch: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch


class Callback:
    """Hooks the trainer calls. Raise to abort training (e.g. a pruned trial); set
    `trainer.should_stop = True` to end it after the current epoch."""

    def on_train_start(self, trainer: Any) -> None:
        """Called once before the first (or first resumed) epoch."""

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch's checkpoint is written; `epoch` counts from 1."""

    def on_train_end(self, trainer: Any) -> None:
        """Called once after the last epoch (not when a callback raised)."""


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` in `mode`; NaN never does."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs (derived from history,
    so a resumed run stops exactly where an uninterrupted one would)."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0) -> None:
        check_metric(monitor, "training.early_stopping.monitor")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        best: float | None = None
        best_epoch = 0
        for row in trainer.history:
            if improved(row[self.monitor], best, self.mode, self.min_delta):
                best, best_epoch = row[self.monitor], row["epoch"]
        if epoch - best_epoch >= self.patience:
            trainer.should_stop = True
            trainer.stopped_early = True
