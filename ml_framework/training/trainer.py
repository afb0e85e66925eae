"""The training loop. It knows nothing of Optuna: it hands epoch metrics to callbacks."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml_framework.checkpoint import save_checkpoint
from ml_framework.training.callbacks import Callback, TrainingDiverged, check_metric, improved
from ml_framework.training.optim import is_plateau
from ml_framework.training.tabular_metrics import confusion_f1

# training.precision -> the autocast dtype (fp32: no autocast)
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> Any:
    """The autocast context of `precision` on `device` (a no-op for fp32)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Train/validate epochs with checkpoints, reduced precision (autocast; losses and metrics in
    fp32), channels-last batches and exact resume."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        train_batches: Any,
        val_batches: Any,
        *,
        num_classes: int,
        num_epochs: int,
        device: torch.device,
        monitor: str = "val_acc",
        monitor_mode: str = "max",
        precision: str = "fp32",  # fp32, bf16, fp16 (with a GradScaler)
        channels_last: bool = False,  # convert each 4-D input batch to channels-last
        grad_clip_norm: float | None = None,
        label_smoothing: float = 0.0,
        checkpoint_dir: Path | None = None,
        callbacks: Sequence[Callback] = (),
        progress: Any = None,
    ) -> None:
        check_metric(monitor, "training.monitor")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_batches, self.val_batches = train_batches, val_batches
        self.num_classes, self.num_epochs, self.device = num_classes, num_epochs, device
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.grad_clip_norm = grad_clip_norm
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.checkpoint_dir = checkpoint_dir
        self.callbacks = list(callbacks)
        self.progress = (
            progress  # an object with start_epoch(epoch, n_batches), advance(), end_epoch(metrics)
        )
        self.precision, self.channels_last = precision, channels_last
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.should_stop = False
        self.stopped_early = False

    # -- one epoch ----------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """The batch in the model's memory format (a no-op when it already is)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch; returns (logits, loss). The loss is computed in fp32."""
        model, opt, scaler = self.model, self.optimizer, self.scaler
        with self._autocast():
            out = model(self._memory_format(x))
        loss = self.loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if self.grad_clip_norm:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip_norm)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            if self.grad_clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip_norm)
            opt.step()
        return out, loss

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.train_batches.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        advance = self.progress.advance if self.progress is not None else None
        for x, y in self.train_batches:
            out, loss = self.train_step(x, y)
            n = y.shape[0]
            loss_sum += loss.detach().float() * n
            target = y.argmax(1) if y.ndim > 1 else y  # soft targets (MixUp/CutMix): their top class
            correct += (out.detach().argmax(1) == target).sum()
            seen += n
            if advance is not None:
                advance()
        return {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct) / max(seen, 1)}

    @torch.inference_mode()
    def evaluate(self, batches: Iterable, prefix: str = "val") -> dict[str, float]:
        """Loss, accuracy and macro F1 over `batches`."""
        self.model.eval()
        k = self.num_classes
        loss_sum = torch.zeros((), device=self.device)
        confusion = torch.zeros(k * k, device=self.device, dtype=torch.long)
        seen = 0
        for x, y in batches:
            with self._autocast():
                out = self.model(self._memory_format(x))
            loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum")
            confusion += torch.bincount(y * k + out.argmax(1), minlength=k * k)
            seen += y.shape[0]
        if seen == 0:
            return {}
        confusion = confusion.view(k, k).cpu()
        return {
            f"{prefix}_loss": float(loss_sum) / seen,
            f"{prefix}_acc": float(confusion.diag().sum()) / seen,
            f"{prefix}_f1": confusion_f1(confusion.numpy()),
        }

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        for cb in self.callbacks:
            cb.on_train_start(self)
        while self.epoch < self.num_epochs and not self.should_stop:
            epoch = self.epoch + 1
            lr = float(self.optimizer.param_groups[0]["lr"])
            if self.progress is not None:
                self.progress.start_epoch(epoch, len(self.train_batches))
            start = time.perf_counter()
            metrics: dict[str, float] = {"epoch": epoch, **self.train_epoch(epoch)}
            if not math.isfinite(metrics["train_loss"]):
                raise TrainingDiverged(
                    f"train_loss became {metrics['train_loss']} at epoch {epoch} (lr={lr:g}); "
                    "lower optimizer.lr or enable training.grad_clip_norm",
                    epoch,
                )
            metrics.update(self.evaluate(self.val_batches, "val"))
            metrics["lr"] = lr
            metrics["epoch_time"] = time.perf_counter() - start
            self._step_scheduler(metrics)
            self.history.append(metrics)
            self.epoch = epoch
            is_best = improved(metrics.get(self.monitor, math.nan), self.best_value, self.monitor_mode)
            if is_best:
                self.best_value, self.best_epoch = metrics[self.monitor], epoch
            self._save_checkpoints(is_best)
            if self.progress is not None:
                self.progress.end_epoch(metrics, is_best)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, metrics)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _step_scheduler(self, metrics: dict[str, float]) -> None:
        if self.scheduler is None:
            return
        if is_plateau(self.scheduler):
            self.scheduler.step(metrics[self.monitor])
        else:
            self.scheduler.step()

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "history": self.history,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": _numpy_rng_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.stopped_early = state.get("stopped_early", False)
        self.should_stop = self.stopped_early
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(tuple(rng["numpy"]))
        random.setstate(rng["python"])

    def _save_checkpoints(self, is_best: bool) -> None:
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.state_dict(), self.checkpoint_dir / "last.pt")
        if is_best:
            best = {"model": self.model.state_dict(), "epoch": self.epoch, "metrics": self.history[-1]}
            save_checkpoint(best, self.checkpoint_dir / "best.pt")


def _numpy_rng_state() -> tuple[str, list[int], int, int, float]:
    """numpy's global RNG state as plain values (loadable with `weights_only=True`)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return str(name), keys.tolist(), int(pos), int(has_gauss), float(cached)
