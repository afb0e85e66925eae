"""Checkpoint files: written atomically, read with torch's weights-only unpickler only.

A `.pt` file is a pickle, and unpickling runs whatever the file names. Every checkpoint the
framework reads (`model.weights_path`, `ml-train --resume`, retried trials, best.pt) goes through
`load_checkpoint`, which accepts tensors and plain Python values (dict, list, tuple, str, numbers)
and refuses anything else before it is constructed. Checkpoints are written with those types only.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from ml_framework.errors import UserError
from ml_framework.fileio import atomic_target


def save_checkpoint(obj: Any, path: Path) -> None:
    """`torch.save` through a temporary file, so a reader never sees half a checkpoint."""
    import torch

    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """The content of a tensor checkpoint, loaded with `weights_only=True`. A file that would need
    the full unpickler (arbitrary objects, code) is refused with a UserError naming it."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        holds = f" (it holds {found.group(1)})" if found else ""
        raise UserError(
            f"{what} {path}: not a plain tensor checkpoint; refusing to unpickle it{holds}. "
            "Only tensors and plain values (dict, list, str, numbers) are loaded"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise UserError(f"{what} {path}: cannot read it: {str(e).splitlines()[0]}") from None
