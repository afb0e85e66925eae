"""Run directories: a new one per run, never silently reused."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ml_framework.errors import ConfigError
from ml_framework.fileio import check_name


def create_run_dir(runs_dir: str | Path, name: str | None, default_stem: str) -> Path:
    """`runs/<name>/`; without a name `runs/<default_stem>_<timestamp>` (suffixed if taken).

    An explicit name that already holds a run is an error: use --resume to continue it. Names are
    single directory names (`fileio.check_name`): a run dir never lies outside `runs_dir`.
    """
    runs_dir = Path(runs_dir)
    if name:
        path = runs_dir / check_name(name, "--name (output.name)")
        if path.exists() and any(path.iterdir()):
            raise ConfigError(
                f"run dir {path} already exists; pick another --name, or continue it with "
                f"--resume {path / 'checkpoints' / 'last.pt'}"
            )
        path.mkdir(parents=True, exist_ok=True)
        return path
    check_name(default_stem, "the default run name <data.dataset_name>_<model.architecture> (set --name)")
    stem = f"{default_stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        path = runs_dir / (stem if i == 0 else f"{stem}_{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new run dir under {runs_dir}")


def trial_fold(cfg: Any, trial: bool) -> bool:
    """A cross-validation fold of a search trial (`trial_<n>/fold_<k>/`, `data.fold` set): its trial
    writes the config.yaml and TensorBoard session of its folds (`search.objectives.write_cv_session`)."""
    return trial and cfg.data.get("fold") is not None


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


def open_train_log(run_dir: Path) -> logging.Handler:
    """Mirror the framework's log records into `<run_dir>/train.log` until `close_train_log`."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_log = logging.getLogger("ml_framework")
    root_log.addHandler(handler)
    root_log.setLevel(logging.INFO)
    return handler


def close_train_log(handler: logging.Handler) -> None:
    logging.getLogger("ml_framework").removeHandler(handler)
    handler.close()


@contextmanager
def train_log(run_dir: Path) -> Iterator[None]:
    """`open_train_log` for the duration of a block."""
    handler = open_train_log(run_dir)
    try:
        yield
    finally:
        close_train_log(handler)
