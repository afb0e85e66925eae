#!/usr/bin/env python
"""Wall time of `ml-search --engine ray` against the native engine on the same search.

The search is the one users get: the config `ml-init-config --optuna` writes for the bundled digits
(scripts/make_digits.py), with a seeded random sampler, no pruner and a space of values that do not
change the work per trial (learning rate, weight decay, dropout), so both engines train the same 20
trials. Both run one trial at a time on every core (native: one process; Ray: FIFO scheduler,
`--max-concurrent 1`, `cpu:<cores>` per trial). Each command is timed whole: process start-up, the
study, and for Ray its local runtime's start-up and shutdown. The two alternate over several rounds and
the medians are compared.

    python benchmarks/ray_overhead.py [--n-trials 20] [--epochs 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import (
    BIN,
    alternating_rounds,
    cost_neutral_config,
    ensure_digits,
    median,
    record_result,
    run_command,
)

from ml_framework.search.parallel import available_cores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-trials", type=int, default=20, help="trials per search")
    p.add_argument("--epochs", type=int, default=3, help="training.num_epochs")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    args = p.parse_args()
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = cost_neutral_config(root, ensure_digits(root / "digits"), args.epochs)

        def search(name: str, *extra: str, n_trials: int = args.n_trials) -> float:
            cmd = [BIN / "ml-search", "--config", config, "--n-trials", str(n_trials), "--study-name", name]
            return run_command([*cmd, *extra], cwd=root)

        ray = ("--engine", "ray", "--scheduler", "fifo", "--max-concurrent", "1",
               "--resources-per-trial", f"cpu:{cores}")  # fmt: skip
        print("warm-up (decode cache, first imports of both engines; not counted)", flush=True)
        search("warm_native", n_trials=1)
        search("warm_ray", *ray, n_trials=1)
        times = alternating_rounds(
            {"native": lambda r: search(f"native_{r}"), "ray": lambda r: search(f"ray_{r}", *ray)},
            args.rounds,
        )
    native, ray_s = median(times["native"]), median(times["ray"])
    ratio = ray_s / native
    measures = (
        f"wall time of ml-search --engine ray (FIFO, 1 trial at a time on {cores} cores, Ray's start-up "
        f"included) vs the native engine; generated digits config, {args.n_trials} trials x {args.epochs} "
        f"epochs, same seeded sampler, median of {args.rounds} alternating rounds"
    )
    result = f"ray/native x{ratio:.2f} ({ray_s:.1f}s vs {native:.1f}s; target <= 1.15)"
    print(measures)
    for name, values in times.items():
        print(f"{name}: median {median(values):.1f}s (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    print(result)
    record_result(
        "ray_overhead",
        {
            "measures": measures,
            "result": result,
            "ratio": round(ratio, 3),
            "wall_s": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
            "settings": {**vars(args), "cores": cores},
        },
    )


if __name__ == "__main__":
    main()
