#!/usr/bin/env python
"""The search users get on the bundled digits (the config `ml-init-config --optuna` writes: its space,
its MedianPruner) run twice with the same sampler seed: once with that pruner, once with NopPruner.
Prints the ratio of epochs trained (pruned / unpruned; goal <= 0.6) and both best values (goal: within
0.01).

    python benchmarks/pruning_savings.py [--trials 20] [--epochs 8]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, ensure_digits, generated_config


def run(base: dict[str, Any], pruner: dict[str, Any]) -> tuple[int, float, int, float]:
    """Epochs trained, best value, trials pruned and seconds of one search with `pruner`."""
    import optuna
    from rich.console import Console

    from ml_framework.config import from_container
    from ml_framework.search.runner import run_search
    from ml_framework.search.study import resolve_settings

    data = copy.deepcopy(base)
    data["output"]["runs_dir"] = tempfile.mkdtemp()
    data["search"].pop("storage", None)  # the default: an SQLite file under runs_dir
    data["search"]["pruner"] = pruner
    cfg = from_container(data)
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
    p.add_argument("--epochs", type=int, default=8, help="training.num_epochs (make demo uses 8)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed of both searches")
    args = p.parse_args()
    data = ensure_digits(args.data)
    base = generated_config(data, Path(tempfile.mkdtemp()) / "digits.yaml", epochs=args.epochs)
    base["search"]["n_trials"] = args.trials
    base["search"]["sampler"]["seed"] = args.seed
    pruner = base["search"]["pruner"]
    e_med, v_med, n_pruned, t_med = run(base, pruner)
    e_nop, v_nop, _, t_nop = run(base, {"type": "NopPruner"})
    print(
        f"{args.trials} trials x {args.epochs} epochs, ml-init-config's digits search, "
        f"TPESampler(seed={args.seed})"
    )
    print(
        f"{pruner}: {e_med} epochs trained, {n_pruned} trials pruned, best val_acc {v_med:.4f}, {t_med:.0f}s"
    )
    print(f"NopPruner: {e_nop} epochs trained, best val_acc {v_nop:.4f}, {t_nop:.0f}s")
    print(f"epoch ratio (pruned / unpruned): {e_med / e_nop:.3f}")
    print(f"best value difference: {abs(v_med - v_nop):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
