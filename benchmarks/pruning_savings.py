#!/usr/bin/env python
"""The same search on the bundled digits with MedianPruner and with NopPruner (same sampler seed):
prints the ratio of epochs trained (pruned / unpruned; goal <= 0.6) and both best values (goal: within 0.01).

    python benchmarks/pruning_savings.py [--trials 20] [--epochs 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import REPO, ensure_digits, search_config

SPACE = {
    "optimizer.lr": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-1},
    "optimizer.name": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "training.batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
}


def run(pruner: dict, args: argparse.Namespace, data: Path) -> tuple[int, float, int, float]:
    import optuna
    from rich.console import Console

    from ml_framework.search.runner import run_search
    from ml_framework.search.study import resolve_settings

    runs = Path(tempfile.mkdtemp())
    cfg = search_config(data, runs, epochs=args.epochs, n_trials=args.trials, pruner=pruner, space=SPACE)
    settings = resolve_settings(cfg)
    start = time.perf_counter()
    run_search(cfg, settings, mode="new", console=Console(quiet=True))
    elapsed = time.perf_counter() - start
    study = optuna.load_study(study_name=settings.study_name, storage=settings.storage_url)
    epochs = sum(int(t.user_attrs.get("last_epoch", t.last_step or 0)) for t in study.trials)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return epochs, study.best_value, pruned, elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "data" / "digits")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args()
    data = ensure_digits(args.data)
    median = {"type": "MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 2}
    e_med, v_med, n_pruned, t_med = run(median, args, data)
    e_nop, v_nop, _, t_nop = run({"type": "NopPruner"}, args, data)
    print(f"{args.trials} trials x {args.epochs} epochs, TPESampler(seed=0), bundled digits")
    print(
        f"MedianPruner: {e_med} epochs trained, {n_pruned} trials pruned, "
        f"best val_acc {v_med:.4f}, {t_med:.0f}s"
    )
    print(f"NopPruner:    {e_nop} epochs trained, best val_acc {v_nop:.4f}, {t_nop:.0f}s")
    print(f"epoch ratio (pruned / unpruned): {e_med / e_nop:.3f}")
    print(f"best value difference: {abs(v_med - v_nop):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
