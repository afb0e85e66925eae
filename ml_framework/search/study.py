"""Search settings, the study (create / resume / join), and the worker loop with a study-wide budget."""

from __future__ import annotations

import fcntl
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from ml_framework.errors import ConfigError
from ml_framework.fileio import check_name
from ml_framework.search.early_stop import EarlyStop
from ml_framework.search.grid import GridPlan
from ml_framework.search.objectives import (
    CrossValidation,
    check_objectives,
    default_direction,
    implied_direction,
)
from ml_framework.search.registry import (
    create_pruner,
    create_sampler,
    pruner_warnings,
    resolve_pruner_name,
    resolve_sampler_name,
)
from ml_framework.search.space import (
    SearchSpace,
    effect_warnings,
    parse_search_space,
    validate_search_space,
)
from ml_framework.search.storage import (
    default_storage_url,
    mask_url,
    open_storage,
    remove_study_dir,
    study_dir,
)

State = optuna.trial.TrialState
BUDGET_STATES = (State.COMPLETE, State.PRUNED, State.RUNNING)
TARGET_ATTR = "n_trials_target"
DEADLINE_ATTR = "deadline"  # search.timeout as a time.time(): no trial of the study starts after it
DEFAULT_SAMPLER = {"type": "TPESampler"}  # the schema default: replaced by NSGA-II for several objectives


@dataclass
class SearchSettings:
    study_name: str
    storage_url: str
    metrics: list[str]
    directions: list[str]
    space: SearchSpace
    sampler_spec: dict[str, Any]
    pruner_spec: dict[str, Any]
    n_trials: int | None
    timeout: float | None
    keep_checkpoints: str
    runs_dir: str
    seed: int | None
    n_workers: int = 1
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    warnings: list[str] = field(default_factory=list)
    cv: CrossValidation | None = None  # search.cross_validation (None: off)
    early_stop: EarlyStop | None = None  # search.early_stopping (None: off)
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # --enqueue parameter sets, run first
    grid: GridPlan | None = None  # GridSampler: the points, queued one by one by the worker loop

    @property
    def path(self) -> Path:
        return study_dir(self.study_name, self.runs_dir)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


def resolve_directions(s: DictConfig, metrics: list[str]) -> tuple[list[str], list[str]]:
    """One direction per objective and warnings. `direction` goes with `metric`, `directions` with
    `metrics`; an objective without one takes the direction its name implies (`val_loss` minimises)."""
    where = "search.metrics" if s.metrics else "search.metric"
    if s.directions:
        given, key = list(s.directions), "search.directions"
    elif s.direction and not s.metrics:
        given, key = [s.direction], "search.direction"
    else:
        return [default_direction(m, where) for m in metrics], []
    if len(given) != len(metrics):
        raise ConfigError(f"{key} {given} must have one entry per metric in {metrics}")
    warnings = []
    for m, d in zip(metrics, given, strict=True):
        if d not in ("maximize", "minimize"):
            raise ConfigError(f"{key}: '{d}' is not maximize or minimize")
        implied = implied_direction(m)
        if implied not in (None, d):
            warnings.append(f"{key}: {d} {m}? Its name implies {implied} (the default when unset)")
    return given, warnings


def resolve_settings(cfg: DictConfig, seed: int | None = None) -> SearchSettings:
    """Everything a search needs from the composed config, checked before any study exists."""
    s = cfg.search
    if s is None:
        raise ConfigError("the config has no `search:` block (create one with ml-init-config --optuna)")
    spec = OmegaConf.to_container(s.search_space, resolve=True)
    if not spec:
        raise ConfigError("search.search_space is empty: add at least one parameter (e.g. optimizer.lr)")
    space = parse_search_space(spec)  # type: ignore[arg-type]
    validate_search_space(space, cfg)
    metrics = list(s.metrics) if s.metrics else [s.metric]
    check_objectives(metrics, "search.metrics" if s.metrics else "search.metric")
    directions, direction_warnings = resolve_directions(s, metrics)
    sampler_spec = dict(OmegaConf.to_container(s.sampler, resolve=True))  # type: ignore[arg-type]
    if len(metrics) > 1 and sampler_spec == DEFAULT_SAMPLER:
        sampler_spec = {"type": "NSGAIISampler"}  # several objectives and no sampler chosen
    n_trials = s.n_trials
    grid = None
    if resolve_sampler_name(sampler_spec.get("type", "")) == "GridSampler":
        grid = GridPlan.from_space(space, seed if seed is not None else sampler_spec.get("seed"))
        n_trials = None if n_trials is None else min(n_trials, len(grid.points))  # None: every point
    pruner_spec = dict(OmegaConf.to_container(s.pruner, resolve=True))  # type: ignore[arg-type]
    settings = SearchSettings(
        study_name=check_name(
            s.study_name or f"{cfg.data.dataset_name}_optimization", "--study-name (search.study_name)"
        ),
        storage_url=s.storage or default_storage_url(cfg.output.runs_dir),
        metrics=metrics,
        directions=directions,
        space=space,
        sampler_spec=sampler_spec,
        pruner_spec=pruner_spec,
        n_trials=n_trials,
        timeout=s.timeout,
        keep_checkpoints=s.keep_checkpoints,
        runs_dir=cfg.output.runs_dir,
        seed=seed,
        n_workers=s.n_workers,
        heartbeat_interval=s.heartbeat_interval,
        grace_period=s.grace_period,
        max_retry=s.max_retry,
        cv=CrossValidation.from_config(s.cross_validation),
        early_stop=EarlyStop.from_config(s.early_stopping),
        grid=grid,
    )
    # Build both once now so a bad type or kwarg fails before the study exists.
    create_sampler(sampler_spec, space, seed=seed, n_workers=settings.n_workers)
    create_pruner(pruner_spec)
    settings.warnings = direction_warnings + effect_warnings(space, cfg)
    if not settings.multi_objective:
        from ml_framework.training.tabular import run_steps

        settings.warnings += pruner_warnings(pruner_spec, run_steps(cfg))  # epochs or boosting rounds
    elif resolve_pruner_name(pruner_spec.get("type", "")) != "NopPruner":
        settings.warnings.append(
            f"search.pruner {pruner_spec.get('type')} is ignored: Optuna cannot prune a study with several "
            f"objectives ({', '.join(metrics)}); every trial trains to the end"
        )
    return settings


def storage_for(settings: SearchSettings, must_exist: bool = False) -> Any:
    return open_storage(
        settings.storage_url,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
        max_retry=settings.max_retry,
        must_exist=must_exist,
    )


def check_same_objectives(study: optuna.Study, settings: SearchSettings) -> None:
    """A resumed or joined study keeps its objectives: other metrics or directions would mix values
    that cannot be compared."""
    attrs = study.user_attrs
    old_metrics = list(attrs.get("metrics") or [attrs.get("metric")])
    old_dirs = [d.name.lower() for d in study.directions]
    if old_metrics != settings.metrics or old_dirs != settings.directions:
        old = ", ".join(f"{m} ({d})" for m, d in zip(old_metrics, old_dirs, strict=False))
        new = ", ".join(f"{m} ({d})" for m, d in zip(settings.metrics, settings.directions, strict=True))
        raise ConfigError(
            f"study '{settings.study_name}' optimises {old}, but this search asks for {new}: use the "
            "study's search.metric(s)/--optimize and --directions, or another --study-name"
        )


def study_sampler(settings: SearchSettings, shift: int) -> optuna.samplers.BaseSampler:
    """This process's sampler, its seeds (--seed, or the spec's) moved by `shift`, so that a resume
    or another worker does not replay the same draws. A grid study's trials are all queued points
    (`GridPlan`), so its sampler is never asked for a value."""
    if settings.grid is not None:
        return optuna.samplers.RandomSampler()
    spec = dict(settings.sampler_spec)
    if spec.get("seed") is not None:
        spec["seed"] = int(spec["seed"]) + shift
    seed = None if settings.seed is None else settings.seed + shift
    return create_sampler(spec, settings.space, seed=seed, n_workers=settings.n_workers)


def open_study(settings: SearchSettings, mode: str, config_path: str = "") -> tuple[optuna.Study, int]:
    """Create (`new`, `overwrite`), continue (`resume`) or create-or-join (`join`) the study.

    Returns the study and the number of finished trials it must reach (its budget). A resumed
    seeded sampler is re-seeded with the number of existing trials so it does not replay them."""
    if settings.n_trials is None and mode != "resume" and settings.grid is None:
        raise ConfigError("search.n_trials (or --n-trials) is required for a new study")
    storage = storage_for(settings)
    names = optuna.get_all_study_names(storage)
    exists = settings.study_name in names
    if mode == "new" and exists:
        raise ConfigError(
            f"study '{settings.study_name}' already exists in {mask_url(settings.storage_url)}: continue it "
            "with --resume, replace it with --overwrite, or pick another --study-name"
        )
    if mode == "resume" and not exists:
        listed = ", ".join(names) or "none"
        raise ConfigError(
            f"no study '{settings.study_name}' to resume in {mask_url(settings.storage_url)} "
            f"(studies: {listed})"
        )
    if mode == "overwrite":
        if exists:  # only a study that exists, and only its own dir inside the study root
            remove_study_dir(settings.study_name, settings.runs_dir)
            optuna.delete_study(study_name=settings.study_name, storage=storage)
        exists = False
    n_existing = 0
    if exists:
        old = optuna.load_study(study_name=settings.study_name, storage=storage)
        n_existing = len(old.trials)
        check_same_objectives(old, settings)
    sampler = study_sampler(settings, n_existing)
    pruner = create_pruner(settings.pruner_spec)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        directions=settings.directions,
        load_if_exists=True,
    )
    finished = len(study.get_trials(deepcopy=False, states=BUDGET_STATES[:2]))
    wanted = settings.n_trials  # trials to run now; None: the study's own budget
    if settings.grid is not None:  # a grid's budget: its points no finished trial holds
        todo = settings.grid.todo(study.get_trials(deepcopy=False))
        wanted = todo if wanted is None else min(wanted, todo)
    deadline = time.time() + settings.timeout if settings.timeout else None
    if not exists:
        attrs = {
            "metric": settings.metrics[0],
            "metrics": settings.metrics,
            "directions": settings.directions,
            "sampler": "GridSampler" if settings.grid is not None else type(sampler).__name__,
            "pruner": type(pruner).__name__,
            "search_space": {p.name: repr(p.distribution) for p in settings.space.params},
            "runs_dir": settings.runs_dir,
            "config_path": config_path,
            TARGET_ATTR: wanted,
            DEADLINE_ATTR: deadline,
        }
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        target = wanted
    elif mode == "resume":  # a new time window from now (none without a timeout)
        study.set_user_attr(DEADLINE_ATTR, deadline)
        if wanted is None:  # no --n-trials: what is left of the study's budget
            target = int(study.user_attrs.get(TARGET_ATTR) or finished)
        else:
            target = finished + wanted
            study.set_user_attr(TARGET_ATTR, target)
    else:  # join: the budget set by whoever created the study
        target = int(study.user_attrs.get(TARGET_ATTR, settings.n_trials))
    return study, target


def join_budget(study: optuna.Study, target: int, n_trials: int | None) -> tuple[int, str | None]:
    """`--join --n-trials N` on an existing study: N is the study's total budget. A larger N raises
    the stored budget for every worker; a smaller one leaves it (others count on it). Returns the
    budget and a line saying what happened when N differs or nothing is left to run."""
    finished = len(study.get_trials(deepcopy=False, states=BUDGET_STATES[:2]))
    note = None
    if n_trials is not None and n_trials > target:
        study.set_user_attr(TARGET_ATTR, n_trials)
        note = f"budget of study '{study.study_name}' raised from {target} to {n_trials} trials (--n-trials)"
        target = n_trials
    elif n_trials is not None and n_trials < target:
        note = (
            f"--n-trials {n_trials} is below the budget of study '{study.study_name}' ({target} trials), "
            "which stays: joining never lowers a shared budget"
        )
    if finished >= target:
        done = f"study '{study.study_name}' has {finished} finished trials of its {target}: nothing to run"
        note = f"{note}; {done}" if note else f"{done} (a larger --n-trials raises the budget)"
    return target, note


class BudgetLock:
    """Serialises 'count the study's trials, then start one' among local workers, so n_trials is
    a budget for the study, not per process. Held from the count until the new trial exists."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a+")  # noqa: SIM115 (held for the worker's lifetime)
        self.held = False

    def acquire(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        self._file.close()


class PgAdvisoryLock:
    """The budget lock across machines sharing a PostgreSQL study: a session-level
    `pg_advisory_lock` on one dedicated connection, keyed by a hash of the study name."""

    def __init__(self, url: str, study_name: str) -> None:
        import hashlib

        import sqlalchemy

        self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self._conn = self._engine.connect()
        digest = hashlib.sha256(f"ml_framework.budget:{study_name}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)  # bigint key space
        self._text = sqlalchemy.text
        self.held = False

    def _call(self, fn: str) -> None:
        self._conn.execute(self._text(f"SELECT {fn}(:k)"), {"k": self._key})
        self._conn.commit()

    def acquire(self) -> None:
        self._call("pg_advisory_lock")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._call("pg_advisory_unlock")

    def close(self) -> None:
        self.release()
        self._conn.close()
        self._engine.dispose()


def budget_lock(lock_path: Path, storage_url: str = "", study_name: str = "") -> BudgetLock | PgAdvisoryLock:
    """A file lock for local storages (SQLite, journal file), an advisory lock for PostgreSQL,
    whose workers may be on other machines that cannot see the lock file."""
    if storage_url.startswith(("postgresql", "postgres://")):
        return PgAdvisoryLock(storage_url, study_name)
    return BudgetLock(lock_path)


def time_left(study: optuna.Study) -> float | None:
    """Seconds until the study's deadline (search.timeout), None without one."""
    deadline = study.user_attrs.get(DEADLINE_ATTR)
    return None if deadline is None else deadline - time.time()


@dataclass
class _ReleasingObjective:
    objective: Callable[[optuna.Trial], Any]
    lock: BudgetLock | PgAdvisoryLock

    def __call__(self, trial: optuna.Trial) -> Any:
        self.lock.release()  # the trial now exists (RUNNING) and counts towards the budget
        return self.objective(trial)


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    target: int,
    lock_path: Path,
    grid: GridPlan | None = None,
    fail_fast: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    should_stop: Callable[[], bool] = lambda: False,
    storage_url: str = "",
    poll_interval: float = 0.25,
) -> None:
    """Run trials until the study holds `target` finished (COMPLETE or PRUNED) trials, counting the
    ones running elsewhere; failed trials do not count (a retry or a new trial takes their place).

    With a heartbeat, stale trials (their worker died) are failed and re-queued before a trial starts
    or the budget is found taken, and a worker whose budget is taken by trials running elsewhere waits
    for them instead of leaving: if one of them dies, its retry still gets run. A grid study also ends
    when every point is taken; each trial runs the point `grid` queues. No trial starts after the
    study's deadline: it is checked just before each ask, so a trial's recorded start can trail it
    by the milliseconds Optuna's ask takes."""
    lock = budget_lock(lock_path, storage_url, study.study_name)
    heartbeat = getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None
    failures = 0
    catch: tuple[type[Exception], ...] = () if fail_fast else (Exception,)

    def count_failure(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal failures
        failures += trial.state == State.FAIL

    # Objects alive before the first trial (imported libraries, the study, the config) outlive the
    # search: frozen, the cyclic garbage collector stops rescanning them (about 0.1 s per pass) as
    # trials add objects. They go back to its oldest generation when the worker ends.
    gc.freeze()
    try:
        while not should_stop():
            if failures >= max(target, 3):
                raise RuntimeError(f"{failures} trials of this search failed; stopping (see their errors)")
            lock.acquire()
            trials = study.get_trials(deepcopy=False, states=BUDGET_STATES)
            if heartbeat and len(trials) >= target:  # a dead worker's trial may hold the last places
                optuna.storages.fail_stale_trials(study)  # (else `optimize` fails them before its ask)
                trials = study.get_trials(deepcopy=False, states=BUDGET_STATES)
            # Read from the study (a `--resume --timeout` elsewhere moves it) after the lock and the
            # count, just before the ask: a worker that waited past the deadline starts no trial.
            remaining = time_left(study)
            if remaining is not None and remaining <= 0:
                lock.release()
                break
            if len(trials) >= target or (grid is not None and not grid.queue_next(study)):
                lock.release()
                finished = sum(t.state != State.RUNNING for t in trials)
                if not heartbeat or finished >= target or finished == len(trials):
                    break
                time.sleep(poll_interval)
                continue
            study.optimize(
                _ReleasingObjective(objective, lock),
                n_trials=1,
                timeout=remaining,
                catch=catch,
                callbacks=[count_failure, *callbacks],
                gc_after_trial=False,
                show_progress_bar=False,
            )
            lock.release()
    finally:
        gc.unfreeze()
        lock.close()
