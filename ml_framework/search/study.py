"""Search settings, the study (create / resume / join), and the worker loop with a study-wide budget."""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from ml_framework.errors import ConfigError
from ml_framework.search.objectives import CrossValidation, check_objectives
from ml_framework.search.pareto import EarlyStop
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
    grid_size,
    parse_search_space,
    validate_search_space,
)
from ml_framework.search.storage import default_storage_url, open_storage, study_dir

State = optuna.trial.TrialState
BUDGET_STATES = (State.COMPLETE, State.PRUNED, State.RUNNING)
TARGET_ATTR = "n_trials_target"
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

    @property
    def path(self) -> Path:
        return study_dir(self.study_name, self.runs_dir)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


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
    directions = list(s.directions) if s.directions else [s.direction] * len(metrics)
    if len(directions) != len(metrics):
        raise ConfigError(f"search.directions {directions} must have one entry per metric in {metrics}")
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ConfigError(f"search direction '{d}' is not maximize or minimize")
    check_objectives(metrics, "search.metrics" if s.metrics else "search.metric")
    sampler_spec = dict(OmegaConf.to_container(s.sampler, resolve=True))  # type: ignore[arg-type]
    if len(metrics) > 1 and sampler_spec == DEFAULT_SAMPLER:
        sampler_spec = {"type": "NSGAIISampler"}  # several objectives and no sampler chosen
    n_trials = s.n_trials
    if resolve_sampler_name(sampler_spec.get("type", "")) == "GridSampler":
        size = grid_size(space)
        n_trials = size if n_trials is None or size is None or n_trials > size else n_trials
    pruner_spec = dict(OmegaConf.to_container(s.pruner, resolve=True))  # type: ignore[arg-type]
    settings = SearchSettings(
        study_name=s.study_name or f"{cfg.data.dataset_name}_optimization",
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
    )
    # Build both once now so a bad type or kwarg fails before the study exists.
    create_sampler(sampler_spec, space, seed=seed, n_workers=settings.n_workers)
    create_pruner(pruner_spec)
    settings.warnings = effect_warnings(space, cfg)
    if not settings.multi_objective:
        settings.warnings += pruner_warnings(pruner_spec, cfg.training.num_epochs)
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


def open_study(settings: SearchSettings, mode: str, config_path: str = "") -> tuple[optuna.Study, int]:
    """Create (`new`, `overwrite`), continue (`resume`) or create-or-join (`join`) the study.

    Returns the study and the number of finished trials it must reach (its budget). A resumed
    seeded sampler is re-seeded with the number of existing trials so it does not replay them."""
    if settings.n_trials is None and mode != "resume":
        raise ConfigError("search.n_trials (or --n-trials) is required for a new study")
    storage = storage_for(settings)
    names = optuna.get_all_study_names(storage)
    exists = settings.study_name in names
    if mode == "new" and exists:
        raise ConfigError(
            f"study '{settings.study_name}' already exists in {settings.storage_url}: continue it with "
            "--resume, replace it with --overwrite, or pick another --study-name"
        )
    if mode == "resume" and not exists:
        listed = ", ".join(names) or "none"
        raise ConfigError(
            f"no study '{settings.study_name}' to resume in {settings.storage_url} (studies: {listed})"
        )
    if mode == "overwrite":
        if exists:
            optuna.delete_study(study_name=settings.study_name, storage=storage)
        shutil.rmtree(settings.path, ignore_errors=True)
        exists = False
    n_existing = 0
    if exists:
        old = optuna.load_study(study_name=settings.study_name, storage=storage)
        n_existing = len(old.trials)
        old_dirs = [d.name.lower() for d in old.directions]
        if old_dirs != settings.directions:
            raise ConfigError(
                f"study '{settings.study_name}' optimises {old_dirs}, the config says {settings.directions}"
            )
    seed = None if settings.seed is None else settings.seed + n_existing
    spec_seed = settings.sampler_spec.get("seed")
    sampler_spec = dict(settings.sampler_spec)
    if spec_seed is not None:
        sampler_spec["seed"] = int(spec_seed) + n_existing
    sampler = create_sampler(sampler_spec, settings.space, seed=seed, n_workers=settings.n_workers)
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
    if not exists:
        attrs = {
            "metric": settings.metrics[0],
            "metrics": settings.metrics,
            "directions": settings.directions,
            "sampler": type(sampler).__name__,
            "pruner": type(pruner).__name__,
            "search_space": {p.name: repr(p.distribution) for p in settings.space.params},
            "runs_dir": settings.runs_dir,
            "config_path": config_path,
            TARGET_ATTR: settings.n_trials,
        }
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        target = settings.n_trials
    elif mode == "resume" and settings.n_trials is not None:
        target = finished + settings.n_trials
        study.set_user_attr(TARGET_ATTR, target)
    else:  # join: the budget set by whoever created the study
        target = int(study.user_attrs.get(TARGET_ATTR, settings.n_trials))
    return study, target


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
    timeout: float | None = None,
    fail_fast: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    should_stop: Callable[[], bool] = lambda: False,
    storage_url: str = "",
    poll_interval: float = 0.25,
) -> None:
    """Run trials until the study holds `target` finished (COMPLETE or PRUNED) trials, counting the
    ones running elsewhere; failed trials do not count (a retry or a new trial takes their place).

    With a heartbeat, stale trials (their worker died) are failed and re-queued before counting, and
    a worker whose budget is taken by trials running elsewhere waits for them instead of leaving:
    if one of them dies, its retry still gets run."""
    lock = budget_lock(lock_path, storage_url, study.study_name)
    heartbeat = getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None
    deadline = time.monotonic() + timeout if timeout else None
    failures = 0
    catch: tuple[type[Exception], ...] = () if fail_fast else (Exception,)

    def count_failure(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal failures
        failures += trial.state == State.FAIL

    try:
        while not should_stop() and (deadline is None or time.monotonic() < deadline):
            if failures >= max(target, 3):
                raise RuntimeError(f"{failures} trials of this search failed; stopping (see their errors)")
            lock.acquire()
            if heartbeat:
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False, states=BUDGET_STATES)
            if len(trials) >= target:
                lock.release()
                if not heartbeat or sum(t.state != State.RUNNING for t in trials) >= target:
                    break
                time.sleep(poll_interval)
                continue
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
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
        lock.close()
