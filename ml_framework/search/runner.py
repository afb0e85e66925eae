"""Run a search in this process: study, trials, outputs as trials finish, console progress."""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ml_framework.search.best import best_trial
from ml_framework.search.enqueue import enqueue
from ml_framework.search.importance import EVALUATORS, param_importances
from ml_framework.search.objective import Objective, prune_non_best_weights
from ml_framework.search.objectives import monitor_metric
from ml_framework.search.outputs import format_values, state_counts, write_outputs
from ml_framework.search.pareto import pareto_table, write_pareto_outputs
from ml_framework.search.storage import mask_url
from ml_framework.search.study import (
    BUDGET_STATES,
    SearchSettings,
    join_budget,
    open_study,
    run_worker,
    time_left,
)
from ml_framework.search.tracking import StudyTracker
from ml_framework.training.progress import make_progress

State = optuna.trial.TrialState
STATE_STYLE = {State.COMPLETE: "green", State.PRUNED: "yellow", State.FAIL: "red"}
# Study outputs are rewritten when a trial finishes and this many seconds have passed since the last
# write (and always when the search ends): every write reads all trials back from the storage, so
# writing after each of many short trials would cost more than the trials.
OUTPUT_INTERVAL_S = 5.0


@dataclass
class SearchOutcome:
    ok: bool
    interrupted: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def trial_line(trial: optuna.trial.FrozenTrial, metric: str | list[str]) -> str:
    style = STATE_STYLE.get(trial.state, "white")
    state = f"[{style}]{trial.state.name.capitalize():<8}[/]"
    if trial.state == State.COMPLETE:
        detail = format_values(trial, [metric] if isinstance(metric, str) else metric)
    elif trial.state == State.PRUNED:
        at = "after fold" if "cv_scores" in trial.user_attrs else "at epoch"
        detail = f"pruned {at} {trial.last_step}"
        if trial.user_attrs.get("diverged"):
            detail = f"diverged (NaN/inf loss) at epoch {trial.user_attrs.get('last_epoch')}, pruned"
    else:
        detail = f"error: {trial.user_attrs.get('error', 'see log')}"
    return f"Trial {trial.number:03d} {state} {detail}  {format_params(trial.params)}"


class _Reporter:
    """After every finished trial: one console line and progress; outputs and checkpoint policy at
    most every OUTPUT_INTERVAL_S (`maybe_refresh`), and at the end (`refresh`)."""

    def __init__(
        self, settings: SearchSettings, base_cfg: DictConfig, console: Console, progress: Progress | None
    ) -> None:
        self.settings, self.base_cfg, self.console, self.progress = settings, base_cfg, console, progress
        self.task = progress.add_task("trials", total=None) if progress else None
        self.stopped_early = False
        self._refreshed_at = -math.inf
        self.counts: dict[str, int] = {}  # the study's trials by state, as of the last refresh + ours

    def should_stop(self, study: optuna.Study) -> bool:
        """search.early_stopping: no improvement in `patience` finished trials."""
        stop = self.settings.early_stop
        self.stopped_early = self.stopped_early or (stop is not None and stop.should_stop(study))
        return self.stopped_early

    def refresh(self, study: optuna.Study) -> dict[str, Any]:
        extra = write_pareto_outputs(study, self.base_cfg, self.settings.path, self.settings.metrics)
        if self.settings.early_stop is not None:
            extra["stopped_early"] = self.stopped_early
            extra["trials_without_improvement"] = self.settings.early_stop.trials_without_improvement(study)
        summary = write_outputs(study, self.base_cfg, self.settings.path, self.settings.metrics, extra)
        if self.settings.keep_checkpoints == "best":
            prune_non_best_weights(study, self.settings.path)
        self.counts = state_counts(study.get_trials(deepcopy=False))  # read by write_outputs just now
        self._refreshed_at = time.monotonic()
        return summary

    def maybe_refresh(self, study: optuna.Study) -> bool:
        """Refresh when OUTPUT_INTERVAL_S has passed; True when it did."""
        if time.monotonic() - self._refreshed_at < OUTPUT_INTERVAL_S:
            return False
        self.refresh(study)
        return True

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Between refreshes the counts add this worker's trials (reading every trial back from the
        storage after each one costs more than a short trial's bookkeeping); trials of other workers
        appear at the next refresh."""
        if not self.maybe_refresh(study):
            state = trial.state.name.lower()
            self.counts[state] = self.counts.get(state, 0) + 1
        self.console.print(trial_line(trial, self.settings.metrics))
        if self.progress is not None and self.task is not None:
            counts = {"complete": 0, "pruned": 0, "fail": 0, **self.counts}
            self.progress.update(
                self.task,
                completed=counts["complete"] + counts["pruned"],
                description=(
                    f"complete {counts['complete']} | pruned {counts['pruned']} | failed {counts['fail']}"
                ),
            )


def make_objective(
    cfg: DictConfig, settings: SearchSettings, tracker: StudyTracker | None = None
) -> Objective:
    """The trial function of a search, the same in this process and in every worker process."""
    metric, direction = monitor_metric(settings.metrics, settings.directions, cfg.training)
    return Objective(
        cfg,
        settings.space,
        metric,
        direction,
        settings.path,
        settings.keep_checkpoints,
        objectives=tuple(settings.metrics),
        cv=settings.cv,
        trial_callbacks=tracker.trial_callbacks if tracker is not None else None,
    )


def start_study(
    settings: SearchSettings, mode: str, config_path: str, console: Console, workers: str = ""
) -> tuple[optuna.Study, int, int]:
    """Open (or create) the study, queue `--enqueue` sets, print one line about it.
    Returns the study, its budget of finished trials and how many it already has."""
    study, target = open_study(settings, mode, config_path)
    if mode == "join":
        target, note = join_budget(study, target, settings.n_trials)
        if note:
            console.print(f"[yellow]note:[/] {note}")
    if settings.enqueue:
        waiting = enqueue(study, settings.enqueue)
        console.print(f"enqueued: {waiting} parameter set(s) run first")
    already = len(study.get_trials(deepcopy=False, states=BUDGET_STATES[:2]))
    left = time_left(study)
    until = "" if left is None else f", starting trials for {max(left, 0):.0f}s more (search.timeout)"
    console.print(
        f"[bold]study[/] {settings.study_name} ({mask_url(settings.storage_url)}): {settings.metrics[0]} "
        f"{settings.directions[0]}, sampler {study.user_attrs.get('sampler')}, pruner "
        f"{study.user_attrs.get('pruner')}; {already} finished, running to {target}{until}{workers}"
    )
    return study, target, already


def run_search(
    cfg: DictConfig,
    settings: SearchSettings,
    *,
    mode: str,
    config_path: str = "",
    fail_fast: bool = False,
    console: Console | None = None,
) -> SearchOutcome:
    console = console or Console(highlight=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ml_framework").setLevel(logging.WARNING)
    study, target, already = start_study(settings, mode, config_path, console)
    tracker = StudyTracker.open(cfg, settings, study, main=True)
    objective = make_objective(cfg, settings, tracker)
    progress = make_progress(console)
    reporter = _Reporter(settings, cfg, console, progress)
    if reporter.task is not None:
        progress.update(reporter.task, total=target, completed=already)
    started = time.perf_counter()
    outcome = SearchOutcome(ok=True)
    try:
        with progress:
            run_worker(
                study,
                objective,
                target=target,
                lock_path=settings.path / ".budget.lock",
                storage_url=settings.storage_url,
                grid=settings.grid,
                fail_fast=fail_fast,
                callbacks=[reporter, *([tracker.on_trial_end] if tracker is not None else [])],
                should_stop=lambda: reporter.should_stop(study),
            )
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] the running trial is marked failed; finished trials are kept")
        outcome.interrupted = True
    except Exception as e:  # --fail-fast, or every trial failing
        console.print(f"[red]search stopped:[/] {type(e).__name__}: {e}")
        outcome.ok = False
    finally:
        outcome.summary = reporter.refresh(study)
    _final_report(console, study, settings, outcome.summary, time.perf_counter() - started, config_path)
    if best_trial(study) is None and not settings.multi_objective:
        outcome.ok = False
    finish_tracking(tracker, study, outcome, console)
    return outcome


def finish_tracking(
    tracker: StudyTracker | None, study: optuna.Study, outcome: SearchOutcome, console: Console
) -> None:
    """Close the study's runs in the tracker and say where they are."""
    if tracker is None:
        return
    where = tracker.finish(study, interrupted=outcome.interrupted, ok=outcome.ok)
    tracker.close()
    if where:
        console.print(f"tracking: {where}")


def _final_report(
    console: Console,
    study: optuna.Study,
    settings: SearchSettings,
    summary: dict[str, Any],
    elapsed: float,
    config_path: str,
) -> None:
    counts = state_counts(study.get_trials(deepcopy=False))
    console.print(
        f"\n[bold]{settings.study_name}[/]: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed in {elapsed:.0f}s"
    )
    if summary.get("stopped_early"):
        patience = settings.early_stop.patience if settings.early_stop else 0
        console.print(f"[yellow]stopped early:[/] no improvement in the last {patience} finished trials")
    if settings.multi_objective and counts["complete"]:
        console.print(pareto_table(study, settings.metrics))
        console.print(f"pareto configs: {settings.path / 'pareto'}/trial_<n>.yaml (pareto_front.csv)")
    best = best_trial(study)
    if best is None:
        if not settings.multi_objective or not counts["complete"]:
            console.print("[red]no completed trial[/]")
        return
    table = Table(title=f"best trial {best.number}: {settings.metrics[0]} = {best.value:.4f}")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    for k, v in best.params.items():
        table.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    console.print(table)
    _print_importances(console, study)
    out = settings.path
    console.print(
        f"outputs: {out}/ (best_config.yaml, best_params.json, trial_history.csv, summary.json)\n"
        "next:\n"
        f"  ml-visualise --mode search --study-name {settings.study_name} "
        f"--storage {mask_url(settings.storage_url)}\n"
        f"  ml-train --config {out / 'best_config.yaml'}\n"
        f"  tensorboard --logdir {out}"
    )
    scores = best.user_attrs.get("cv_scores")
    if scores:  # the strategy guide's last line: mean ± std over the best trial's folds
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        console.print(f"Best Score: {statistics.fmean(scores):.4f} ± {std:.4f} ({len(scores)}-fold CV)")


def _print_importances(console: Console, study: optuna.Study) -> None:
    completed = study.get_trials(deepcopy=False, states=(State.COMPLETE,))
    n_params = len({p for t in completed for p in t.params})
    if len(completed) < 4 or n_params < 2:
        return
    try:
        importances = param_importances(study)
    except Exception as e:  # importance needs variation; say why instead of failing the search
        console.print(f"(parameter importances unavailable: {e})")
        return
    table = Table(title=f"parameter importances ({EVALUATORS['default'][0]})")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    for k, v in importances:
        table.add_row(k, f"{v:.3f}")
    console.print(table)
