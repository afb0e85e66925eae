"""Validation and test metrics of tabular runs, in numpy.

They are computed after every fold, at the end of every run and, for metrics a booster does not
compute itself, every few boosting rounds; scikit-learn's functions cost milliseconds each in input
validation, more than a small booster's fit. tests/test_tabular.py checks every one against
scikit-learn's (accuracy_score, balanced_accuracy_score, f1_score(average="macro"), roc_auc_score
(one-vs-rest macro for several classes), log_loss, mean_squared_error, mean_absolute_error, r2_score).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from ml_framework.errors import ConfigError
from ml_framework.training.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}


def probabilities(y_score: np.ndarray, n_classes: int) -> np.ndarray:
    """Booster output -> (n, K) class probabilities (binary boosters give P(class 1))."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim == 1:
        return np.column_stack([1.0 - y_score, y_score]) if n_classes == 2 else y_score[:, None]
    return y_score


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    eps = np.finfo(proba.dtype).eps
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], eps, 1 - eps))))


def _confusion(y: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Counts [true class, predicted class] of class indices 0..K-1."""
    k = int(max(y.max(), hard.max())) + 1
    return np.bincount(y * k + hard, minlength=k * k).reshape(k, k)


def balanced_accuracy(y: np.ndarray, hard: np.ndarray) -> float:
    """Mean recall over the classes present in `y`."""
    counts = _confusion(y, hard)
    true = counts.sum(1)
    present = true > 0
    return float(np.mean(np.diag(counts)[present] / true[present]))


def macro_f1(y: np.ndarray, hard: np.ndarray) -> float:
    """Mean F1 over the classes present in `y` or the predictions."""
    return confusion_f1(_confusion(y, hard))


def confusion_f1(counts: np.ndarray) -> float:
    """Macro F1 of a confusion matrix [true, predicted] over the classes that occur as target or
    prediction (as scikit-learn does); 0 without any."""
    counts = np.asarray(counts, dtype=np.float64)
    either = counts.sum(1) + counts.sum(0)
    seen = either > 0
    return float(np.mean(2 * np.diag(counts)[seen] / either[seen])) if seen.any() else 0.0


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half); NaN without both classes."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC of the class-1 column; one-vs-rest macro average with more classes (NaN when a
    class is absent from `y`, where scikit-learn raises)."""
    k = proba.shape[1]
    if k == 2:
        return binary_auc(y == 1, proba[:, 1])
    if len(np.unique(y)) != k:
        return math.nan
    return float(np.mean([binary_auc(y == c, proba[:, c]) for c in range(k)]))


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    if len(y) < 2:
        return math.nan
    residual, total = float(np.sum((y - pred) ** 2)), float(np.sum((y - y.mean()) ** 2))
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def compute_metrics(
    task: str, y: np.ndarray, pred: np.ndarray, prefix: str, names: Sequence[str] | None = None
) -> dict[str, float]:
    """`<prefix>_<metric>` for `names` (default: all of the task). `pred` holds class probabilities
    (n, K) for classification and values for regression; a metric undefined on these rows is NaN."""
    if len(y) == 0:
        return {}
    if task == "classification":
        hard = pred.argmax(1)
        loss = functools.cache(lambda: log_loss(y, pred))  # the loss is the log loss: computed once
        fns: dict[str, Callable[[], float]] = {
            "loss": loss,
            "log_loss": loss,
            "acc": lambda: float(np.mean(hard == y)),
            "balanced_accuracy": lambda: balanced_accuracy(y, hard),
            "f1": lambda: macro_f1(y, hard),
            "roc_auc": lambda: roc_auc(y, pred),
        }
    else:
        pred = np.asarray(pred, dtype=np.float64).reshape(-1)
        mse = float(np.mean((y - pred) ** 2))
        fns = {
            "loss": lambda: mse,
            "rmse": lambda: math.sqrt(mse),
            "mae": lambda: float(np.mean(np.abs(y - pred))),
            "r2": lambda: r2(y, pred),
        }
    return {f"{prefix}_{name}": fns[name]() for name in names or TASK_METRICS[task]}


def task_metric_names(task: str, prefix: str = "val") -> list[str]:
    return [f"{prefix}_{n}" for n in TASK_METRICS[task]]


def check_monitor(name: str, key: str, task: str) -> None:
    valid = task_metric_names(task)
    if name not in valid:
        raise ConfigError(
            f"{key}: '{name}' is not a metric of {task} on tables; choose from {', '.join(valid)}"
        )
