"""Batches from in-memory uint8 tensors; augmentation and normalisation as whole-batch tensor ops.

Per epoch, one CPU `torch.Generator` seeded from (seed, epoch) draws the shuffle order and every
augmentation decision for the whole epoch at once (so runs, and resumed runs, see the same batches,
on any device, and the global RNG is never touched). Per batch the work is then one index_select
(plus, when augmenting, one gather per axis that does the random crop and the flips together), the
uint8 -> float conversion and an in-place multiply-add that does `/255` and `(x - mean) / std` together.

Remainder rule (training batches only, `drop_small_remainder=True`): batches have at least
`MIN_TRAIN_BATCH` (3) samples. A last batch of 1 or 2 samples (a BatchNorm error or pure noise) is
merged into the previous batch, and a `batch_size` below 3 is raised to 3, so no `batch_size` value
fails because of `len(train) % batch_size`. A dataset smaller than 3 gives one batch of everything.
Evaluation batches keep every sample in plain `batch_size` chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ml_framework.errors import ConfigError, unknown_key_message

MIN_TRAIN_BATCH = 3


def compute_mean_std(images_uint8: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in 0..1 units (float32 [C] on the images' device), in chunks.

    A constant channel gets std 1 instead of 0 so normalising never divides by zero.
    """
    c = images_uint8.shape[1]
    total = torch.zeros(c, dtype=torch.float64, device=images_uint8.device)
    squares = torch.zeros_like(total)
    for start in range(0, len(images_uint8), chunk):
        x = images_uint8[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = max(images_uint8.numel() // max(c, 1), 1)
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return mean.float(), std.float()


def batch_bounds(n: int, batch_size: int, merge_small_remainder: bool) -> list[tuple[int, int]]:
    """[start, end) of each batch, applying the remainder rule of the module docstring when asked."""
    if batch_size < 1:
        raise ConfigError(f"training.batch_size={batch_size} must be >= 1")
    if merge_small_remainder:
        batch_size = max(batch_size, MIN_TRAIN_BATCH)
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if merge_small_remainder and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_TRAIN_BATCH:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


# ---------------------------------------------------------------- augmentation plan


def _zeros_index(src: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    valid = (src >= 0) & (src < size)
    return src.clamp(0, size - 1), valid


def _reflect_index(src: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    # -1 -> 1, size -> size - 2 (mirror without repeating the edge, as torch's "reflect" pad).
    period = max(2 * (size - 1), 1)
    folded = src.remainder(period)
    return torch.where(folded < size, folded, period - folded), None


def _replicate_index(src: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    return src.clamp(0, size - 1), None


# padding mode -> (source index in [-p, size + p)) -> (index into the image, validity mask or None)
PADDING_MODES: dict[str, Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor | None]]] = {
    "zeros": _zeros_index,
    "reflect": _reflect_index,
    "replicate": _replicate_index,
}


@dataclass(frozen=True)
class AugmentPlan:
    crop_padding: int = 0  # 0: no random crop
    padding_mode: str = "zeros"
    horizontal_flip: bool = False
    vertical_flip: bool = False

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.horizontal_flip or self.vertical_flip)


def _option(aug: Any, key: str, default: Any) -> Any:
    if aug is None:
        return default
    if isinstance(aug, Mapping):
        return aug.get(key, default)
    return getattr(aug, key, default)


def augment_plan(augmentation: Any, image_size: int) -> AugmentPlan:
    """Read `data.augmentation` (dataclass, DictConfig or dict; None: nothing) into a checked plan."""
    padding = (
        int(_option(augmentation, "crop_padding", 0)) if _option(augmentation, "random_crop", False) else 0
    )
    mode = str(_option(augmentation, "padding_mode", "zeros"))
    if padding < 0:
        raise ConfigError(f"data.augmentation.crop_padding={padding} must be >= 0")
    if mode not in PADDING_MODES:
        raise ConfigError(unknown_key_message(mode, PADDING_MODES, "data.augmentation.padding_mode"))
    if mode == "reflect" and padding >= image_size:
        raise ConfigError(
            f"data.augmentation.crop_padding={padding} must be smaller than the image size "
            f"({image_size}) with padding_mode 'reflect'"
        )
    return AugmentPlan(
        crop_padding=padding,
        padding_mode=mode,
        horizontal_flip=bool(_option(augmentation, "horizontal_flip", False)),
        vertical_flip=bool(_option(augmentation, "vertical_flip", False)),
    )


def _axis_index(
    n: int, size: int, padding: int, flip: bool, mode: str, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample source positions [n, size] along one axis: random crop offset, then a p=0.5 flip."""
    pos = torch.arange(size).expand(n, size)
    if padding:
        offset = torch.randint(0, 2 * padding + 1, (n, 1), generator=g)
        index, valid = PADDING_MODES[mode](pos + offset - padding, size)
    else:
        index, valid = pos, None
    if flip:
        flipped = (torch.rand(n, 1, generator=g) < 0.5).expand(n, size)
        index = torch.where(flipped, index.flip(1), index)
        valid = None if valid is None else torch.where(flipped, valid.flip(1), valid)
    return index, valid


# ---------------------------------------------------------------- batches


def _per_channel(values: Any, c: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).to(device).reshape(-1)
    if t.numel() not in (1, c):
        raise ConfigError(f"mean/std have {t.numel()} values for {c} channel(s)")
    return t.expand(c).reshape(1, c, 1, 1).clone()


class TensorBatches:
    """Iterate (x float32 [B, C, H, W], y int64 [B]) over uint8 images already in memory.

    `train` (default: `shuffle`) enables augmentation and the remainder rule. Normalisation uses
    `mean`/`std` (per channel, 0..1 units, from `compute_mean_std` on the training split) when both
    are given, unless `augmentation.normalize` is false. Call `set_epoch(epoch)` before each epoch
    (without it, each pass advances the epoch by one).
    """

    def __init__(
        self,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        augmentation: Any = None,
        mean: Sequence[float] | torch.Tensor | None = None,
        std: Sequence[float] | torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        drop_small_remainder: bool = True,
        channels_last: bool = False,
        train: bool | None = None,
    ) -> None:
        if images_uint8.ndim != 4 or images_uint8.dtype != torch.uint8:
            raise ValueError(
                f"expected uint8 images [N, C, H, W], got {images_uint8.dtype} {tuple(images_uint8.shape)}"
            )
        if len(images_uint8) != len(labels):
            raise ValueError(f"{len(images_uint8)} images but {len(labels)} labels")
        self.device = torch.device(device)
        self.images = images_uint8.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.shuffle, self.seed = shuffle, int(seed)
        self.train = shuffle if train is None else train
        n, c, h, w = self.images.shape
        self.plan = augment_plan(augmentation, min(h, w)) if self.train else AugmentPlan()
        self.bounds = batch_bounds(n, batch_size, self.train and drop_small_remainder)
        normalize = mean is not None and std is not None and bool(_option(augmentation, "normalize", True))
        mean_t = _per_channel(mean if normalize else 0.0, c, self.device)
        std_t = _per_channel(std if normalize else 1.0, c, self.device)
        # x / 255 then (x - mean) / std, folded into one multiply-add: x * scale + shift.
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def generator(self, epoch: int) -> torch.Generator:
        """The CPU generator of one epoch: a fixed function of (seed, epoch)."""
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFFFFFFFFFF, epoch]).generate_state(2, np.uint64)
        return torch.Generator().manual_seed(int(state[0]) & 0x7FFFFFFFFFFFFFFF)

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
        """(order or None, (rows, cols, row_valid, col_valid) or None) for the whole epoch, on device."""
        n, _, h, w = self.images.shape
        g = self.generator(epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else None
        if not self.plan.active:
            return (None if order is None else order.to(self.device)), None
        p = self.plan
        rows, row_valid = _axis_index(n, h, p.crop_padding, p.vertical_flip, p.padding_mode, g)
        cols, col_valid = _axis_index(n, w, p.crop_padding, p.horizontal_flip, p.padding_mode, g)
        if order is None:
            order = torch.arange(n)
        grid = [order, rows, cols]
        if row_valid is not None and col_valid is not None:
            grid += [row_valid, col_valid]
        moved = [t.to(self.device) for t in grid]
        return moved[0], tuple(moved[1:])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        order, aug = self._epoch_plan(epoch)
        images, labels, scale, shift = self.images, self.labels, self.scale, self.shift
        channels_last = self.memory_format is torch.channels_last
        for start, end in self.bounds:
            if order is None:
                xb, yb = images[start:end], labels[start:end]
            else:
                # index_select: several times faster than images[idx] on small CPU batches.
                idx = order[start:end]
                yb = labels.index_select(0, idx)
                xb = images.index_select(0, idx) if aug is None else self._gather(idx, aug, start, end)
            x = xb.float().mul_(scale).add_(shift)  # .float() copies, so in place is safe
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, yb

    def _gather(self, idx: torch.Tensor, aug: tuple[torch.Tensor, ...], start: int, end: int) -> torch.Tensor:
        """Shuffle, then crop/flip as one gather per axis; zero the padded area when padding is zeros."""
        xb = self.images.index_select(0, idx)
        b, c, h, w = xb.shape
        rows, cols = aug[0][start:end], aug[1][start:end]
        xb = xb.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w))
        xb = xb.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
        if len(aug) == 4:
            xb = xb * (aug[2][start:end].view(b, 1, h, 1) & aug[3][start:end].view(b, 1, 1, w))
        return xb
