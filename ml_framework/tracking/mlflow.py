"""MLflow through `MlflowClient` (explicit run ids: trials of many workers and machines log into one
experiment at once, with no global "active run")."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ml_framework.urls import mask_url

SQLITE = "sqlite:///"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "optuna.trial_number"
MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
BATCH = 100  # params (and tags) per log_batch call
# Fail fast when the server is down: MLflow's defaults retry with backoff for minutes.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def default_tracking_uri(runs_dir: str | Path) -> str:
    return f"{SQLITE}{Path(runs_dir) / 'mlflow.db'}"


def tracking_uri(cfg: DictConfig) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else a SQLite store under output.runs_dir."""
    return (
        cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cfg.output.runs_dir)
    )


class MlflowBackend:
    name = "mlflow"
    supports_parent = True

    def __init__(self, cfg: DictConfig, root: Path) -> None:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("urllib3.connectionpool").setLevel(
            logging.ERROR
        )  # "Retrying ...": the Breaker reports
        self.uri = tracking_uri(cfg)
        self.experiment = cfg.tracking.experiment or cfg.data.dataset_name
        if self.uri.startswith(SQLITE):  # absolute: the URI is kept in the study and used from any cwd
            db = Path(self.uri[len(SQLITE) :]).resolve()
            db.parent.mkdir(parents=True, exist_ok=True)
            self.uri = f"{SQLITE}{db}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiment_id: str | None = None

    # -- experiment and runs ------------------------------------------------------------------------
    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._get_or_create_experiment()
        return self._experiment_id

    def _get_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.uri.startswith(SQLITE):  # artifacts next to the database, not in ./mlruns of the cwd
            location = (Path(self.uri[len(SQLITE) :]).parent / "mlartifacts").as_uri()
        try:
            return str(self.client.create_experiment(self.experiment, artifact_location=location))
        except MlflowException:  # another worker created it a moment ago
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def start_run(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        *,
        parent: str | None = None,
        group: str | None = None,
    ) -> str:
        all_tags = {**tags, **({PARENT_TAG: parent} if parent else {})}
        run_id = str(self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id)
        self.log_params(run_id, params)
        return run_id

    def reopen(self, run_id: str) -> None:
        """A finished run RUNNING again (a resumed search's parent); its params stay as they are."""
        self.client.update_run(run_id, status="RUNNING")

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, params=items[i : i + BATCH])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + BATCH])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_PARAM_LEN]) for k, v in tags.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, tags=items[i : i + BATCH])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    # -- lookups (a resumed search must not log a trial twice) -----------------------------------------
    def run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage == "active"

    def children(self, parent: str) -> dict[int, tuple[str, str]]:
        """Trial number -> (run id, status) of the parent's child runs."""
        out: dict[int, tuple[str, str]] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{parent}'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                number = run.data.tags.get(TRIAL_TAG)
                if number is not None and number.isdigit():
                    out.setdefault(int(number), (run.info.run_id, run.info.status))
            token = page.token
            if not token:
                return out

    def find_child(self, parent: str, number: int) -> str | None:
        page = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_TAG}` = '{number}'",
            max_results=1,
        )
        return str(page[0].info.run_id) if page else None

    def where(self) -> str:
        ui = f"mlflow ui --backend-store-uri {mask_url(self.uri)}" if self.uri.startswith("sqlite") else ""
        return f"MLflow experiment '{self.experiment}' at {mask_url(self.uri)}" + (f" ({ui})" if ui else "")

    def close(self) -> None:
        pass
