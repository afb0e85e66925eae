"""Decode an image folder once: a uint8 array file cached on disk, memory-mapped by every process.

The cache key hashes the sorted relative file list, every file's size and modification time, the
target size, the channel count and `FORMAT_VERSION`: any added, removed or edited image (or a changed
decode rule, after bumping the version) gives a new key and a fresh decode, and finding the cache
costs one `stat` per file, never a read. The content hash of the files is computed only while
building (the decode reads them anyway) and recorded next to the array.

On disk a cache entry is `images_<key>.npy` (uint8 [N, C, H, W]) plus `images_<key>.json` (labels,
classes, files, skipped files, content hash), the JSON written last. Loading memory-maps the array
(`numpy.load(mmap_mode="c")`): several processes training from the same cache (search workers)
share one copy in the page cache instead of each holding its own. Every trial in one process reuses
the in-process memo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
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
FORMAT_VERSION = 2
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


def _decode_and_digest(args: tuple[str, int, int]) -> tuple[np.ndarray | None, bytes]:
    """(decoded array or None, content digest of the file): building the cache hashes what it reads."""
    try:
        digest = file_digest(Path(args[0]))
    except OSError:
        digest = b""
    return _decode_or_none(args), digest


def decode_all(paths: Sequence[str], image_size: int, channels: int, num_workers: int) -> list[Any]:
    """[(array or None, digest)] per path, in order."""
    jobs = [(p, image_size, channels) for p in paths]
    if num_workers <= 0 or len(jobs) < 2:
        return [_decode_and_digest(j) for j in jobs]
    import multiprocessing

    # fork where available: spawn would re-run an unguarded `__main__` (scripts, `python -c`). The
    # workers only run PIL/numpy code, never torch, so the parent's torch threads do not matter.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    workers = min(num_workers, len(jobs))
    chunksize = max(1, len(jobs) // (workers * 8))
    with ctx.Pool(workers) as pool:
        return pool.map(_decode_and_digest, jobs, chunksize=chunksize)


# ---------------------------------------------------------------- cache key and files


def file_digest(path: Path) -> bytes:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()


def cache_key(rel_files: Sequence[str], paths: Sequence[Path], image_size: int, channels: int) -> str:
    """Hash of (sorted relative files, each file's size and mtime, size, channels, format version)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"v{FORMAT_VERSION}|size={image_size}|channels={channels}|".encode())
    for rel, path in sorted(zip(rel_files, paths, strict=True)):
        st = path.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def decoded_nbytes(num_images: int, image_size: int, channels: int) -> int:
    """Bytes of a decoded set: what the memory pipeline holds (once per machine, memory-mapped)."""
    return num_images * channels * image_size * image_size


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    stem = cache_dir / f"{CACHE_PREFIX}{key}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _map_array(path: Path) -> torch.Tensor:
    """The cached array as a tensor over a copy-on-write memory map (pages shared between processes)."""
    import torch

    array = np.load(path, mmap_mode="c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _load_cached(cache_dir: Path, key: str) -> DecodedImages | None:
    import torch

    array_path, meta_path = _cache_paths(cache_dir, key)
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            return None
        images = _map_array(array_path)
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(meta["files"]):
            raise ValueError(f"array {tuple(images.shape)} {images.dtype} does not match its index")
        return DecodedImages(
            images=images,
            labels=torch.tensor(meta["labels"], dtype=torch.int64),
            classes=tuple(meta["classes"]),
            files=tuple(meta["files"]),
            skipped=tuple(meta["skipped"]),
        )
    except Exception as exc:  # a truncated or foreign file is just a miss: decode again and overwrite
        logger.warning("ignoring unreadable image cache %s (%s); decoding again", array_path, exc)
        return None


def _write_cache(result: DecodedImages, content_hash: str, cache_dir: Path, key: str) -> DecodedImages:
    """Write the array (atomically), then its JSON index; return the result backed by the mapped file."""
    array_path, meta_path = _cache_paths(cache_dir, key)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{array_path.name}.", suffix=".tmp", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, result.images.numpy(), allow_pickle=False)
        os.replace(tmp, array_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {
        "key": key,
        "format_version": FORMAT_VERSION,
        "content_hash": content_hash,
        "labels": result.labels.tolist(),
        "classes": list(result.classes),
        "files": list(result.files),
        "skipped": list(result.skipped),
    }
    from ml_framework.fileio import atomic_write_text

    atomic_write_text(meta_path, json.dumps(meta))
    mapped = _map_array(array_path)  # the private decoded copy is dropped: processes share the file
    return DecodedImages(mapped, result.labels, result.classes, result.files, result.skipped)


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
) -> tuple[DecodedImages, str]:
    """(decoded images, content hash of the files read)."""
    import torch

    decoded = decode_all([str(p) for p in paths], image_size, channels, num_workers)
    content = hashlib.blake2b(digest_size=20)
    for rel, (_, digest) in sorted(zip(rel_files, decoded, strict=True)):
        content.update(rel.encode() + b"\0" + digest)
    ok = [i for i, (a, _) in enumerate(decoded) if a is not None]
    skipped = tuple(rel_files[i] for i, (a, _) in enumerate(decoded) if a is None)
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
        images[row] = decoded[i][0]
    result = DecodedImages(
        images=torch.from_numpy(images),
        labels=torch.tensor(kept_labels, dtype=torch.int64),
        classes=classes,
        files=tuple(rel_files[i] for i in ok),
        skipped=skipped,
    )
    return result, content.hexdigest()


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
    The images are a memory-mapped, copy-on-write view of the cache file (read-only when it could not
    be written): treat them as read-only.
    """
    _validate(image_size, channels)
    folder = scan_image_folder(data_dir)
    rel_files = [folder.relative(p) for p in folder.files]
    key = cache_key(rel_files, folder.files, image_size, channels)
    memo = _MEMO.get(key)
    if memo is not None:
        return memo

    directory = Path(cache_dir if cache_dir is not None else Path(data_dir) / ".cache")
    result = _load_cached(directory, key)
    if result is None:
        result, content_hash = _decode_folder(
            folder.root,
            folder.classes,
            rel_files,
            folder.files,
            folder.labels,
            image_size,
            channels,
            num_workers,
        )
        try:
            result = _write_cache(result, content_hash, directory, key)
        except OSError as exc:  # a read-only data folder must not stop training
            logger.warning("could not write the image cache %s (%s); set data.cache_dir", directory, exc)
    _warn_skipped(result.skipped, folder.root)
    _MEMO[key] = result
    return result


def clear_memory_cache() -> None:
    """Forget the in-process results (tests; freeing memory between datasets)."""
    _MEMO.clear()
