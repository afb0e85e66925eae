"""`run_training(cfg, callbacks) -> TrainResult`: the one assembly function behind ml-train and every
search trial. Data, model, optimizer, scheduler, run dir, logging and checkpoints are built here."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from ml_framework.config import save_config
from ml_framework.errors import ConfigError, DataError
from ml_framework.fileio import atomic_write_text
from ml_framework.training.rundir import create_run_dir

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

    def value(self, metric: str | None = None) -> float:
        """The monitored metric at the best epoch (NaN when there is none)."""
        return float(self.best.get(metric or self.monitor, math.nan))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return d


@dataclass
class PreparedData:
    train: Any
    val: Any
    test: Any
    classes: tuple[str, ...]
    channels: int
    image_size: int
    splits_json: dict[str, Any]
    skipped: tuple[str, ...]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"training.device: '{name}' asked for, but CUDA is not available here (use auto or cpu)"
        )
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"training.device: '{name}' is not a device (auto, cpu, cuda, cuda:N)") from e


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if torch.cuda.is_available():
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def prepare_data(cfg: DictConfig, device: torch.device) -> PreparedData:
    """Decoded images (cached), the recorded split, and in-memory batch iterators on `device`."""
    from ml_framework.data.cache import load_images
    from ml_framework.data.loader import TensorBatches, compute_mean_std
    from ml_framework.data.splits import make_splits

    d, t = cfg.data, cfg.training
    images = load_images(
        d.data_dir, d.image_size, d.channels, cache_dir=d.cache_dir, num_workers=d.num_workers
    )
    if d.class_names is not None and list(d.class_names) != list(images.classes):
        raise DataError(
            f"data.class_names {list(d.class_names)} does not match the class folders in "
            f"{d.data_dir}/raw: {list(images.classes)} (fix the list or set it to null)"
        )
    split_seed = t.seed if d.split_seed is None else d.split_seed
    splits = make_splits(
        images.labels.numpy(),
        val_split=d.val_split,
        test_split=d.test_split,
        n_folds=d.n_folds if d.fold is not None else 0,  # folds never change the fixed split
        stratified_folds=d.stratified_folds,
        seed=split_seed,
        class_names=images.classes,
    )
    train_idx, val_idx, test_idx = splits.for_fold(d.fold)
    if len(val_idx) == 0:
        raise ConfigError("the validation split is empty: raise data.val_split or add images")
    x = images.images.to(device)
    y = images.labels.to(device)
    train_x = x[torch.as_tensor(train_idx, device=device)]
    mean, std = compute_mean_std(train_x)
    channels_last = bool(t.channels_last and device.type == "cuda")

    def batches(idx: np.ndarray, train: bool) -> TensorBatches:
        index = torch.as_tensor(idx, device=device)
        return TensorBatches(
            x[index],
            y[index],
            batch_size=t.batch_size if train else max(t.batch_size, 256),
            shuffle=train,
            train=train,
            seed=t.seed,
            augmentation=d.augmentation,
            mean=mean,
            std=std,
            device=device,
            drop_small_remainder=train,
            channels_last=channels_last,
        )

    return PreparedData(
        train=batches(train_idx, True),
        val=batches(val_idx, False),
        test=batches(test_idx, False),
        classes=images.classes,
        channels=d.channels,
        image_size=d.image_size,
        splits_json={**splits.to_json(images.files), "fold": d.fold, "fingerprint": splits.fingerprint()},
        skipped=tuple(images.skipped),
    )


class _LogEpochs:
    """Mirror each epoch into train.log."""

    def on_train_start(self, trainer: Any) -> None:
        log.info("training from epoch %d to %d", trainer.epoch + 1, trainer.num_epochs)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 6) for k, v in metrics.items()}))

    def on_train_end(self, trainer: Any) -> None:
        if trainer.stopped_early:
            log.info("early stopping after epoch %d", trainer.epoch)


def run_training(
    cfg: DictConfig,
    callbacks: Sequence[Any] = (),
    *,
    run_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    hparams_extra: dict[str, Any] | None = None,
    console: Any = None,
) -> TrainResult:
    """Train `cfg` and write its run dir. `resume` is a checkpoint (last.pt) to continue from; its run dir
    is reused. `run_dir` forces a directory (search trials); otherwise `output.runs_dir/<name>`."""
    from ml_framework.models import count_parameters, create_model
    from ml_framework.training.optim import create_optimizer, create_scheduler
    from ml_framework.training.progress import RichProgress
    from ml_framework.training.tensorboard import TensorBoardLogger, flatten_hparams
    from ml_framework.training.trainer import EarlyStopping, Trainer

    started = time.perf_counter()
    t = cfg.training
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)
    seed_everything(t.seed, t.deterministic)
    data = prepare_data(cfg, device)

    torch.manual_seed(t.seed)  # model init independent of what data preparation consumed
    model = create_model(
        cfg.model, channels=data.channels, image_size=data.image_size, num_classes=len(data.classes)
    )
    model = model.to(device)
    if t.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model.parameters(), cfg.optimizer)
    scheduler = create_scheduler(optimizer, cfg.scheduler, t.num_epochs, t.monitor_mode)

    state = None
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=False)
        run_dir = Path(resume).parent.parent
    elif run_dir is None:
        run_dir = create_run_dir(
            cfg.output.runs_dir,
            cfg.output.name,
            f"{cfg.data.dataset_name}_{cfg.model.architecture.replace('/', '-')}",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml", drop_search=True)
    (run_dir / "splits.json").write_text(json.dumps(data.splits_json))

    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_log = logging.getLogger("ml_framework")
    root_log.addHandler(handler)
    root_log.setLevel(logging.INFO)
    if data.skipped:
        log.warning("skipped %d unreadable file(s): %s", len(data.skipped), ", ".join(data.skipped))

    tb = TensorBoardLogger(
        run_dir, flatten_hparams(cfg, hparams_extra), purge_step=(state["epoch"] + 1) if state else None
    )
    all_callbacks: list[Any] = [_LogEpochs(), tb]
    es = t.early_stopping
    if es.enabled:
        all_callbacks.append(EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta))
    all_callbacks.extend(callbacks)
    bar = RichProgress(t.num_epochs, state["epoch"] if state else 0, console) if progress else None
    trainer = Trainer(
        model,
        optimizer,
        scheduler,
        data.train,
        data.val,
        num_classes=len(data.classes),
        num_epochs=t.num_epochs,
        device=device,
        monitor=t.monitor,
        monitor_mode=t.monitor_mode,
        amp=t.amp,
        grad_clip_norm=t.grad_clip_norm,
        label_smoothing=t.label_smoothing,
        checkpoint_dir=run_dir / "checkpoints",
        callbacks=all_callbacks,
        progress=bar,
    )
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed from %s at epoch %d", resume, trainer.epoch)

    result = TrainResult(
        run_dir=run_dir,
        monitor=t.monitor,
        monitor_mode=t.monitor_mode,
        history=trainer.history,
        best_epoch=None,
        best={},
        final={},
        num_params=count_parameters(model),
    )
    try:
        if bar is not None:
            with bar:
                trainer.fit()
        else:
            trainer.fit()
        result.test = _test_metrics(trainer, data, run_dir / "checkpoints" / "best.pt", device)
    except BaseException as e:
        result.status = f"stopped: {type(e).__name__}: {e}".strip().rstrip(":")
        log.warning("run %s: %s", run_dir, result.status)
        raise
    finally:
        result.history = trainer.history
        result.best_epoch = trainer.best_epoch
        result.best = trainer.history[trainer.best_epoch - 1] if trainer.best_epoch else {}
        result.final = trainer.history[-1] if trainer.history else {}
        result.stopped_early = trainer.stopped_early
        result.duration_s = time.perf_counter() - started
        _write_outputs(result, tb)
        root_log.removeHandler(handler)
        handler.close()
    return result


def _test_metrics(
    trainer: Any, data: PreparedData, best_path: Path, device: torch.device
) -> dict[str, float]:
    """Metrics of the best checkpoint on the held-out test split."""
    if len(data.test) == 0:
        return {}
    if best_path.is_file():
        trainer.model.load_state_dict(torch.load(best_path, map_location=device, weights_only=False)["model"])
    return trainer.evaluate(data.test, "test")


def _write_outputs(result: TrainResult, tb: Any) -> None:
    run_dir = result.run_dir
    atomic_write_text(run_dir / "metrics.json", json.dumps(result.to_json(), indent=1, default=str))
    hp_metrics = {f"best/{k}": v for k, v in result.best.items() if k != "epoch"}
    hp_metrics.update({f"final/{k}": v for k, v in result.final.items() if k != "epoch"})
    hp_metrics.update({f"test/{k}": v for k, v in result.test.items()})
    tb.finish(hp_metrics)
    lines = [
        f"run: {run_dir}",
        f"status: {result.status}",
        f"epochs: {len(result.history)}" + (" (early stopping)" if result.stopped_early else ""),
        f"parameters: {result.num_params}",
        f"monitor: {result.monitor} ({result.monitor_mode}); best epoch: {result.best_epoch}",
        "best: " + ", ".join(f"{k}={v:.4f}" for k, v in result.best.items() if k != "epoch"),
        "final: " + ", ".join(f"{k}={v:.4f}" for k, v in result.final.items() if k != "epoch"),
        "test: " + (", ".join(f"{k}={v:.4f}" for k, v in result.test.items()) or "(no test split)"),
        f"duration: {result.duration_s:.1f}s",
    ]
    (run_dir / "summary.txt").write_text("\n".join(lines) + "\n")
