"""Finished trials per minute of `ml-search` with 1 and K worker processes on this machine.

The trial is the one users get: the config `ml-init-config --optuna` writes for the bundled digits
(scripts/make_digits.py), i.e. the built-in CNN. Only the search block is changed so that every
trial costs the same: a seeded random sampler, no pruner, and a space of values that do not change
the work (learning rate, weight decay, dropout). Every trial trains on `--threads` CPU threads
(default 1) whatever K is, so the ratio measures how the study scales with workers (storage, locks,
start-up, outputs), not how torch scales with threads; for context, one worker given every core (what
`ml-search` does by default without --n-workers) is timed too. Rates are taken over the whole
command, process start-up included. Prints trials/minute for each run and the ratios."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import generated_config

from ml_framework.search.parallel import available_cores

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

COST_NEUTRAL_SPACE = {
    "optimizer.lr": {"type": "loguniform", "low": 3e-4, "high": 3e-2},
    "optimizer.weight_decay": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
    "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
}


def write_config(root: Path, data_dir: Path, epochs: int) -> Path:
    """The ml-init-config config for `data_dir`, with a search block whose trials all cost the same."""
    path = root / "configs" / "digits_config.yaml"
    cfg = generated_config(data_dir, path, epochs=epochs)
    cfg["output"]["runs_dir"] = str(root / "runs")
    cfg["search"].update(
        sampler={"type": "RandomSampler", "seed": 0},
        pruner={"type": "NopPruner"},
        search_space=COST_NEUTRAL_SPACE,
    )
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def trials_per_minute(config: Path, workers: int, threads: int | None, n_trials: int, cwd: Path) -> float:
    """threads=None: ml-search's own split of the cores between the workers."""
    cmd = [str(BIN / "ml-search"), "--config", str(config), "--n-trials", str(n_trials),
           "--study-name", f"scaling_{workers}_{threads}", "--n-workers", str(workers),
           f"training.num_threads={'null' if threads is None else threads}"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return n_trials / (time.perf_counter() - started) * 60


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (first: base)"
    )
    p.add_argument("--n-trials", type=int, default=20, help="trials per run (ml-init-config's default)")
    p.add_argument("--epochs", type=int, default=8, help="training.num_epochs (make demo: 8)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every trial")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data" / "digits"
        make = [sys.executable, str(REPO / "scripts" / "make_digits.py"), "--out", str(data)]
        subprocess.run(make, check=True, capture_output=True)
        config = write_config(root, data, args.epochs)
        rates = {k: trials_per_minute(config, k, args.threads, args.n_trials, root) for k in args.workers}
        all_cores = trials_per_minute(config, 1, None, args.n_trials, root)
    base = rates[args.workers[0]]
    print(
        f"{args.n_trials} trials of {args.epochs} epochs (ml-init-config's digits config), "
        f"{args.threads} CPU thread(s) per trial"
    )
    for k, rate in rates.items():
        print(f"{k} worker(s): {rate:.1f} finished trials/min (x{rate / base:.2f} of {args.workers[0]})")
    print(
        f"context: 1 worker on all {available_cores()} cores: {all_cores:.1f} trials/min; "
        f"{args.workers[-1]} workers do x{rates[args.workers[-1]] / all_cores:.2f} of that"
    )


if __name__ == "__main__":
    main()
