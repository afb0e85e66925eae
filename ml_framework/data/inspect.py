"""Inspect an image-folder dataset for ml-init-config: classes, counts, sizes, channels, bad files.

Every image is opened and decoded once with PIL (headers alone miss truncated JPEGs), so the report
names exactly the files the trainer would fail on.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ml_framework.data.folder import LAYOUT_HELP, scan_image_folder
from ml_framework.errors import DataError

# PIL modes that hold one intensity channel; every other mode (RGB, RGBA, P, CMYK, ...) is colour.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
CHANNELS_BY_KIND = {"grayscale": 1, "RGB": 3, "mixed": 3}  # mixed folders are converted to RGB


@dataclass(frozen=True)
class ImageInfo:
    """One readable image: its header facts."""

    path: Path
    width: int
    height: int
    mode: str
    format: str

    @property
    def grayscale(self) -> bool:
        return self.mode in GRAYSCALE_MODES


@dataclass(frozen=True)
class Unreadable:
    path: str  # relative to DATA_DIR/raw
    reason: str


@dataclass(frozen=True)
class DatasetReport:
    """What ml-init-config knows about a dataset; `classes` are those with at least one image file."""

    data_dir: Path
    classes: tuple[str, ...]
    counts: dict[str, int]  # readable images per class (in `classes` order)
    images: tuple[ImageInfo, ...]
    unreadable: tuple[Unreadable, ...] = ()
    empty_classes: tuple[str, ...] = ()  # class folders without any image file
    formats: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The dataset name: the data folder's own name (`data/digits` -> `digits`)."""
        return self.data_dir.resolve().name

    @property
    def num_images(self) -> int:
        return len(self.images)

    def _by_area(self) -> list[ImageInfo]:
        return sorted(self.images, key=lambda i: (i.width * i.height, i.width))

    @property
    def min_size(self) -> tuple[int, int]:
        first = self._by_area()[0]
        return first.width, first.height

    @property
    def median_size(self) -> tuple[int, int]:
        """The (width, height) of the median image by pixel count."""
        ordered = self._by_area()
        mid = ordered[(len(ordered) - 1) // 2]
        return mid.width, mid.height

    @property
    def max_size(self) -> tuple[int, int]:
        last = self._by_area()[-1]
        return last.width, last.height

    @property
    def median_side(self) -> int:
        """Median of each image's short side: the resolution that resizing to a square keeps."""
        return int(statistics.median(min(i.width, i.height) for i in self.images))

    @property
    def channel_kind(self) -> str:
        """grayscale, RGB or mixed."""
        gray = sum(i.grayscale for i in self.images)
        if gray == len(self.images):
            return "grayscale"
        return "RGB" if gray == 0 else "mixed"

    @property
    def channels(self) -> int:
        return CHANNELS_BY_KIND[self.channel_kind]

    @property
    def imbalance(self) -> float:
        """Largest class count over smallest (1.0 = balanced)."""
        counts = [c for c in self.counts.values() if c > 0]
        return max(counts) / min(counts)

    @property
    def classes_without_readable_images(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if self.counts[c] == 0)


def read_image(path: Path) -> ImageInfo | str:
    """Header facts of an image, or the reason it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            info = ImageInfo(path, im.width, im.height, im.mode, im.format or path.suffix.lstrip(".").upper())
            im.load()  # full decode: catches truncated files that the header check alone misses
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return info


def inspect_dataset(data_dir: str | Path, workers: int | None = None) -> DatasetReport:
    """Scan `DATA_DIR/raw/<class>/`, decode every image, and check it is trainable.

    Raises DataError (with the expected layout) for a missing folder, no `raw/`, no images, or fewer
    than two classes with readable images.
    """
    data_dir = Path(data_dir)
    folder = scan_image_folder(data_dir, allow_empty_classes=True)
    empty = set(folder.empty_classes)
    classes = tuple(c for c in folder.classes if c not in empty)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without holding the GIL
        results = list(pool.map(read_image, folder.files))

    counts = dict.fromkeys(classes, 0)
    images: list[ImageInfo] = []
    unreadable: list[Unreadable] = []
    for path, label, result in zip(folder.files, folder.labels, results, strict=True):
        if isinstance(result, str):
            unreadable.append(Unreadable(folder.relative(path), result))
            continue
        images.append(result)
        counts[folder.classes[label]] += 1

    report = DatasetReport(
        data_dir=data_dir,
        classes=classes,
        counts=counts,
        images=tuple(images),
        unreadable=tuple(unreadable),
        empty_classes=folder.empty_classes,
        formats=dict(Counter(i.format for i in images).most_common()),
    )
    _check_trainable(report)
    return report


def _check_trainable(report: DatasetReport) -> None:
    root = report.data_dir / "raw"
    if not report.images:
        bad = ", ".join(u.path for u in report.unreadable[:5])
        raise DataError(f"no readable images under {root} (unreadable: {bad})\n{LAYOUT_HELP}")
    usable = [c for c in report.classes if report.counts[c] > 0]
    if len(usable) < 2:
        found = ", ".join(usable) or "none"
        raise DataError(
            f"{root} has {len(usable)} class folder(s) with readable images ({found}); "
            f"classification needs at least two\n{LAYOUT_HELP}"
        )


def format_size(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"


def render_report(report: DatasetReport, max_class_rows: int = 30) -> list:
    """Rich renderables (tables and warnings) describing the dataset."""
    from rich.table import Table

    summary = Table(title=f"Dataset {report.name}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    rows = {
        "folder": str(report.data_dir),
        "classes": str(len(report.classes)),
        "images": f"{report.num_images} readable"
        + (f", {len(report.unreadable)} unreadable" if report.unreadable else ""),
        "image size": f"min {format_size(report.min_size)}, median {format_size(report.median_size)}, "
        f"max {format_size(report.max_size)}",
        "channels": report.channel_kind + (" (converted to RGB)" if report.channel_kind == "mixed" else ""),
        "formats": ", ".join(f"{f} {n}" for f, n in report.formats.items()),
        "class imbalance": f"{report.imbalance:.2f} (largest / smallest class)",
    }
    if report.empty_classes:
        rows["empty class folders"] = ", ".join(report.empty_classes)
    for key, value in rows.items():
        summary.add_row(key, value)

    per_class = Table(title="Images per class", title_justify="left")
    per_class.add_column("class")
    per_class.add_column("images", justify="right")
    per_class.add_column("share", justify="right")
    for name in report.classes[:max_class_rows]:
        n = report.counts[name]
        per_class.add_row(name, str(n), f"{100 * n / report.num_images:.1f}%")
    if len(report.classes) > max_class_rows:
        per_class.add_row(f"... {len(report.classes) - max_class_rows} more", "", "")

    out: list = [summary, per_class]
    if report.unreadable:
        bad = Table(title="Unreadable files (fix or remove them)", title_justify="left")
        bad.add_column("file")
        bad.add_column("reason")
        for u in report.unreadable:
            bad.add_row(u.path, u.reason)
        out.append(bad)
    out.extend(f"[yellow]warning:[/] {w}" for w in dataset_warnings(report))
    return out


def dataset_warnings(report: DatasetReport) -> list[str]:
    """Problems that do not stop config generation but need the user's attention before training."""
    warnings: list[str] = []
    if report.empty_classes:
        warnings.append(
            f"class folder(s) with no images: {', '.join(report.empty_classes)}; they are left out of "
            "class_names: add images or remove the folder(s) before training"
        )
    if report.unreadable:
        warnings.append(f"{len(report.unreadable)} unreadable file(s) listed above: fix or remove them")
    dead = report.classes_without_readable_images
    if dead:
        warnings.append(f"class(es) whose every file is unreadable: {', '.join(dead)}")
    if report.imbalance >= 3:
        warnings.append(
            f"classes are imbalanced ({report.imbalance:.1f}x): accuracy can hide a weak minority class; "
            "watch val_f1"
        )
    return warnings
