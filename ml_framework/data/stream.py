"""The stream pipeline: images decoded from their files per batch by a torch DataLoader.

Memory stays flat in the number of images: only the batches in flight are decoded. Each file is
decoded as in the cache (`cache.decode_image`: converted, resized to a `decoded_size` square), then
goes through the same per-sample v2 chain as the memory pipeline (`augment.sample_transform`);
normalisation and MixUp/CutMix run on the device batch, exactly as in `loader.TensorBatches`.
Batches follow the memory pipeline's order and remainder rule (`EpochBatchSampler`). Worker
processes (`num_workers`) stay alive across epochs; on CUDA batches are pinned and copied
non-blocking. An unreadable file is left out of its batch and named once in a warning.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml_framework.data.augment import batch_mixer, sample_transform, seed_of, seeded
from ml_framework.data.cache import decode_all, decode_image
from ml_framework.data.loader import ChannelStats, Normalizer, batch_bounds, epoch_generator

logger = logging.getLogger("ml_framework.data")

# Images decoded at a time for the stream pipeline's mean/std estimate (its memory stays flat).
STATS_DECODE_CHUNK = 256


class ImageFiles(torch.utils.data.Dataset):
    """(uint8 [C, S, S] tensor, label) per file, or None for a file that cannot be decoded."""

    def __init__(
        self,
        paths: Sequence[Path | str],
        labels: Sequence[int],
        decoded_size: int,
        channels: int,
        transform: Callable | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [int(v) for v in labels]
        self.decoded_size, self.channels, self.transform = decoded_size, channels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | tuple[None, str]:
        try:
            image = torch.from_numpy(decode_image(self.paths[i], self.decoded_size, self.channels).copy())
        except Exception:  # any decoder failure means "skip this file", as the cache does
            return None, self.paths[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None on a C library without it (macOS, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS. Decoding leaves freed image buffers scattered in
    glibc's heap, which a worker otherwise keeps: without this, a worker's memory grew with the
    number of batches it had decoded (to 4x its start on 8k images at 224 px), not with the batch."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def collate(samples: list[tuple[Any, Any]]) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    """Stack the decoded samples (in the worker); the files that failed come back by name."""
    ok = [(x, y) for x, y in samples if x is not None]
    failed = [y for x, y in samples if x is None]
    if not ok:
        return None, torch.empty(0, dtype=torch.int64), failed
    batch = torch.stack([x for x, _ in ok]), torch.tensor([y for _, y in ok], dtype=torch.int64), failed
    release_free_heap()  # the buffers of the batches before this one are free by now
    return batch


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Index batches of one epoch: shuffled by `loader.epoch_generator(seed, epoch)`, cut by
    `loader.batch_bounds` (the same order and remainder rule as the memory pipeline)."""

    def __init__(
        self, n: int, batch_size: int, shuffle: bool, seed: int, merge_small_remainder: bool
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.bounds = batch_bounds(n, batch_size, merge_small_remainder)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[list[int]]:
        order = (
            torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle else None
        )
        for start, end in self.bounds:
            yield list(range(start, end)) if order is None else order[start:end].tolist()


class StreamBatches:
    """Iterate (x float32 [B, C, S, S] on `device`, y) decoding files per batch; the interface of
    `loader.TensorBatches` (`set_epoch`, `len`, `num_samples`)."""

    def __init__(
        self,
        paths: Sequence[Path | str],
        labels: Sequence[int],
        *,
        decoded_size: int,
        image_size: int,
        channels: int,
        batch_size: int,
        train: bool,
        seed: int,
        augmentation: Any = None,
        mean: Any = None,
        std: Any = None,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
        channels_last: bool = False,
        num_classes: int | None = None,
        persistent: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.train, self.seed = train, int(seed)
        aug = augmentation if train else None
        transform = sample_transform(aug, image_size, decoded_size, train)
        self.dataset = ImageFiles(paths, labels, decoded_size, channels, transform)
        self.sampler = EpochBatchSampler(len(self.dataset), batch_size, train, self.seed, train)
        k = num_classes if num_classes is not None else max(labels, default=0) + 1
        self.mixer = batch_mixer(aug, k)
        self.normalizer = Normalizer(mean, std, channels, self.device, augmentation)
        self.channels_last = channels_last
        cuda = self.device.type == "cuda"
        self.loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=cuda,
            persistent_workers=persistent and num_workers > 0,
            # workers' RNG (the v2 transforms) seeded from the run's seed, not the global generator
            generator=torch.Generator().manual_seed(seed_of(self.seed, 0xDA7A)),
        )
        self._epoch = 0
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        self.sampler.set_epoch(epoch)
        for i, (xb, yb, failed) in enumerate(self.loader):
            self._report(failed)
            if xb is None:
                continue
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
            if self.mixer is None:
                yield self.normalizer(xb, self.channels_last), yb
                continue
            with seeded(seed_of(self.seed, epoch, i)):
                yield self.mixer(self.normalizer(xb, self.channels_last), yb)

    def _report(self, failed: list[str]) -> None:
        new = [f for f in failed if f not in self._reported]
        if new:
            self._reported.update(new)
            logger.warning("skipped unreadable image file(s): %s (delete or replace them)", ", ".join(new))


def sample_mean_std(
    paths: Sequence[Path | str], decoded_size: int, channels: int, limit: int = 2048, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std (0..1) of up to `limit` evenly spaced images (the stream pipeline's
    estimate of the training split's statistics; the memory pipeline uses every image)."""
    picked = np.unique(np.linspace(0, len(paths) - 1, num=min(limit, len(paths))).round().astype(int))
    stats = ChannelStats(channels)
    for start in range(0, len(picked), STATS_DECODE_CHUNK):  # a few decoded images held at a time
        chunk = [str(paths[i]) for i in picked[start : start + STATS_DECODE_CHUNK]]
        arrays = [a for a, _ in decode_all(chunk, decoded_size, channels, num_workers) if a is not None]
        if arrays:
            stats.add(torch.from_numpy(np.stack(arrays)))
    if stats.count == 0:
        return torch.zeros(channels), torch.ones(channels)
    return stats.mean_std()
