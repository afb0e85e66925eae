"""Study storage URLs: the default SQLite file, any SQLAlchemy URL, or a journal file."""

from __future__ import annotations

from pathlib import Path


def default_storage_url(runs_dir: str | Path = "runs") -> str:
    return f"sqlite:///{Path(runs_dir) / 'optuna_studies' / 'optuna.db'}"


def study_dir(study_name: str, runs_dir: str | Path = "runs") -> Path:
    """Where a study's outputs live: runs/optuna_studies/<study>/."""
    return Path(runs_dir) / "optuna_studies" / study_name
