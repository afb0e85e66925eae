#!/usr/bin/env python
"""Write a procedurally drawn shapes dataset (no network) as an image folder.

    python scripts/make_shapes.py --out DIR [--per-class 100] [--size 16] [--seed 0] [--noise 0.15]

Six classes (disk, ring, square, frame, triangle, cross), each shape at a random position, scale and
rotation with random foreground/background grey levels, drawn 4x supersampled then averaged down to
`size` x `size`, plus Gaussian pixel noise and a random distractor line. A different problem from the
bundled digits (the data the framework's defaults were chosen on), for benchmarks that must not be
judged on the data they were tuned on. Layout: `<out>/raw/<class>/<idx>.png`, grayscale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CLASSES = ("cross", "disk", "frame", "ring", "square", "triangle")
SUPERSAMPLE = 4


def _mask(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of shape `kind` of radius `r` in local coordinates (u, v)."""
    rho = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if kind == "disk":
        return rho < r
    if kind == "ring":
        return (rho < r) & (rho > 0.6 * r)
    if kind == "square":
        return box < 0.8 * r
    if kind == "frame":
        return (box < 0.8 * r) & (box > 0.45 * r)
    if kind == "triangle":
        s3 = np.sqrt(3.0)
        return (v > -0.5 * r) & (s3 * u + v < r) & (-s3 * u + v < r)
    if kind == "cross":
        arm = 0.28 * r
        return ((np.abs(u) < arm) & (np.abs(v) < r)) | ((np.abs(v) < arm) & (np.abs(u) < r))
    raise ValueError(f"unknown shape {kind!r}; known: {', '.join(CLASSES)}")


def shape_images(
    per_class: int = 100, size: int = 16, seed: int = 0, noise: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, size, size], labels int [N]) with N = per_class * len(CLASSES), class-major."""
    if per_class < 1 or size < 4:
        raise ValueError(f"need per_class >= 1 and size >= 4, got {per_class} and {size}")
    rng = np.random.default_rng(seed)
    n = size * SUPERSAMPLE
    y, x = np.mgrid[0:n, 0:n]
    x = (x + 0.5) / n * 2 - 1  # pixel centres in [-1, 1]
    y = (y + 0.5) / n * 2 - 1
    images, labels = [], []
    for label, kind in enumerate(CLASSES):
        for _ in range(per_class):
            r = rng.uniform(0.35, 0.7)
            cx, cy = rng.uniform(-(0.9 - r), 0.9 - r, size=2)
            angle = rng.uniform(0, 2 * np.pi)
            c, s = np.cos(angle), np.sin(angle)
            u = c * (x - cx) + s * (y - cy)
            v = -s * (x - cx) + c * (y - cy)
            fg, bg = rng.uniform(0.55, 1.0), rng.uniform(0.0, 0.35)
            if rng.random() < 0.5:  # dark shape on a light background half of the time
                fg, bg = 1 - fg, 1 - bg
            canvas = np.where(_mask(kind, u, v, r), fg, bg)
            # a thin distractor line across the image, so no single pixel statistic gives the class away
            a, off = rng.uniform(0, np.pi), rng.uniform(-0.8, 0.8)
            line = np.abs(np.cos(a) * x + np.sin(a) * y - off) < 0.04
            canvas = np.where(line, rng.uniform(0, 1), canvas)
            small = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
            small = small + rng.normal(0, noise, small.shape)
            images.append(np.clip(np.rint(small * 255), 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def make_shapes(
    out: str | Path, per_class: int = 100, size: int = 16, seed: int = 0, noise: float = 0.15
) -> int:
    """Write `<out>/raw/<class>/<idx>.png`; return how many images were written."""
    from PIL import Image

    images, labels = shape_images(per_class, size, seed, noise)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = Path(out) / "raw" / CLASSES[label] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="PNG")
    return len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--per-class", type=int, default=100, help="images per class (default: 100)")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--noise", type=float, default=0.15, help="pixel noise std, 0..1 scale (default: 0.15)"
    )
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.size < 4:
        parser.error("--per-class must be >= 1 and --size >= 4")
    written = make_shapes(args.out, args.per_class, args.size, args.seed, args.noise)
    size = f"{args.size}x{args.size}"
    print(f"wrote {written} images ({size} grayscale PNG, {len(CLASSES)} classes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
