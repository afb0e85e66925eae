"""The metrics the trainer emits every epoch, named here without importing torch: the search checks
its objectives against them before anything trains."""

from __future__ import annotations

METRIC_NAMES: tuple[str, ...] = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_f1",
    "lr",
    "epoch_time",
)

# Tabular runs (data.format csv/parquet) with a scikit-learn, XGBoost or LightGBM model emit these,
# as `val_<name>` per boosting round / at the end and `test_<name>` on the test split. `loss` is the
# log loss (classification) or the mean squared error (regression); f1 is macro-averaged; roc_auc
# is one-vs-rest (macro) with more than two classes.
CLASSIFICATION_METRICS: tuple[str, ...] = ("loss", "acc", "balanced_accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS: tuple[str, ...] = ("loss", "rmse", "mae", "r2")
TABULAR_METRIC_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(f"val_{m}" for m in (*CLASSIFICATION_METRICS, *REGRESSION_METRICS))
)
# Names users type (`--metric roc_auc`, seed guides' `f1_score`) -> the metric's own name.
METRIC_ALIASES: dict[str, str] = {
    "accuracy": "acc", "f1_score": "f1", "f1_macro": "f1", "auc": "roc_auc", "logloss": "log_loss",
}  # fmt: skip


def canonical_metric(name: str) -> str:
    """`roc_auc` -> `val_roc_auc`, `accuracy` -> `val_acc`; a full name (`val_loss`, `latency_ms`) stays."""
    known = (*METRIC_NAMES, *TABULAR_METRIC_NAMES)
    full = f"val_{METRIC_ALIASES.get(name, name)}"
    return full if name not in known and full in known else name
