"""Experiment tracking: MLflow (real SQLite stores read back with MlflowClient), W&B offline runs
(read back from their .wandb files), optuna-dashboard, and a tracking server that is down."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import BIN, run_cli, tiny_config

from ml_framework.errors import ConfigError, UserError
from ml_framework.tracking.base import BACKENDS, BackendSpec, check_backend

State = optuna.trial.TrialState
EPOCHS = 2


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables made: creating them (dozens of migrations) costs seconds,
    so each test starts from a copy of this file."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def mlflow_store(template: Path, path: Path) -> str:
    """A fresh store at `path` (a copy of the template); its URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # SQLite's backup API, not a file copy: the template may be in WAL mode (the storage module sets it
    # on every SQLite engine of the process), with its last migrations still in the -wal file.
    with sqlite3.connect(template) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    return f"sqlite:///{path}"


def write_config(path: Path, data_dir: Path, runs_dir: Path, search: dict[str, Any], **top: Any) -> Path:
    """Tiny trials: 8x8 digits, a one-block CNN, EPOCHS epochs."""
    cfg = {
        "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 8, "depth": 1},
        "training": {"num_epochs": EPOCHS, "batch_size": 128, "device": "cpu", "seed": 0},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "output": {"runs_dir": str(runs_dir)},
        "search": {
            "metric": "val_acc",
            "sampler": {"type": "RandomSampler", "seed": 0},
            # Trials below the median of earlier ones at the same epoch are pruned from epoch 1 on;
            # lr 1e-5 barely moves from chance, so some of the 6 trials are pruned.
            "pruner": {"type": "MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 0},
            "search_space": {"optimizer.lr": {"type": "categorical", "choices": [0.05, 0.00001]}},
            **search,
        },
        **top,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def search(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = run_cli(["ml-search", *args], cwd, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def mlflow_runs(uri: str, experiment: str) -> tuple[Any, Any, list[Any]]:
    """(client, parent run, child runs) of the one experiment `experiment` in the store at `uri`."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return client, parents[0], children


def check_children(client: Any, children: list[Any], study: optuna.Study) -> None:
    """One child per trial, its status from the trial's state, complete ones with every epoch."""
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert len(by_number) == len(children) == len(study.trials)  # no trial logged twice
    states = {t.number: t for t in study.trials}
    assert State.COMPLETE in {t.state for t in study.trials}
    for number, run in by_number.items():
        trial = states[number]
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert run.data.params["optimizer.lr"] == str(trial.params["optimizer.lr"])
        if trial.state == State.COMPLETE:
            assert run.info.status == "FINISHED"
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
            assert run.data.metrics["value"] == pytest.approx(trial.value)
        else:
            assert run.info.status == "KILLED"
            assert run.data.tags["state"] == "PRUNED"
            assert int(run.data.tags["pruned_epoch"]) == trial.last_step == len(history)


def artifacts(client: Any, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


@pytest.mark.slow
def test_mlflow_search_nests_trials_under_one_parent_and_resume_adds_no_duplicate(
    digits_dir: Path, tmp_path: Path, mlflow_template: Path
) -> None:
    from ml_framework.cli.search import main as search_main
    from ml_framework.cli.visualise import main as visualise_main

    runs = tmp_path / "runs"
    uri = mlflow_store(mlflow_template, runs / "mlflow.db")  # where the default URI points
    cfg = write_config(tmp_path / "c.yaml", digits_dir, runs, {"n_trials": 6, "study_name": "s"})
    proc = search(["--config", str(cfg), "--track", "mlflow", "--experiment", "exp1"], tmp_path)
    assert "parent run" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{runs / 'optuna_studies' / 'optuna.db'}")
    client, parent, children = mlflow_runs(uri, "exp1")
    assert parent.info.run_name == "s" and parent.info.status == "FINISHED"
    assert study.user_attrs["tracking"]["parent_run_id"] == parent.info.run_id
    assert len(children) == 6
    assert {t.state for t in study.trials} == {State.COMPLETE, State.PRUNED}  # seeded: both occur
    check_children(client, children, study)
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    assert {"best_config.yaml", "summary.json", "best_params.json"} <= artifacts(client, parent.info.run_id)

    # --resume (in this process: the CLI's start-up was tested above): the same parent, two more
    # children, none repeated; then ml-visualise adds the plots and report.html to the parent.
    args = ["--config", str(cfg), "--track", "mlflow", "--experiment", "exp1", "--resume", "--n-trials", "2"]
    assert search_main(args) == 0
    client, parent2, children = mlflow_runs(uri, "exp1")
    assert parent2.info.run_id == parent.info.run_id and len(children) == 8
    check_children(client, children, optuna.load_study(study_name="s", storage=study._storage))
    args = ["--mode", "search", "--study-name", "s", "--runs-dir", str(runs), "--format", "html",
            "--plot-type", "optimization_history"]  # fmt: skip
    assert visualise_main(args) == 0
    assert "plots/report.html" in artifacts(client, parent.info.run_id, "plots")


@pytest.mark.slow
def test_mlflow_workers_share_one_parent(digits_dir: Path, tmp_path: Path, mlflow_template: Path) -> None:
    runs = tmp_path / "runs"
    uri = mlflow_store(mlflow_template, tmp_path / "store" / "mlflow.db")
    cfg = write_config(
        tmp_path / "c.yaml", digits_dir, runs, {"n_trials": 6, "study_name": "w"}, tracking={"uri": uri}
    )
    search(["--config", str(cfg), "--track", "mlflow", "--n-workers", "2"], tmp_path)
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{runs / 'optuna_studies' / 'optuna.db'}")
    client, parent, children = mlflow_runs(uri, "digits")  # experiment default: the dataset name
    assert len(children) == 6 and parent.info.status == "FINISHED"
    check_children(client, children, study)
    assert "best_config.yaml" in artifacts(client, parent.info.run_id)


def wandb_records(path: Path) -> list[Any]:
    """The records of a .wandb file (LevelDB log blocks of 32 KiB holding protobuf `Record`s)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, pending, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk of a record
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


@pytest.mark.slow
def test_wandb_offline_one_run_per_trial_without_network(digits_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    search_block = {"n_trials": 3, "study_name": "wb", "pruner": {"type": "NopPruner"}}
    cfg = write_config(tmp_path / "c.yaml", digits_dir, runs, search_block)
    closed = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # No API key, no ~/.netrc: offline by default; any connection attempt would go to a closed port.
    env.update(HOME=str(tmp_path), HTTP_PROXY=closed, HTTPS_PROXY=closed, http_proxy=closed,
               https_proxy=closed, WANDB_BASE_URL=closed)  # fmt: skip
    proc = search(["--config", str(cfg), "--track", "wandb", "--project", "proj"], tmp_path, env=env)
    wandb_dir = runs / "optuna_studies" / "wb" / "wandb"
    assert f"wandb sync {wandb_dir}/offline-run-*" in proc.stdout.replace("\n", "")
    run_files = sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 3
    seen = set()
    for f in run_files:
        records = wandb_records(f)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert run.project == "proj" and run.run_group == "wb"
        seen.add(run.display_name)
        history = [
            {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        assert [h["_step"] for h in history] == list(range(1, EPOCHS + 1))
        assert all("val_acc" in h and "train_loss" in h for h in history)
        assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0]
        logs = " ".join(p.read_text(errors="replace") for p in f.parent.glob("logs/*.log"))
        assert closed.split("//")[1] not in logs and "connection refused" not in logs.lower()
    assert seen == {"trial_0", "trial_1", "trial_2"}


@pytest.mark.slow
def test_dashboard_serves_the_study_and_stops_on_sigint(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="dash", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=3)
    port = closed_port()
    args = [str(BIN / "ml-visualise"), "--mode", "dashboard", "--study-name", "dash", "--storage", storage,
            "--port", str(port)]  # fmt: skip
    # A test run started as a background job ignores SIGINT, and a child would inherit that: with a
    # handler here the child starts with SIGINT at its default, as from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert body is not None, proc.communicate(timeout=10)
        assert [s["study_name"] for s in body["study_summaries"]] == ["dash"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130)
    assert f"http://127.0.0.1:{port}/dashboard/studies/" in out.replace("\n", "")
    assert "Traceback" not in err


@pytest.mark.slow
def test_tracking_server_down_warns_once_and_a_resume_logs_what_was_missed(
    digits_dir: Path,
    tmp_path: Path,
    mlflow_template: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ml_framework.cli.search import main as search_main
    from ml_framework.tracking.mlflow import HTTP_DEFAULTS

    for key, value in HTTP_DEFAULTS.items():  # set by the backend: undone after the test
        monkeypatch.setenv(key, value)
    runs = tmp_path / "runs"
    search_block = {"n_trials": 3, "study_name": "down", "pruner": {"type": "NopPruner"}}
    cfg = write_config(tmp_path / "c.yaml", digits_dir, runs, search_block)
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    assert search_main(["--config", str(cfg), "--track", "mlflow", f"tracking.uri={uri}"]) == 0
    assert time.monotonic() - started < 120  # no retry storm
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("warning: mlflow tracking failed") == 1
    study = optuna.load_study(study_name="down", storage=f"sqlite:///{runs / 'optuna_studies' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [State.COMPLETE] * 3
    out = runs / "optuna_studies" / "down"
    assert (out / "best_config.yaml").is_file() and json.loads((out / "summary.json").read_text())
    assert "tracking" not in study.user_attrs  # no parent run was made

    # The server is back: a --resume logs the trials it missed (from the storage and metrics.json).
    uri = mlflow_store(mlflow_template, tmp_path / "mlflow.db")
    args = ["--config", str(cfg), "--track", "mlflow", f"tracking.uri={uri}", "--resume", "--n-trials", "1"]
    assert search_main(args) == 0
    assert "3 trial run(s) added or closed from the study" in " ".join(capsys.readouterr().out.split())
    client, _, children = mlflow_runs(uri, "digits")
    check_children(client, children, optuna.load_study(study_name="down", storage=study._storage))


def test_ml_train_run_has_config_params_epochs_tags_and_files(
    digits_dir: Path, tmp_path: Path, mlflow_template: Path
) -> None:
    from ml_framework.tracking.train import train_with_tracking

    uri = mlflow_store(mlflow_template, tmp_path / "mlflow.db")
    tracking = {"backend": "mlflow", "uri": uri, "experiment": "train"}
    cfg = tiny_config(digits_dir, tmp_path / "runs", tracking=tracking, training={"num_epochs": EPOCHS})
    result = train_with_tracking(cfg)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.01" and run.data.params["model.architecture"] == "simple_cnn"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == EPOCHS
    assert run.data.metrics["test_acc"] == pytest.approx(result.test["test_acc"])
    assert run.data.tags["dataset"] == "digits" and run.data.tags["run_dir"] == str(result.run_dir)
    assert {"config.yaml", "metrics.json"} <= artifacts(client, run.info.run_id)


def test_ml_train_with_the_server_down_trains_anyway(
    digits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_framework.tracking.mlflow import HTTP_DEFAULTS
    from ml_framework.tracking.train import train_with_tracking

    for key, value in HTTP_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    tracking = {"backend": "mlflow", "uri": f"http://me:s3cret@127.0.0.1:{closed_port()}"}
    cfg = tiny_config(digits_dir, tmp_path / "runs", tracking=tracking, training={"num_epochs": EPOCHS})
    started = time.monotonic()
    result = train_with_tracking(cfg)
    assert time.monotonic() - started < 60  # no retry storm
    assert len(result.history) == EPOCHS and (result.run_dir / "metrics.json").is_file()
    err = capsys.readouterr().err
    assert err.count("warning: mlflow tracking failed") == 1 and "s3cret" not in err


def test_unknown_or_missing_backend_is_a_clear_error(tiny_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_cfg.tracking.backend = "mlflo"
    with pytest.raises(ConfigError, match="Did you mean: mlflow"):
        check_backend(tiny_cfg)
    monkeypatch.setitem(BACKENDS, "neptune", BackendSpec("x", "X", "neptune", "no_such_package_xyz"))
    tiny_cfg.tracking.backend = "neptune"
    with pytest.raises(UserError, match=r'pip install "ml_framework\[neptune\]"'):
        check_backend(tiny_cfg)
