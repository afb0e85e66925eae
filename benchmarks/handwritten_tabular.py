#!/usr/bin/env python
"""The hand-written baseline of benchmarks/tabular_search.py: an Optuna + scikit-learn + XGBoost
search written the way a user would without ml_framework (it imports nothing from it). It reads the
CSV with pandas, holds out a stratified test split, runs 5-fold stratified cross-validation of an
XGBClassifier on the rest for every trial (ROC AUC per fold, the mean is the trial's value), and runs
`study.optimize` on an SQLite storage with a seeded RandomSampler over the same parameters, in the same
order, as the framework's config (so both searches sample the same trials). With `--folds FILE` (JSON:
{"folds": [{"train": [row, ...], "val": [row, ...]}, ...]}, CSV row numbers) it cross-validates on those
rows instead: benchmarks/tabular_search.py passes the framework's folds, so both fit the same models.

    python benchmarks/handwritten_tabular.py --csv F --storage sqlite:///f.db --study-name S --trials 30
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import optuna
import pandas as pd
import xgboost
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

SPACE = ("learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--study-name", required=True)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", help="JSON file of the folds' train and val row numbers (default: own folds)")
    args = p.parse_args()

    frame = pd.read_csv(args.csv)
    y = pd.factorize(frame.pop("target"), sort=True)[0]
    x = frame.to_numpy(dtype=np.float64)
    if args.folds:
        with open(args.folds) as f:
            given = json.load(f)["folds"]
        x_rest, y_rest = x, y
        folds = [(np.asarray(fold["train"]), np.asarray(fold["val"])) for fold in given]
    else:
        x_rest, _, y_rest, _ = train_test_split(x, y, test_size=0.2, stratify=y, random_state=args.seed)
        folds = list(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(x_rest, y_rest))

    def objective(trial: optuna.Trial) -> float:
        params = {
            "learning_rate": trial.suggest_float("model.learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("model.max_depth", 2, 8),
            "min_child_weight": trial.suggest_int("model.min_child_weight", 1, 10),
            "subsample": trial.suggest_float("model.subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("model.colsample_bytree", 0.5, 1.0),
        }
        scores = []
        for train, val in folds:
            model = xgboost.XGBClassifier(
                n_estimators=args.rounds, n_jobs=1, random_state=args.seed, **params
            )
            model.fit(x_rest[train], y_rest[train])
            scores.append(roc_auc_score(y_rest[val], model.predict_proba(x_rest[val])[:, 1]))
        trial.set_user_attr("cv_scores", scores)
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.study_name,
        storage=args.storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=args.seed),
    )
    study.optimize(objective, n_trials=args.trials)
    best = study.best_trial
    scores = best.user_attrs["cv_scores"]
    print(
        f"Best Score: {np.mean(scores):.4f} ± {np.std(scores, ddof=1):.4f} (5-fold CV), trial {best.number}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
