"""Decode an image folder once: uint8 tensors cached on disk and memoised in the process.

The cache key hashes the sorted relative file list, every file's content (blake2b), the target
size, the channel count and `FORMAT_VERSION`, so any added, removed or edited image (or a changed
decode rule, after bumping the version) gives a new key and a fresh decode. Every Optuna trial in one
process reuses the in-memory result; a new process loads the `.pt` file instead of decoding again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_framework.data.folder import scan_image_folder
from ml_framework.errors import DataError

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger("ml_framework.data")

# Bump when the decode rules change (mode handling, resampling): old cache files are then ignored.
FORMAT_VERSION = 1
CACHE_PREFIX = "images_"
SUPPORTED_CHANNELS = {1: "L", 3: "RGB"}
MAX_NAMED_SKIPPED = 10  # files named in the skip warning; the rest are counted

_MEMO: dict[str, DecodedImages] = {}


@dataclass(frozen=True)
class DecodedImages:
    """A decoded folder. Treat the tensors as read-only: they are shared by every caller."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]
    files: tuple[str, ...]  # relative to DATA_DIR/raw, e.g. "cat/001.png"
    skipped: tuple[str, ...]  # unreadable files, same relative form

    def __len__(self) -> int:
        return len(self.files)


# ---------------------------------------------------------------- decoding (runs in worker processes)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit / 32-bit / float pixels to 0..255: a max over 255 means a 16-bit range, <= 1 a unit range."""
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if peak > 255:
        values = values / 257.0
    elif np.issubdtype(values.dtype, np.floating) and 0 < peak <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    from PIL import Image

    return Image.fromarray(_scale_to_uint8(np.asarray(im)))


def _alpha_to_rgb(im: Image.Image) -> Image.Image:
    """Composite over black, so transparent pixels look like the zero padding of random_crop."""
    from PIL import Image

    rgba = im.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def _palette_to_rgb(im: Image.Image) -> Image.Image:
    return _alpha_to_rgb(im) if "transparency" in im.info else im.convert("RGB")


# Source mode -> converter to a mode that `.convert("L" / "RGB")` handles without losing meaning.
_MODE_NORMALISERS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "I;16": _high_depth_to_l,
    "I;16L": _high_depth_to_l,
    "I;16B": _high_depth_to_l,
    "I;16N": _high_depth_to_l,
    "I": _high_depth_to_l,
    "F": _high_depth_to_l,
    "RGBA": _alpha_to_rgb,
    "LA": _alpha_to_rgb,
    "La": _alpha_to_rgb,
    "RGBa": _alpha_to_rgb,
    "PA": _alpha_to_rgb,
    "P": _palette_to_rgb,
}


def decode_image(path: str, image_size: int, channels: int) -> np.ndarray:
    """One file -> uint8 [C, image_size, image_size]. Raises whatever PIL raises on a bad file."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        opened.load()
        im = ImageOps.exif_transpose(opened)
    normalise = _MODE_NORMALISERS.get(im.mode)
    if normalise is not None:
        im = normalise(im)
    im = im.convert(SUPPORTED_CHANNELS[channels])
    if im.size != (image_size, image_size):
        # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases.
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(im, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode_or_none(args: tuple[str, int, int]) -> np.ndarray | None:
    """Pool-friendly wrapper: None marks an unreadable file (reported once by the caller)."""
    try:
        return decode_image(*args)
    except Exception as exc:  # any decoder failure (truncated, not an image, bomb) means "skip it"
        logger.debug("cannot decode %s: %s", args[0], exc)
        return None


def _decode_all(paths: Sequence[str], image_size: int, channels: int, num_workers: int) -> list[Any]:
    jobs = [(p, image_size, channels) for p in paths]
    if num_workers <= 0 or len(jobs) < 2:
        return [_decode_or_none(j) for j in jobs]
    import multiprocessing

    # fork where available: spawn would re-run an unguarded `__main__` (scripts, `python -c`). The
    # workers only run PIL/numpy code, never torch, so the parent's torch threads do not matter.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    workers = min(num_workers, len(jobs))
    chunksize = max(1, len(jobs) // (workers * 8))
    with ctx.Pool(workers) as pool:
        return pool.map(_decode_or_none, jobs, chunksize=chunksize)


# ---------------------------------------------------------------- cache key and files


def file_digest(path: Path) -> bytes:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()


def cache_key(rel_files: Sequence[str], paths: Sequence[Path], image_size: int, channels: int) -> str:
    """Hash of (sorted relative files, each file's content, size, channels, format version)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"v{FORMAT_VERSION}|size={image_size}|channels={channels}|".encode())
    for rel, path in sorted(zip(rel_files, paths, strict=True)):
        h.update(rel.encode())
        h.update(b"\0")
        h.update(file_digest(path))
    return h.hexdigest()


def _save_atomic(payload: dict[str, Any], target: Path) -> None:
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(target: Path, key: str) -> DecodedImages | None:
    import torch

    if not target.is_file():
        return None
    try:
        payload = torch.load(target, map_location="cpu", weights_only=True)
        if payload.get("key") != key:
            return None
        return DecodedImages(
            images=payload["images"],
            labels=payload["labels"],
            classes=tuple(payload["classes"]),
            files=tuple(payload["files"]),
            skipped=tuple(payload["skipped"]),
        )
    except Exception as exc:  # a truncated or foreign file is just a miss: decode again and overwrite
        logger.warning("ignoring unreadable image cache %s (%s); decoding again", target, exc)
        return None


def _warn_skipped(skipped: Sequence[str], root: Path) -> None:
    if not skipped:
        return
    named = ", ".join(skipped[:MAX_NAMED_SKIPPED])
    more = f" and {len(skipped) - MAX_NAMED_SKIPPED} more" if len(skipped) > MAX_NAMED_SKIPPED else ""
    logger.warning(
        "skipped %d unreadable image file(s) in %s: %s%s (training uses the rest; delete or replace them)",
        len(skipped),
        root,
        named,
        more,
    )


# ---------------------------------------------------------------- public entry point


def _validate(image_size: int, channels: int) -> None:
    if channels not in SUPPORTED_CHANNELS:
        raise DataError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"data.image_size must be a positive integer, got {image_size!r}")


def _decode_folder(
    root: Path,
    classes: tuple[str, ...],
    rel_files: Sequence[str],
    paths: Sequence[Path],
    labels: Sequence[int],
    image_size: int,
    channels: int,
    num_workers: int,
) -> DecodedImages:
    import torch

    decoded = _decode_all([str(p) for p in paths], image_size, channels, num_workers)
    ok = [i for i, a in enumerate(decoded) if a is not None]
    skipped = tuple(rel_files[i] for i, a in enumerate(decoded) if a is None)
    kept_labels = [labels[i] for i in ok]
    present = set(kept_labels)
    lost = [c for i, c in enumerate(classes) if i not in present]
    if lost:
        raise DataError(
            f"every image of class folder(s) {', '.join(lost)} in {root} is unreadable "
            f"(e.g. {next(f for f in skipped if f.split('/', 1)[0] in lost)}). "
            "Replace the files or remove the folder(s)."
        )
    images = np.empty((len(ok), channels, image_size, image_size), dtype=np.uint8)
    for row, i in enumerate(ok):
        images[row] = decoded[i]
    return DecodedImages(
        images=torch.from_numpy(images),
        labels=torch.tensor(kept_labels, dtype=torch.int64),
        classes=classes,
        files=tuple(rel_files[i] for i in ok),
        skipped=skipped,
    )


def load_images(
    data_dir: str | Path,
    image_size: int,
    channels: int,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> DecodedImages:
    """Every image of `data_dir/raw/<class>/` as uint8 [N, C, image_size, image_size], decoded once.

    Looks in the process memo, then `cache_dir` (default `<data_dir>/.cache`), and decodes (with
    `num_workers` processes when > 0) only on a miss. Unreadable files are skipped with one warning.
    """
    _validate(image_size, channels)
    folder = scan_image_folder(data_dir)
    rel_files = [folder.relative(p) for p in folder.files]
    key = cache_key(rel_files, folder.files, image_size, channels)
    memo = _MEMO.get(key)
    if memo is not None:
        return memo

    target = (
        Path(cache_dir if cache_dir is not None else Path(data_dir) / ".cache") / f"{CACHE_PREFIX}{key}.pt"
    )
    result = _load_cached(target, key)
    if result is None:
        result = _decode_folder(
            folder.root,
            folder.classes,
            rel_files,
            folder.files,
            folder.labels,
            image_size,
            channels,
            num_workers,
        )
        payload = {
            "key": key,
            "format_version": FORMAT_VERSION,
            "images": result.images,
            "labels": result.labels,
            "classes": list(result.classes),
            "files": list(result.files),
            "skipped": list(result.skipped),
        }
        try:
            _save_atomic(payload, target)
        except OSError as exc:  # a read-only data folder must not stop training
            logger.warning("could not write the image cache %s (%s); set data.cache_dir", target, exc)
    _warn_skipped(result.skipped, folder.root)
    _MEMO[key] = result
    return result


def clear_memory_cache() -> None:
    """Forget the in-process results (tests; freeing memory between datasets)."""
    _MEMO.clear()
