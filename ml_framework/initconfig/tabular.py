"""A ready config for a table: `TableReport` + the chosen model family -> config mapping and YAML text.

Per family a model with sensible settings and a search space over the parameters that matter most;
boosters search on a holdout split with Hyperband pruning at boosting rounds, the others with 5-fold
cross-validation (the MLP prunes per epoch)."""

from __future__ import annotations

from typing import Any

from ml_framework.data.inspect_tabular import TableReport
from ml_framework.initconfig.generate import N_TRIALS, RUNS_DIR, SEED, GeneratedConfig, render_yaml

DEFAULT_TABLE_ARCHITECTURE = "xgboost"
VAL_SPLIT = 0.2
TEST_SPLIT = 0.15
CV_FOLDS = 5
BOOSTING_ROUNDS = 300
EVAL_EVERY = 10


def _loguniform(low: float, high: float) -> dict[str, Any]:
    return {"type": "loguniform", "low": low, "high": high}


def _uniform(low: float, high: float) -> dict[str, Any]:
    return {"type": "float", "low": low, "high": high}


def _int(low: int, high: int, **extra: Any) -> dict[str, Any]:
    return {"type": "int", "low": low, "high": high, **extra}


# family (or sklearn class name) -> (model keys, search space)
FAMILY_MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "xgboost": (
        {"n_estimators": BOOSTING_ROUNDS, "learning_rate": 0.1, "max_depth": 6, "n_jobs": 1},
        {
            "model.learning_rate": _loguniform(0.01, 0.3),
            "model.max_depth": _int(2, 10),
            "model.min_child_weight": _int(1, 10),
            "model.subsample": _uniform(0.5, 1.0),
            "model.colsample_bytree": _uniform(0.5, 1.0),
        },
    ),
    "lightgbm": (
        {
            "n_estimators": BOOSTING_ROUNDS,
            "learning_rate": 0.1,
            "num_leaves": 31,
            "subsample_freq": 1,
            "n_jobs": 1,
        },
        {
            "model.learning_rate": _loguniform(0.01, 0.3),
            "model.num_leaves": _int(8, 128, log=True),
            "model.min_child_samples": _int(5, 50),
            "model.subsample": _uniform(0.5, 1.0),
            "model.colsample_bytree": _uniform(0.5, 1.0),
        },
    ),
    "RandomForest": (
        {"n_estimators": 200, "n_jobs": 1},
        {
            "model.n_estimators": _int(100, 500, step=100),
            "model.max_depth": _int(3, 20),
            "model.min_samples_split": _int(2, 10),
            "model.max_features": {"type": "categorical", "choices": ["sqrt", "log2", 1.0]},
        },
    ),
    "LogisticRegression": ({"max_iter": 1000}, {"model.C": _loguniform(1e-3, 100.0)}),
    "mlp": (
        {"width": 64, "depth": 2, "dropout": 0.1},
        {
            "model.width": {"type": "categorical", "choices": [32, 64, 128]},
            "model.depth": _int(1, 3),
            "optimizer.lr": _loguniform(1e-4, 1e-2),
        },
    ),
}
# Any other scikit-learn estimator: its own defaults, and the scaling of numeric columns searched.
OTHER_SEARCH = {"data.preprocess.scaling": {"type": "categorical", "choices": ["standard", "robust", "none"]}}


def _family_key(architecture: str) -> str:
    if architecture in FAMILY_MODELS:
        return architecture
    name = architecture.removeprefix("sklearn/")
    return next((k for k in FAMILY_MODELS if name.startswith(k)), "")


def default_metric(report: TableReport) -> str:
    """roc_auc for two classes, balanced accuracy for imbalanced classes, else accuracy; rmse (regression)."""
    if report.task == "regression":
        return "val_rmse"
    if len(report.class_counts) == 2:
        return "val_roc_auc"
    return "val_balanced_accuracy" if report.imbalance >= 3 else "val_acc"


def build_mapping(
    report: TableReport, path: str, architecture: str, optuna: bool, n_trials: int
) -> dict[str, Any]:
    fam = _family_key(architecture)
    model, space = FAMILY_MODELS.get(fam, ({}, OTHER_SEARCH))
    booster, mlp = fam in ("xgboost", "lightgbm"), architecture == "mlp"
    metric = "val_acc" if mlp else default_metric(report)
    mapping: dict[str, Any] = {
        "data": {
            "dataset_name": report.name,
            "format": "parquet" if path.endswith((".parquet", ".pq")) else "csv",
            "path": path,
            "target": report.target,
            "task": report.task,
            "drop": [*report.id_like, *report.leaks],
            "val_split": VAL_SPLIT,
            "test_split": TEST_SPLIT,
        },
        "model": {"architecture": architecture, **model},
        "training": {
            "seed": SEED,
            "monitor": metric,
            "monitor_mode": "min" if metric == "val_rmse" else "max",
        },
        "output": {"runs_dir": RUNS_DIR},
    }
    if booster:
        mapping["training"]["eval_every"] = EVAL_EVERY
    if mlp:
        mapping["training"].update({"num_epochs": 30, "batch_size": 64})
        mapping["optimizer"] = {"name": "adamw", "lr": 1e-3}
    if optuna:
        search: dict[str, Any] = {
            "study_name": f"{report.name}_optimization",
            "n_trials": n_trials,
            "metric": metric,
            "sampler": {"type": "TPESampler", "seed": SEED, "n_startup_trials": 8},
        }
        if booster:
            search["pruner"] = {"type": "HyperbandPruner", "min_resource": EVAL_EVERY, "reduction_factor": 3}
        elif mlp:
            search["pruner"] = {"type": "MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 5}
        else:  # no steps inside a fit: cross-validate, prune after folds
            search["pruner"] = {"type": "MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 1}
            search["cross_validation"] = {"enabled": True, "n_folds": CV_FOLDS}
        search["search_space"] = space
        mapping["search"] = search
    return mapping


COMMENTS = {
    "data": "Data: a table; a ColumnTransformer (data.preprocess) imputes, encodes, scales by column type.",
    "data.drop": "Columns never used: ID-like columns and suspected leaks found by ml-init-config.",
    "data.task": "classification or regression (detected from the target).",
    "model": "Model: sklearn/<Estimator>, xgboost, lightgbm or mlp; estimator parameters are plain keys.",
    "model.n_jobs": "One thread per fit: small tables train faster so; ml-search --n-workers uses the cores.",
    "training.eval_every": "Boosters report validation metrics (for pruning) every k boosting rounds.",
    "training.monitor": "The validation metric of the run (also the search's metric below).",
    "search.pruner": "Stops weak trials early: at boosting rounds, epochs, or after cross-validation folds.",
    "search.search_space": "Config keys to vary and their ranges (loguniform/float/int/categorical).",
}


def generate_tabular_config(
    report: TableReport,
    path: str,
    architecture: str,
    optuna: bool,
    config_path: str,
    n_trials: int = N_TRIALS,
) -> GeneratedConfig:
    """The config mapping and its commented YAML text."""
    mapping = build_mapping(report, path, architecture, optuna, n_trials)
    lines = [
        f"# Training config for table '{report.name}', written by ml-init-config from {path}:",
        f"# {report.rows} rows, {len(report.columns)} columns, target '{report.target}' ({report.task}).",
        f"# Train:  ml-train --config {config_path}",
    ]
    if optuna:
        lines.append(f"# Search: ml-search --config {config_path} --n-trials {n_trials}")
    notes = {
        "data.drop": ", ".join(f"{c}: {w}" for c, w in {**report.id_like, **report.leaks}.items()),
        "training.monitor": f"chosen for {report.task}"
        + (f" with {len(report.class_counts)} classes" if report.class_counts else ""),
    }
    comments = {**COMMENTS, **{k: v for k, v in notes.items() if v}}
    text = "\n".join([*lines, "", *render_yaml(mapping, comments)])
    return GeneratedConfig(mapping=mapping, text=text + "\n", notes=notes)
