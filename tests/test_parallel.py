"""Parallel search: worker processes on one study (SQLite, PostgreSQL), study budget, SIGKILL recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import BIN

from ml_framework.cli.search import build_parser
from ml_framework.search.parallel import gpu_assignment, threads_per_worker

State = optuna.trial.TrialState


def write_config(
    path: Path, data_dir: Path, runs_dir: Path, epochs: int, search: dict[str, Any], image_size: int = 8
) -> Path:
    """Tiny trials (8x8 inputs: a few hundredths of a second per epoch); 32x32: about half a second."""
    big = image_size > 8
    cfg = {
        "data": {
            "dataset_name": "digits",
            "data_dir": str(data_dir),
            "image_size": image_size,
            "channels": 1,
        },
        "model": {"architecture": "simple_cnn", "width": 16 if big else 4, "depth": 2 if big else 1},
        "training": {"num_epochs": epochs, "batch_size": 32 if big else 128, "device": "cpu", "seed": 0},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "output": {"runs_dir": str(runs_dir)},
        "search": {
            "metric": "val_acc",
            "sampler": {"type": "TPESampler", "seed": 0, "n_startup_trials": 5},
            "pruner": {"type": "NopPruner"},
            "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2}},
            **search,
        },
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def ml_search(args: list[str], cwd: Path) -> subprocess.Popen:
    exe = str(BIN / "ml-search")
    pipe = subprocess.PIPE
    return subprocess.Popen([exe, *args], cwd=cwd, stdout=pipe, stderr=subprocess.STDOUT, text=True)


def assert_exact_budget(storage: str, name: str, n: int) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
    return trials


@pytest.mark.parametrize(
    ("n_workers", "cores", "threads"), [(1, 2, 2), (2, 2, 1), (4, 2, 1), (3, 16, 5)]
)  # fmt: skip
def test_threads_split_between_workers(n_workers: int, cores: int, threads: int) -> None:
    assert threads_per_worker(n_workers, cores) == threads


@pytest.mark.parametrize(
    ("n_workers", "devices", "expected"),
    [
        (3, [], [None, None, None]),
        (4, ["0", "1"], ["0", "1", "0", "1"]),
        (3, ["4", "6"], ["4", "6", "4"]),
    ],
)
def test_gpu_round_robin(n_workers: int, devices: list[str], expected: list[str | None]) -> None:
    assert gpu_assignment(n_workers, devices) == expected


def test_gpus_per_trial_flag_is_gone() -> None:
    """--gpus-per-trial promised several GPUs per trial and gave one: removed, not silently kept."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--config", "c.yaml", "--gpus-per-trial", "2"])


def run_to_end(args: list[str], cwd: Path, timeout: float = 150) -> str:
    proc = ml_search(args, cwd)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


@pytest.mark.parametrize(
    ("n_workers", "n_trials", "backend"),
    [(4, 60, "sqlite"), pytest.param(3, 30, "postgres", marks=pytest.mark.postgres)],
)
def test_workers_reach_exact_budget(
    request: pytest.FixtureRequest, digits_dir: Path, tmp_path: Path, unique_name: str, n_workers: int,
    n_trials: int, backend: str,
) -> None:  # fmt: skip
    runs = tmp_path / "runs"
    storage = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else f"sqlite:///{runs / 'optuna_studies' / 'optuna.db'}"
    )
    cfg = write_config(tmp_path / "c.yaml", digits_dir, runs, epochs=1, search={"n_trials": n_trials})
    out = run_to_end(
        [
            "--config",
            str(cfg),
            "--study-name",
            unique_name,
            "--storage",
            storage,
            "--n-workers",
            str(n_workers),
        ],
        tmp_path,
    )
    assert "exited with code" not in out and "database is locked" not in out
    trials = assert_exact_budget(storage, unique_name, n_trials)
    assert not [t for t in trials if t.state == State.FAIL]
    study = optuna.load_study(study_name=unique_name, storage=storage)
    assert study.user_attrs["sampler"] == "TPESampler"
    best = yaml.safe_load((runs / "optuna_studies" / unique_name / "best_config.yaml").read_text())
    assert best["training"]["num_threads"] == threads_per_worker(n_workers)
    lines = [ln for ln in out.splitlines() if ln.startswith("Trial ")]
    assert len(lines) == n_trials  # one console line per finished trial, from the parent


def worker_running(pid: int, trial_dir: Path) -> bool:
    """Whether process `pid` has the trial's train.log open (it is training that trial)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd_dir / fd) == str(trial_dir / "train.log") for fd in os.listdir(fd_dir))
    except OSError:
        return False


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def wait_for_checkpointed_trial(storage: str, name: str, study_dir: Path, pids: list[int]) -> tuple[int, int]:
    """A RUNNING trial past its 2nd epoch (it has last.pt), and the worker pid that trains it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(states=(State.RUNNING,))
        except KeyError:
            trials = []
        for t in trials:
            if (
                t.user_attrs.get("last_epoch", 0) >= 2
                and (study_dir / f"trial_{t.number}" / "checkpoints" / "last.pt").is_file()
            ):
                for pid in pids:
                    if worker_running(pid, study_dir / f"trial_{t.number}"):
                        return t.number, pid
        time.sleep(0.2)
    raise AssertionError("no trial reached its 2nd epoch in 60 s")


@pytest.mark.parametrize("whole_search", [False, True], ids=["one-worker", "whole-search-then-resume"])
def test_sigkill_mid_trial_is_retried_from_its_checkpoint(
    digits_dir: Path, tmp_path: Path, unique_name: str, whole_search: bool
) -> None:
    runs = tmp_path / "runs"
    storage = f"sqlite:///{runs / 'optuna_studies' / 'optuna.db'}"
    study_dir = runs / "optuna_studies" / unique_name
    search = {"n_trials": 4, "heartbeat_interval": 1, "grace_period": 3, "keep_checkpoints": "all"}
    # epochs long enough that a trial is reliably caught between its 2nd epoch and its end
    cfg = write_config(tmp_path / "c.yaml", digits_dir, runs, epochs=6, search=search, image_size=32)
    args = ["--config", str(cfg), "--study-name", unique_name, "--storage", storage, "--n-workers", "2"]
    proc = ml_search(args, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while len(workers := children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        killed, pid = wait_for_checkpointed_trial(storage, unique_name, study_dir, workers)
        for victim in [*workers, proc.pid] if whole_search else [pid]:
            os.kill(victim, signal.SIGKILL)
        if whole_search:
            proc.wait(10)
            run_to_end([*args[:-2], "--resume"], tmp_path)
        else:
            out, _ = proc.communicate(timeout=150)
            assert "exited with code -9" in out
    finally:
        proc.kill()
        proc.communicate()
    trials = assert_exact_budget(storage, unique_name, 4)
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == State.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed)
    assert retry.state == State.COMPLETE and retry.params == by_number[killed].params
    assert retry.user_attrs["resumed_from_trial"] == killed
    log = (study_dir / f"trial_{retry.number}" / "train.log").read_text()
    assert "resumed from" in log and f"trial_{retry.number}/checkpoints/last.pt at epoch" in log
    start_epoch = int(log.split("at epoch ")[1].split()[0])
    assert start_epoch >= 2
    # inherited epochs, then the resumed ones (the kill may fall between a checkpoint and its report)
    assert set(range(start_epoch + 1, 7)) <= set(retry.intermediate_values) <= set(range(1, 7))


def test_workers_run_the_same_trials_as_one_process(
    digits_dir: Path, tmp_path: Path, unique_name: str
) -> None:
    """Cross-validation, --enqueue and search early stopping reach the worker processes too."""
    runs = tmp_path / "runs"
    storage = f"sqlite:///{runs / 'optuna_studies' / 'optuna.db'}"
    search = {"n_trials": 8, "early_stopping": {"enabled": True, "patience": 1, "min_delta": 1.0}}
    cfg = write_config(tmp_path / "c.yaml", digits_dir, runs, epochs=1, search=search)
    (tmp_path / "known.yaml").write_text(yaml.safe_dump([{"optimizer.lr": 0.02}]))
    args = ["--config", str(cfg), "--study-name", unique_name, "--storage", storage, "--n-workers", "2"]
    run_to_end([*args, "--cv", "2", "--enqueue", str(tmp_path / "known.yaml")], tmp_path)
    trials = optuna.load_study(study_name=unique_name, storage=storage).trials
    finished = [t for t in trials if t.state == State.COMPLETE]
    assert all(len(t.user_attrs["cv_scores"]) == 2 for t in finished)
    assert {"optimizer.lr": 0.02} in [t.params for t in trials]
    # min_delta 1.0: no trial can improve, so the study stops after 1 + patience finished trials
    # (plus the one the other worker was running)
    assert len(finished) < 8
    summary = yaml.safe_load((runs / "optuna_studies" / unique_name / "summary.json").read_text())
    assert summary["stopped_early"] is True
