#!/usr/bin/env python
"""Tables: what `ml-search` costs on top of a hand-written Optuna + scikit-learn + XGBoost script, and
how many boosting rounds pruning saves.

Data: scikit-learn's breast_cancer as a CSV (scripts/make_tabular.py).

1. Wall time. `ml-search --cv 5 --metric roc_auc --strategy random` over 30 trials of XGBoost (200
   rounds, 5 parameters) against benchmarks/handwritten_tabular.py, which shares no code with
   ml_framework (pandas, StratifiedKFold, XGBClassifier, roc_auc_score, `study.optimize`). Same trials
   (a seeded RandomSampler over the same parameters in the same order samples the same values, which
   is checked), the same folds (the hand-written script reads the rows of ml-search's folds from a JSON
   file this script writes with the framework's split, so both fit the same models: equal trial values
   are checked), the same SQLite storage, one XGBoost thread. What ml-search
   adds: the table checks, the ColumnTransformer, a run dir per fold (config, metrics, splits, log,
   TensorBoard) and the study outputs after every trial. Whole commands, alternating order, median of
   `--rounds` rounds.
2. Pruning. For each seed, `ml-search` on a holdout split (TPE) once with HyperbandPruner reporting
   every 10 boosting rounds and once with `--pruner none`; boosting rounds trained (pruned / unpruned)
   and the best validation ROC AUC of each.

    python benchmarks/tabular_search.py [--trials 30] [--rounds 3] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _common import BIN, REPO, alternating_rounds, median, record_result, run_command

sys.path.insert(0, str(REPO / "scripts"))
from make_tabular import write_dataset

ROUNDS = 200
SPACE = {  # the order handwritten_tabular.py suggests them in
    "model.learning_rate": {"type": "loguniform", "low": 0.01, "high": 0.3},
    "model.max_depth": {"type": "int", "low": 2, "high": 8},
    "model.min_child_weight": {"type": "int", "low": 1, "high": 10},
    "model.subsample": {"type": "float", "low": 0.5, "high": 1.0},
    "model.colsample_bytree": {"type": "float", "low": 0.5, "high": 1.0},
}


def config(csv: Path, runs: Path, trials: int) -> dict[str, Any]:
    return {
        "data": {"dataset_name": "bc", "format": "csv", "path": str(csv), "target": "target",
                 "val_split": 0.2, "test_split": 0.2},
        "model": {"architecture": "xgboost", "n_estimators": ROUNDS, "n_jobs": 1},
        "training": {"seed": 0, "monitor": "val_roc_auc", "eval_every": 10},
        "output": {"runs_dir": str(runs)},
        "search": {
            "n_trials": trials,
            "metric": "val_roc_auc",
            "sampler": {"type": "TPESampler", "n_startup_trials": 8},
            "pruner": {"type": "HyperbandPruner", "min_resource": 10, "reduction_factor": 3},
            "search_space": SPACE,
        },
    }  # fmt: skip


def framework_folds(cfg_path: Path, n_folds: int) -> dict[str, Any]:
    """The CSV rows of each of ml-search's `--cv n_folds` folds (its split for the config's seed)."""
    from ml_framework.config import load_config
    from ml_framework.data.tabular import load_table, make_table_splits

    cfg = load_config(cfg_path)
    cfg.data.n_folds, cfg.data.fold, cfg.data.stratified_folds = n_folds, 0, True
    table = load_table(cfg.data)
    splits = make_table_splits(table, cfg.data, cfg.training.seed)
    rows = table.features.index.to_numpy()
    folds = [splits.for_fold(k)[:2] for k in range(n_folds)]
    return {"folds": [{"train": rows[train].tolist(), "val": rows[val].tolist()} for train, val in folds]}


def study_trials(storage: str, name: str) -> list[Any]:
    import optuna

    return optuna.load_study(study_name=name, storage=storage).trials


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the wall-time comparison")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the pruning comparison")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = write_dataset("breast_cancer", root / "data")
        cfg_path = root / "bc.yaml"
        cfg_path.write_text(yaml.safe_dump(config(csv, root / "runs", args.trials), sort_keys=False))
        storage = f"sqlite:///{root / 'runs' / 'optuna_studies' / 'optuna.db'}"
        folds_path = root / "folds.json"
        folds_path.write_text(json.dumps(framework_folds(cfg_path, 5)))

        def framework(r: int) -> float:
            cmd = [BIN / "ml-search", "--config", cfg_path, "--study-name", f"fw{r}", "--cv", "5", "--metric",
                   "roc_auc", "--strategy", "random", "--seed", "0", "--pruner", "none"]  # fmt: skip
            return run_command(cmd, cwd=root)

        def handwritten(r: int) -> float:
            cmd = [sys.executable, REPO / "benchmarks" / "handwritten_tabular.py", "--csv", csv,
                   "--storage", storage, "--study-name", f"hw{r}", "--trials", str(args.trials),
                   "--rounds", str(ROUNDS), "--folds", folds_path]  # fmt: skip
            return run_command(cmd, cwd=root)

        (root / "runs" / "optuna_studies").mkdir(parents=True)
        times = alternating_rounds({"ml-search": framework, "hand-written": handwritten}, args.rounds)
        fw_trials, hw_trials = study_trials(storage, "fw0"), study_trials(storage, "hw0")
        same = [t.params for t in fw_trials] == [t.params for t in hw_trials]
        # the same folds and parameters give the same models: equal mean AUC per trial
        same_values = all(abs(a.value - b.value) < 1e-9 for a, b in zip(fw_trials, hw_trials, strict=True))
        fw_best, hw_best = max(t.value for t in fw_trials), max(t.value for t in hw_trials)

        pruning = []
        for i, seed in enumerate(args.seeds):
            row: dict[str, Any] = {"seed": seed}
            for pruned in [True, False] if i % 2 == 0 else [False, True]:
                label = "hyperband" if pruned else "none"
                name = f"prune_{label}_{seed}"
                cmd = [BIN / "ml-search", "--config", cfg_path, "--study-name", name, "--seed", str(seed),
                       "--metric", "roc_auc"] + ([] if pruned else ["--pruner", "none"])  # fmt: skip
                seconds = run_command(cmd, cwd=root)
                trials = study_trials(storage, name)
                row[label] = {
                    "rounds": sum(int(t.user_attrs.get("last_epoch", t.last_step or 0)) for t in trials),
                    "pruned": sum(t.state.name == "PRUNED" for t in trials),
                    "best_val_roc_auc": max(t.value for t in trials if t.value is not None),
                    "search_s": round(seconds, 1),
                }
                print(f"seed {seed} {label}: {row[label]}", flush=True)
            pruning.append(row)

    fw, hw = median(times["ml-search"]), median(times["hand-written"])
    ratio = fw / hw
    rounds_ratio = sum(r["hyperband"]["rounds"] for r in pruning) / sum(r["none"]["rounds"] for r in pruning)
    best_pruned = statistics.mean(r["hyperband"]["best_val_roc_auc"] for r in pruning)
    best_none = statistics.mean(r["none"]["best_val_roc_auc"] for r in pruning)
    measures = (
        f"{args.trials} trials of XGBoost ({ROUNDS} rounds) with 5-fold CV on breast_cancer: ml-search vs a "
        f"hand-written Optuna + scikit-learn + XGBoost script (median of {args.rounds} alternating rounds); "
        f"boosting rounds trained with HyperbandPruner vs none (holdout, TPE, seeds {args.seeds})"
    )
    result = (
        f"wall time x{ratio:.2f} ({fw:.1f}s vs {hw:.1f}s, same trials: {same}, same values: {same_values}); "
        f"rounds x{rounds_ratio:.2f} "
        f"with pruning at best val AUC {best_pruned:.4f} vs {best_none:.4f}"
    )
    print(measures)
    print(result)
    print(f"best CV AUC: ml-search {fw_best:.4f}, hand-written {hw_best:.4f}")
    record_result(
        "tabular_search",
        {
            "measures": measures,
            "result": result,
            "wall_time_ratio": round(ratio, 3),
            "ml_search_s": [round(t, 2) for t in times["ml-search"]],
            "handwritten_s": [round(t, 2) for t in times["hand-written"]],
            "same_trials": same,
            "same_values": same_values,
            "rounds_ratio": round(rounds_ratio, 3),
            "best_val_auc_pruned_mean": round(best_pruned, 4),
            "best_val_auc_unpruned_mean": round(best_none, 4),
            "pruning_per_seed": pruning,
            "settings": vars(args),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
