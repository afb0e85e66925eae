"""Find the images of a `DATA_DIR/raw/<class>/<file>` folder (no decoding)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ml_framework.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

LAYOUT_HELP = (
    "Expected layout:\n"
    "  DATA_DIR/raw/<class_a>/<image>.png\n"
    "  DATA_DIR/raw/<class_b>/<image>.jpg\n"
    "with one folder per class (at least two) holding PNG/JPEG images."
)


@dataclass(frozen=True)
class ImageFolder:
    root: Path  # DATA_DIR/raw
    classes: tuple[str, ...]  # sorted class folder names; index = label
    files: tuple[Path, ...]  # sorted by (class, file name)
    labels: tuple[int, ...]
    empty_classes: tuple[str, ...]  # class folders with no image file

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_image_folder(data_dir: str | Path, allow_empty_classes: bool = False) -> ImageFolder:
    """List classes and image files; non-image files (notes.txt, .DS_Store) are ignored.

    A missing folder, no class folders, an empty class (unless allowed) or no images is a DataError.
    """
    data_dir = Path(data_dir)
    root = data_dir / "raw"
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}\n{LAYOUT_HELP}")
    if not root.is_dir():
        raise DataError(f"{data_dir} has no 'raw/' folder of class folders\n{LAYOUT_HELP}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class folders\n{LAYOUT_HELP}")
    files: list[Path] = []
    labels: list[int] = []
    classes: list[str] = []
    empty: list[str] = []
    for d in class_dirs:
        images = sorted(p for p in d.rglob("*") if is_image_file(p))
        if not images:
            empty.append(d.name)
            if not allow_empty_classes:
                continue
        classes.append(d.name)
        files.extend(images)
        labels.extend([len(classes) - 1] * len(images))
    if empty and not allow_empty_classes:
        raise DataError(
            f"class folder(s) with no images in {root}: {', '.join(empty)}. "
            "Add images or remove the folder(s)."
        )
    if not files:
        raise DataError(f"no image files found under {root}\n{LAYOUT_HELP}")
    return ImageFolder(root, tuple(classes), tuple(files), tuple(labels), tuple(empty))
