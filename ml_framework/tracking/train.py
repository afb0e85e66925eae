"""ml-train with a tracker: one run holding the flattened config (params), every epoch's metrics
(step = epoch), the final and test metrics, tags and the run's config.yaml and metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ml_framework.tracking.base import (
    FAILED,
    FINISHED,
    KILLED,
    Breaker,
    EpochLogger,
    create_backend,
    result_metrics,
)


def train_with_tracking(cfg: DictConfig, *, resume: Path | None = None, console: Any = None) -> Any:
    """`run_training(cfg)` logged to `tracking.backend` (plain run_training with `none`). A tracker that
    fails prints one warning and is left alone; training goes on."""
    from ml_framework.training.run import run_training
    from ml_framework.training.tensorboard import flatten_hparams

    backend = create_backend(cfg, Path(cfg.output.runs_dir))
    if backend is None:
        return run_training(cfg, resume=resume, console=console)
    breaker = Breaker(backend)
    tags = {"dataset": str(cfg.data.dataset_name), "architecture": str(cfg.model.architecture)}
    if resume is not None:
        tags["resumed_from"] = str(resume)
    params = flatten_hparams(cfg)
    name = str(cfg.output.name or f"{cfg.data.dataset_name}_{cfg.model.architecture}")
    logger = EpochLogger(
        breaker, lambda: breaker.call("start the run", backend.start_run, name, params, tags)
    )
    result, status, error = None, FAILED, ""
    try:
        result = run_training(cfg, [logger], resume=resume, console=console)
        status = FINISHED
    except KeyboardInterrupt:
        status = KILLED
        raise
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        if logger.run_id is not None:
            _finish(breaker, logger.run_id, status, cfg, result, error)
            if console is not None and not breaker.open:
                console.print(f"tracking: {backend.where()}")
        breaker.call("close", backend.close)
    return result


def _finish(breaker: Breaker, run_id: str, status: str, cfg: DictConfig, result: Any, error: str) -> None:
    backend = breaker.backend
    if error:
        breaker.call("set tags", backend.set_tags, run_id, {"error": error})
    if result is not None:
        breaker.call("log final metrics", backend.log_metrics, run_id, result_metrics(result))
        breaker.call("set tags", backend.set_tags, run_id, {"run_dir": str(result.run_dir)})
        for name in ("config.yaml", "metrics.json"):
            breaker.call(f"upload {name}", backend.log_artifact, run_id, result.run_dir / name)
        if cfg.tracking.log_checkpoints:
            best = result.run_dir / "checkpoints" / "best.pt"
            breaker.call("upload best.pt", backend.log_artifact, run_id, best, "checkpoints")
    breaker.call("end the run", backend.finish, run_id, status)
