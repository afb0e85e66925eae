"""Shared setup for the benchmarks: the bundled digits and a small search config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def ensure_digits(path: Path) -> Path:
    if not (path / "raw").is_dir():
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "make_digits.py"), "--out", str(path)], check=True
        )
    return path


def search_config(
    data_dir: Path,
    runs_dir: Path,
    *,
    epochs: int,
    n_trials: int,
    pruner: dict[str, Any],
    space: dict[str, Any],
    seed: int = 0,
) -> Any:
    from ml_framework.config import from_container

    return from_container(
        {
            "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
            "model": {"architecture": "simple_cnn", "width": 16, "depth": 1},
            "training": {
                "num_epochs": epochs,
                "batch_size": 64,
                "device": "cpu",
                "seed": 0,
                "num_threads": 1,
            },
            "optimizer": {"name": "adamw", "lr": 0.01},
            "output": {"runs_dir": str(runs_dir)},
            "search": {
                "n_trials": n_trials,
                "metric": "val_acc",
                "direction": "maximize",
                "sampler": {"type": "TPESampler", "seed": seed, "n_startup_trials": 5},
                "pruner": pruner,
                "search_space": space,
            },
        }
    )


def generated_config(data_dir: Path, out: Path, *, epochs: int) -> dict[str, Any]:
    """The config `ml-init-config --optuna` writes for `data_dir` (what users search), as a mapping."""
    import yaml

    init = [str(Path(sys.executable).parent / "ml-init-config"), str(data_dir), "--optuna", "--yes",
            "--num-epochs", str(epochs), "--device", "cpu", "--force", "--output", str(out)]  # fmt: skip
    subprocess.run(init, check=True, capture_output=True)
    return yaml.safe_load(out.read_text())
