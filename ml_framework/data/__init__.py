"""Data pipeline: find images (folder), decode once (cache), split (splits), batch in memory (loader).

Importing this package is cheap: only `folder` is loaded eagerly. The torch-based names below are
resolved on first access (PEP 562), so CLI modules may import `ml_framework.data` at top level.
"""

from __future__ import annotations

import importlib
from typing import Any

from ml_framework.data.folder import IMAGE_EXTENSIONS, ImageFolder, is_image_file, scan_image_folder

# public name -> submodule that defines it (imported on first access)
_LAZY = {
    "DecodedImages": "cache",
    "load_images": "cache",
    "clear_memory_cache": "cache",
    "Splits": "splits",
    "make_splits": "splits",
    "TensorBatches": "loader",
    "compute_mean_std": "loader",
    "batch_bounds": "loader",
}

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "is_image_file", "scan_image_folder", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
