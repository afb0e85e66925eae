"""A search keeps its promises: exactly the grid, the study's timeout, directions from the metric,
diverged trials pruned, no pruning at the last step, and a best/Pareto config that ml-train runs."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import BIN

from ml_framework.cli.search import main as search_main
from ml_framework.errors import ConfigError

State = optuna.trial.TrialState
GRID = {  # 2 x 3 points
    "optimizer.name": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "model.width": {"type": "categorical", "choices": [4, 6, 8]},
}


def write_config(
    path: Path, data_dir: Path, search: dict[str, Any], epochs: int = 1, **sections: Any
) -> Path:
    cfg: dict[str, Any] = {
        "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 4, "depth": 1},
        "training": {"num_epochs": epochs, "batch_size": 128, "device": "cpu", "seed": 0},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "output": {"runs_dir": str(path.parent / "runs")},
        "search": {
            "n_trials": 2,
            "pruner": {"type": "NopPruner"},
            "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2}},
            **search,
        },
    }
    for name, values in sections.items():
        cfg[name].update(values)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def storage(cfg_path: Path) -> str:
    return f"sqlite:///{cfg_path.parent / 'runs' / 'optuna_studies' / 'optuna.db'}"


def trials_of(cfg_path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage(cfg_path)).get_trials(deepcopy=False)


def points(trials: list[optuna.trial.FrozenTrial], state: State = State.COMPLETE) -> list[tuple[Any, ...]]:
    return [tuple(sorted(t.params.items())) for t in trials if t.state == state]


# -- item 5: exactly the grid ----------------------------------------------------------------------


@pytest.mark.slow
def test_seeded_grid_with_two_workers_runs_each_point_once(digits_dir: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "g.yaml", digits_dir, {"search_space": GRID})
    args = ["--config", str(path), "--study-name", "g", "--strategy", "grid", "--seed", "1"]
    assert search_main([*args, "--n-workers", "2", "--n-trials", "6"]) == 0
    trials = trials_of(path, "g")
    assert len(trials) == 6 and len(set(points(trials))) == 6, [t.params for t in trials]


def test_resumed_grid_runs_only_the_missing_points(digits_dir: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "g.yaml", digits_dir, {"search_space": GRID, "sampler": {"type": "grid"}})
    args = ["--config", str(path), "--study-name", "g", "--seed", "3"]
    assert search_main([*args, "--n-trials", "3"]) == 0  # stopped half way
    assert len(trials_of(path, "g")) == 3
    assert search_main([*args, "--resume"]) == 0  # no --n-trials: the rest of the grid, not a new grid
    trials = trials_of(path, "g")
    assert len(trials) == 6 and len(set(points(trials))) == 6, [t.params for t in trials]
    assert search_main([*args, "--resume"]) == 0  # nothing left
    assert len(trials_of(path, "g")) == 6


def test_failed_grid_point_is_retried_on_resume(digits_dir: Path, tmp_path: Path) -> None:
    space = {"optimizer.nesterov": {"type": "categorical", "choices": [False, True]}}
    path = write_config(tmp_path / "f.yaml", digits_dir, {"search_space": space, "sampler": {"type": "grid"}})
    args = ["--config", str(path), "--study-name", "f", "optimizer.name=sgd"]
    # nesterov without momentum raises: that point fails, once, and the search ends
    assert search_main([*args, "optimizer.momentum=0"]) == 0
    trials = trials_of(path, "f")
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]
    assert search_main([*args, "optimizer.momentum=0.9", "--resume"]) == 0
    trials = trials_of(path, "f")
    assert [t.state for t in trials[2:]] == [State.COMPLETE], "only the failed point runs again"
    assert {p[0][1] for p in points(trials)} == {False, True}


# -- item 6: search.timeout is the study's ---------------------------------------------------------


def finished_trials(db: Path) -> int:
    """Read-only count (opening an Optuna storage here would race the search creating its tables)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


# The deadline is checked just before a trial's ask; Optuna stamps the start during the ask.
ASK_TIME = 0.25


@pytest.mark.slow
def test_timeout_is_the_study_deadline_for_every_process(digits_dir: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "t.yaml", digits_dir, {"n_trials": 500})
    args = [str(BIN / "ml-search"), "--config", str(path), "--study-name", "t", "--join"]
    procs = [subprocess.Popen([*args, "--timeout", "6"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)]
    try:
        waited = time.monotonic() + 60
        while time.monotonic() < waited and procs[0].poll() is None:
            if finished_trials(path.parent / "runs" / "optuna_studies" / "optuna.db"):
                break
            time.sleep(0.2)
        procs.append(subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, text=True))  # no --timeout
        for proc in procs:
            out, _ = proc.communicate(timeout=60)  # without the study's deadline: 500 trials
            assert proc.returncode == 0, out
    finally:
        for proc in procs:
            proc.kill()
    study = optuna.load_study(study_name="t", storage=storage(path))
    deadline = study.user_attrs["deadline"]
    trials = study.get_trials(deepcopy=False)
    assert 1 <= len(trials) < 500
    assert all(t.datetime_start.timestamp() <= deadline + ASK_TIME for t in trials)
    # --resume --timeout T: a new window of T seconds from now
    assert search_main(["--config", str(path), "--study-name", "t", "--resume", "--timeout", "1.5"]) == 0
    study = optuna.load_study(study_name="t", storage=storage(path))
    new = study.get_trials(deepcopy=False)[len(trials) :]
    assert new and all(
        deadline < t.datetime_start.timestamp() <= study.user_attrs["deadline"] + ASK_TIME for t in new
    )


# -- item 7: directions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("search", "directions"),
    [
        ({"metric": "val_loss"}, ["minimize"]),
        ({"metric": "val_f1"}, ["maximize"]),
        ({"metrics": ["val_acc", "latency_ms"]}, ["maximize", "minimize"]),
        ({"metrics": ["params", "model_mb", "train_time_s"]}, ["minimize"] * 3),
        ({"metric": "val_loss", "direction": "maximize"}, ["maximize"]),  # explicit wins (with a warning)
        (
            {"metrics": ["val_acc", "val_loss"], "directions": ["minimize", "maximize"]},
            ["minimize", "maximize"],
        ),
        ({"metrics": ["val_loss"], "direction": "maximize"}, ["minimize"]),  # `direction` goes with `metric`
    ],
)
def test_direction_defaults_from_the_metric(
    digits_dir: Path, tmp_path: Path, search: dict[str, Any], directions: list[str]
) -> None:
    from ml_framework.config import load_config
    from ml_framework.search.study import resolve_settings

    settings = resolve_settings(load_config(write_config(tmp_path / "d.yaml", digits_dir, search)))
    assert settings.directions == directions
    against_name = "directions" in search or ("direction" in search and "metric" in search)
    assert any("Its name implies" in w for w in settings.warnings) == against_name


def test_a_metric_without_a_direction_in_its_name_needs_one(digits_dir: Path, tmp_path: Path) -> None:
    from ml_framework.config import load_config
    from ml_framework.search.study import resolve_settings

    with pytest.raises(ConfigError, match=r"set search\.direction"):
        resolve_settings(load_config(write_config(tmp_path / "d.yaml", digits_dir, {"metric": "lr"})))


def test_resume_or_join_with_other_objectives_is_an_error(digits_dir: Path, tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path / "o.yaml", digits_dir, {"n_trials": 1})
    args = ["--config", str(path), "--study-name", "o"]
    assert search_main(args) == 0
    capsys.readouterr()
    assert search_main([*args, "--resume", "--n-trials", "1", "--optimize", "val_loss"]) == 2
    err = capsys.readouterr().err
    assert "val_acc (maximize)" in err and "val_loss (minimize)" in err
    assert search_main([*args, "--join", "--optimize", "val_acc,params"]) == 2
    assert search_main([*args, "--resume", "--n-trials", "1", "--directions", "minimize"]) == 2
    assert len(trials_of(path, "o")) == 1


# -- item 8: diverged trials, no pruning at the last step -------------------------------------------


@pytest.mark.parametrize(
    "extra", [[], ["--cv", "2"], ["--optimize", "val_acc,params"]], ids=["epochs", "cv", "two-objectives"]
)
def test_diverged_trial_is_pruned_where_it_diverged(
    digits_dir: Path, tmp_path: Path, capsys, extra: list[str]
) -> None:
    space = {"optimizer.lr": {"type": "categorical", "choices": [0.01, 1e30]}}
    path = write_config(
        tmp_path / "nan.yaml",
        digits_dir,
        {"search_space": space, "sampler": {"type": "grid"}, "pruner": {"type": "MedianPruner"}},
        epochs=2,
    )
    assert search_main(["--config", str(path), "--study-name", "nan", *extra]) == 0
    assert "diverged (NaN/inf loss) at epoch 1, pruned" in capsys.readouterr().out
    by_lr = {t.params["optimizer.lr"]: t for t in trials_of(path, "nan")}
    assert len(by_lr) == 2 and by_lr[0.01].state == State.COMPLETE  # the diverged one counts to the budget
    bad = by_lr[1e30]
    assert bad.state == State.PRUNED and bad.user_attrs["diverged"] is True and bad.values is None
    if "--optimize" in extra:  # Optuna keeps no intermediate values with several objectives
        assert bad.intermediate_values == {}
    else:  # NaN at the epoch (or fold) it diverged in: samplers rank it below that step's trials
        assert list(bad.intermediate_values) == [1] and math.isnan(bad.intermediate_values[1])
    summary = json.loads((tmp_path / "runs" / "optuna_studies" / "nan" / "summary.json").read_text())
    assert summary["n_pruned"] == 1 and summary["n_fail"] == 0


@pytest.mark.parametrize(("epochs", "state", "last_step"), [(1, State.COMPLETE, 1), (2, State.PRUNED, 1)])
def test_the_last_epoch_is_never_pruned(
    digits_dir: Path, tmp_path: Path, epochs: int, state: State, last_step: int
) -> None:
    # this pruner prunes every trial at every step (val_acc is never above 1.01)
    pruner = {"type": "ThresholdPruner", "lower": 1.01}
    path = write_config(tmp_path / "p.yaml", digits_dir, {"n_trials": 1, "pruner": pruner}, epochs=epochs)
    code = search_main(["--config", str(path), "--study-name", "p"])
    assert code == (0 if state == State.COMPLETE else 1)  # 1: no completed trial
    (trial,) = trials_of(path, "p")
    assert trial.state == state and trial.last_step == last_step


def test_the_last_fold_is_never_pruned(digits_dir: Path, tmp_path: Path) -> None:
    pruner = {"type": "ThresholdPruner", "lower": 1.01}
    path = write_config(tmp_path / "p.yaml", digits_dir, {"n_trials": 1, "pruner": pruner})
    assert search_main(["--config", str(path), "--study-name", "cv", "--cv", "2"]) == 1  # none complete
    (trial,) = trials_of(path, "cv")
    assert trial.state == State.PRUNED and trial.last_step == 1  # pruned after fold 1 of 2, not after 2
    # with 2 warm-up steps it would prune only at step 2, the last fold: it does not
    args = ["--config", str(path), "--study-name", "cv2", "--cv", "2", "search.pruner.n_warmup_steps=2"]
    assert search_main(args) == 0
    (trial,) = trials_of(path, "cv2")
    assert trial.state == State.COMPLETE and trial.last_step == 2


# -- item 9: best_config.yaml and Pareto configs run ------------------------------------------------


def ml_train(config: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "ml-train"), "--config", str(config)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_best_and_pareto_configs_of_non_trainer_metrics_run(digits_dir: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "l.yaml", digits_dir, {"n_trials": 1, "metric": "latency_ms"})
    assert search_main(["--config", str(path), "--study-name", "lat"]) == 0
    best = tmp_path / "runs" / "optuna_studies" / "lat" / "best_config.yaml"
    text = best.read_text()
    assert "latency_ms=" in text.split("\n", 1)[0]  # the search metric, in the comment header
    assert yaml.safe_load(text)["training"]["monitor"] == "val_acc"
    assert search_main(["--config", str(path), "--study-name", "par", "--optimize", "latency_ms,params"]) == 0
    (pareto,) = list((tmp_path / "runs" / "optuna_studies" / "par" / "pareto").glob("trial_*.yaml"))[:1]
    runs = [ml_train(best, tmp_path), ml_train(pareto, tmp_path)]
    for proc in runs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out


def test_cv_best_config_says_where_its_value_came_from(digits_dir: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", digits_dir, {"n_trials": 1})
    assert search_main(["--config", str(path), "--study-name", "cvb", "--cv", "2"]) == 0
    text = (tmp_path / "runs" / "optuna_studies" / "cvb" / "best_config.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("mean over 2 cross-validation folds" in line for line in header), header
    assert any("fixed train/val split" in line for line in header), header
    from ml_framework.config import load_config

    assert load_config(tmp_path / "runs" / "optuna_studies" / "cvb" / "best_config.yaml").data.fold is None
