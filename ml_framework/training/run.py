"""`run_training(cfg, callbacks) -> TrainResult`: the one assembly function behind ml-train and every
search trial. Data, model, optimizer, scheduler, run dir, logging and checkpoints are built here."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ml_framework.checkpoint import load_checkpoint
from ml_framework.config import copy_config, save_config
from ml_framework.errors import ConfigError
from ml_framework.training.result import LogEpochs, TrainResult, write_outputs
from ml_framework.training.rundir import close_train_log, create_run_dir, open_train_log

if TYPE_CHECKING:
    import torch

log = logging.getLogger("ml_framework.training")


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
    save: Any = None  # writes extra files into the run dir (the fitted preprocessor of a table)
    notes: tuple[str, ...] = ()  # how the data was prepared (pipeline, preset): printed and logged


def resolve_device(name: str) -> torch.device:
    import torch

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
    import torch

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
    """The recorded split and batch iterators on `device`: an image folder (`training/images.py`,
    memory or stream pipeline) or a table."""
    if cfg.data.format != "images":  # a table for the torch MLP
        from ml_framework.training.tabular import prepare_tabular_tensors

        return prepare_tabular_tensors(cfg, device)
    from ml_framework.training.images import prepare_image_data

    return prepare_image_data(cfg, device)


def _print(console: Any, text: str) -> None:
    if console is not None:
        console.print(text, markup=False, highlight=False)
    else:
        print(text, flush=True)


def run_training(
    cfg: DictConfig,
    callbacks: Sequence[Any] = (),
    *,
    run_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    hparams_extra: dict[str, Any] | None = None,
    console: Any = None,
    trial: bool = False,
) -> TrainResult:
    """Train `cfg` and write its run dir. `resume` is a checkpoint (last.pt) to continue from; its run dir
    is reused. `run_dir` forces a directory (search trials); otherwise `output.runs_dir/<name>`.
    `trial`: a search trial (`training.compile: auto` then never compiles). The run's config.yaml holds
    the concrete speed settings chosen for `auto` (`training/autotune.py`); `cfg` itself is not changed."""
    from ml_framework.config.schema import takes_estimator_params

    if cfg.data.format != "images" and takes_estimator_params(cfg.model.architecture):
        if resume is not None:
            raise ConfigError("--resume continues torch runs; rerun a scikit-learn/XGBoost/LightGBM fit")
        from ml_framework.training.tabular import run_estimator

        return run_estimator(
            cfg, callbacks, run_dir=run_dir, progress=progress, hparams_extra=hparams_extra, console=console,
            trial=trial,
        )  # fmt: skip
    import torch

    from ml_framework.models import count_parameters, create_model
    from ml_framework.training.autotune import adopt_recorded_speed, apply_choice, choose_speed
    from ml_framework.training.callbacks import EarlyStopping, check_metric
    from ml_framework.training.finetune import finetune_callbacks, parameter_groups
    from ml_framework.training.optim import create_optimizer, create_scheduler
    from ml_framework.training.progress import RichProgress
    from ml_framework.training.resume import (
        continue_schedule,
        optimizer_settings,
        read_training_state,
        record_resume,
        resume_changes,
    )
    from ml_framework.training.tensorboard import TensorBoardLogger, run_hparams
    from ml_framework.training.trainer import Trainer

    started = time.perf_counter()
    cfg = copy_config(cfg)  # receives the concrete speed settings
    t = cfg.training
    check_metric(t.monitor, "training.monitor")  # before any data is loaded or epoch trained
    if t.early_stopping.enabled:
        check_metric(t.early_stopping.monitor, "training.early_stopping.monitor")
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)
    # a checkpoint that is refused (not a plain tensor file) fails before any work
    state = None if resume is None else read_training_state(resume, map_location=device)
    seed_everything(t.seed, t.deterministic)
    data = prepare_data(cfg, device)

    torch.manual_seed(t.seed)  # model init independent of what data preparation consumed
    model = create_model(
        cfg.model, channels=data.channels, image_size=data.image_size, num_classes=len(data.classes)
    )
    model = model.to(device)
    optimizer = create_optimizer(parameter_groups(model, cfg.optimizer), cfg.optimizer)
    settings = optimizer_settings(optimizer)  # the config's hyperparameters, before any schedule
    scheduler = create_scheduler(optimizer, cfg.scheduler, t.num_epochs, t.monitor_mode)

    changes: dict[str, Any] = {}
    if resume is not None:
        run_dir = Path(resume).parent.parent
        adopt_recorded_speed(cfg, run_dir)
        changes = resume_changes(cfg, run_dir, state["epoch"])
    elif run_dir is None:
        run_dir = create_run_dir(
            cfg.output.runs_dir,
            cfg.output.name,
            f"{cfg.data.dataset_name}_{cfg.model.architecture.replace('/', '-')}",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    speed = choose_speed(
        cfg,
        model,
        device=device,
        input_shape=(data.channels, data.image_size, data.image_size),
        num_classes=len(data.classes),
        total_steps=t.num_epochs * len(data.train),
        eval_share=data.val.num_samples / max(data.train.num_samples, 1),
        trial=trial,
    )
    for key, value in speed.config_values().items():
        OmegaConf.update(cfg, key, value, merge=False)
    model = apply_choice(model, speed)
    if state is not None and (run_dir / "config.yaml").is_file():
        record_resume(cfg, run_dir, state["epoch"], changes)  # the config the run continues with
    else:
        save_config(cfg, run_dir / "config.yaml", drop_search=True)
    (run_dir / "splits.json").write_text(json.dumps(data.splits_json))
    if data.save is not None:
        data.save(run_dir)

    handler = open_train_log(run_dir)
    if data.skipped:
        log.warning("skipped %d unreadable file(s): %s", len(data.skipped), ", ".join(data.skipped))
    for note in data.notes:
        log.info(note)
        if progress:
            _print(console, note)
    for note in speed.notes:  # fallbacks: in train.log and on the console
        log.warning(note)
        print(f"warning: {note}", file=sys.stderr)
    log.info(speed.describe())

    tb = TensorBoardLogger(
        run_dir, run_hparams(cfg, hparams_extra, trial), purge_step=(state["epoch"] + 1) if state else None
    )
    all_callbacks: list[Any] = [LogEpochs(), tb]
    es = t.early_stopping
    if es.enabled:
        all_callbacks.append(EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta))
    all_callbacks.extend(finetune_callbacks(model, cfg.model, t, t.num_epochs))
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
        precision=speed.precision,
        channels_last=speed.channels_last,
        grad_clip_norm=t.grad_clip_norm,
        label_smoothing=t.label_smoothing,
        checkpoint_dir=run_dir / "checkpoints",
        callbacks=all_callbacks,
        progress=bar,
    )
    if state is not None:
        trainer.load_state_dict(state)
        continue_schedule(trainer, settings, cfg)
        log.info("resumed from %s at epoch %d", resume, trainer.epoch)
        for key, (old, new) in changes.items():
            log.info("resumed with %s: %r -> %r", key, old, new)

    result = TrainResult(
        run_dir=run_dir,
        monitor=t.monitor,
        monitor_mode=t.monitor_mode,
        history=trainer.history,
        best_epoch=None,
        best={},
        final={},
        num_params=count_parameters(model),
        speed=speed.to_json(),
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
        write_outputs(result, tb)
        close_train_log(handler)
    return result


def _test_metrics(
    trainer: Any, data: PreparedData, best_path: Path, device: torch.device
) -> dict[str, float]:
    """Metrics of the best checkpoint on the held-out test split."""
    if len(data.test) == 0:
        return {}
    if best_path.is_file():
        best = load_checkpoint(best_path, map_location=device, what="best checkpoint")
        trainer.model.load_state_dict(best["model"])
    return trainer.evaluate(data.test, "test")
