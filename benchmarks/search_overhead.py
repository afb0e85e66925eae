#!/usr/bin/env python
"""Per-trial time the framework adds around training (config build, run dir, logging, checkpoints,
outputs, storage) against a bare `study.optimize` loop calling the same training code on the same
SQLite storage. Same sampler seed and trials; prints both per-trial times and the difference (goal < 100 ms).

    python benchmarks/search_overhead.py [--trials 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import REPO, ensure_digits, search_config

SPACE = {
    "optimizer.lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-1},
    "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
}


def bare(cfg, n_trials: int) -> float:
    """A hand-written objective: same data, model, optimizer and epochs; nothing written to disk."""
    import optuna
    import torch

    from ml_framework.models import create_model
    from ml_framework.search.objective import trial_config
    from ml_framework.search.space import parse_search_space, suggest
    from ml_framework.training.optim import create_optimizer, create_scheduler
    from ml_framework.training.run import prepare_data, seed_everything
    from ml_framework.training.trainer import Trainer

    space = parse_search_space(SPACE)
    storage = f"sqlite:///{tempfile.mkdtemp()}/bare.db"

    def objective(trial: optuna.Trial) -> float:
        c = trial_config(cfg, suggest(trial, space), "val_acc", "maximize")
        seed_everything(c.training.seed, True)
        data = prepare_data(c, torch.device("cpu"))
        torch.manual_seed(c.training.seed)
        model = create_model(c.model, channels=1, image_size=8, num_classes=len(data.classes))
        opt = create_optimizer(model.parameters(), c.optimizer)
        sched = create_scheduler(opt, c.scheduler, c.training.num_epochs, "max")
        t = Trainer(
            model,
            opt,
            sched,
            data.train,
            data.val,
            num_classes=len(data.classes),
            num_epochs=c.training.num_epochs,
            device=torch.device("cpu"),
        )
        t.fit()
        return t.best_value

    study = optuna.create_study(
        storage=storage, direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return (time.perf_counter() - start) / n_trials


def framework(cfg, n_trials: int) -> float:
    from rich.console import Console

    from ml_framework.search.runner import run_search
    from ml_framework.search.study import resolve_settings

    settings = resolve_settings(cfg)
    start = time.perf_counter()
    run_search(cfg, settings, mode="new", console=Console(quiet=True))
    return (time.perf_counter() - start) / n_trials


def main() -> int:
    import optuna
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "data" / "digits")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    data = ensure_digits(args.data)

    def make() -> object:
        return search_config(
            data,
            Path(tempfile.mkdtemp()),
            epochs=args.epochs,
            n_trials=args.trials,
            pruner={"type": "NopPruner"},
            space=SPACE,
        )

    bare(make(), 2)  # warm-up: imports, decode cache, first-call costs
    results = {"bare": [], "framework": []}
    for _ in range(2):  # alternate to spread machine noise
        results["bare"].append(bare(make(), args.trials))
        results["framework"].append(framework(make(), args.trials))
    b, f = min(results["bare"]), min(results["framework"])
    print(
        f"{args.trials} trials x {args.epochs} epochs, simple_cnn on bundled digits, SQLite storage, 1 thread"
    )
    print(f"bare study.optimize loop: {b * 1000:.0f} ms/trial")
    print(f"ml-search (framework):    {f * 1000:.0f} ms/trial")
    print(f"added per trial: {(f - b) * 1000:.0f} ms  (ratio framework / bare: {f / b:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
