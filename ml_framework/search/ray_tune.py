"""The Ray Tune side of `search.engine: ray` (imports Ray; loaded only by search/ray_engine.py).

- `StudySearch`: Tune's OptunaSearch on the study's own storage and sampler; each suggestion carries
  the study trial it belongs to (`TRIAL_KEY`), so Ray trial = study trial, run dir `trial_<n>/`.
- `train_trial`: the function trainable. The same `trial_config` + `run_training` as the native engine;
  every epoch but the last is reported to Tune with a checkpoint (the trial's last.pt, best.pt and config);
  the last report, after training, carries the trial's summary. On a restart (a failure, a Hyperband
  pause, a PBT exploit) it continues from Tune's checkpoint with `run_training(resume=...)`, which applies
  changed hyperparameters and logs them in train.log.
- `StudyRecorder`: a Tune callback in the driver that writes intermediate values, perturbations and the
  final state of every Ray trial into the study (a trial Tune stopped early is PRUNED at its last epoch),
  then refreshes the study outputs.
- `count_callbacks`: Tune's usage count of a run's callbacks, without importing mlflow and wandb.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search.optuna import OptunaSearch

from ml_framework.search.objective import SPEED_ATTR, trial_config, trial_dir
from ml_framework.search.space import SearchSpace, suggest
from ml_framework.search.storage import set_user_attrs
from ml_framework.training.callbacks import Callback, TrainingDiverged

State = optuna.trial.TrialState
TRIAL_KEY = "study_trial"  # config key: {"number": n, "id": storage trial id}
DONE_KEY = "trained_to_end"  # set in the last report of a trial that finished training
SUMMARY_KEY = "trial_summary"  # JSON: the trial's user attrs (best epoch, metrics, ...)
EXPLOIT_KEY = "pbt_exploit"  # JSON: a PBT exploit (from which trial, at which epoch, which new values)
OBJECTIVE_KEY = "objective"  # the study metric at the trial's best epoch so far (the trial's value)
PID_FILE = "worker.pid"  # the process training the trial, in its run dir
CHECKPOINT_FILES = ("last.pt", "best.pt")


@dataclass
class TrialJob:
    """What every Ray trial needs from the driver (shipped once through Ray's object store)."""

    base_cfg: DictConfig
    params: tuple[str, ...]
    metric: str
    direction: str
    study_path: Path
    keep_checkpoints: str


def ray_trial_dirname(trial: Any) -> str:
    """Ray's directory of a trial under runs/ray/<study>/: the study trial's number, then Tune's id."""
    return f"trial_{trial.config[TRIAL_KEY]['number']}_{trial.trial_id}"


def _link(src: Path, dst: Path) -> None:
    """A hard link where possible (the checkpoint is written by rename, so the link keeps its content)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class ReportToTune(Callback):
    """Report each epoch but the last to Tune with a checkpoint; the last one is reported by
    `train_trial` once training has finished, with the trial's summary."""

    def __init__(self, number: int, params: dict[str, Any], run_dir: Path) -> None:
        self.number, self.params, self.run_dir = number, params, run_dir
        self.note: dict[str, Any] = {}  # extra keys of the next report (a PBT exploit)

    def extra(self) -> dict[str, Any]:
        note, self.note = self.note, {}
        return note

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if epoch >= trainer.num_epochs or trainer.should_stop:
            return
        with tempfile.TemporaryDirectory(dir=self.run_dir, prefix=".tune_ckpt_") as tmp:
            ckpt = Path(tmp)
            for name in CHECKPOINT_FILES:
                if (self.run_dir / "checkpoints" / name).is_file():
                    _link(self.run_dir / "checkpoints" / name, ckpt / name)
            _link(self.run_dir / "config.yaml", ckpt / "config.yaml")
            source = {"trial": self.number, "epoch": epoch, "params": self.params}
            (ckpt / "source.json").write_text(json.dumps(source))
            report = {**metrics, "epoch": epoch, OBJECTIVE_KEY: trainer.best_value, **self.extra()}
            checkpoint = tune.Checkpoint.from_directory(tmp) if any(ckpt.glob("*.pt")) else None
            tune.report(report, checkpoint=checkpoint)


def _restore(
    checkpoint: tune.Checkpoint, run_dir: Path, number: int, params: dict[str, Any]
) -> tuple[Path, dict]:
    """Put Tune's checkpoint into this trial's run dir; returns the last.pt to resume from and, for a
    PBT exploit (another trial's checkpoint), what it says about it."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as d:
        src = Path(d)
        source = json.loads((src / "source.json").read_text())
        for name in CHECKPOINT_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, run_dir / "checkpoints" / name)
        shutil.copy2(src / "config.yaml", run_dir / "config.yaml")  # the config its weights trained with
    epoch, donor = int(source["epoch"]), int(source["trial"])
    changed = {k: [source["params"].get(k), v] for k, v in params.items() if source["params"].get(k) != v}
    if donor == number and not changed:
        line = f"restarted by Ray Tune from its checkpoint after epoch {epoch}"
        exploit: dict[str, Any] = {}
    else:
        new = ", ".join(f"{k}: {old!r} -> {v!r}" for k, (old, v) in changed.items()) or "no change"
        line = (f"PBT: continuing from trial_{donor}'s checkpoint after epoch {epoch} with new values "
                f"({new})")  # fmt: skip
        exploit = {"epoch": epoch, "from_trial": donor, "params": dict(params), "changed": changed}
    with open(run_dir / "train.log", "a") as log:
        log.write(f"{line}\n")
    return run_dir / "checkpoints" / "last.pt", exploit


def train_trial(config: dict[str, Any], job: TrialJob) -> None:
    """The function trainable of every Ray trial."""
    from ml_framework.training.run import run_training

    number = int(config[TRIAL_KEY]["number"])
    params = {k: config[k] for k in job.params if k in config}
    run_dir = trial_dir(job.study_path, number)
    cfg = trial_config(job.base_cfg, params, job.metric, job.direction)
    checkpoint = tune.get_checkpoint()
    reporter = ReportToTune(number, params, run_dir)
    resume = None
    if checkpoint is not None:
        resume, exploit = _restore(checkpoint, run_dir, number, params)
        if exploit:
            reporter.note = {EXPLOIT_KEY: json.dumps(exploit)}
    elif run_dir.exists():  # a leftover of an earlier study with this name
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PID_FILE).write_text(str(os.getpid()))
    worst = -math.inf if job.direction == "maximize" else math.inf
    try:
        result = run_training(
            cfg, [reporter], run_dir=None if resume else run_dir, resume=resume, progress=False, trial=True
        )
    except TrainingDiverged as e:  # pruned where it diverged, as with the native engine
        _drop_checkpoints(run_dir, job.keep_checkpoints, keep_best=False)
        tune.report({job.metric: worst, "epoch": e.epoch, "diverged": True, **reporter.extra()})
        return
    last = int(result.history[-1]["epoch"]) if result.history else 0
    value = result.value(job.metric)
    summary = {
        "run_dir": str(run_dir),
        "best_epoch": result.best_epoch,
        "last_epoch": last,
        "metrics": {**result.best, **result.test, job.metric: value},
        SPEED_ATTR: result.speed.get("config", {}),
    }
    final = {**result.final, "epoch": last, OBJECTIVE_KEY: value, DONE_KEY: True}
    _drop_checkpoints(run_dir, job.keep_checkpoints, keep_best=job.keep_checkpoints != "none")
    tune.report({**final, SUMMARY_KEY: json.dumps(summary, default=str), **reporter.extra()})


def _drop_checkpoints(run_dir: Path, keep: str, keep_best: bool) -> None:
    """The native engine's policy: a finished trial needs no last.pt; `keep_checkpoints: all` keeps all."""
    if keep == "all":
        return
    (run_dir / "checkpoints" / "last.pt").unlink(missing_ok=True)
    if not keep_best:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


class StudySearch(OptunaSearch):
    """OptunaSearch whose suggestions say which study trial they are. Results and the end of a trial
    are written into the study by `StudyRecorder` (which knows why a trial ended), not here. Every study
    trial it asks for goes into `created` (the recorder's), so that one Tune never started (the search
    was interrupted first) is failed too, not left RUNNING."""

    def __init__(self, *args: Any, created: dict[int, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created = created

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if config is None:
            return None
        ot_trial = self._ot_trials[trial_id]
        self.created[ot_trial._trial_id] = ot_trial.number
        return {**config, TRIAL_KEY: {"number": ot_trial.number, "id": ot_trial._trial_id}}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._completed_trials.add(trial_id)


@dataclass(frozen=True)
class DefineByRun:
    """OptunaSearch's define-by-run space: our `suggest` (conditions included); a class: Tune pickles it."""

    space: SearchSpace

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return suggest(trial, self.space)


def study_search(
    study: optuna.Study, space: SearchSpace, metric: str, mode: str, storage: Any, created: dict[int, int]
) -> StudySearch:
    return StudySearch(
        space=DefineByRun(space),
        metric=metric,
        mode=mode,
        sampler=study.sampler,
        study_name=study.study_name,
        storage=storage,
        created=created,
    )


class StudyPBT(PopulationBasedTraining):
    """PBT whose exploit keeps the trial's own study trial: the new config is built from the donor's,
    which would otherwise carry the donor's `TRIAL_KEY` (and so its run dir)."""

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        new_config, operations = super()._get_new_config(trial, trial_to_clone)
        return {**new_config, TRIAL_KEY: trial.config[TRIAL_KEY]}, operations


# -- PBT: mutations from the search space --------------------------------------------------------


def tune_domain(dist: Any) -> Any:
    """A Tune sampling domain for an Optuna distribution (initial values of a PBT trial)."""
    if isinstance(dist, CategoricalDistribution):
        return tune.choice(list(dist.choices))
    if isinstance(dist, IntDistribution):
        if dist.log:
            return tune.lograndint(dist.low, dist.high + 1)
        return (
            tune.qrandint(dist.low, dist.high, dist.step)
            if dist.step > 1
            else tune.randint(dist.low, dist.high + 1)
        )
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return tune.loguniform(dist.low, dist.high)
        return (
            tune.quniform(dist.low, dist.high, dist.step) if dist.step else tune.uniform(dist.low, dist.high)
        )
    raise TypeError(f"no Tune domain for {dist!r}")


def pbt_mutations(space: SearchSpace) -> dict[str, Any]:
    """PBT's hyperparam_mutations: a categorical as its list (perturbed to a neighbour), a range as its
    Tune domain (perturbed by a factor, resampled at times)."""
    return {
        p.name: list(p.distribution.choices)
        if isinstance(p.distribution, CategoricalDistribution)
        else tune_domain(p.distribution)
        for p in space
    }


def clip_to_space(space: SearchSpace) -> Callable[[dict], dict]:
    """PBT's custom_explore_fn: a perturbed value (old * 1.2) stays inside the searched range."""
    ranges = {
        p.name: p.distribution for p in space if not isinstance(p.distribution, CategoricalDistribution)
    }

    def clip(config: dict) -> dict:
        for name, dist in ranges.items():
            if name in config:
                value = min(max(config[name], dist.low), dist.high)
                config[name] = round(value) if isinstance(dist, IntDistribution) else float(value)
        return config

    return clip


# -- the driver: every Ray trial into the study ---------------------------------------------------


# Callback classes Tune's usage telemetry counts by name (ray.air._internal.usage._count_callbacks).
TELEMETRY_CALLBACKS = (
    "WandbLoggerCallback",
    "MLflowLoggerCallback",
    "CometLoggerCallback",
    "AimLoggerCallback",
    "CSVLoggerCallback",
    "JsonLoggerCallback",
    "TBXLoggerCallback",
)


def count_callbacks(callbacks: list[Any] | None) -> dict[str, int]:
    """What Ray's `_count_callbacks` returns for `callbacks`: class name -> count, with other loggers
    as CustomLoggerCallback and other callbacks as CustomCallback. Ray's own first imports its MLflow,
    W&B, Comet and Aim integrations to read those class names, and so mlflow and wandb where they are
    installed: seconds of every search's start-up, spent before the first trial."""
    from ray.tune.logger import LoggerCallback

    counts: collections.Counter[str] = collections.Counter()
    for cb in callbacks or []:
        if not isinstance(cb, tune.Callback):
            continue
        name = type(cb).__name__
        if name not in TELEMETRY_CALLBACKS:
            name = "CustomLoggerCallback" if isinstance(cb, LoggerCallback) else "CustomCallback"
        counts[name] += 1
    return dict(counts)


def count_callbacks_by_name() -> None:
    """Tune's telemetry counts callbacks with `count_callbacks` (the same tag, no integration imports)."""
    from ray.air._internal import usage

    if hasattr(usage, "_count_callbacks"):  # a Ray without it records no such tag
        usage._count_callbacks = count_callbacks


class StudyRecorder(tune.Callback):
    """Writes what Tune sees of each trial into its study trial, then calls `on_finished(frozen)`."""

    def __init__(
        self,
        study: optuna.Study,
        storage: Any,
        study_path: Path,
        metric: str,
        space: SearchSpace,
        scheduler: str,
        on_finished: Callable[[optuna.trial.FrozenTrial], None],
        set_params: bool = False,
    ) -> None:
        self.study, self.storage, self.metric, self.space = study, storage, metric, space
        self.study_path = study_path
        self.scheduler, self.on_finished, self.set_params = scheduler, on_finished, set_params
        self.seen: dict[int, int] = {}  # storage trial id -> number, of the trials this search created
        self.open: dict[int, optuna.Trial] = {}  # storage trial id -> its Trial, until it finishes
        self.finished: set[int] = set()  # storage trial ids this recorder has told the study about
        self.steps: dict[int, set[int]] = {}
        self.history: dict[int, list[dict[str, Any]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config for `Tuner.restore`; a search continues with `ml-search --resume`
        instead, so the console and tracker handles are left out."""
        return {**self.__dict__, "on_finished": None, "open": {}}

    def _trial(self, trial: Any) -> optuna.Trial:
        """The study trial of a Ray trial, made once: Tune waits for these callbacks before the trial's
        next epoch, and making an `optuna.Trial` reads the trial back from the storage."""
        ident = trial.config[TRIAL_KEY]
        trial_id = int(ident["id"])
        self.seen[trial_id] = int(ident["number"])
        if trial_id not in self.open:
            self.open[trial_id] = optuna.Trial(self.study, trial_id)
        return self.open[trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ot = self._trial(trial)
        number = int(trial.config[TRIAL_KEY]["number"])
        attrs = {"run_dir": str(trial_dir(self.study_path, number)), "ray_trial_id": trial.trial_id}
        if self.set_params and number not in self.history:
            self.history[number] = [{"epoch": 0, "params": self._params(trial)}]
            attrs["pbt_history"] = self.history[number]
        set_user_attrs(ot, attrs)

    def _params(self, trial: Any) -> dict[str, Any]:
        return {p.name: trial.config[p.name] for p in self.space if p.name in trial.config}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        ot = self._trial(trial)
        epoch = int(result.get("epoch", 0))
        steps = self.steps.setdefault(ot._trial_id, set())
        value = result.get(self.metric)
        if epoch not in steps and isinstance(value, int | float) and math.isfinite(value):
            ot.report(float(value), epoch)
            steps.add(epoch)
        if EXPLOIT_KEY in result:
            exploit = json.loads(result[EXPLOIT_KEY])
            number = int(trial.config[TRIAL_KEY]["number"])
            self.history.setdefault(number, []).append(exploit)
            ot.set_user_attr("pbt_history", self.history[number])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = "the Ray trial failed"
        if trial.error_file and Path(trial.error_file).is_file():
            lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
            error = lines[-1][:500] if lines else error
        self._finish(trial, error)

    def _finish(self, trial: Any, error: str | None) -> None:
        if int(trial.config[TRIAL_KEY]["id"]) in self.finished:
            return
        ot = self._trial(trial)
        result = trial.last_result or {}
        self.open.pop(ot._trial_id, None)
        attrs = {"last_epoch": int(result.get("epoch", 0))}  # the summary's, when it has one
        if self.set_params:  # PBT: the trial's params are its final values (pbt_history has the rest)
            for p in self.space:
                if p.name in trial.config:
                    dist = p.distribution
                    self.storage.set_trial_param(
                        ot._trial_id, p.name, dist.to_internal_repr(trial.config[p.name]), dist
                    )
        attrs.update(json.loads(result.get(SUMMARY_KEY) or "{}"))
        values: float | None = None
        if error is not None:
            attrs["error"] = error
            state = State.FAIL
        elif result.get("diverged"):
            attrs["diverged"] = True
            ot.report(math.nan, int(result.get("epoch", 0)))
            state = State.PRUNED
        elif result.get(DONE_KEY):
            values = float(result[OBJECTIVE_KEY]) if result.get(OBJECTIVE_KEY) is not None else math.nan
            state = State.COMPLETE
            if math.isnan(values):
                attrs["error"] = f"{self.metric} is NaN"
                values, state = None, State.FAIL
        else:  # stopped by the scheduler (or never reported): pruned at its last epoch
            attrs["stopped_by"] = self.scheduler
            state = State.PRUNED
            _note_stopped(trial_dir(self.study_path, ot.number), self.scheduler, result)
        set_user_attrs(ot, attrs)
        frozen = self.study.tell(ot, values, state=state)
        self.finished.add(ot._trial_id)
        self.on_finished(frozen)

    def fail_unfinished(self) -> int:
        """After Tune returns: this search's trials still RUNNING (interrupted, or never started) fail."""
        failed = 0
        for trial_id, _number in self.seen.items():
            frozen = self.storage.get_trial(trial_id)
            if frozen.state == State.RUNNING:
                optuna.Trial(self.study, trial_id).set_user_attr(
                    "error", "the search stopped before it finished"
                )
                self.study.tell(frozen.number, state=State.FAIL)
                failed += 1
        return failed


def _note_stopped(run_dir: Path, scheduler: str, result: dict) -> None:
    """A trial Tune stopped early ends with a line in its train.log (when the run dir is on this machine)
    and, as a pruned native trial, without checkpoints."""
    if not run_dir.is_dir():
        return
    with open(run_dir / "train.log", "a") as log:
        log.write(f"stopped early by Ray Tune's {scheduler} after epoch {result.get('epoch', 0)} (pruned)\n")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
