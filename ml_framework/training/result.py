"""What a run leaves behind, whatever trained it (the torch trainer or a table estimator): the
`TrainResult`, its train.log lines per epoch, and metrics.json, summary.txt and the TensorBoard
hparams session. No torch here: table runs never import it."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ml_framework.fileio import atomic_write_text

log = logging.getLogger("ml_framework.training")


@dataclass
class TrainResult:
    run_dir: Path
    monitor: str
    monitor_mode: str
    history: list[dict[str, float]]
    best_epoch: int | None
    best: dict[str, float]
    final: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    num_params: int = 0
    status: str = "completed"  # or "failed: <error>" / "interrupted: <reason>"
    duration_s: float = 0.0
    speed: dict[str, Any] = field(default_factory=dict)  # precision, channels_last, compile and why

    def value(self, metric: str | None = None) -> float:
        """The monitored metric at the best epoch (NaN when there is none)."""
        return float(self.best.get(metric or self.monitor, math.nan))

    def to_json(self) -> dict[str, Any]:
        """The fields as they are (no deep copy, unlike `asdict`: the caller only serialises them)."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"run_dir": str(self.run_dir)}


class LogEpochs:
    """Mirror each epoch into train.log."""

    def on_train_start(self, trainer: Any) -> None:
        log.info("training from epoch %d to %d", trainer.epoch + 1, trainer.num_epochs)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 6) for k, v in metrics.items()}))

    def on_train_end(self, trainer: Any) -> None:
        if trainer.stopped_early:
            log.info("early stopping after epoch %d", trainer.epoch)


def write_outputs(result: TrainResult, tb: Any) -> None:
    """metrics.json, summary.txt and the TensorBoard session of `tb` (None: a run without events)."""
    run_dir = result.run_dir
    atomic_write_text(run_dir / "metrics.json", json.dumps(result.to_json(), indent=1, default=str))
    if tb is not None:
        hp_metrics = {f"best/{k}": v for k, v in result.best.items() if k != "epoch"}
        hp_metrics.update({f"final/{k}": v for k, v in result.final.items() if k != "epoch"})
        hp_metrics.update({f"test/{k}": v for k, v in result.test.items()})
        tb.finish(hp_metrics, completed=result.status == "completed")
    lines = [
        f"run: {run_dir}",
        f"status: {result.status}",
        f"epochs: {len(result.history)}" + (" (early stopping)" if result.stopped_early else ""),
        f"parameters: {result.num_params}",
        "speed: "
        + ", ".join(f"{k}={result.speed.get(k)}" for k in ("precision", "channels_last", "compile")),
        f"monitor: {result.monitor} ({result.monitor_mode}); best epoch: {result.best_epoch}",
        "best: " + ", ".join(f"{k}={v:.4f}" for k, v in result.best.items() if k != "epoch"),
        "final: " + ", ".join(f"{k}={v:.4f}" for k, v in result.final.items() if k != "epoch"),
        "test: " + (", ".join(f"{k}={v:.4f}" for k, v in result.test.items()) or "(no test split)"),
        f"duration: {result.duration_s:.1f}s",
    ]
    (run_dir / "summary.txt").write_text("\n".join(lines) + "\n")
