#!/usr/bin/env python
"""Write scikit-learn's bundled digits (1797 real 8x8 images, no network) as an image folder.

    python scripts/make_digits.py [--out data/digits] [--scale N]

Layout: `<out>/raw/<digit>/<idx>.png`, grayscale, pixel values 0..16 mapped to 0..255. Images stay
8x8 unless `--scale N` (nearest-neighbour upscale to 8N x 8N); the trainer resizes anyway. Running it
again on a complete folder does nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def digit_images(scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 8*scale, 8*scale] in 0..255, targets int [N]) from sklearn's load_digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    return images, digits.target.astype(np.int64)


MARKER = ".make_digits.json"  # written last: its presence means the folder is complete


def expected_paths(out: Path, targets: np.ndarray) -> list[Path]:
    return [out / "raw" / str(int(t)) / f"{i}.png" for i, t in enumerate(targets)]


def is_complete(out: Path, scale: int) -> bool:
    """The marker of a finished run with this scale exists and no image was deleted since.

    Checked without scikit-learn (whose import takes seconds), so a re-run returns at once.
    """
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("scale") != scale:
        return False
    return sum(1 for _ in (out / "raw").glob("*/*.png")) == marker.get("count")


def make_digits(out: str | Path = "data/digits", scale: int = 1) -> int:
    """Write the PNGs; return how many were written (0 when the folder was already complete)."""
    from PIL import Image

    if scale < 1:
        raise ValueError(f"--scale must be >= 1, got {scale}")
    out = Path(out)
    if is_complete(out, scale):
        return 0
    (out / MARKER).unlink(missing_ok=True)
    images, targets = digit_images(scale)
    for path, image in zip(expected_paths(out, targets), images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(image).save(tmp, format="PNG")
        tmp.replace(path)
    (out / MARKER).write_text(
        json.dumps({"count": len(images), "scale": scale, "source": "sklearn.load_digits"})
    )
    return len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data/digits", help="output folder (default: data/digits)")
    parser.add_argument("--scale", type=int, default=1, help="integer upscale factor (default: 1, 8x8)")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error(f"--scale must be >= 1, got {args.scale}")
    written = make_digits(args.out, args.scale)
    raw = Path(args.out) / "raw"
    if written:
        size = 8 * args.scale
        print(f"wrote {written} images ({size}x{size} grayscale PNG, 10 classes) to {raw}")
    else:
        print(f"{raw} is already complete; nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
