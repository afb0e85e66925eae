"""Tracking of a search. MLflow: one parent run per study (its id kept in the study's user attrs, so
every worker and every `--join` machine logs under it) and one child run per trial; W&B: one run per
trial, grouped by study name. Trial states map to run statuses (COMPLETE -> FINISHED, PRUNED ->
KILLED with tag state=PRUNED, FAIL -> FAILED with the error).

Nothing is lost to a tracker: a failing call prints one warning and turns tracking off for the
process (the search goes on), and the process that runs the search reconciles at start and end:
finished trials without a child run (the server was down, a worker died) get one, built from the
storage and the trial's metrics.json; child runs are looked up by trial number, never duplicated."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import optuna
from omegaconf import DictConfig

from ml_framework.search.best import best_trial
from ml_framework.search.objectives import TRAINER_METRICS
from ml_framework.search.study import SearchSettings, budget_lock
from ml_framework.tracking.base import (
    FAILED,
    FINISHED,
    KILLED,
    Backend,
    Breaker,
    EpochLogger,
    NestedBackend,
    create_backend,
)
from ml_framework.urls import mask_url

State = optuna.trial.TrialState
ATTR = "tracking"  # study user attr: {"backend", "uri", "experiment", "parent_run_id"}
TRIAL_TAG = "optuna.trial_number"
STATUS = {State.COMPLETE: FINISHED, State.PRUNED: KILLED, State.FAIL: FAILED}
PARENT_FILES = ("best_config.yaml", "best_params.json", "summary.json", "trial_history.csv")


class StudyTracker:
    """The tracker of one process of a search (the one that runs it, or a worker)."""

    def __init__(self, backend: Backend, settings: SearchSettings, cfg: DictConfig) -> None:
        self.backend, self.settings, self.cfg = backend, settings, cfg
        self.breaker = Breaker(backend)
        self.parent: str | None = None
        self._live: dict[int, EpochLogger] = {}
        self.reconciled = 0  # trial runs added or closed by `reconcile` (start and end)
        self.nested = cast(NestedBackend, backend)  # parent/child lookups: used if supports_parent

    @classmethod
    def open(
        cls, cfg: DictConfig, settings: SearchSettings, study: optuna.Study, *, main: bool
    ) -> StudyTracker | None:
        """The tracker of `cfg.tracking` (None without one). The `main` process creates the study's
        parent run if it has none (under the study's budget lock: one parent however many processes
        start at once) and reconciles runs with the study; workers attach to the parent."""
        backend = create_backend(cfg, settings.path)
        if backend is None:
            return None
        tracker = cls(backend, settings, cfg)
        if backend.supports_parent:
            tracker._attach_parent(study, create=main)
            if main:
                tracker.reconcile(study)
        return tracker

    # -- the parent run -----------------------------------------------------------------------------
    def _identity(self) -> dict[str, str]:
        b = self.nested
        return {"backend": b.name, "uri": mask_url(b.uri), "experiment": b.experiment}

    def _known_parent(self, study: optuna.Study) -> str | None:
        attr = study.user_attrs.get(ATTR)
        if not isinstance(attr, dict) or any(attr.get(k) != v for k, v in self._identity().items()):
            return None
        run_id = attr.get("parent_run_id")
        exists = self.breaker.call("find the parent run", self.nested.run_exists, str(run_id))
        return str(run_id) if exists else None

    def _attach_parent(self, study: optuna.Study, create: bool) -> None:
        self.parent = self._known_parent(study)
        if self.parent is not None:
            if create:  # a resumed or joined search: the parent is running again
                self.breaker.call("reopen the parent run", self.nested.reopen, self.parent)
            return
        if not create or self.breaker.open:
            return
        s = self.settings
        lock = budget_lock(s.path / ".budget.lock", s.storage_url, s.study_name)
        lock.acquire()
        try:
            self.parent = self._known_parent(study)  # another process may have made it meanwhile
            if self.parent is None and not self.breaker.open:
                self.parent = self._create_parent(study)
        finally:
            lock.close()

    def _create_parent(self, study: optuna.Study) -> str | None:
        from ml_framework.training.tensorboard import flatten_hparams

        s = self.settings
        tags = {
            "optuna.study": s.study_name,
            "optuna.storage": mask_url(s.storage_url),
            "dataset": str(self.cfg.data.dataset_name),
            "architecture": str(self.cfg.model.architecture),
            "metrics": ",".join(s.metrics),
            "directions": ",".join(s.directions),
            "study_dir": str(s.path),
        }
        params = flatten_hparams(self.cfg)
        params.update({f"search.{p.name}": repr(p.distribution) for p in s.space.params})
        run_id = self.breaker.call(
            "create the parent run", self.backend.start_run, s.study_name, params, tags
        )
        if run_id is not None:
            study.set_user_attr(ATTR, {**self._identity(), "parent_run_id": run_id})
        return run_id

    def update_parent(self, study: optuna.Study) -> None:
        """Best value and params, and the study's output files."""
        if self.parent is None or self.breaker.open:
            return
        b, run = self.backend, self.parent
        best = best_trial(study)
        if best is not None:
            finished = len(study.get_trials(deepcopy=False, states=tuple(STATUS)))
            self.breaker.call("log the best value", b.log_metrics, run, {"best_value": best.value}, finished)
            tags = {"best_trial": str(best.number), **{f"best.{k}": str(v) for k, v in best.params.items()}}
            self.breaker.call("tag the best params", b.set_tags, run, tags)
        for name in PARENT_FILES:
            self.breaker.call(f"upload {name}", b.log_artifact, run, self.settings.path / name)

    # -- child runs, one per trial --------------------------------------------------------------------
    def trial_callbacks(self, trial: optuna.Trial) -> list[Any]:
        """Trainer callbacks of one trial: its run starts with training and gets every epoch."""
        if self.breaker.open or (self.backend.supports_parent and self.parent is None):
            return []
        logger = EpochLogger(
            self.breaker,
            lambda: self._start_child(trial.number, trial.params, trial.user_attrs.get("run_dir")),
        )
        self._live[trial.number] = logger
        return [logger]

    def _start_child(
        self, number: int, params: dict[str, Any], run_dir: str | None, history: Sequence[dict[str, Any]] = ()
    ) -> str | None:
        """The trial's run: found again by trial number (MLflow) or started, then given `history`
        (the per-epoch rows of a trial whose epochs were not logged live)."""
        b = self.nested
        if b.supports_parent:
            existing = self.breaker.call("look up a trial run", b.find_child, self.parent, number)
            if existing:
                return str(existing)
        tags = {
            TRIAL_TAG: str(number),
            "optuna.study": self.settings.study_name,
            "run_dir": str(run_dir or ""),
        }
        where = {"parent": self.parent} if b.supports_parent else {"group": self.settings.study_name}
        run_id = self.breaker.call("start a trial run", b.start_run, f"trial_{number}", params, tags, **where)
        for row in history if run_id is not None else ():
            values = {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, int | float)}
            self.breaker.call("log epoch metrics", b.log_metrics, run_id, values, int(row.get("epoch", 0)))
        return run_id

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna study callback: the trial's final values, tags and status, then the parent."""
        logger = self._live.pop(trial.number, None)
        if self.breaker.open or (self.backend.supports_parent and self.parent is None):
            return
        run_id = logger.run_id if logger is not None else None
        if run_id is None:  # not logged live: failed before training, cross-validated, or run by Ray Tune
            run_id = self._start_child(
                trial.number, trial.params, trial.user_attrs.get("run_dir"), _history(trial)
            )
        if run_id is not None:
            self._close_child(run_id, trial)
        self.update_parent(study)

    def _close_child(self, run_id: str, trial: optuna.trial.FrozenTrial) -> None:
        b = self.backend
        final: dict[str, float] = {}
        for k, v in (trial.user_attrs.get("metrics") or {}).items():
            if isinstance(v, int | float):
                final["best_epoch" if k == "epoch" else f"best_{k}" if k in TRAINER_METRICS else k] = float(v)
        if trial.values is not None:
            names = self.settings.metrics
            final.update({"value": trial.values[0]} if len(names) == 1 else dict(zip(
                [f"value_{m}" for m in names], trial.values, strict=True)))  # fmt: skip
        if trial.duration is not None:
            final["duration_s"] = trial.duration.total_seconds()
        tags = {"state": trial.state.name}
        if trial.state == State.PRUNED:
            tags["pruned_epoch"] = str(trial.user_attrs.get("last_epoch", trial.last_step))
        if trial.state == State.FAIL:
            tags["error"] = str(trial.user_attrs.get("error", "failed (see the trial's train.log)"))
        if final:
            self.breaker.call("log final values", b.log_metrics, run_id, final)
        self.breaker.call("tag a trial run", b.set_tags, run_id, tags)
        self.breaker.call("end a trial run", b.finish, run_id, STATUS.get(trial.state, FAILED))

    def reconcile(self, study: optuna.Study) -> int:
        """Give every finished trial its child run (MLflow): missing ones are built from the storage and
        the trial's metrics.json, ones left RUNNING (their process died) are closed. Returns how many."""
        if self.parent is None or self.breaker.open:
            return 0
        b = self.nested
        children = self.breaker.call("list trial runs", b.children, self.parent)
        if children is None:
            return 0
        fixed = 0
        for t in study.get_trials(deepcopy=False, states=tuple(STATUS)):
            have = children.get(t.number)
            if have is not None and have[1] != "RUNNING":
                continue
            if have is not None:
                run_id: str | None = have[0]
            else:
                run_id = self._start_child(t.number, t.params, t.user_attrs.get("run_dir"), _history(t))
            if run_id is None or self.breaker.open:
                break
            self._close_child(run_id, t)
            fixed += 1
        self.reconciled += fixed
        return fixed

    # -- the end --------------------------------------------------------------------------------------
    def finish(self, study: optuna.Study, interrupted: bool = False, ok: bool = True) -> str:
        """At the end of the search (main process): reconcile, parent files, the parent's status.
        Returns a line saying where the runs are ('' when tracking failed)."""
        self.reconcile(study)
        self.update_parent(study)
        if self.parent is not None:
            best = best_trial(study)
            ckpt = Path(best.user_attrs.get("run_dir", "")) / "checkpoints" / "best.pt" if best else None
            if self.cfg.tracking.log_checkpoints and ckpt is not None and ckpt.is_file():
                self.breaker.call(
                    "upload best.pt", self.backend.log_artifact, self.parent, ckpt, "checkpoints"
                )
            status = KILLED if interrupted else FINISHED if ok else FAILED
            self.breaker.call("end the parent run", self.backend.finish, self.parent, status)
        if self.breaker.open:
            return ""
        where = self.backend.where()
        if self.parent is not None:
            where += f"; parent run {self.parent}"
        if self.reconciled:
            where += f"; {self.reconciled} trial run(s) added or closed from the study"
        return where

    def close(self) -> None:
        self.breaker.call("close", self.backend.close)


def _history(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    """The per-epoch rows of a trial's metrics.json ([] when it has none, e.g. cross-validated)."""
    path = Path(str(trial.user_attrs.get("run_dir", ""))) / "metrics.json"
    try:
        return list(json.loads(path.read_text()).get("history", []))
    except (OSError, ValueError):
        return []


def log_to_parent(study: optuna.Study, paths: list[Path], artifact_path: str) -> str:
    """ml-visualise: upload plots and report.html to the study's MLflow parent run, if it has one.
    Returns a line for the console ('' when the study is not tracked or the upload failed)."""
    import os

    from ml_framework.config import from_container

    attr = study.user_attrs.get(ATTR)
    if not isinstance(attr, dict) or attr.get("backend") != "mlflow" or not attr.get("parent_run_id"):
        return ""
    uri = str(attr["uri"])
    if "***" in uri:  # the password was never stored: the URI comes from the environment
        uri = os.environ.get("MLFLOW_TRACKING_URI", uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return ""  # the store is gone: do not create an empty one
    tracking = {"backend": "mlflow", "uri": uri, "experiment": attr.get("experiment")}
    backend = create_backend(
        from_container({"tracking": tracking}, where="the study's tracking attrs"), Path(".")
    )
    assert backend is not None
    breaker = Breaker(backend)
    for path in paths:
        breaker.call(f"upload {path.name}", backend.log_artifact, attr["parent_run_id"], path, artifact_path)
    if breaker.open:
        return ""
    return f"uploaded to MLflow parent run {attr['parent_run_id']} ({artifact_path}/)"
