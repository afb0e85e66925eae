"""Fine-tuning controls: a frozen backbone, unfrozen at an epoch, and a backbone learning-rate multiplier.

The head is the classifier (`models.head_keys`); everything else is the backbone. The optimizer
gets two parameter groups (head at `optimizer.lr`, backbone at `lr x optimizer.backbone_lr_mult`) and
always holds every parameter, so unfreezing needs no new optimizer: a frozen parameter simply has no
gradient, which torch's optimizers skip. Freezing is a trainer callback; the trainer knows nothing of
it. BatchNorm statistics of a frozen backbone still adapt (they are buffers, not parameters).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ml_framework.errors import ConfigError
from ml_framework.training.callbacks import Callback


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(head parameters, backbone parameters)."""
    from ml_framework.models import head_keys

    heads = head_keys(model)
    head = [p for n, p in model.named_parameters() if n in heads]
    backbone = [p for n, p in model.named_parameters() if n not in heads]
    return head, backbone


def parameter_groups(model: nn.Module, optimizer_cfg: Any) -> list[dict[str, Any]] | Any:
    """What `create_optimizer` gets: the model's parameters, or [head, backbone] groups when
    `optimizer.backbone_lr_mult` differs from 1."""
    mult = float(optimizer_cfg.get("backbone_lr_mult", 1.0))
    if mult < 0:
        raise ConfigError(f"optimizer.backbone_lr_mult={mult} must be >= 0")
    if mult == 1.0:
        return model.parameters()
    head, backbone = split_parameters(model)
    if not head:
        raise ConfigError(
            "optimizer.backbone_lr_mult needs a classifier head (a last Linear layer); this model has none"
        )
    groups: list[dict[str, Any]] = [{"params": head}]
    if backbone:
        groups.append({"params": backbone, "lr": float(optimizer_cfg.lr) * mult})
    return groups


class BackboneFreezer(Callback):
    """Freeze the backbone before training; unfreeze it before epoch `unfreeze_epoch` (1-based)."""

    def __init__(self, unfreeze_epoch: int | None) -> None:
        self.unfreeze_epoch = unfreeze_epoch

    def _set(self, trainer: Any, trainable: bool) -> None:
        for p in split_parameters(trainer.model)[1]:
            p.requires_grad_(trainable)

    def on_train_start(self, trainer: Any) -> None:
        # A resumed run past the unfreeze epoch starts unfrozen, as the uninterrupted run would be.
        frozen = self.unfreeze_epoch is None or trainer.epoch + 1 < self.unfreeze_epoch
        self._set(trainer, not frozen)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if self.unfreeze_epoch is not None and epoch + 1 == self.unfreeze_epoch:
            self._set(trainer, True)


def finetune_callbacks(
    model: nn.Module, model_cfg: Any, training_cfg: Any, num_epochs: int
) -> list[Callback]:
    """The callbacks `model.freeze_backbone` / `training.unfreeze_epoch` ask for (checked)."""
    freeze = bool(model_cfg.get("freeze_backbone", False))
    unfreeze = training_cfg.get("unfreeze_epoch")
    if unfreeze is not None and not freeze:
        raise ConfigError(
            f"training.unfreeze_epoch={unfreeze} needs model.freeze_backbone=true (nothing is frozen)"
        )
    if unfreeze is not None and not 2 <= int(unfreeze) <= num_epochs:
        raise ConfigError(
            f"training.unfreeze_epoch={unfreeze} must be between 2 and training.num_epochs ({num_epochs})"
        )
    if not freeze:
        return []
    if not split_parameters(model)[0]:
        raise ConfigError(
            "model.freeze_backbone needs a classifier head (a last Linear layer); this model has none"
        )
    return [BackboneFreezer(None if unfreeze is None else int(unfreeze))]
