"""What a trial returns: objective extractors (trainer metrics, latency, size, time) and k-fold
cross-validation. The objective of `objective.py` calls `evaluate_trial` once per trial."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from ml_framework.errors import ConfigError
from ml_framework.training.metrics import METRIC_NAMES, TABULAR_METRIC_NAMES

if TYPE_CHECKING:
    import optuna
    import torch

    from ml_framework.training.run import TrainResult

# Trainer metrics are read at the best epoch; the others are measured on the trained model instead.
TRAINER_METRICS = tuple(dict.fromkeys((*METRIC_NAMES, *TABULAR_METRIC_NAMES)))
LATENCY_WARMUP = 5
LATENCY_REPEATS = 30


@dataclass
class Trained:
    """One finished training: its result, the trained model and the config it ran."""

    result: TrainResult
    model: Any
    cfg: DictConfig


def measure_latency_ms(
    model: Any,
    shape: Sequence[int],
    device: torch.device,
    warmup: int = LATENCY_WARMUP,
    repeats: int = LATENCY_REPEATS,
) -> float:
    """Per-image inference time (batch 1) on `device`: `warmup` untimed runs, then the median of `repeats`."""
    import torch

    x = torch.zeros((1, *shape), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return statistics.median(times)


def _latency(t: Trained) -> float:
    device = next(t.model.parameters()).device
    d = t.cfg.data
    size = d.image_size
    if size is None:  # resolved by the run (weights preset or default) and recorded in its config.yaml
        import yaml

        size = yaml.safe_load((t.result.run_dir / "config.yaml").read_text())["data"]["image_size"]
    return measure_latency_ms(t.model, (d.channels, size, size), device)


def _model_mb(t: Trained) -> float:
    from ml_framework.models import model_size_mb

    return float(model_size_mb(t.model))


# name -> extractor; trainer metrics are added below. Every name here is a valid search.metrics entry.
EXTRACTORS: dict[str, Callable[[Trained], float]] = {
    "latency_ms": _latency,
    "params": lambda t: float(t.result.num_params),
    "model_mb": _model_mb,
    "train_time_s": lambda t: float(t.result.duration_s),
    **{m: (lambda t, m=m: t.result.value(m)) for m in TRAINER_METRICS},  # type: ignore[misc]
}
AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
}


def check_objectives(metrics: Sequence[str], where: str = "search.metrics") -> None:
    """Every objective has an extractor; at most one of each."""
    from ml_framework.errors import closest

    for m in metrics:
        if m not in EXTRACTORS:
            near = closest(m, EXTRACTORS)
            hint = f" Did you mean {near[0]}?" if near else ""
            raise ConfigError(f"{where}: '{m}' is not an objective.{hint} Valid: {', '.join(EXTRACTORS)}")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"{where}: {list(metrics)} names an objective twice")


# Which way is better, by a word of the metric's name (`val_loss` -> loss). The one table for every
# objective: a new metric whose name holds one of these words needs no entry of its own.
DIRECTION_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ("loss", "latency", "params", "mb", "size", "time", "error", "rmse", "mae", "mse"), "minimize"
    ),
    **dict.fromkeys(("acc", "accuracy", "f1", "auc", "r2", "precision", "recall"), "maximize"),
}


def implied_direction(metric: str) -> str | None:
    """`maximize`/`minimize` from the last word of the metric's name found in DIRECTION_WORDS."""
    for word in reversed(metric.lower().split("_")):
        if word in DIRECTION_WORDS:
            return DIRECTION_WORDS[word]
    return None


def default_direction(metric: str, where: str = "search.metric") -> str:
    """The direction `metric`'s name implies; an error when it implies none."""
    direction = implied_direction(metric)
    if direction is not None:
        return direction
    raise ConfigError(
        f"{where}: cannot tell whether '{metric}' should be maximised or minimised; "
        "set search.direction (or search.directions / --directions)"
    )


def monitor_metric(metrics: Sequence[str], directions: Sequence[str], training: Any) -> tuple[str, str]:
    """(metric, direction) of a trial's best checkpoint: the first trainer metric among the objectives,
    else the config's own `training.monitor` (latency, size and time are not per-epoch metrics)."""
    for m, d in zip(metrics, directions, strict=True):
        if m in TRAINER_METRICS:
            return m, d
    return training.monitor, "maximize" if training.monitor_mode == "max" else "minimize"


class _ModelCapture:
    """Trainer callback keeping a reference to the trained model (for latency and size)."""

    model: Any = None
    per_epoch = False  # reads no epoch metrics: a booster need not evaluate its rounds for it

    def on_train_start(self, trainer: Any) -> None:
        self.model = trainer.model

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass


def train_and_measure(
    cfg: DictConfig,
    metrics: Sequence[str],
    callbacks: Sequence[Any],
    run_dir: Path,
    hparams: dict[str, Any],
    resume: Path | None = None,
) -> tuple[TrainResult, list[float]]:
    """Train `cfg` into `run_dir` (or continue `resume`) and extract every objective from the result
    and the trained model."""
    from ml_framework.training.run import run_training

    capture = _ModelCapture()
    result = run_training(
        cfg,
        [capture, *callbacks],
        run_dir=run_dir,
        resume=resume,
        progress=False,
        hparams_extra=hparams,
        trial=True,
    )
    trained = Trained(result, capture.model, cfg)
    return result, [EXTRACTORS[m](trained) for m in metrics]


@dataclass
class CrossValidation:
    n_folds: int
    aggregation: str = "mean"
    stratified: bool = True

    @classmethod
    def from_config(cls, cv: Any, where: str = "search.cross_validation") -> CrossValidation | None:
        if cv is None or not cv.enabled:
            return None
        if cv.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"{where}.aggregation: '{cv.aggregation}' is not one of {', '.join(AGGREGATIONS)}"
            )
        if int(cv.n_folds) < 2:
            raise ConfigError(f"{where}.n_folds: {cv.n_folds} folds; cross-validation needs at least 2")
        return cls(int(cv.n_folds), str(cv.aggregation), bool(cv.stratified))

    def aggregate(self, scores: Sequence[float]) -> float:
        return AGGREGATIONS[self.aggregation](scores)


def run_folds(
    trial: optuna.Trial,
    cfg: DictConfig,
    cv: CrossValidation,
    metrics: Sequence[str],
    run_dir: Path,
    hparams: dict[str, Any],
    prune: bool,
) -> tuple[TrainResult, list[float], list[float]]:
    """Train fold 0..K-1 (`run_dir/fold_<k>/`); each objective is the aggregate over folds, written
    with the fold scores as the trial's TensorBoard session (`write_cv_session`).

    With `prune`, the running aggregate of the first objective is reported after each fold at
    step = folds done (1-based), so a pruner compares trials after equally many folds. `cfg` is the
    trial's own config (`trial_config`): its `data.fold` is set fold by fold. Returns the result of the
    last fold, the objectives and the first objective's fold scores, the trial's `cv_scores` user attr:
    the caller writes it with the trial's other attrs; a trial pruned or failed in its folds gets it
    here, with the scores of the folds done."""
    import optuna

    per_fold: list[list[float]] = []
    result = None
    cfg.data.n_folds = cv.n_folds
    cfg.data.stratified_folds = cv.stratified
    try:
        for k in range(cv.n_folds):
            cfg.data.fold = k
            last = run_dir / f"fold_{k}" / "checkpoints" / "last.pt"  # a retried trial's fold continues
            result, values = train_and_measure(
                cfg,
                metrics,
                (),
                run_dir / f"fold_{k}",
                {**hparams, "fold": k},
                resume=last if last.is_file() else None,
            )
            per_fold.append(values)
            if prune:
                running = cv.aggregate([v[0] for v in per_fold])
                trial.report(running, k + 1)
                if k + 1 < cv.n_folds and trial.should_prune():  # never after the last fold
                    raise optuna.TrialPruned(
                        f"pruned after fold {k + 1} with mean {metrics[0]}={running:.4f}"
                    )
    except BaseException:
        if per_fold:
            trial.set_user_attr("cv_scores", [v[0] for v in per_fold])
        raise
    finally:
        if per_fold:
            cfg.data.fold = None
            write_cv_session(run_dir, cfg, hparams, cv, metrics, per_fold, len(per_fold) == cv.n_folds)
    assert result is not None
    return result, [cv.aggregate(col) for col in zip(*per_fold, strict=True)], [v[0] for v in per_fold]


def write_cv_session(
    run_dir: Path,
    cfg: DictConfig,
    hparams: dict[str, Any],
    cv: CrossValidation,
    metrics: Sequence[str],
    per_fold: Sequence[Sequence[float]],
    completed: bool,
) -> None:
    """The trial's config.yaml (`data.fold: null`; with `data.fold=<k>` it trains fold k) and its
    TensorBoard hparams session in `run_dir` (one row per trial in the HParams dashboard, not one
    per fold): `cv/<objective>` (the aggregate) and `cv/<objective>_std` over the folds done, each
    fold's value as the scalar `folds/<objective>` at step k."""
    from ml_framework.config import plain_config, save_config
    from ml_framework.training.tensorboard import TensorBoardLogger, flatten_hparams

    plain = plain_config(cfg, drop_search=True)  # resolved once for both
    save_config(plain, run_dir / "config.yaml")
    tb = TensorBoardLogger(run_dir, flatten_hparams(plain, hparams))
    results: dict[str, float] = {}
    for i, m in enumerate(metrics):
        scores = [values[i] for values in per_fold]
        for k, score in enumerate(scores):
            tb.add_scalar(f"folds/{m}", score, k)
        results[f"cv/{m}"] = cv.aggregate(scores)
        results[f"cv/{m}_std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
    tb.finish(results, completed=completed)


def cv_summary(scores: Sequence[float]) -> str:
    """`0.9512 ± 0.0123 (3 folds)` for a console line."""
    std = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return f"{statistics.fmean(scores):.4f} ± {std:.4f} ({len(scores)} folds)"
