"""ml-search --engine ray on a real local Ray runtime (2 CPUs), the real digits and a real SQLite study."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from ml_framework.cli.search import main as search_main

State = optuna.trial.TrialState
SPACE: dict[str, Any] = {
    "optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
    "optimizer.weight_decay": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
}


def write_config(tmp_path: Path, data_dir: Path, ray: dict[str, Any], n_trials: int, epochs: int = 4) -> Path:
    cfg = {
        "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 8, "depth": 1},
        "training": {"num_epochs": epochs, "batch_size": 64, "device": "cpu", "seed": 0},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "output": {"runs_dir": str(tmp_path / "runs")},
        "search": {
            "n_trials": n_trials,
            "engine": "ray",
            "sampler": {"type": "TPESampler", "seed": 0},
            "search_space": SPACE,
            "ray": {"resources_per_trial": {"cpu": 1}, **ray},
        },
    }
    path = tmp_path / "ray.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def load(tmp_path: Path, name: str) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'runs' / 'optuna_studies' / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=url)


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """One local Ray runtime with 2 CPUs for the module's searches (ml-search joins a running one)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


# -- checks before any study or runtime exists ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--scheduler", "ashaa"], "asha"),
        (["--resources-per-trial", "cpu=2"], "NAME:AMOUNT"),
        (["--resources-per-trial", "tpu:1"], "tpu"),
        (
            ["--scheduler", "pbt", "--param", "model.dropout=continuous:0.0-0.5"],
            "cannot perturb model.dropout",
        ),
        (["--cv", "3"], "search.cross_validation"),
        (["--timeout", "60"], "search.timeout"),
        (["search.ray.scheduler.type=asha", "+search.ray.scheduler.max_tt=3"], "max_tt"),
    ],
)
def test_bad_ray_settings_fail_before_any_study(
    digits_dir: Path, tmp_path: Path, capsys: Any, args: list[str], fragment: str
) -> None:
    path = write_config(tmp_path, digits_dir, {}, n_trials=2)
    assert search_main(["--config", str(path), *args]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "runs" / "optuna_studies" / "optuna.db").exists()


def test_without_ray_installed_one_clear_line(digits_dir: Path, tmp_path: Path) -> None:
    """`ray` hidden from the interpreter (None in sys.modules makes every import of it fail)."""
    path = write_config(tmp_path, digits_dir, {}, n_trials=2)
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from ml_framework.cli.search import main\n"
        f"sys.exit(main(['--config', {str(path)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert 'pip install "ml_framework[ray]"' in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "optuna_studies" / "optuna.db").exists()


def test_resources_the_cluster_lacks_fail_before_any_study(
    ray_runtime: None, digits_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    path = write_config(tmp_path, digits_dir, {}, n_trials=2)
    assert search_main(["--config", str(path), "--resources-per-trial", "cpu:64"]) == 2
    assert "the Ray cluster has 2 CPU(s)" in capsys.readouterr().err
    db = tmp_path / "runs" / "optuna_studies" / "optuna.db"  # made while the runtime started: no study
    assert optuna.get_all_study_names(f"sqlite:///{db}") == []


# -- the runtime a search starts for itself -------------------------------------------------------------


def left_running(marker: str, wait: float = 20) -> list[str]:
    """Processes whose command line names `marker` (Ray's temp dir), after waiting for them to exit."""
    deadline = time.monotonic() + wait
    while True:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        alive = [line for line in ps.splitlines() if marker in line]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture
def own_runtime_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """The environment of an ml-search that starts its own Ray runtime, with Ray's temp dir (short: it
    holds Unix sockets) named in its processes' command lines."""
    pytest.importorskip("ray")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield {**os.environ, "RAY_TMPDIR": ray_tmp}, ray_tmp
    shutil.rmtree(ray_tmp, ignore_errors=True)


def ml_search(config: Path, study: str) -> list[str]:
    return [sys.executable, "-m", "ml_framework.cli.search", "--config", str(config), "--study-name", study]


@pytest.mark.slow
def test_a_search_starts_its_own_runtime_and_shuts_it_down(
    own_runtime_env: tuple[dict[str, str], str], digits_dir: Path, tmp_path: Path
) -> None:
    env, ray_tmp = own_runtime_env
    path = write_config(tmp_path, digits_dir, {}, n_trials=2, epochs=1)
    done = subprocess.run(ml_search(path, "own"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "SIGTERM handler" not in done.stderr
    assert [t.state for t in load(tmp_path, "own").trials] == [State.COMPLETE] * 2
    assert left_running(ray_tmp) == []


@pytest.mark.slow
def test_sigterm_ends_the_search_as_ctrl_c_does(
    own_runtime_env: tuple[dict[str, str], str], digits_dir: Path, tmp_path: Path
) -> None:
    env, ray_tmp = own_runtime_env
    path = write_config(tmp_path, digits_dir, {}, n_trials=3, epochs=50)
    proc = subprocess.Popen(
        ml_search(path, "term"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        pid_file = tmp_path / "runs" / "optuna_studies" / "term" / "trial_0" / "worker.pid"
        deadline = time.monotonic() + 120
        while not pid_file.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert pid_file.is_file(), "trial 0 never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err  # as Ctrl-C
    states = {t.state for t in load(tmp_path, "term").trials}
    assert states == {State.FAIL}, states  # none left RUNNING
    assert left_running(ray_tmp) == []


# -- searches on a local runtime ----------------------------------------------------------------------


@pytest.mark.slow
def test_asha_prunes_and_best_config_reproduces(ray_runtime: None, digits_dir: Path, tmp_path: Path) -> None:
    ray = {"scheduler": {"type": "asha", "reduction_factor": 2}, "max_concurrent": 2}
    path = write_config(tmp_path, digits_dir, ray, n_trials=8)
    assert search_main(["--config", str(path), "--study-name", "asha"]) == 0
    study = load(tmp_path, "asha")
    states = [t.state for t in study.trials]
    assert states.count(State.COMPLETE) + states.count(State.PRUNED) == 8
    pruned = [t for t in study.trials if t.state == State.PRUNED]
    assert pruned and all(t.user_attrs["last_epoch"] < 4 for t in pruned)
    assert all(t.user_attrs["stopped_by"] == "ASHAScheduler" for t in pruned)
    # every trial has its params, its epochs as intermediate values and a run dir of its own number
    for t in study.trials:
        assert set(t.params) == set(SPACE)
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["last_epoch"] + 1))
        assert t.user_attrs["run_dir"].endswith(f"trial_{t.number}")
    out = tmp_path / "runs" / "optuna_studies" / "asha"
    rows = list(csv.DictReader((out / "trial_history.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(8))
    assert json.loads((out / "summary.json").read_text())["n_pruned"] == len(pruned)
    assert list((tmp_path / "runs" / "ray" / "asha").glob("trial_0_*"))  # Ray's own results
    # best_config.yaml reproduces the best trial's value with ml-train's run_training
    from ml_framework.config import load_config
    from ml_framework.training.run import run_training

    best = study.best_trial
    cfg = load_config(out / "best_config.yaml")
    cfg.output.runs_dir = str(tmp_path / "repro")
    assert run_training(cfg, progress=False).value("val_acc") == pytest.approx(best.value, abs=1e-9)


@pytest.mark.slow
def test_pbt_perturbs_and_resumes_from_checkpoints(
    ray_runtime: None, digits_dir: Path, tmp_path: Path
) -> None:
    ray = {"scheduler": {"type": "pbt", "perturbation_interval": 1}}
    path = write_config(tmp_path, digits_dir, ray, n_trials=4)
    assert search_main(["--config", str(path), "--study-name", "pbt", "--seed", "0"]) == 0
    study = load(tmp_path, "pbt")
    assert [t.state for t in study.trials] == [State.COMPLETE] * 4
    out = tmp_path / "runs" / "optuna_studies" / "pbt"
    exploited = [t for t in study.trials if len(t.user_attrs["pbt_history"]) > 1]
    assert exploited
    t = exploited[0]
    first, exploit = t.user_attrs["pbt_history"][0], t.user_attrs["pbt_history"][1]
    assert first["epoch"] == 0 and exploit["changed"] and exploit["from_trial"] != t.number
    key, (old, new) = next(iter(exploit["changed"].items()))
    assert old != new
    log = (out / f"trial_{t.number}" / "train.log").read_text()
    assert (
        f"PBT: continuing from trial_{exploit['from_trial']}'s checkpoint after epoch {exploit['epoch']}"
        in log
    )
    assert f"resumed with {key}: {old!r} -> {new!r}" in log
    # the study keeps each trial's final values; the history is in trial_history.csv
    last_values = t.user_attrs["pbt_history"][-1]["params"]
    assert t.params == pytest.approx(last_values)
    rows = {int(r["number"]): r for r in csv.DictReader((out / "trial_history.csv").open())}
    assert json.loads(rows[t.number]["pbt_history"]) == t.user_attrs["pbt_history"]
    header = (out / "best_config.yaml").read_text().split("\n\n")[0]
    assert "Population Based Training" in header and "epochs 1-" in header
    schedule = json.loads((out / "pbt_schedule.json").read_text())
    assert schedule["trial"] == study.best_trial.number and schedule["lineage"][-1]["to_epoch"] == 4


@pytest.mark.slow
def test_killed_trial_restarts_from_its_checkpoint(
    ray_runtime: None, digits_dir: Path, tmp_path: Path
) -> None:
    """The worker process of trial 0 is SIGKILLed once, after Tune holds its first checkpoint (reports are
    synchronous: the second checkpoint on disk means Tune has taken the first)."""
    path = write_config(tmp_path, digits_dir, {"max_failures": 1}, n_trials=1, epochs=8)
    run_dir = tmp_path / "runs" / "optuna_studies" / "kill" / "trial_0"
    killed: list[int] = []

    def kill_once() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            ckpts = list((tmp_path / "runs" / "ray" / "kill").glob("trial_0_*/checkpoint_000001"))
            if ckpts and (run_dir / "worker.pid").is_file():
                pid = int((run_dir / "worker.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_once, daemon=True)
    killer.start()
    assert search_main(["--config", str(path), "--study-name", "kill"]) == 0
    killer.join()
    assert killed
    study = load(tmp_path, "kill")
    assert [t.state for t in study.trials] == [State.COMPLETE]  # the budget is met
    assert study.trials[0].user_attrs["last_epoch"] == 8
    log = (run_dir / "train.log").read_text()
    assert "restarted by Ray Tune from its checkpoint after epoch" in log
    assert "resumed from" in log
    assert int((run_dir / "worker.pid").read_text()) != killed[0]  # another process finished it
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(1, 9))


def test_pbt_lineage_follows_the_donors() -> None:
    """Trial 2 took trial 1's weights after epoch 3, which had taken trial 0's after epoch 1."""
    from ml_framework.search.pbt_schedule import lineage

    histories = {
        0: [{"epoch": 0, "params": {"lr": 0.1}}],
        1: [{"epoch": 0, "params": {"lr": 0.5}}, {"epoch": 1, "from_trial": 0, "params": {"lr": 0.12}}],
        2: [{"epoch": 0, "params": {"lr": 0.9}}, {"epoch": 3, "from_trial": 1, "params": {"lr": 0.08}}],
    }
    assert lineage(histories, 2, 5) == [
        {"from_epoch": 1, "to_epoch": 1, "trial": 0, "params": {"lr": 0.1}},
        {"from_epoch": 2, "to_epoch": 3, "trial": 1, "params": {"lr": 0.12}},
        {"from_epoch": 4, "to_epoch": 5, "trial": 2, "params": {"lr": 0.08}},
    ]
    assert lineage(histories, 0, 4) == [{"from_epoch": 1, "to_epoch": 4, "trial": 0, "params": {"lr": 0.1}}]


def test_tune_telemetry_counts_callbacks_without_importing_trackers() -> None:
    """Ray's usage telemetry imports mlflow and wandb (when installed) to count a run's callbacks by
    class name; `count_callbacks`, which ml-search puts in its place, gives the same counts without."""
    pytest.importorskip("ray")
    pytest.importorskip("mlflow")  # what the check is about: installed, and still never imported
    code = (
        "import json, sys\n"
        "import ray.tune\n"
        "from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback\n"
        "from ml_framework.search import ray_tune as rt\n"
        "class Mine(ray.tune.Callback): pass\n"
        "class MyLogger(LoggerCallback): pass\n"
        "cbs = [Mine(), CSVLoggerCallback(), JsonLoggerCallback(), MyLogger(), Mine(), object()]\n"
        "ours = rt.count_callbacks(cbs)\n"
        "light = not {'mlflow', 'wandb'} & set(sys.modules)\n"
        "from ray.air._internal import usage\n"
        "rays = dict(usage._count_callbacks(cbs))\n"
        "rt.count_callbacks_by_name()\n"
        "print(json.dumps([ours, rays, light, usage._count_callbacks is rt.count_callbacks]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ours, rays, light, replaced = json.loads(done.stdout.strip().splitlines()[-1])
    assert ours == rays == {"CustomCallback": 2, "CSVLoggerCallback": 1, "JsonLoggerCallback": 1,
                            "CustomLoggerCallback": 1}  # fmt: skip
    assert light and replaced
