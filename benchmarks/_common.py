"""Shared setup for the benchmarks: generated datasets and configs, timed commands, alternating rounds
and `record_result`, which every benchmark calls to merge its figures into benchmarks/results.json."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's console scripts (ml-search, ml-train, ...)


def ensure_digits(path: Path) -> Path:
    """scikit-learn's bundled digits as an image folder (the data the framework's defaults were chosen on)."""
    if not (path / "raw").is_dir():
        run_command([sys.executable, str(REPO / "scripts" / "make_digits.py"), "--out", str(path)])
    return path


def ensure_shapes(path: Path, *, per_class: int = 100, seed: int = 0) -> Path:
    """The procedurally drawn 16 px shapes (scripts/make_shapes.py): a problem no default was tuned on."""
    if not (path / "raw").is_dir():
        make = [sys.executable, str(REPO / "scripts" / "make_shapes.py"), "--out", str(path),
                "--per-class", str(per_class), "--seed", str(seed)]  # fmt: skip
        run_command(make)
    return path


def run_command(cmd: Sequence[str], cwd: Path | None = None) -> float:
    """Run `cmd` to completion and return its wall time in seconds; a failure ends the benchmark."""
    started = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode:
        tail = f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{tail}")
    return elapsed


def alternating_rounds(runs: dict[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    """Call every `runs[name](round)` once per round, reversing the order every other round, so that
    drifting machine load hits all of them alike. Returns each one's measurements in round order."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            results[name].append(runs[name](r))
            print(f"  round {r + 1}/{rounds} {name}: {results[name][-1]:.2f}", flush=True)
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def generated_config(data_dir: Path, out: Path, *, epochs: int) -> dict[str, Any]:
    """The config `ml-init-config --optuna` writes for `data_dir` (what users search), as a mapping."""
    import yaml

    init = [BIN / "ml-init-config", data_dir, "--optuna", "--yes",
            "--num-epochs", str(epochs), "--device", "cpu", "--force", "--output", out]  # fmt: skip
    run_command(init)
    return yaml.safe_load(out.read_text())


# Values that do not change the work of a trial, so that every trial of a search costs the same.
COST_NEUTRAL_SPACE = {
    "optimizer.lr": {"type": "loguniform", "low": 3e-4, "high": 3e-2},
    "optimizer.weight_decay": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
    "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
}


def cost_neutral_config(root: Path, data_dir: Path, epochs: int) -> Path:
    """`root/digits_config.yaml`: the ml-init-config config for `data_dir` with a search block whose
    trials all cost the same (seeded random sampler, no pruner, COST_NEUTRAL_SPACE), runs under `root`."""
    import yaml

    path = root / "digits_config.yaml"
    cfg = generated_config(data_dir, path, epochs=epochs)
    cfg["output"]["runs_dir"] = str(root / "runs")
    cfg["search"].update(
        sampler={"type": "RandomSampler", "seed": 0},
        pruner={"type": "NopPruner"},
        search_space=COST_NEUTRAL_SPACE,
    )
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


RESULTS = REPO / "benchmarks" / "results.json"


def record_result(name: str, payload: dict[str, Any]) -> None:
    """Merge one benchmark's figures into benchmarks/results.json (`make bench` collects them there).

    `payload["measures"]` (what is compared with what) and `payload["result"]` (the headline figures, one
    line) make the README table (benchmarks/table.py); the rest is the detail. The machine's load
    averages over the last 1, 5 and 15 minutes are stored with it: other work on the machine skews timings.
    """
    import fcntl
    import json
    import os
    import platform

    from ml_framework.fileio import atomic_write_text

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    entry = {
        **payload,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average (1/5/15 min) {load}",
    }
    folder = os.open(RESULTS.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # benchmarks run side by side must not drop each other's entry
        data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        data[name] = entry
        atomic_write_text(RESULTS, json.dumps(data, indent=1, sort_keys=True) + "\n")
    finally:
        os.close(folder)
