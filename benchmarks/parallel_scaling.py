#!/usr/bin/env python
"""Finished trials per minute of `ml-search --n-workers K` against the best one-process setup: one
worker whose trials use every core (`training.num_threads` = cores) or one thread, whichever is faster
in this run (on an idle machine, every core; on a busy one, a multi-threaded trial can lose far more to
descheduled threads than one thread does).

The trial is the one users get: the config `ml-init-config --optuna` writes for the bundled digits
(scripts/make_digits.py), i.e. the built-in CNN. Only the search block is changed so that every trial
costs the same: a seeded random sampler, no pruner, and a space of values that do not change the work
(learning rate, weight decay, dropout). K workers split the cores between them (ml-search's default,
`training.num_threads` unset). Rates are taken over the whole command, process start-up included; the
setups alternate over several rounds and the medians are compared.

    python benchmarks/parallel_scaling.py [--workers 2] [--n-trials 12] [--epochs 4] [--rounds 3]
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
    p.add_argument("--workers", type=int, default=2, help="worker processes of the parallel setup")
    p.add_argument("--n-trials", type=int, default=12, help="trials per run")
    p.add_argument("--epochs", type=int, default=4, help="training.num_epochs")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    p.add_argument(
        "--one-worker-threads",
        type=int,
        nargs="+",
        help="torch threads of the one-worker setups; the fastest is the baseline (default: all cores, 1)",
    )
    args = p.parse_args()
    cores = available_cores()
    single = args.one_worker_threads or sorted({cores, 1}, reverse=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = cost_neutral_config(root, ensure_digits(root / "digits"), args.epochs)

        def search(workers: int, threads: int | None, name: str) -> float:
            cmd = [BIN / "ml-search", "--config", config, "--n-trials", str(args.n_trials),
                   "--study-name", name, "--n-workers", str(workers),
                   f"training.num_threads={'null' if threads is None else threads}"]  # fmt: skip
            return args.n_trials / run_command(cmd, cwd=root) * 60

        print("warm-up (decode cache, first imports; not counted)", flush=True)
        warm_up = [BIN / "ml-search", "--config", config, "--n-trials", "1", "--study-name", "warmup",
                   "training.num_threads=1"]  # fmt: skip
        run_command(warm_up, cwd=root)
        ones = {f"1 worker x {t} thread(s)": t for t in single}
        many = f"{args.workers} workers (cores split)"
        setups = {name: (lambda r, t=t: search(1, t, f"one{t}_{r}")) for name, t in ones.items()}
        setups[many] = lambda r: search(args.workers, None, f"many_{r}")
        rates = alternating_rounds(setups, args.rounds)
    best = max(ones, key=lambda name: median(rates[name]))
    base, par = median(rates[best]), median(rates[many])
    measures = (
        f"finished trials/min of {args.workers} workers vs the best one-process setup (1 worker on "
        f"{' or '.join(map(str, single))} thread(s); generated digits config, {args.n_trials} trials x "
        f"{args.epochs} epochs, median of {args.rounds} alternating rounds)"
    )
    result = f"x{par / base:.2f} ({par:.1f} vs {base:.1f} trials/min of {best})"
    if ones.get(best) != cores and cores in ones.values():
        all_cores = median(rates[f"1 worker x {cores} thread(s)"])
        result += f"; 1 worker on all {cores} cores: {all_cores:.1f}"
    print(measures)
    for name, values in rates.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name}: median {median(values):.1f} trials/min (rounds: {each})")
    print(result)
    record_result(
        "parallel_scaling",
        {
            "measures": measures,
            "result": result,
            "speedup": round(par / base, 3),
            "baseline": best,
            "trials_per_min": {k: [round(v, 2) for v in vs] for k, vs in rates.items()},
            "settings": {**vars(args), "cores": cores},
        },
    )


if __name__ == "__main__":
    main()
