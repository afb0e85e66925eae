"""Continuing a run from its last checkpoint, possibly with a changed config.

A resumed run keeps its data, model and seed; only keys whose meaning from the current epoch on is
well defined may change (`RESUMABLE`). The optimizer's hyperparameters and the learning-rate schedule
then follow the new config as if it had been set from the start: the scheduler is rebuilt for the new
horizon (`training.num_epochs`) and replayed over the epochs already done, so epoch k+1 trains at the
learning rate the new config gives epoch k+1. The previous config is kept beside the new one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ml_framework.checkpoint import load_checkpoint
from ml_framework.config import load_config, save_config
from ml_framework.errors import ConfigError, UserError

# Keys (or sections, ending in ".") a resume may change; everything else is fixed by the run.
RESUMABLE: tuple[str, ...] = (
    "training.num_epochs",
    "training.device",
    "training.num_threads",
    "training.precision",  # how fast, not what: chosen (or measured) per run
    "training.amp",
    "training.channels_last",
    "training.compile",
    "data.memory_budget_mb",  # where decoded images live (memory or stream), not what is trained
    "data.num_workers",
    "training.early_stopping.",
    "optimizer.",
    "scheduler.",
    "tracking.",
)
FIXED_ON_RESUME = ("optimizer.name",)  # its state (momenta) cannot be carried to another optimizer


def _flat(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("search", None)
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = node

    walk(container, "")
    return out


def _resumable(key: str) -> bool:
    return key not in FIXED_ON_RESUME and any(
        key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE
    )


def read_training_state(path: Path, map_location: Any) -> dict[str, Any]:
    """A training checkpoint (last.pt), loaded safely."""
    state = load_checkpoint(path, map_location=map_location, what="--resume")
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "history"} <= state.keys():
        raise UserError(
            f"--resume {path}: not a training checkpoint (give a run dir or its checkpoints/last.pt)"
        )
    return state


def resume_changes(cfg: DictConfig, run_dir: Path, epochs_done: int) -> dict[str, tuple[Any, Any]]:
    """`{key: (old, new)}` between the run's config.yaml and `cfg`; a ConfigError for a key a resume
    cannot change, or for fewer epochs than the run already trained."""
    previous = run_dir / "config.yaml"
    if not previous.is_file():
        return {}
    old, new = _flat(load_config(previous)), _flat(cfg)
    keys = sorted(old.keys() | new.keys())
    changes = {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}
    refused = [k for k in changes if not _resumable(k)]
    if refused:
        listed = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused)
        allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE)
        raise ConfigError(
            f"--resume {run_dir}: {listed} cannot change when a run is continued (its data, model and "
            f"checkpoint state are fixed). A resume may change only {allowed} (not "
            f"{', '.join(FIXED_ON_RESUME)}); start a new run for the others"
        )
    if cfg.training.num_epochs < epochs_done:
        raise ConfigError(
            f"--resume {run_dir}: training.num_epochs={cfg.training.num_epochs} is below the "
            f"{epochs_done} epochs the run has already trained"
        )
    return changes


def record_resume(cfg: DictConfig, run_dir: Path, epoch: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Write the config the run continues with; with changes, the previous one stays as
    `config_to_epoch_<epoch>.yaml` and config.yaml says what changed from which epoch."""
    if not changes:
        return
    previous = run_dir / "config.yaml"
    previous.replace(run_dir / f"config_to_epoch_{epoch}.yaml")
    lines = [f"resumed after epoch {epoch}; from epoch {epoch + 1} on:"]
    lines += [f"  {k}: {old!r} -> {new!r}" for k, (old, new) in changes.items()]
    lines.append(f"epochs 1-{epoch} ran with config_to_epoch_{epoch}.yaml")
    save_config(cfg, previous, drop_search=True, header="\n".join(lines))


def optimizer_settings(optimizer: Any) -> list[dict[str, Any]]:
    """Each param group's hyperparameters (lr, weight decay, ...), as the config built them."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def continue_schedule(trainer: Any, settings: list[dict[str, Any]], cfg: DictConfig) -> None:
    """After `trainer.load_state_dict`: the optimizer keeps its state (momenta) but takes the config's
    hyperparameters, and a scheduler for the config's horizon is replayed over the epochs done."""
    from ml_framework.training.optim import create_scheduler, is_plateau

    for group, values in zip(trainer.optimizer.param_groups, settings, strict=True):
        params = group["params"]
        group.clear()  # also drops the old schedule's `initial_lr`
        group.update(values, params=params)
    t = cfg.training
    scheduler = create_scheduler(trainer.optimizer, cfg.scheduler, t.num_epochs, t.monitor_mode)
    if scheduler is not None:
        with warnings.catch_warnings():  # replaying steps without optimizer steps is the point
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            for row in trainer.history:
                scheduler.step(row[t.monitor]) if is_plateau(scheduler) else scheduler.step()
    trainer.scheduler = scheduler
