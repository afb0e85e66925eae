"""What every tracker shares: the backend registry, the circuit breaker that keeps a failing tracker
from slowing or stopping the work, and the trainer callback that logs each epoch."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from omegaconf import DictConfig

from ml_framework.errors import ConfigError, UserError, unknown_key_message
from ml_framework.urls import hide_password

T = TypeVar("T")

# Run status names (MLflow's); each backend maps them to its own.
FINISHED, KILLED, FAILED, RUNNING = "FINISHED", "KILLED", "FAILED", "RUNNING"


@dataclass(frozen=True)
class BackendSpec:
    module: str  # imported only when the backend is used
    cls: str
    extra: str  # `pip install "ml_framework[<extra>]"`
    package: str  # the import that proves the extra is installed


BACKENDS: dict[str, BackendSpec] = {
    "mlflow": BackendSpec("ml_framework.tracking.mlflow", "MlflowBackend", "mlflow", "mlflow"),
    "wandb": BackendSpec("ml_framework.tracking.wandb", "WandbBackend", "wandb", "wandb"),
}
NONE = "none"


class Backend(Protocol):
    """A tracker: runs identified by id, per-step metrics, tags, files, a final status."""

    name: str
    supports_parent: bool  # nested runs (MLflow): one parent run per study

    def start_run(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        *,
        parent: str | None = None,
        group: str | None = None,
    ) -> str: ...

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None: ...

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None: ...

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None: ...

    def finish(self, run_id: str, status: str) -> None: ...

    def where(self) -> str: ...

    def close(self) -> None: ...


class NestedBackend(Backend, Protocol):
    """A backend with parent runs (MLflow): runs found again by id and by trial number."""

    uri: str
    experiment: str

    def run_exists(self, run_id: str) -> bool: ...

    def reopen(self, run_id: str) -> None: ...

    def children(self, parent: str) -> dict[int, tuple[str, str]]: ...

    def find_child(self, parent: str, number: int) -> str | None: ...


def backend_name(cfg: DictConfig) -> str:
    """`tracking.backend`, checked against the registry."""
    name = str(cfg.tracking.backend or NONE).lower()
    if name != NONE and name not in BACKENDS:
        raise ConfigError(
            unknown_key_message(name, [*BACKENDS, NONE], "tracking.backend")
            + f" (choose {', '.join(BACKENDS)}"
            f" or {NONE})"
        )
    return name


def check_backend(cfg: DictConfig) -> BackendSpec | None:
    """The registry entry of `tracking.backend` (None for none); a missing extra is one UserError."""
    name = backend_name(cfg)
    if name == NONE:
        return None
    spec = BACKENDS[name]
    if importlib.util.find_spec(spec.package) is None:
        raise UserError(
            f"tracking.backend '{name}' needs {spec.package}, which is not installed: "
            f'pip install "ml_framework[{spec.extra}]"'
        )
    return spec


def create_backend(cfg: DictConfig, root: Path) -> Backend | None:
    """The configured tracker, or None with `tracking.backend: none`. `root` is where local files go
    (W&B's offline runs: the runs dir of ml-train, the study dir of a search)."""
    spec = check_backend(cfg)
    if spec is None:
        return None
    cls = getattr(importlib.import_module(spec.module), spec.cls)
    return cls(cfg, root)  # type: ignore[no-any-return]


class Breaker:
    """Calls into a tracker, and stops calling it after its first failure, so a server that is down
    costs one timeout, not one per epoch. Each kind of failure is reported once on stderr."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.open = False
        self._reported: set[str] = set()

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if self.open:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # the tracker's own errors vary (HTTP, SQL, protobuf): none may stop the work
            self.fail(what, e)
            return None

    def fail(self, what: str, error: BaseException) -> None:
        self.open = True
        kind = f"{what}: {type(error).__name__}"
        if kind in self._reported:
            return
        self._reported.add(kind)
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        uri = getattr(self.backend, "uri", "")
        first = hide_password(first, uri) if uri else first
        message = (
            f"warning: {self.backend.name} tracking failed ({what}: {type(error).__name__}: {first}); "
            "tracking is off for the rest of this process, the work goes on"
        )
        print(message, file=sys.stderr, flush=True)  # not logging: train.log handlers would swallow it


class EpochLogger:
    """Trainer callback: every epoch's metrics, step = epoch. `start` runs once training starts
    (when a search trial's parameters are known) and returns the run id, or None to log nothing."""

    def __init__(self, breaker: Breaker, start: Callable[[], str | None]) -> None:
        self.breaker, self._start = breaker, start
        self.run_id: str | None = None

    def on_train_start(self, trainer: Any) -> None:
        if self.run_id is None:
            self.run_id = self._start()

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if self.run_id is not None:
            values = {k: float(v) for k, v in metrics.items() if k != "epoch"}
            self.breaker.call(
                "log epoch metrics", self.breaker.backend.log_metrics, self.run_id, values, epoch
            )

    def on_train_end(self, trainer: Any) -> None:
        pass


def result_metrics(result: Any) -> dict[str, float]:
    """Final values of a TrainResult under names that do not extend the per-epoch curves:
    `best_<metric>`, `best_epoch`, `test_<metric>`."""
    out = {f"best_{k}": float(v) for k, v in result.best.items() if k != "epoch"}
    if result.best_epoch is not None:
        out["best_epoch"] = float(result.best_epoch)
    out.update({k: float(v) for k, v in result.test.items()})
    return out
