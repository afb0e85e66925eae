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


# Bytes of float64 pixels converted at a time for the channel statistics: memory stays flat whatever
# the number and size of the images (a 224 px image is 1.2 MB as float64).
STATS_CHUNK_BYTES = 64 * 2**20


class ChannelStats:
    """Running per-channel sums of uint8 [N, C, H, W] images in 0..1 units, accumulated in float64 a
    few images at a time, so a large set never becomes a float copy of itself."""

    def __init__(self, channels: int, device: torch.device | str = "cpu") -> None:
        self.total = torch.zeros(channels, dtype=torch.float64, device=device)
        self.squares = torch.zeros_like(self.total)
        self.count = 0

    def add(self, images_uint8: torch.Tensor, indices: torch.Tensor | np.ndarray | None = None) -> None:
        """Add `images_uint8[indices]` (default: all of them) without copying that subset whole."""
        rows = (
            None
            if indices is None
            else torch.as_tensor(indices, dtype=torch.int64, device=images_uint8.device)
        )
        n = len(images_uint8) if rows is None else len(rows)
        if n == 0:
            return
        chunk = max(1, STATS_CHUNK_BYTES // (images_uint8[0].numel() * 8))
        for start in range(0, n, chunk):
            part = (
                images_uint8[start : start + chunk]
                if rows is None
                else images_uint8.index_select(0, rows[start : start + chunk])
            )
            x = part.to(torch.float64).div_(255.0)
            self.total += x.sum(dim=(0, 2, 3))
            self.squares += x.square_().sum(dim=(0, 2, 3))
        self.count += n * images_uint8[0].numel() // max(images_uint8.shape[1], 1)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std (float32 [C]); a constant channel gets std 1 instead of 0 so
        normalising never divides by zero."""
        count = max(self.count, 1)
        mean = self.total / count
        std = (self.squares / count - mean.square()).clamp_min(0).sqrt()
        std = torch.where(std < 1e-6, torch.ones_like(std), std)
        return mean.float(), std.float()


def compute_mean_std(
    images_uint8: torch.Tensor, indices: torch.Tensor | np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in 0..1 units (float32 [C] on the images' device) over
    `images_uint8[indices]` (default: all images)."""
    stats = ChannelStats(images_uint8.shape[1], images_uint8.device)
    stats.add(images_uint8, indices)
    return stats.mean_std()


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


def _axis_draws(
    n: int, size: int, out: int, plan: AugmentPlan, flip: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample source start [n] along one axis of length `size` (negative or past the end: in the
    padding) and flip flags [n] (None without flips): a random crop offset as v2.RandomCrop draws it
    (pad by `crop_padding`, crop `out` at a uniform offset) or the centre, then a flip."""
    if plan.random_crop:
        padding = plan.crop_padding
        start = torch.randint(0, size - out + 2 * padding + 1, (n,), generator=g) - padding
    else:
        start = torch.full((n,), center_offset(size, out), dtype=torch.int64)
    return start, (torch.rand(n, generator=g) < 0.5) if flip else None


def _axis_index(
    start: torch.Tensor, flipped: torch.Tensor | None, size: int, out: int, plan: AugmentPlan
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source positions [n, out] of the draws along one axis, and where they are inside the image
    (None: everywhere, or filled by the padding mode)."""
    index = torch.arange(out).expand(len(start), out) + start[:, None]
    valid = None
    if plan.random_crop:
        index, valid = PADDING_MODES[plan.padding_mode](index, size)
    if flipped is not None:
        index = torch.where(flipped[:, None], index.flip(1), index)
        valid = None if valid is None else torch.where(flipped[:, None], valid.flip(1), valid)
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

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, tuple[Any, ...] | None]:
        """(rows of the whole epoch in batch order on device, the crop/flip draws (row starts, row
        flips, column starts, column flips; on the CPU) or None)."""
        n = self.num_samples
        _, _, h, w = self.images.shape
        g = self.generator(epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        rows = order if self.rows is None else self.rows.index_select(0, order)
        p, s = self.plan, self.image_size
        if self.transform is not None or not (p.active or (h, w) != (s, s)):
            return rows, None
        return rows, (
            *_axis_draws(n, h, s, p, p.vertical_flip, g),
            *_axis_draws(n, w, s, p, p.horizontal_flip, g),
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        rows, aug = self._epoch_plan(epoch)
        for i, (start, end) in enumerate(self.bounds):
            # index_select: several times faster than images[idx] on small CPU batches.
            idx = rows[start:end]
            yb = self.labels.index_select(0, idx)
            xb = self.images.index_select(0, idx) if aug is None else self._crop(idx, aug, start, end)
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

    def _crop(self, idx: torch.Tensor, aug: tuple[Any, ...], start: int, end: int) -> torch.Tensor:
        """Crop and flip the batch's images by its draws: slice copies with zero padding (or none),
        one gather per axis with reflect/replicate padding."""
        xb = self.images.index_select(0, idx)
        b, c, h, w = xb.shape
        s, plan = self.image_size, self.plan
        r0, r_flip, c0, c_flip = (None if t is None else t[start:end] for t in aug)
        if plan.random_crop and plan.padding_mode != "zeros":
            rows, _ = _axis_index(r0, r_flip, h, s, plan)
            cols, _ = _axis_index(c0, c_flip, w, s, plan)
            xb = xb.gather(2, rows.to(xb.device).view(b, 1, s, 1).expand(b, c, s, w))
            return xb.gather(3, cols.to(xb.device).view(b, 1, 1, s).expand(b, c, s, s))
        out = xb.new_zeros((b, c, s, s))
        flips = [f.tolist() if f is not None else [False] * b for f in (r_flip, c_flip)]
        for i, (top, left, v_flip, h_flip) in enumerate(zip(r0.tolist(), c0.tolist(), *flips, strict=True)):
            # the part of the window [top, top + s) x [left, left + s) inside the image
            y0, y1, x0, x1 = max(top, 0), min(top + s, h), max(left, 0), min(left + s, w)
            if y0 >= y1 or x0 >= x1:
                continue
            window = out[i, :, y0 - top : y1 - top, x0 - left : x1 - left]
            window.copy_(xb[i, :, y0:y1, x0:x1])
            if v_flip or h_flip:
                out[i] = out[i].flip([d for d, f in ((1, v_flip), (2, h_flip)) if f])
        return out
