"""Weights & Biases: one run per training (one per search trial, grouped by study). Without an API key
the runs are written offline under the run or study dir and uploaded later with `wandb sync`."""

from __future__ import annotations

import netrc
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig

from ml_framework.tracking.base import FAILED, FINISHED, KILLED

DEFAULT_HOST = "api.wandb.ai"
# Our run status -> (W&B exit code, tag): W&B marks a run with a non-zero exit code "failed".
STATUS = {FINISHED: (0, None), KILLED: (0, "PRUNED"), FAILED: (1, "FAILED")}


def has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes) for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", f"https://{DEFAULT_HOST}")).hostname or DEFAULT_HOST
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbBackend:
    name = "wandb"
    supports_parent = False

    def __init__(self, cfg: DictConfig, root: Path) -> None:
        # Offline unless the user chose a mode or can log in: no network call is attempted offline.
        if "WANDB_MODE" not in os.environ and not has_credentials():
            os.environ["WANDB_MODE"] = "offline"
        import wandb

        self.wandb = wandb
        self.project = cfg.tracking.project or cfg.data.dataset_name
        self.root = Path(root)
        self.offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun")
        self._runs: dict[str, Any] = {}

    def start_run(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        *,
        parent: str | None = None,
        group: str | None = None,
    ) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        settings = self.wandb.Settings(
            console="off",  # our rich console stays ours; the history is logged explicitly
            silent=True,
            x_disable_stats=True,
            x_disable_meta=True,
            x_save_requirements=False,
            disable_git=True,
            save_code=False,
        )
        run = self.wandb.init(
            project=self.project,
            name=name,
            group=group,
            config={**params, **tags},
            dir=str(self.root),
            reinit="create_new",  # one run per trial in a long-lived process
            settings=settings,
        )
        self._runs[run.id] = run
        return str(run.id)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        run = self._runs[run_id]
        if step is None:
            run.summary.update(metrics)
        else:
            run.log(metrics, step=step)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._runs[run_id].summary.update(tags)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """A copy in the run's files dir: W&B uploads that dir with the run (now, or at `wandb sync`)."""
        if path.is_file():
            target = Path(self._runs[run_id].dir) / (artifact_path or "")
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)

    def finish(self, run_id: str, status: str) -> None:
        run = self._runs.pop(run_id)
        exit_code, tag = STATUS.get(status, (1, status))
        run.summary["state"] = tag or status
        if tag:
            run.tags = (*run.tags, tag)
        run.finish(exit_code=exit_code)

    def where(self) -> str:
        runs = self.root / "wandb"
        if self.offline:
            return f"W&B runs (offline) in {runs}; upload them with: wandb sync {runs}/offline-run-*"
        return f"W&B project '{self.project}' (local files in {runs})"

    def close(self) -> None:
        for run_id in list(self._runs):
            self.finish(run_id, FAILED)
        self.wandb.teardown()  # stops the wandb-core service process
