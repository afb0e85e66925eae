"""Ray Tune as the search engine (`search.engine: ray`): settings, checks and the search itself.

The study is the same as with the native engine (`study.open_study`, `runner._Reporter` outputs, the
tracker): Ray Tune only schedules the trials. The Tune side (searcher, scheduler, trainable, the callback
that records every Ray trial in the study) is in `search/ray_tune.py`, imported once Ray is known to be
installed: Ray is an extra, and `--help` never imports it."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ml_framework.errors import ConfigError, UserError, unknown_key_message

INSTALL = 'pip install "ml_framework[ray]"'
ENGINES = ("native", "ray")
# scheduler name -> class in ray.tune.schedulers; its options are that constructor's keyword arguments
SCHEDULERS: dict[str, str] = {
    "fifo": "FIFOScheduler",
    "asha": "ASHAScheduler",
    "hyperband": "HyperBandScheduler",
    "pbt": "PopulationBasedTraining",
}
RESOURCES = ("cpu", "gpu")


@dataclass
class RaySettings:
    scheduler: str  # a SCHEDULERS name
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0})
    max_concurrent: int | None = None
    address: str | None = None
    max_failures: int = 0

    @property
    def pbt(self) -> bool:
        return self.scheduler == "pbt"


def parse_resources(text: str) -> dict[str, float]:
    """`cpu:2,gpu:0.5` -> {"cpu": 2.0, "gpu": 0.5} (--resources-per-trial)."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, amount = item.partition(":")
        try:
            out[name.strip().lower()] = float(amount)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(
                f"--resources-per-trial: '{item}' is not NAME:AMOUNT (e.g. cpu:2,gpu:0.5)"
            ) from None
    return out


def _check_resources(resources: dict[str, Any]) -> dict[str, float]:
    where = "search.ray.resources_per_trial"
    out = {}
    for name, amount in resources.items():
        if name not in RESOURCES:
            raise ConfigError(
                unknown_key_message(name, RESOURCES, where) + f" (known: {', '.join(RESOURCES)})"
            )
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount < 0:
            raise ConfigError(f"{where}.{name}: {amount!r} is not a number >= 0")
        if name == "gpu" and amount > 1 and amount != int(amount):
            raise ConfigError(
                f"{where}.gpu: {amount} GPUs: use a whole number above 1, or a fraction below 1"
            )
        out[name] = float(amount)
    if out.get("cpu", 1.0) == 0 and not out.get("gpu"):
        raise ConfigError(f"{where}: a trial needs some cpu or gpu")
    return out


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ConfigError(unknown_key_message(name, ENGINES, "search.engine") + " (native or ray)")
    return name


def ray_settings(cfg: DictConfig, settings: Any) -> RaySettings:
    """search.ray, checked before any study exists, and what the Ray engine cannot do yet."""
    r = cfg.search.ray
    spec = dict(OmegaConf.to_container(r.scheduler, resolve=True))  # type: ignore[arg-type]
    name = str(spec.pop("type", "fifo")).lower()
    if name not in SCHEDULERS:
        raise ConfigError(unknown_key_message(name, SCHEDULERS, "search.ray.scheduler.type"))
    resources = _check_resources(dict(OmegaConf.to_container(r.resources_per_trial, resolve=True)))  # type: ignore[arg-type]
    if r.max_concurrent is not None and r.max_concurrent < 1:
        raise ConfigError(f"search.ray.max_concurrent: {r.max_concurrent} must be at least 1")
    if r.max_failures < 0:
        raise ConfigError(f"search.ray.max_failures: {r.max_failures} must be >= 0 (restarts of a trial)")
    unsupported = {
        "several objectives (search.metrics)": settings.multi_objective,
        "search.cross_validation": settings.cv is not None,
        "search.early_stopping": settings.early_stop is not None,
        "search.timeout (the study deadline; Tune's time budget would stop running trials)": (
            settings.timeout is not None
        ),
        "GridSampler": settings.grid is not None,
        "search.n_workers > 1 (Ray runs the trials in parallel: search.ray.max_concurrent)": (
            settings.n_workers > 1
        ),
    }
    from ml_framework.search.objectives import TRAINER_METRICS

    unsupported[f"the objective {settings.metrics[0]} (not a per-epoch metric)"] = (
        settings.metrics[0] not in TRAINER_METRICS
    )
    refused = [what for what, used in unsupported.items() if used]
    if refused:
        raise ConfigError(
            f"search.engine ray does not support {', '.join(refused)}: use search.engine native for those"
        )
    out = RaySettings(name, spec, resources, r.max_concurrent, r.address, r.max_failures)
    if str(cfg.training.device).startswith("cuda") and not resources.get("gpu"):
        settings.warnings.append(
            f"training.device {cfg.training.device} without a GPU in search.ray.resources_per_trial: Ray "
            "hides the GPUs from trials that reserve none (--resources-per-trial cpu:1,gpu:1 or gpu:0.5)"
        )
    if out.pbt:
        check_pbt_space(settings.space)
    return out


def check_pbt_space(space: Any) -> None:
    """PBT changes values mid-run and continues from another trial's checkpoint: only keys a resumed
    run may change (training/resume.py: RESUMABLE) can be perturbed, and every trial has every key."""
    from ml_framework.training.resume import RESUMABLE, _resumable

    conditional = [p.name for p in space if p.condition is not None]
    if conditional:
        raise ConfigError(
            f"search.ray.scheduler pbt perturbs every searched key: {', '.join(conditional)} have a "
            "`when:` condition; remove it or use another scheduler"
        )
    fixed = [p.name for p in space if not _resumable(p.name)]
    if fixed:
        allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE)
        raise ConfigError(
            f"search.ray.scheduler pbt cannot perturb {', '.join(fixed)}: a trial continues from another "
            f"trial's checkpoint, so only keys a resumed run may change can be searched ({allowed}); "
            "use asha, hyperband or fifo for the others"
        )


def _missing_ray() -> UserError:
    return UserError(f"search.engine ray needs Ray Tune, which is not installed: {INSTALL}")


def _not_the_sigterm_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("SIGTERM handler is not set")


class Runtime:
    """The Ray runtime of one search: a local one started for it, or a connection to `--address`.

    `ray.init` runs on a thread of its own, so that the driver's own set-up (importing Ray Tune, building
    the scheduler) overlaps the runtime's start-up, 2-3 s on 2 cores as the GCS, raylet, dashboard and
    agents start as processes. That thread lives until `close()`, and shuts Ray down itself: Ray ties its
    processes to the thread that started them (Linux's parent-death signal fires when that thread ends).
    A runtime already initialised in this process is used as it is, and left running."""

    def __init__(self, ray: Any, address: str | None) -> None:
        self.ray = ray
        self.address = address
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._sigterm: Any = None  # the handler ours replaced, put back by close()

    def start(self) -> Runtime:
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the driver's cwd
        if self.ray.is_initialized():
            self._ready.set()
            return self
        if threading.current_thread() is threading.main_thread():
            # ray.init sets a SIGTERM handler on the main thread only (and warns on another). Ours ends
            # the search as Ctrl-C does: running trials marked failed, the runtime shut down, exit 130.
            from ml_framework.search.parallel import raise_interrupt

            self._sigterm = signal.signal(signal.SIGTERM, raise_interrupt)
            logging.getLogger("ray._private.worker").addFilter(_not_the_sigterm_warning)  # once per logger
        self._thread = threading.Thread(target=self._run, name="ray-runtime", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._init()
        except BaseException as e:  # handed to the thread that waits for the runtime
            self._error = e
            return
        finally:
            self._ready.set()
        self._stop.wait()
        self.ray.shutdown()

    def _init(self) -> None:
        quiet = {"log_to_driver": False, "configure_logging": False}
        if self.address:
            try:
                self.ray.init(address=self.address, **quiet)
            except ConnectionError as e:
                raise UserError(
                    f"--address {self.address}: no Ray cluster there ({e}); start one with `ray start --head`"
                ) from None
            return
        # No idle workers started ahead: a trial's actor gets a process of its own when it starts, so
        # prestarted ones would only take the cores (each imports Ray) while the runtime comes up.
        prestart = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}
        self.ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, _system_config=prestart, **quiet)

    def wait(self) -> None:
        """Until the runtime is up; its start-up error, if it failed."""
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Shut down the runtime this search started, on its thread (without waiting for it)."""
        self._stop.set()

    def close(self) -> None:
        """Stop, and wait for the shutdown (about 1.5 s: Ray's processes exiting)."""
        self.stop()
        if self._thread is not None:
            self._thread.join()
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
            self._sigterm = None


def preflight(cfg: DictConfig, settings: Any, rs: RaySettings) -> Runtime:
    """Ray installed, and the scheduler built once with its options, before any study exists. The
    runtime starts meanwhile (the caller closes it); a failed check stops it."""
    from ml_framework.search.objectives import monitor_metric

    try:
        import ray
    except ImportError:
        raise _missing_ray() from None
    runtime = Runtime(ray, rs.address).start()
    try:
        try:
            import ray.tune
        except ImportError:
            raise _missing_ray() from None
        metric, direction = monitor_metric(settings.metrics, settings.directions, cfg.training)
        mode = "max" if direction == "maximize" else "min"
        build_scheduler(rs, metric, mode, int(cfg.training.num_epochs), settings.space)
    except BaseException:
        runtime.close()
        raise
    return runtime


def absolute_paths(cfg: DictConfig) -> DictConfig:
    """The trials' config with absolute data and runs dirs: Ray workers do not share the driver's cwd."""
    import copy

    out = copy.deepcopy(cfg)
    out.data.data_dir = os.path.abspath(out.data.data_dir)
    out.output.runs_dir = os.path.abspath(out.output.runs_dir)
    return out


def build_scheduler(rs: RaySettings, metric: str, mode: str, num_epochs: int, space: Any) -> Any:
    """The Tune scheduler of `search.ray.scheduler`: its options go to the constructor; the study's metric,
    `epoch` as the time unit and the trial's epochs as `max_t` are the defaults."""
    from ray.tune import schedulers

    from ml_framework.search.ray_tune import StudyPBT

    cls = StudyPBT if rs.pbt else getattr(schedulers, SCHEDULERS[rs.scheduler])
    defaults: dict[str, Any] = {}
    if rs.scheduler != "fifo":
        defaults = {"metric": metric, "mode": mode, "time_attr": "epoch"}
    if rs.scheduler in ("asha", "hyperband"):
        defaults["max_t"] = num_epochs
    if rs.pbt:
        from ml_framework.search.ray_tune import clip_to_space, pbt_mutations

        defaults.update(
            perturbation_interval=1,
            hyperparam_mutations=pbt_mutations(space),
            custom_explore_fn=clip_to_space(space),
        )
    try:
        return cls(**{**defaults, **rs.scheduler_options})
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f"search.ray.scheduler ({rs.scheduler}: {cls.__name__}): {e}") from None


def _capacity(ray: Any, rs: RaySettings) -> int:
    """How many trials fit in the cluster at once; a trial asking for more than it has is an error (it
    would wait forever). Without search.ray.max_concurrent this is the concurrency: the searcher is asked
    for a trial only when one can start, so the sampler learns from every finished one."""
    total = ray.cluster_resources()
    for name, amount in rs.resources.items():
        have = float(total.get(name.upper(), 0.0))
        if amount > have:
            raise ConfigError(
                f"search.ray.resources_per_trial: {name}:{amount:g} per trial, but the Ray cluster has "
                f"{have:g} {name.upper()}(s)"
            )
    fits = [int(float(total.get(n.upper(), 0.0)) // a) for n, a in rs.resources.items() if a > 0]
    return max(1, min(fits)) if fits else 1


def run_ray_search(
    cfg: DictConfig,
    settings: Any,
    rs: RaySettings,
    runtime: Runtime,
    *,
    mode: str,
    config_path: str = "",
    fail_fast: bool = False,
    console: Any = None,
) -> Any:
    """The search of `settings` with Ray Tune scheduling the trials; the study, its outputs and the
    tracker are the native engine's. `runtime` (started by `preflight`) is closed on the way out, its
    shutdown overlapping the outputs and the report. Returns a runner.SearchOutcome."""
    try:
        return _search(cfg, settings, rs, runtime, mode, config_path, fail_fast, console)
    finally:
        runtime.close()


def _search(
    cfg: DictConfig,
    settings: Any,
    rs: RaySettings,
    runtime: Runtime,
    mode: str,
    config_path: str,
    fail_fast: bool,
    console: Any,
) -> Any:
    import time
    from pathlib import Path

    import optuna
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from rich.console import Console

    from ml_framework.search import ray_tune as rt
    from ml_framework.search.objectives import monitor_metric
    from ml_framework.search.runner import (
        SearchOutcome,
        _final_report,
        _Reporter,
        finish_tracking,
        start_study,
    )
    from ml_framework.search.storage import open_storage
    from ml_framework.search.tracking import StudyTracker
    from ml_framework.training.progress import make_progress

    rt.count_callbacks_by_name()
    console = console or Console(highlight=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ml_framework").setLevel(logging.WARNING)
    settings.pruner_spec = {"type": "NopPruner"}  # Tune's scheduler stops trials, not an Optuna pruner
    seed = settings.seed if settings.seed is not None else settings.sampler_spec.get("seed")
    if rs.pbt:  # PBT draws its initial values itself (Tune's random sampling, seeded)
        settings.sampler_spec = {"type": "RandomSampler"}
    scheduler_name = SCHEDULERS[rs.scheduler]
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C reaches us: trials end FAIL, exit 130
    # Tune's result files are progress.csv and result.json (the loggers passed below); its TensorBoardX
    # logger is left out: every trial writes its own TensorBoard events, and tensorboardX imports torch
    # into the driver, which trains nothing.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # The recorder's storage (without a heartbeat: Tune runs and restarts the trials, not Optuna's loop).
    # Opened while the runtime starts: a new file gets its tables now, but no study before the checks.
    storage = open_storage(settings.storage_url)
    runtime.wait()
    capacity = _capacity(runtime.ray, rs)  # resources the cluster cannot give fail before the study exists
    study, target, already = start_study(
        settings, mode, config_path, console, workers=f"; Ray Tune, scheduler {scheduler_name}"
    )
    study.set_user_attr("engine", "ray")
    study.set_user_attr("scheduler", scheduler_name)
    metric, direction = monitor_metric(settings.metrics, settings.directions, cfg.training)
    tune_mode = "max" if direction == "maximize" else "min"
    tracker = StudyTracker.open(cfg, settings, study, main=True)
    progress = make_progress(console)
    reporter = _Reporter(settings, cfg, console, progress)
    if reporter.task is not None:
        progress.update(reporter.task, total=target, completed=already)

    def on_finished(frozen: optuna.trial.FrozenTrial) -> None:
        reporter(study, frozen)
        if tracker is not None:
            tracker.on_trial_end(study, frozen)

    study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=study.sampler)
    study_path = settings.path.resolve()
    if mode == "resume":  # trials of an earlier Ray search that was killed: they cannot finish now
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if "ray_trial_id" in t.user_attrs:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    recorder = rt.StudyRecorder(
        study, storage, study_path, metric, settings.space, scheduler_name, on_finished, set_params=rs.pbt
    )
    outcome = SearchOutcome(ok=True)
    started = time.perf_counter()
    try:
        concurrency = rs.max_concurrent or capacity
        scheduler = build_scheduler(rs, metric, tune_mode, int(cfg.training.num_epochs), settings.space)
        remaining = max(target - already, 0)
        job = rt.TrialJob(
            absolute_paths(cfg), tuple(settings.space.names), metric, direction, study_path,
            settings.keep_checkpoints,
        )  # fmt: skip
        trainable = tune.with_resources(tune.with_parameters(rt.train_trial, job=job), rs.resources)
        if rs.pbt:  # one study trial per Ray trial, created now so each knows its run dir
            asked = [study.ask() for _ in range(remaining)]
            recorder.seen.update({t._trial_id: t.number for t in asked})
            idents = [{"number": t.number, "id": t._trial_id} for t in asked]
            param_space = {
                rt.TRIAL_KEY: tune.grid_search(idents),
                **{p.name: rt.tune_domain(p.distribution) for p in settings.space},
            }
            search_alg: Any = BasicVariantGenerator(random_state=seed)
            num_samples = 1
        else:
            param_space = {}
            search_alg = rt.study_search(study, settings.space, metric, tune_mode, storage, recorder.seen)
            num_samples = remaining
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                scheduler=scheduler,
                num_samples=num_samples,
                max_concurrent_trials=concurrency,
                reuse_actors=True,  # one process runs trial after trial: no start-up per trial
                trial_dirname_creator=rt.ray_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=settings.study_name,
                storage_path=str(Path(cfg.output.runs_dir, "ray").resolve()),
                callbacks=[recorder, CSVLoggerCallback(), JsonLoggerCallback()],
                failure_config=tune.FailureConfig(
                    max_failures=0 if fail_fast else rs.max_failures, fail_fast=fail_fast
                ),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if rs.pbt else 2),
                verbose=0,
            ),
        )
        if remaining:
            with progress:
                tuner.fit()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] running trials are marked failed; finished trials are kept")
        outcome.interrupted = True
    except tune.TuneError as e:  # fail_fast, or Tune giving up
        console.print(f"[red]search stopped:[/] {e}")
        outcome.ok = False
    finally:
        recorder.fail_unfinished()
        runtime.stop()  # its shutdown (Ray's processes exiting) overlaps the outputs and the report
        outcome.summary = reporter.refresh(study)
    _final_report(console, study, settings, outcome.summary, time.perf_counter() - started, config_path)
    from ml_framework.search.best import best_trial

    if best_trial(study) is None:
        outcome.ok = False
    finish_tracking(tracker, study, outcome, console)
    return outcome
