"""Shared fixtures: the real digits dataset, tiny configs, and the PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's 1797 real 8x8 digits as an image folder (built once per session)."""
    out = tmp_path_factory.mktemp("data") / "digits"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_digits.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def tiny_config(data_dir: Path, runs_dir: Path, **sections: dict[str, Any]) -> Any:
    """A small, fast training config on `data_dir` (built-in CNN, 8x8 inputs, 3 epochs)."""
    from ml_framework.config import from_container

    base: dict[str, dict[str, Any]] = {
        "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 8, "depth": 1, "dropout": 0.1},
        "training": {"num_epochs": 3, "batch_size": 64, "device": "cpu", "seed": 0},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "scheduler": {"name": "cosine"},
        "output": {"runs_dir": str(runs_dir)},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return from_container(base, where="tiny_config")


@pytest.fixture
def tiny_cfg(digits_dir: Path, tmp_path: Path) -> Any:
    return tiny_config(digits_dir, tmp_path / "runs")


def run_cli(args: list[str], cwd: Path, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run one of the console scripts of this venv as a subprocess."""
    exe = BIN / args[0]
    return subprocess.run(
        [str(exe), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The local PostgreSQL server (127.0.0.1:5432, database `test`); skipped when it is down unless
    ML_REQUIRE_POSTGRES=1 (CI), where its absence fails the test."""
    url = os.environ.get("ML_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as e:  # driver missing or server down
        if os.environ.get("ML_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required (ML_REQUIRE_POSTGRES=1) but not reachable at {url}: {e}")
        pytest.skip(f"PostgreSQL not reachable at {url}: {e}")
    return url


@pytest.fixture
def unique_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tests share 2 cores with each other's subprocesses: one intra-op thread avoids oversubscription."""
    import torch

    torch.set_num_threads(1)
