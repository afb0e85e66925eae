"""Run directories: a new one per run, never silently reused."""

from __future__ import annotations

import time
from pathlib import Path

from ml_framework.errors import ConfigError


def create_run_dir(runs_dir: str | Path, name: str | None, default_stem: str) -> Path:
    """`runs/<name>/`; without a name `runs/<default_stem>_<timestamp>` (suffixed if taken).

    An explicit name that already holds a run is an error: use --resume to continue it.
    """
    runs_dir = Path(runs_dir)
    if name:
        path = runs_dir / name
        if path.exists() and any(path.iterdir()):
            raise ConfigError(
                f"run dir {path} already exists; pick another --name, or continue it with "
                f"--resume {path / 'checkpoints' / 'last.pt'}"
            )
        path.mkdir(parents=True, exist_ok=True)
        return path
    stem = f"{default_stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        path = runs_dir / (stem if i == 0 else f"{stem}_{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new run dir under {runs_dir}")


def resolve_resume(path: str | Path) -> tuple[Path, Path]:
    """A checkpoint file or a run dir -> (checkpoint, run_dir)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ConfigError(
            f"--resume: checkpoint not found: {path} (give a run dir or its checkpoints/last.pt)"
        )
    return path, path.parent.parent
