"""Optimizer and scheduler registries: name -> factory reading its keys from the config section."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from omegaconf import DictConfig

from ml_framework.errors import ConfigError


def _sgd(params: Iterable, c: DictConfig) -> torch.optim.Optimizer:
    if c.nesterov and c.momentum <= 0:
        raise ConfigError("optimizer.nesterov: true needs optimizer.momentum > 0")
    return torch.optim.SGD(
        params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
    )


def _betas(c: DictConfig) -> tuple[float, float]:
    if len(c.betas) != 2:
        raise ConfigError(f"optimizer.betas must be two numbers like [0.9, 0.999], got {list(c.betas)}")
    return float(c.betas[0]), float(c.betas[1])


OPTIMIZERS: dict[str, Callable[[Iterable, DictConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=_betas(c), weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, betas=_betas(c), weight_decay=c.weight_decay),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
}


def create_optimizer(params: Iterable, cfg: DictConfig) -> torch.optim.Optimizer:
    """`cfg` is the `optimizer` section."""
    try:
        factory = OPTIMIZERS[cfg.name]
    except KeyError:
        raise ConfigError(f"optimizer.name: '{cfg.name}' is not one of {', '.join(OPTIMIZERS)}") from None
    return factory(params, cfg)


def _warmup_cosine(opt: torch.optim.Optimizer, c: DictConfig, num_epochs: int, mode: str) -> Any:
    if c.warmup_epochs <= 0:
        return _cosine(opt, c, num_epochs, mode)
    if c.warmup_epochs >= num_epochs:
        raise ConfigError(
            f"scheduler.warmup_epochs ({c.warmup_epochs}) must be below training.num_epochs ({num_epochs})"
        )
    warmup = torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=1.0 / (c.warmup_epochs + 1), total_iters=c.warmup_epochs
    )
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=num_epochs - c.warmup_epochs, eta_min=c.min_lr
    )
    return torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[c.warmup_epochs])


def _cosine(opt: torch.optim.Optimizer, c: DictConfig, num_epochs: int, mode: str) -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=num_epochs, eta_min=c.min_lr)


def _step(opt: torch.optim.Optimizer, c: DictConfig, num_epochs: int, mode: str) -> Any:
    if c.step_size < 1:
        raise ConfigError(f"scheduler.step_size must be >= 1, got {c.step_size}")
    return torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)


def _plateau(opt: torch.optim.Optimizer, c: DictConfig, num_epochs: int, mode: str) -> Any:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=c.gamma, patience=c.patience, min_lr=c.min_lr
    )


SCHEDULERS: dict[str, Callable[..., Any] | None] = {
    "none": None,
    "step": _step,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
    "plateau": _plateau,
}


def create_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, num_epochs: int, monitor_mode: str
) -> Any:
    """`cfg` is the `scheduler` section; stepped once per epoch (plateau: with the monitored metric)."""
    if cfg.name not in SCHEDULERS:
        raise ConfigError(f"scheduler.name: '{cfg.name}' is not one of {', '.join(SCHEDULERS)}")
    factory = SCHEDULERS[cfg.name]
    return None if factory is None else factory(optimizer, cfg, num_epochs, monitor_mode)


def is_plateau(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
