"""Finished trials per minute of `ml-search` with 1 and K worker processes on this machine.

The built-in CNN on the bundled digits (scripts/make_digits.py), identical short trials (random
sampler, no pruner, 1 torch thread per worker). Prints trials/minute for each K and the ratio to 1."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def write_config(path: Path, data_dir: Path, runs_dir: Path, epochs: int) -> Path:
    cfg = {
        "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 16, "depth": 2},
        "training": {"num_epochs": epochs, "batch_size": 64, "device": "cpu", "seed": 0, "num_threads": 1},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "output": {"runs_dir": str(runs_dir)},
        "search": {
            "metric": "val_acc",
            "sampler": {"type": "RandomSampler", "seed": 0},
            "pruner": {"type": "NopPruner"},
            "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2}},
        },
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def trials_per_minute(config: Path, workers: int, n_trials: int, cwd: Path) -> float:
    exe = str(Path(sys.executable).parent / "ml-search")
    cmd = [exe, "--config", str(config), "--n-trials", str(n_trials), "--study-name", f"scaling_{workers}",
           "--n-workers", str(workers)]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return n_trials / (time.perf_counter() - started) * 60


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (first: base)"
    )
    p.add_argument("--n-trials", type=int, default=12, help="trials per run (per worker count)")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "digits"
        make = [sys.executable, str(REPO / "scripts" / "make_digits.py"), "--out", str(data)]
        subprocess.run(make, check=True, capture_output=True)
        config = write_config(root / "bench.yaml", data, root / "runs", args.epochs)
        rates = {k: trials_per_minute(config, k, args.n_trials, root) for k in args.workers}
    base = rates[args.workers[0]]
    for k, rate in rates.items():
        print(f"{k} worker(s): {rate:.1f} finished trials/min (x{rate / base:.2f} of {args.workers[0]})")


if __name__ == "__main__":
    main()
