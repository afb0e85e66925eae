"""The memory pipeline: batches from in-memory uint8 tensors (the decoded cache, shared by the splits).

Per epoch, one CPU `torch.Generator` seeded from (seed, epoch) draws the shuffle order and every
crop/flip decision for the whole epoch at once (so runs, and resumed runs, see the same batches, on
any device, and the global RNG is never touched). Per batch the work is then one index_select (plus,
for random crops and flips, one gather per axis that does both together), the uint8 -> float
conversion and an in-place multiply-add that does `/255` and `(x - mean) / std` together. The other
augmentation keys run torchvision.transforms.v2 per image (`data/augment.py`) from a seed of
(seed, epoch, batch); MixUp/CutMix mix the normalised batch.

Remainder rule (training batches only, `drop_small_remainder=True`): batches have at least
`MIN_TRAIN_BATCH` (3) samples. A last batch of 1 or 2 samples (a BatchNorm error or pure noise) is
merged into the previous batch, and a `batch_size` below 3 is raised to 3, so no `batch_size` value
fails because of `len(train) % batch_size`. A dataset smaller than 3 gives one batch of everything.
Evaluation batches keep every sample in plain `batch_size` chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ml_framework.data.augment import (
    apply_per_sample,
    batch_mixer,
    needs_per_sample,
    option,
    sample_transform,
    seed_of,
    seeded,
)
from ml_framework.errors import ConfigError, unknown_key_message

MIN_TRAIN_BATCH = 3


def compute_mean_std(
    images_uint8: torch.Tensor, chunk: int = 4096, indices: torch.Tensor | np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in 0..1 units (float32 [C] on the images' device), in chunks, over
    `images_uint8[indices]` (default: all images) without copying that subset whole.

    A constant channel gets std 1 instead of 0 so normalising never divides by zero.
    """
    c = images_uint8.shape[1]
    rows = (
        None if indices is None else torch.as_tensor(indices, dtype=torch.int64, device=images_uint8.device)
    )
    n = len(images_uint8) if rows is None else len(rows)
    total = torch.zeros(c, dtype=torch.float64, device=images_uint8.device)
    squares = torch.zeros_like(total)
    for start in range(0, n, chunk):
        part = (
            images_uint8[start : start + chunk]
            if rows is None
            else images_uint8.index_select(0, rows[start : start + chunk])
        )
        x = part.to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = max(n * images_uint8[0].numel() // max(c, 1), 1) if n else 1
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
    random_crop: bool = False
    crop_padding: int = 0
    padding_mode: str = "zeros"
    horizontal_flip: bool = False
    vertical_flip: bool = False

    @property
    def active(self) -> bool:
        return bool(self.random_crop or self.horizontal_flip or self.vertical_flip)


def augment_plan(augmentation: Any, image_size: int) -> AugmentPlan:
    """Read the crop/flip keys of `data.augmentation` (dataclass, DictConfig or dict; None: nothing)."""
    random_crop = bool(option(augmentation, "random_crop", False))
    padding = int(option(augmentation, "crop_padding", 0)) if random_crop else 0
    mode = str(option(augmentation, "padding_mode", "zeros"))
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
        random_crop=random_crop,
        crop_padding=padding,
        padding_mode=mode,
        horizontal_flip=bool(option(augmentation, "horizontal_flip", False)),
        vertical_flip=bool(option(augmentation, "vertical_flip", False)),
    )


def center_offset(size: int, out: int) -> int:
    """Top/left of a centre crop, rounded as torchvision's center_crop does."""
    return round((size - out) / 2.0)


def _axis_index(
    n: int, size: int, out: int, plan: AugmentPlan, flip: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample source positions [n, out] along one axis of length `size`: a random crop offset (as
    v2.RandomCrop: pad by `crop_padding`, crop `out` at a uniform offset) or the centre, then a flip."""
    pos = torch.arange(out).expand(n, out)
    padding = plan.crop_padding
    if plan.random_crop:
        offset = torch.randint(0, size - out + 2 * padding + 1, (n, 1), generator=g)
        index, valid = PADDING_MODES[plan.padding_mode](pos + offset - padding, size)
    else:
        index, valid = pos + center_offset(size, out), None
    if flip:
        flipped = (torch.rand(n, 1, generator=g) < 0.5).expand(n, out)
        index = torch.where(flipped, index.flip(1), index)
        valid = None if valid is None else torch.where(flipped, valid.flip(1), valid)
    return index, valid


# ---------------------------------------------------------------- batches


def _per_channel(values: Any, c: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).to(device).reshape(-1)
    if t.numel() not in (1, c):
        raise ConfigError(f"mean/std have {t.numel()} values for {c} channel(s)")
    return t.expand(c).reshape(1, c, 1, 1).clone()


class Normalizer:
    """uint8 batch -> float32: `/255` then `(x - mean) / std` folded into one multiply-add, on `device`.

    Identity scaling (x / 255 only) when mean/std are missing or `augmentation.normalize` is false.
    """

    def __init__(
        self, mean: Any, std: Any, channels: int, device: torch.device, augmentation: Any = None
    ) -> None:
        normalize = mean is not None and std is not None and bool(option(augmentation, "normalize", True))
        mean_t = _per_channel(mean if normalize else 0.0, channels, device)
        std_t = _per_channel(std if normalize else 1.0, channels, device)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, xb: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        x = xb.float().mul_(self.scale).add_(self.shift)  # .float() copies, so in place is safe
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch: a fixed function of (seed, epoch)."""
    return torch.Generator().manual_seed(seed_of(seed, epoch))


class TensorBatches:
    """Iterate (x float32 [B, C, S, S], y) over uint8 images already in memory.

    `images_uint8` may be a whole decoded set shared by several splits: `indices` picks this split's
    rows, so no split copies the images. `image_size` (default: the images' side) is the output
    side: larger images are cropped (randomly when training with random crops, else the centre).
    `train` (default: `shuffle`) enables augmentation and the remainder rule; y is int64 [B], or
    float [B, num_classes] soft targets when MixUp/CutMix is on. Normalisation uses `mean`/`std` (per
    channel, 0..1 units) when both are given, unless `augmentation.normalize` is false. Call
    `set_epoch(epoch)` before each epoch (without it, each pass advances the epoch by one).
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
        indices: torch.Tensor | np.ndarray | None = None,
        image_size: int | None = None,
        num_classes: int | None = None,
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
        self.rows = None if indices is None else torch.as_tensor(indices, dtype=torch.int64).to(self.device)
        self.shuffle, self.seed = shuffle, int(seed)
        self.train = shuffle if train is None else train
        _, c, h, w = self.images.shape
        self.image_size = int(image_size or min(h, w))
        if self.image_size > min(h, w):
            raise ValueError(f"image_size {self.image_size} is larger than the images ({h}x{w})")
        aug = augmentation if self.train else None
        self.plan = augment_plan(aug, self.image_size)
        self.transform = sample_transform(aug, self.image_size, h, True) if needs_per_sample(aug) else None
        k = num_classes if num_classes is not None else int(self.labels.max()) + 1 if len(self.labels) else 1
        self.mixer = batch_mixer(aug, k)
        self.bounds = batch_bounds(self.num_samples, batch_size, self.train and drop_small_remainder)
        self.normalizer = Normalizer(mean, std, c, self.device, augmentation)
        self.channels_last = channels_last
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def num_samples(self) -> int:
        return len(self.labels) if self.rows is None else len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def generator(self, epoch: int) -> torch.Generator:
        return epoch_generator(self.seed, epoch)

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(rows of the whole epoch in batch order, (rows, cols, row_valid, col_valid) or None), on device."""
        n = self.num_samples
        _, _, h, w = self.images.shape
        g = self.generator(epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        rows = order if self.rows is None else self.rows.index_select(0, order)
        p, s = self.plan, self.image_size
        if self.transform is not None or not (p.active or (h, w) != (s, s)):
            return rows, None
        r, r_valid = _axis_index(n, h, s, p, p.vertical_flip, g)
        c, c_valid = _axis_index(n, w, s, p, p.horizontal_flip, g)
        grid = [r, c] + ([r_valid, c_valid] if r_valid is not None and c_valid is not None else [])
        return rows, tuple(t.to(self.device) for t in grid)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        rows, aug = self._epoch_plan(epoch)
        for i, (start, end) in enumerate(self.bounds):
            # index_select: several times faster than images[idx] on small CPU batches.
            idx = rows[start:end]
            yb = self.labels.index_select(0, idx)
            xb = self.images.index_select(0, idx) if aug is None else self._gather(idx, aug, start, end)
            if self.transform is None and self.mixer is None:
                yield self.normalizer(xb, self.channels_last), yb
                continue
            with seeded(seed_of(self.seed, epoch, i)):
                if self.transform is not None:
                    xb = apply_per_sample(self.transform, xb)
                x = self.normalizer(xb, self.channels_last)
                if self.mixer is not None:
                    x, yb = self.mixer(x, yb)
            yield x, yb

    def _gather(self, idx: torch.Tensor, aug: tuple[torch.Tensor, ...], start: int, end: int) -> torch.Tensor:
        """Crop/flip as one gather per axis; zero the padded area when padding is zeros."""
        xb = self.images.index_select(0, idx)
        b, c, _, w = xb.shape
        s = self.image_size
        rows, cols = aug[0][start:end], aug[1][start:end]
        xb = xb.gather(2, rows.view(b, 1, s, 1).expand(b, c, s, w))
        xb = xb.gather(3, cols.view(b, 1, 1, s).expand(b, c, s, s))
        if len(aug) == 4:
            xb = xb * (aug[2][start:end].view(b, 1, s, 1) & aug[3][start:end].view(b, 1, 1, s))
        return xb
