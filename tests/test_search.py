"""ml-search end to end on the real digits: real Optuna studies on real SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import run_cli

from ml_framework.cli.search import main as search_main

SPACE: dict[str, Any] = {
    "optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2},
    "training.batch_size": {"type": "categorical", "choices": [32, 64]},
    "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
}


def write_config(
    path: Path, data_dir: Path, runs_dir: Path, search: dict[str, Any] | None = None, epochs: int = 3
) -> Path:
    cfg = {
        "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 8, "depth": 1},
        "training": {"num_epochs": epochs, "batch_size": 64, "device": "cpu", "seed": 0},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "output": {"runs_dir": str(runs_dir)},
        "search": {
            "n_trials": 4,
            "metric": "val_acc",
            "direction": "maximize",
            "sampler": {"type": "RandomSampler", "seed": 0},
            "pruner": {"type": "MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1},
            "search_space": SPACE,
            **(search or {}),
        },
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def cfg_path(digits_dir: Path, tmp_path: Path) -> Path:
    return write_config(tmp_path / "search.yaml", digits_dir, tmp_path / "runs")


def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs' / 'optuna_studies' / 'optuna.db'}"


@pytest.mark.parametrize(
    ("search", "fragment"),
    [
        (
            {"search_space": {"optimizer.lrr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}},
            "optimizer.lr",
        ),
        ({"search_space": {"optimizer.lr": {"type": "uniform", "low": 0.1, "high": 0.01}}}, "low"),
        ({"search_space": {"optimizer.lr": {"type": "loguniform", "low": 0, "high": 0.01}}}, "optimizer.lr"),
        ({"sampler": {"type": "FancySampler"}}, "FancySampler"),
        ({"pruner": {"type": "MedianPruner", "n_warmup": 2}}, "n_warmup"),
        ({"sampler": {"type": "GridSampler"}}, "GridSampler"),
        ({"metric": "val_accuracy"}, "val_accuracy"),
    ],
)
def test_bad_search_config_fails_before_any_study(
    digits_dir: Path, tmp_path: Path, capsys, search, fragment
) -> None:
    path = write_config(tmp_path / "bad.yaml", digits_dir, tmp_path / "runs", search)
    assert search_main(["--config", str(path)]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "runs" / "optuna_studies" / "optuna.db").exists()


def test_dry_run_creates_nothing(cfg_path: Path, tmp_path: Path, capsys) -> None:
    assert search_main(["--config", str(cfg_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "optimizer.lr" in out and "dry run" in out
    assert not (tmp_path / "runs" / "optuna_studies" / "optuna.db").exists()


def test_search_outputs_pruning_and_exact_reproduction(digits_dir: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "s.yaml", digits_dir, tmp_path / "runs", {"n_trials": 8}, epochs=4)
    assert search_main(["--config", str(path), "--study-name", "s1"]) == 0
    study = optuna.load_study(study_name="s1", storage=storage(tmp_path))
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == 8
    out = tmp_path / "runs" / "optuna_studies" / "s1"
    for name in ("best_config.yaml", "best_params.json", "trial_history.csv", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_trial"] == study.best_trial.number and summary["n_complete"] >= 1
    rows = list(csv.DictReader((out / "trial_history.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(8)) and "optimizer.lr" in rows[0]
    # the trial's value is its best epoch's val_acc, the epoch of its best checkpoint
    best = study.best_trial
    metrics = json.loads((Path(best.user_attrs["run_dir"]) / "metrics.json").read_text())
    assert metrics["best"]["val_acc"] == best.value and metrics["best_epoch"] == best.user_attrs["best_epoch"]
    # only the best trial keeps weights; no resume checkpoints remain
    assert sorted(p.parent.parent.name for p in out.glob("trial_*/checkpoints/best.pt")) == [
        f"trial_{best.number}"
    ]
    assert not list(out.glob("trial_*/checkpoints/last.pt"))
    # best_config.yaml has no search block and reproduces the value exactly
    best_cfg = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "search" not in best_cfg
    from ml_framework.config import load_config
    from ml_framework.training.run import run_training

    cfg = load_config(out / "best_config.yaml")
    cfg.output.runs_dir = str(tmp_path / "repro")
    assert run_training(cfg, progress=False).value("val_acc") == best.value
    # TensorBoard's own reader finds per-epoch scalars and an hparams session for every trial
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for t in study.trials:
        acc = EventAccumulator(t.user_attrs["run_dir"], size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        assert len(acc.Scalars("val_acc")) == t.user_attrs["last_epoch"]
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    # an existing study name needs --resume
    assert search_main(["--config", str(path), "--study-name", "s1"]) == 2


def test_resume_adds_trials_without_replaying(cfg_path: Path, tmp_path: Path) -> None:
    assert (
        search_main(["--config", str(cfg_path), "--study-name", "r", "--n-trials", "3", "--pruner", "none"])
        == 0
    )
    assert (
        search_main(
            [
                "--config",
                str(cfg_path),
                "--study-name",
                "r",
                "--resume",
                "--n-trials",
                "2",
                "--pruner",
                "none",
            ]
        )
        == 0
    )
    study = optuna.load_study(study_name="r", storage=storage(tmp_path))
    assert len(study.trials) == 5
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 5, "a resumed seeded sampler replayed earlier parameters"
    assert search_main(["--config", str(cfg_path), "--study-name", "missing", "--resume"]) == 2


def test_failing_trials_are_recorded_and_search_goes_on(digits_dir: Path, tmp_path: Path) -> None:
    space = {"optimizer.nesterov": {"type": "categorical", "choices": [False, True]}}
    path = write_config(
        tmp_path / "f.yaml",
        digits_dir,
        tmp_path / "runs",
        {
            "search_space": space,
            "n_trials": 3,
            "sampler": {"type": "GridSampler"},
            "pruner": {"type": "NopPruner"},
        },
        epochs=2,
    )
    code = search_main(
        [
            "--config",
            str(path),
            "--study-name",
            "f",
            "optimizer.name=sgd",
            "optimizer.momentum=0",
        ]
    )
    study = optuna.load_study(study_name="f", storage=storage(tmp_path))
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # nesterov without momentum is an invalid combination: recorded FAIL with its error, search goes on
    assert len(failed) == 1 and "nesterov" in failed[0].user_attrs["error"]
    assert completed and code == 0 and study.best_trial.params["optimizer.nesterov"] is False
    fast = write_config(
        tmp_path / "ff.yaml",
        digits_dir,
        tmp_path / "runs",
        {
            "search_space": {"optimizer.nesterov": {"type": "categorical", "choices": [True]}},
            "pruner": {"type": "NopPruner"},
        },
        epochs=1,
    )
    assert (
        search_main(
            [
                "--config",
                str(fast),
                "--study-name",
                "ff",
                "--fail-fast",
                "optimizer.name=sgd",
                "optimizer.momentum=0",
            ]
        )
        == 1
    )
    study = optuna.load_study(study_name="ff", storage=storage(tmp_path))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


@pytest.mark.postgres
def test_postgres_backed_search(cfg_path: Path, postgres_url: str, unique_name: str) -> None:
    args = [
        "--config",
        str(cfg_path),
        "--study-name",
        unique_name,
        "--storage",
        postgres_url,
        "--pruner",
        "none",
    ]
    try:
        assert search_main([*args, "--n-trials", "2"]) == 0
        assert search_main([*args, "--resume", "--n-trials", "1"]) == 0
        study = optuna.load_study(study_name=unique_name, storage=postgres_url)
        assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 3
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3
    finally:
        optuna.delete_study(study_name=unique_name, storage=postgres_url)


@pytest.mark.slow
def test_ml_search_cli_subprocess(cfg_path: Path, tmp_path: Path) -> None:
    r = run_cli(["ml-search", "--config", str(cfg_path), "--n-trials", "2", "--study-name", "cli"], tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Trial 000" in r.stdout and "best trial" in r.stdout and "ml-train --config" in r.stdout
