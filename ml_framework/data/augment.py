"""Augmentation and cropping from torchvision.transforms.v2, one definition for both pipelines.

`data.augmentation` keys map to v2 transforms applied to each uint8 [C, H, W] image on its own
(per-sample randomness: v2 draws one set of parameters per call, so a whole batch passed at once
would share one crop or one jitter):

| key                                            | transform                                      |
|------------------------------------------------|------------------------------------------------|
| random_resized_crop, resized_crop_scale/ratio  | v2.RandomResizedCrop(image_size, scale, ratio) |
| random_crop, crop_padding, padding_mode        | v2.RandomCrop(image_size, padding, mode)       |
| horizontal_flip / vertical_flip                | v2.RandomHorizontalFlip / RandomVerticalFlip   |
| color_jitter                                   | v2.ColorJitter(brightness=contrast=saturation) |
| auto_augment                                   | v2.TrivialAugmentWide / RandAugment / AutoAugment |
| random_erasing                                 | v2.RandomErasing(p)                            |
| mixup_alpha / cutmix_alpha                     | v2.MixUp / v2.CutMix on the normalised batch   |

Decoded images are `resize_size` squares; training crops them to `image_size` (random crop, random
resized crop, or the centre) and evaluation takes the centre crop (v2.CenterCrop).
The memory pipeline does random crop and flips, the common case, as one gather per axis for the
whole batch (`loader.TensorBatches`): same distribution as v2.RandomCrop + flips, and faster than
calling v2 per sample (about 1.4x per batch of 64 at 64 px on one CPU thread, normalisation included
on the gather side only). Any other key sends its batches through the per-sample v2 chain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ml_framework.errors import ConfigError

# data.augmentation.padding_mode -> v2.RandomCrop padding_mode
V2_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}

AUTO_AUGMENT: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "trivialaugment": lambda: _v2().TrivialAugmentWide(),
    "randaugment": lambda: _v2().RandAugment(),
    "autoaugment": lambda: _v2().AutoAugment(),
}


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


def option(aug: Any, key: str, default: Any) -> Any:
    """One `data.augmentation` value from a dataclass, DictConfig or dict (None: the default)."""
    if aug is None:
        return default
    if isinstance(aug, Mapping):
        return aug.get(key, default)
    return getattr(aug, key, default)


def _pair(aug: Any, key: str, default: tuple[float, float]) -> tuple[float, float]:
    value = [float(v) for v in option(aug, key, default)]
    if len(value) != 2 or value[0] > value[1] or value[0] <= 0:
        raise ConfigError(
            f"data.augmentation.{key}={value} must be two positive numbers [low, high] with low <= high"
        )
    return value[0], value[1]


def _probability(aug: Any, key: str) -> float:
    value = float(option(aug, key, 0.0))
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"data.augmentation.{key}={value} must be in [0, 1]")
    return value


def needs_per_sample(aug: Any) -> bool:
    """Whether a key beyond random crop and flips is on (those need the per-sample v2 chain)."""
    return bool(
        option(aug, "random_resized_crop", False)
        or float(option(aug, "color_jitter", 0.0)) > 0
        or str(option(aug, "auto_augment", "none")) != "none"
        or float(option(aug, "random_erasing", 0.0)) > 0
    )


def sample_transform(aug: Any, image_size: int, decoded_size: int, train: bool) -> Callable | None:
    """The per-image v2 chain (uint8 [C, S, S] -> uint8 [C, image_size, image_size]); None: identity."""
    v2 = _v2()
    steps: list[Any] = []
    if not train:
        if decoded_size != image_size:
            steps.append(v2.CenterCrop(image_size))
        return v2.Compose(steps) if steps else None
    if option(aug, "random_resized_crop", False):
        scale = _pair(aug, "resized_crop_scale", (0.08, 1.0))
        ratio = _pair(aug, "resized_crop_ratio", (0.75, 4 / 3))
        steps.append(v2.RandomResizedCrop(image_size, scale=scale, ratio=ratio, antialias=True))
    elif option(aug, "random_crop", False):
        mode = str(option(aug, "padding_mode", "zeros"))
        if mode not in V2_PADDING_MODES:
            raise ConfigError(
                f"data.augmentation.padding_mode: '{mode}' is not one of zeros, reflect, replicate"
            )
        padding = int(option(aug, "crop_padding", 0))
        steps.append(v2.RandomCrop(image_size, padding=padding or None, padding_mode=V2_PADDING_MODES[mode]))
    elif decoded_size != image_size:
        steps.append(v2.CenterCrop(image_size))
    if option(aug, "horizontal_flip", False):
        steps.append(v2.RandomHorizontalFlip())
    if option(aug, "vertical_flip", False):
        steps.append(v2.RandomVerticalFlip())
    jitter = float(option(aug, "color_jitter", 0.0))
    if jitter < 0:
        raise ConfigError(f"data.augmentation.color_jitter={jitter} must be >= 0")
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    policy = str(option(aug, "auto_augment", "none"))
    if policy not in AUTO_AUGMENT:
        raise ConfigError(
            f"data.augmentation.auto_augment: '{policy}' is not one of {', '.join(AUTO_AUGMENT)}"
        )
    auto = AUTO_AUGMENT[policy]()
    if auto is not None:
        steps.append(auto)
    erasing = _probability(aug, "random_erasing")
    if erasing > 0:
        steps.append(v2.RandomErasing(p=erasing))
    return v2.Compose(steps) if steps else None


def batch_mixer(aug: Any, num_classes: int) -> Callable | None:
    """v2.MixUp / v2.CutMix (one of them per batch when both are on) on (x, int labels) -> (x, soft)."""
    v2 = _v2()
    mixers = []
    for key, cls in (("mixup_alpha", v2.MixUp), ("cutmix_alpha", v2.CutMix)):
        alpha = float(option(aug, key, 0.0))
        if alpha < 0:
            raise ConfigError(f"data.augmentation.{key}={alpha} must be >= 0 (0: off)")
        if alpha > 0:
            mixers.append(cls(alpha=alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def seed_of(seed: int, *parts: int) -> int:
    """A 63-bit seed that is a fixed function of (seed, parts): epochs and batches get their own."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, *parts]).generate_state(2, np.uint64)
    return int(state[0]) & 0x7FFFFFFFFFFFFFFF


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run v2 transforms (which draw from torch's global CPU generator) from `seed`, leaving the
    global generator as it was: the same (seed, epoch, batch) always gives the same augmentation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def apply_per_sample(transform: Callable, batch: torch.Tensor) -> torch.Tensor:
    """`transform` on each image of a uint8 [B, C, H, W] batch (on its device), stacked."""
    return torch.stack([transform(image) for image in batch])
