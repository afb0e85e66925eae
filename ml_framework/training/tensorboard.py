"""TensorBoard logging: per-epoch scalars and an hparams session per run, so the HParams dashboard
compares every run (and every trial of a study) side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ml_framework.training.trainer import Callback, Trainer

HPARAM_SECTIONS = ("data", "model", "training", "optimizer", "scheduler")
SKIPPED_HPARAMS = (
    "data.data_dir",
    "data.cache_dir",
    "data.class_names",
    "data.num_workers",
    "training.device",
)


def flatten_hparams(
    cfg: DictConfig, extra: dict[str, Any] | None = None
) -> dict[str, float | int | str | bool]:
    """Scalar config values by dotted key (lists and None as text), plus `extra` (e.g. sampled params)."""
    out: dict[str, float | int | str | bool] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}")
        elif prefix not in SKIPPED_HPARAMS:
            out[prefix] = node if isinstance(node, bool | int | float | str) else str(node)

    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for section in HPARAM_SECTIONS:
        walk(container.get(section, {}), section)
    for k, v in (extra or {}).items():
        out[k] = v if isinstance(v, bool | int | float | str) else str(v)
    return out


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: Path, hparams: dict[str, Any], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.hparams = hparams
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def finish(self, results: dict[str, float]) -> None:
        """Write the hparams session with the run's best/final/test metrics, then close."""
        from torch.utils.tensorboard.summary import hparams

        results = {k: v for k, v in results.items() if isinstance(v, int | float)}
        if results:
            exp, ssi, sei = hparams(self.hparams, results)
            file_writer = self.writer._get_file_writer()
            for summary in (exp, ssi, sei):
                file_writer.add_summary(summary)
            for key, value in results.items():
                self.writer.add_scalar(key, value)
        self.writer.close()
