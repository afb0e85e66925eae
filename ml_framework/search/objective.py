"""One trial: the base config plus sampled values, trained by `run_training`, pruned through a callback."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from ml_framework.config import copy_config, set_value
from ml_framework.search.best import best_trial
from ml_framework.search.objectives import CrossValidation, run_folds, train_and_measure
from ml_framework.search.space import SearchSpace, suggest
from ml_framework.search.storage import set_user_attrs
from ml_framework.training.callbacks import Callback, TrainingDiverged

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class PruningCallback(Callback):
    """Report the study's metric each epoch (step = epoch) and honour `should_prune`, except at the
    last epoch: pruning there saves nothing and would throw away a finished result."""

    def __init__(self, trial: optuna.Trial, metric: str, step_offset: int = 0) -> None:
        self.trial, self.metric, self.step_offset = trial, metric, step_offset

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics[self.metric]
        step = self.step_offset + epoch
        self.trial.report(value, step)
        self.trial.set_user_attr("last_epoch", epoch)
        last = epoch >= trainer.num_epochs or trainer.should_stop  # should_stop: early stopping ends it
        if not last and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.metric}={value:.4f}")


SPEED_ATTR = "speed_config"  # trial user attr: the concrete speed settings its run used (autotune)


def trial_config(
    base: DictConfig,
    params: dict[str, Any],
    metric: str,
    direction: str,
    resolved: dict[str, Any] | None = None,
) -> DictConfig:
    """The training config of a trial: base + sampled values; the best checkpoint follows the study metric.
    `resolved` (a finished trial's SPEED_ATTR) replaces `auto` speed settings by what the trial used."""
    cfg = copy_config(base)
    for key, value in {**params, **(resolved or {})}.items():
        set_value(cfg, key, value, where="search.search_space")
    cfg.training.monitor = metric
    cfg.training.monitor_mode = "max" if direction == "maximize" else "min"
    workers = cfg.search.n_workers if cfg.search is not None else 1
    if workers > 1 and cfg.data.get("pipeline") == "auto" and cfg.data.get("memory_budget_mb") is None:
        from ml_framework.data.pipeline import default_budget_mb

        cfg.data.memory_budget_mb = default_budget_mb(workers)  # RAM shared by the concurrent workers
    cfg.search = None
    return cfg


def diverged(trial: optuna.Trial, error: TrainingDiverged, report: bool, cv: bool) -> optuna.TrialPruned:
    """A NaN/inf loss prunes the trial where it diverged (`diverged: true`): it counts towards the
    budget, and the NaN reported at that step (epoch, or folds with CV) ranks it below every trial
    pruned there in Optuna's pruners and TPE, so samplers learn to avoid the region. A failed trial
    would count for nothing and teach nothing."""
    step = len(trial.user_attrs.get("cv_scores") or []) + 1 if cv else error.epoch
    trial.set_user_attr("diverged", True)
    trial.set_user_attr("last_epoch", error.epoch)
    if report:  # Optuna takes no intermediate values from a study with several objectives
        trial.report(math.nan, step)
    return optuna.TrialPruned(f"diverged: {error}")


def trial_dir(study_path: Path, number: int) -> Path:
    return study_path / f"trial_{number}"


@dataclass
class Objective:
    """Callable for `study.optimize`. Trainer failures propagate (Optuna records the trial FAIL and
    the error in user attrs), a diverged training prunes it; a NaN value fails the trial, so it
    never becomes the best."""

    base_cfg: DictConfig
    space: SearchSpace
    metric: str
    direction: str
    study_path: Path
    keep_checkpoints: str = "best"
    objectives: tuple[str, ...] = ()  # the study's objectives; () means (metric,)
    cv: CrossValidation | None = None
    # Extra trainer callbacks of a trial (experiment tracking), run before the pruning check.
    trial_callbacks: Callable[[optuna.Trial], list[Callback]] | None = None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        names = list(self.objectives) or [self.metric]
        # Optuna cannot prune several objectives; a non-trainer objective has no per-epoch value.
        prune = names == [self.metric]
        params = suggest(trial, self.space)
        run_dir = trial_dir(self.study_path, trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        try:  # every failure, also of an invalid combination of values, is recorded on the trial
            cfg = trial_config(self.base_cfg, params, self.metric, self.direction)
            if run_dir.exists():  # a leftover of an earlier study with this name
                shutil.rmtree(run_dir)
            resume = adopt_retried_run(trial, self.study_path, run_dir)
            attrs: dict[str, Any] = {}  # written in one transaction once the trial has trained
            if self.cv is not None:  # fold scores are in cv_scores: report them only to a pruner
                prune_folds = prune and not isinstance(trial.study.pruner, optuna.pruners.NopPruner)
                result, values, attrs["cv_scores"] = run_folds(
                    trial, cfg, self.cv, names, run_dir, params, prune_folds
                )
            else:
                callbacks = self.trial_callbacks(trial) if self.trial_callbacks else []
                callbacks += [PruningCallback(trial, self.metric)] if prune else []
                result, values = train_and_measure(cfg, names, callbacks, run_dir, params, resume=resume)
        except optuna.TrialPruned:
            self._drop_checkpoints(run_dir, keep_best=False)
            raise
        except TrainingDiverged as e:
            self._drop_checkpoints(run_dir, keep_best=False)
            raise diverged(trial, e, prune, self.cv is not None) from e
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        attrs["best_epoch"] = result.best_epoch
        attrs["last_epoch"] = int(result.history[-1]["epoch"]) if result.history else 0
        named = dict(zip(names, values, strict=True))
        attrs["metrics"] = {**result.best, **result.test, **named}
        if result.speed.get("config"):  # torch runs: the concrete speed settings (tables have none)
            attrs[SPEED_ATTR] = result.speed["config"]
        nan = [n for n, v in named.items() if math.isnan(v)]
        if nan:
            attrs["error"] = f"{', '.join(nan)} is NaN"
        set_user_attrs(trial, attrs)
        if nan:
            raise RuntimeError(f"trial {trial.number}: {', '.join(nan)} is NaN")
        self._drop_checkpoints(run_dir, keep_best=self.keep_checkpoints != "none")
        return values[0] if len(values) == 1 else values

    def _drop_checkpoints(self, run_dir: Path, keep_best: bool) -> None:
        """A finished trial needs no resume checkpoint; `keep_checkpoints: all` keeps everything."""
        if self.keep_checkpoints == "all":
            return
        for ckpt in checkpoint_dirs(run_dir):
            (ckpt / "last.pt").unlink(missing_ok=True)
            if not keep_best:
                shutil.rmtree(ckpt, ignore_errors=True)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """A trial's checkpoint dirs: its own, or one per cross-validation fold (`fold_<k>/checkpoints`)."""
    return [run_dir / "checkpoints", *sorted(run_dir.glob("fold_*/checkpoints"))]


def adopt_retried_run(trial: optuna.Trial, study_path: Path, run_dir: Path) -> Path | None:
    """A retry of a trial whose worker died (heartbeat stale) continues where it stopped: the dead
    trial's run dir moves to this trial's dir and its last.pt is returned to resume from (with
    cross-validation each fold resumes from its own `fold_<k>/checkpoints/last.pt`). Records
    `resumed_from_trial` (the dead trial) and `retried_from_trial` (the first of the chain)."""
    # What RetryHeartbeatStaleTrialCallback records (its helpers take a FrozenTrial, not a Trial) when it
    # queues the retry: the trial as read when it was asked for holds it, without another storage read.
    frozen = getattr(trial, "_cached_frozen_trial", None)
    if frozen is not None:
        attrs = frozen.system_attrs
    else:
        attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
    original = attrs.get("failed_trial")
    if original is None:
        return None
    previous = attrs.get("retry_history", [original])[-1]
    trial.set_user_attr("retried_from_trial", original)
    trial.set_user_attr("resumed_from_trial", previous)
    old_dir = trial_dir(study_path, previous)
    if not any((ckpt / "last.pt").is_file() for ckpt in checkpoint_dirs(old_dir)):
        return None  # died before its first epoch ended: start over
    shutil.move(old_dir, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    return last if last.is_file() else None


def prune_non_best_weights(study: optuna.Study, study_path: Path) -> None:
    """`keep_checkpoints: best`: only the best trial keeps its weights."""
    best = best_trial(study)
    if best is None:  # no completed trial yet, or a multi-objective study
        return
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        if t.number != best.number:
            for ckpt in checkpoint_dirs(trial_dir(study_path, t.number)):
                (ckpt / "best.pt").unlink(missing_ok=True)
