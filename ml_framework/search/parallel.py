"""`ml-search --n-workers K`: K worker processes on one study, one combined console.

Each worker is a 'spawn' process running the ordinary worker loop (`study.run_worker`), so the
study-wide budget, the heartbeat retries and the resume of retried trials are the same as with one
process or many machines. The parent only polls the storage: progress, one line per finished
trial, the outputs at the end, and Ctrl-C for everyone."""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import connection
from typing import Any

import optuna
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress

from ml_framework.search.best import best_trial
from ml_framework.search.outputs import state_counts
from ml_framework.search.runner import (
    SearchOutcome,
    _final_report,
    _Reporter,
    finish_tracking,
    make_objective,
    start_study,
    trial_line,
)
from ml_framework.search.study import BUDGET_STATES, SearchSettings, run_worker
from ml_framework.search.tracking import StudyTracker
from ml_framework.training.progress import make_progress

State = optuna.trial.TrialState
FINISHED = (State.COMPLETE, State.PRUNED, State.FAIL)
WORKER_SEED_STRIDE = 100_003  # workers of one study sample from distinct seeds


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(n_workers: int, cores: int | None = None) -> int:
    """Torch CPU threads of each worker: the cores split evenly, at least one."""
    return max(1, (cores or available_cores()) // n_workers)


def visible_devices() -> list[str]:
    """GPU ids this process may hand out: CUDA_VISIBLE_DEVICES if set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_assignment(n_workers: int, devices: Sequence[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each worker: one device each, round-robin over `devices` (workers
    share GPUs when there are more workers than GPUs); None without GPUs."""
    if not devices:
        return [None] * n_workers
    return [devices[w % len(devices)] for w in range(n_workers)]


@dataclass
class WorkerSpec:
    """Everything a spawned worker needs (picklable)."""

    index: int
    cfg: DictConfig
    settings: SearchSettings
    target: int
    fail_fast: bool


def _worker_study(spec: WorkerSpec) -> optuna.Study:
    from ml_framework.search.registry import create_pruner
    from ml_framework.search.study import storage_for, study_sampler

    s = spec.settings
    storage = storage_for(s, must_exist=True)
    n_existing = len(optuna.load_study(study_name=s.study_name, storage=storage).trials)
    sampler = study_sampler(s, spec.index * WORKER_SEED_STRIDE + n_existing)
    return optuna.load_study(
        study_name=s.study_name, storage=storage, sampler=sampler, pruner=create_pruner(s.pruner_spec)
    )


def raise_interrupt(_signum: int, _frame: Any) -> None:
    """A signal handler: the signal ends the run as Ctrl-C does (running trials marked failed)."""
    raise KeyboardInterrupt


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a spawned worker: run trials until the study's budget is reached."""
    import logging
    import sys

    # The terminal's Ctrl-C reaches the whole process group: only the parent reacts to it, and
    # stops the workers with SIGTERM, which each turns into the KeyboardInterrupt Optuna handles.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_interrupt)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ml_framework").setLevel(logging.WARNING)
    s = spec.settings
    code = 0
    tracker = None
    try:
        study = _worker_study(spec)
        reporter = _Reporter(s, spec.cfg, Console(quiet=True), None)
        tracker = StudyTracker.open(spec.cfg, s, study, main=False)  # attaches to the parent run
        run_worker(
            study,
            make_objective(spec.cfg, s, tracker),
            target=spec.target,
            lock_path=s.path / ".budget.lock",
            storage_url=s.storage_url,
            grid=s.grid,
            fail_fast=spec.fail_fast,
            callbacks=[
                lambda st, _t: reporter.maybe_refresh(st),  # outputs stay current if all die
                *([tracker.on_trial_end] if tracker is not None else []),
            ],
            should_stop=lambda: reporter.should_stop(study),  # computed from the storage: all agree
        )
    except KeyboardInterrupt:
        code = 130
    except Exception:
        traceback.print_exc()
        code = 1
    if tracker is not None:
        tracker.close()  # os._exit skips atexit: end the tracker's runs and service now
    # Every result is in the storage and the outputs by now; tearing down the interpreter (torch's
    # modules) would keep the study waiting for about a second per worker for nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Set environment variables while a worker is spawned (it copies the environment at start)."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_workers(specs: Sequence[WorkerSpec], devices: Sequence[str | None]) -> list[Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = []
    for spec, dev in zip(specs, devices, strict=True):
        p = ctx.Process(target=worker_main, args=(spec,), name=f"ml-search-worker-{spec.index}")
        with _environ(CUDA_VISIBLE_DEVICES=dev, OMP_NUM_THREADS=str(spec.cfg.training.num_threads)):
            p.start()
        procs.append(p)
    return procs


def stop_workers(procs: Sequence[Any], grace: float = 30.0) -> None:
    """SIGTERM for every worker (each marks its running trial failed and exits), then SIGKILL."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.1))
        if p.is_alive():
            p.kill()
            p.join(5)


class _Monitor:
    """The parent's view: polls the storage, prints each newly finished trial once, updates the bar."""

    def __init__(
        self, study: optuna.Study, metric: str | list[str], console: Console, progress: Progress, target: int
    ) -> None:
        self.study, self.metric, self.console, self.progress = study, metric, console, progress
        self.seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
        self.task = progress.add_task("trials", total=target)

    def poll(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        for t in sorted(trials, key=lambda t: t.number):
            if t.state in FINISHED and t.number not in self.seen:
                self.seen.add(t.number)
                self.console.print(trial_line(t, self.metric))
        c = state_counts(trials)
        self.progress.update(
            self.task,
            completed=c["complete"] + c["pruned"],
            description=f"complete {c['complete']} | pruned {c['pruned']} | running {c['running']} | "
            f"failed {c['fail']}",
        )


def run_parallel_search(
    cfg: DictConfig,
    settings: SearchSettings,
    *,
    mode: str,
    config_path: str = "",
    fail_fast: bool = False,
    console: Console | None = None,
    poll_interval: float = 1.0,
) -> SearchOutcome:
    """Run the search with `settings.n_workers` worker processes on this machine."""
    console = console or Console(highlight=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    k = settings.n_workers
    cfg = copy.deepcopy(cfg)
    if not cfg.training.num_threads:  # an explicit value is the user's choice
        cfg.training.num_threads = threads_per_worker(k)
    on_gpu = str(cfg.training.device) != "cpu"
    devices = gpu_assignment(k, visible_devices() if on_gpu else [])
    gpus = f", GPUs {', '.join(d or '-' for d in devices)}" if any(devices) else ""
    study, target, _ = start_study(
        settings,
        mode,
        config_path,
        console,
        f" with {k} workers ({cfg.training.num_threads} CPU thread(s) each{gpus})",
    )
    tracker = StudyTracker.open(cfg, settings, study, main=True)  # the parent run, before any worker
    specs = [WorkerSpec(i, cfg, dataclasses.replace(settings), target, fail_fast) for i in range(k)]
    progress = make_progress(console)
    monitor = _Monitor(study, settings.metrics, console, progress, target)
    outcome = SearchOutcome(ok=True)
    started = time.perf_counter()
    procs: list[Any] = []
    try:
        with progress:
            procs = start_workers(specs, devices)
            running = {p.sentinel for p in procs}
            while running:
                monitor.poll()
                running.difference_update(connection.wait(list(running), timeout=poll_interval))
            for p in procs:  # a closed sentinel can precede the exit status by a moment
                p.join()
            monitor.poll()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] stopping the workers; their running trials are marked failed")
        stop_workers(procs)
        outcome.interrupted = True
    crashed = [(p.name, p.exitcode) for p in procs if p.exitcode not in (0, 130)]
    for name, code in crashed:
        console.print(f"[red]{name} exited with code {code}[/] (its trial is retried by the others)")
    finished = len(study.get_trials(deepcopy=False, states=BUDGET_STATES[:2]))
    outcome.ok = not crashed or (finished >= target and not fail_fast)  # others took over its trials
    reporter = _Reporter(settings, cfg, console, None)
    reporter.should_stop(study)  # records whether the workers stopped early, for the summary
    outcome.summary = reporter.refresh(study)
    outcome.summary["workers"] = {"n_workers": k, "crashed": [n for n, _ in crashed]}
    _final_report(console, study, settings, outcome.summary, time.perf_counter() - started, config_path)
    if best_trial(study) is None and not settings.multi_objective:
        outcome.ok = False
    finish_tracking(tracker, study, outcome, console)
    return outcome
