"""Image data for training: preprocessing keys resolved, pipeline picked, split made, batches built.

`resolve_preprocessing` fills the image keys a config leaves unset (null), so the run's config.yaml
records what was used:
- `data.image_size`: the pretrained weights' crop size (torchvision `weights.transforms()`, timm
  `resolve_data_config`), else `DEFAULT_IMAGE_SIZE`;
- `data.resize_size` (the decoded side): image_size x the preset's resize/crop ratio (256/224 for
  most torchvision weights), else image_size (no crop);
- `data.mean` / `data.std`: the preset's; without a preset they stay null and the training split's
  statistics are used.
A key set in the config always wins.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from ml_framework.errors import ConfigError, DataError

log = logging.getLogger("ml_framework.training")

DEFAULT_IMAGE_SIZE = 32
# Evaluation batches (no gradients to hold) are this large, or the training batch size if larger,
# as long as their float32 input stays within EVAL_BATCH_BYTES: at 224 px RGB that is 111 images, so a
# pass over a large split holds no more in flight than over a small one.
EVAL_BATCH_SIZE = 256
EVAL_BATCH_BYTES = 64 * 2**20


def resolve_preprocessing(cfg: DictConfig) -> list[str]:
    """Fill the unset image keys in place (see the module docstring); returns what was taken from where."""
    from ml_framework.models.factory import library_weights, resolve_architecture
    from ml_framework.models.pretrained import weights_preset

    d, m = cfg.data, cfg.model
    preset = None
    if library_weights(m):
        family, arch = resolve_architecture(str(m.architecture))
        if family in ("torchvision", "timm"):
            preset = weights_preset(family, arch, str(m.get("weights", "DEFAULT")))
    taken: list[str] = []
    if d.image_size is None:
        d.image_size = preset.image_size if preset else DEFAULT_IMAGE_SIZE
        taken.append(f"image_size={d.image_size}")
    if d.resize_size is None:
        ratio = preset.resize_size / preset.image_size if preset else 1.0
        d.resize_size = round(d.image_size * ratio)
        taken.append(f"resize_size={d.resize_size}")
    if d.resize_size < d.image_size:
        raise ConfigError(
            f"data.resize_size={d.resize_size} is smaller than data.image_size={d.image_size}: images are "
            "decoded at resize_size and cropped to image_size; raise it or set it to null"
        )
    if (d.mean is None) != (d.std is None):
        raise ConfigError("data.mean and data.std go together: set both (per-channel lists) or neither")
    if preset is not None and d.mean is None:
        per_channel = (lambda v: list(v)) if d.channels == 3 else (lambda v: [float(np.mean(v))])
        d.mean, d.std = per_channel(preset.mean), per_channel(preset.std)
        taken.append(f"mean={list(d.mean)}, std={list(d.std)}")
    for key in ("mean", "std"):
        if d[key] is not None and len(d[key]) not in (1, d.channels):
            raise ConfigError(f"data.{key}={list(d[key])} needs 1 or {d.channels} values (data.channels)")
    if preset is None or not taken:
        return []
    return [f"preprocessing from {preset.source}: {', '.join(taken)} (keys set in the config win)"]


def prepare_image_data(cfg: DictConfig, device: torch.device) -> Any:
    """PreparedData for an image folder, on the pipeline `data.pipeline` asks for (or auto picks)."""
    from ml_framework.data.cache import decoded_nbytes, load_images
    from ml_framework.data.folder import scan_image_folder
    from ml_framework.data.pipeline import choose_pipeline
    from ml_framework.data.splits import make_splits
    from ml_framework.training.run import PreparedData

    notes = resolve_preprocessing(cfg)
    d, t = cfg.data, cfg.training
    folder = scan_image_folder(d.data_dir)
    decoded = decoded_nbytes(len(folder.files), int(d.resize_size), int(d.channels))
    choice = choose_pipeline(str(d.pipeline), decoded, d.memory_budget_mb)
    notes.append(f"data pipeline: {choice.pipeline} ({choice.reason})")
    images = None
    if choice.pipeline == "memory":
        images = load_images(
            d.data_dir, d.resize_size, d.channels, cache_dir=d.cache_dir, num_workers=d.num_workers
        )
        classes, files, labels, skipped = images.classes, images.files, images.labels.numpy(), images.skipped
    else:
        classes, skipped = folder.classes, ()
        files = tuple(folder.relative(p) for p in folder.files)
        labels = np.asarray(folder.labels, dtype=np.int64)
    if d.class_names is not None and list(d.class_names) != list(classes):
        raise DataError(
            f"data.class_names {list(d.class_names)} does not match the class folders in "
            f"{d.data_dir}/raw: {list(classes)} (fix the list or set it to null)"
        )
    splits = make_splits(
        labels,
        val_split=d.val_split,
        test_split=d.test_split,
        n_folds=d.n_folds if d.fold is not None else 0,  # folds never change the fixed split
        stratified_folds=d.stratified_folds,
        seed=t.seed if d.split_seed is None else d.split_seed,
        class_names=classes,
    )
    train_idx, val_idx, test_idx = splits.for_fold(d.fold)
    if len(val_idx) == 0:
        raise ConfigError("the validation split is empty: raise data.val_split or add images")
    common = {
        "batch_size": t.batch_size,
        "seed": t.seed,
        "augmentation": d.augmentation,
        "device": device,
        "channels_last": bool(t.channels_last and device.type == "cuda"),
        "image_size": int(d.image_size),
        "num_classes": len(classes),
    }
    if images is not None:
        build = _memory_batches(images, train_idx, d, common, device)
    else:
        build = _stream_batches(folder.files, labels, train_idx, d, common)
    return PreparedData(
        train=build(train_idx, True),
        val=build(val_idx, False),
        test=build(test_idx, False),
        classes=classes,
        channels=d.channels,
        image_size=d.image_size,
        splits_json={**splits.to_json(files), "fold": d.fold, "fingerprint": splits.fingerprint()},
        skipped=tuple(skipped),
        notes=tuple(notes),
    )


def eval_batch_size(batch_size: int, image_size: int, channels: int) -> int:
    """The evaluation batch size (EVAL_BATCH_SIZE within EVAL_BATCH_BYTES, at least `batch_size`)."""
    fits = EVAL_BATCH_BYTES // (4 * channels * image_size * image_size)
    return max(batch_size, min(EVAL_BATCH_SIZE, fits))


def _sized(common: dict[str, Any], train: bool, channels: int) -> dict[str, Any]:
    """The shared batch arguments, with evaluation batches of `eval_batch_size`."""
    if train:
        return common
    return {**common, "batch_size": eval_batch_size(common["batch_size"], common["image_size"], channels)}


def _memory_batches(
    images: Any, train_idx: np.ndarray, d: Any, common: dict[str, Any], device: torch.device
) -> Any:
    """TensorBatches over one copy of the decoded set (memory-mapped on the CPU) indexed per split."""
    from ml_framework.data.loader import TensorBatches, compute_mean_std

    x = images.images.to(device)
    y = images.labels.to(device)
    mean, std = (d.mean, d.std) if d.mean is not None else compute_mean_std(x, indices=train_idx)

    def build(idx: np.ndarray, train: bool) -> TensorBatches:
        return TensorBatches(
            x,
            y,
            indices=idx,
            shuffle=train,
            train=train,
            drop_small_remainder=train,
            mean=mean,
            std=std,
            **_sized(common, train, d.channels),
        )

    return build


def _stream_batches(
    paths: Any, labels: np.ndarray, train_idx: np.ndarray, d: Any, common: dict[str, Any]
) -> Any:
    """StreamBatches decoding the files of each split per batch (DataLoader workers: data.num_workers)."""
    from ml_framework.data.stream import StreamBatches, sample_mean_std

    decoded_size = int(d.resize_size)
    if d.mean is not None:
        mean, std = d.mean, d.std
    else:
        train_paths = [paths[i] for i in train_idx]
        mean, std = sample_mean_std(train_paths, decoded_size, d.channels, num_workers=d.num_workers)

    def build(idx: np.ndarray, train: bool) -> StreamBatches:
        return StreamBatches(
            [paths[i] for i in idx],
            labels[idx].tolist(),
            decoded_size=decoded_size,
            channels=d.channels,
            train=train,
            mean=mean,
            std=std,
            num_workers=int(d.num_workers),
            persistent=train,  # evaluation loaders start their workers per pass
            **_sized(common, train, d.channels),
        )

    return build
