"""The strategy surface of ml-search on the real digits: multi-objective Pareto fronts, k-fold CV,
exact grids (one and two workers), inline parameters, search early stopping, warm start."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from test_search import storage, write_config

from ml_framework.cli.search import main as search_main

COMPLETE = optuna.trial.TrialState.COMPLETE
GRID = {
    "optimizer.name": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "model.width": {"type": "categorical", "choices": [4, 8, 16]},
}


def study_of(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage(tmp_path))


def out_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "runs" / "optuna_studies" / name


def test_pareto_front_of_accuracy_and_latency(digits_dir: Path, tmp_path: Path, capsys) -> None:
    space = {
        "model.width": {"type": "int", "low": 4, "high": 32, "step": 4},
        **{k: v for k, v in GRID.items() if k == "optimizer.name"},
    }
    # the schema's default sampler (not chosen by the user) becomes NSGA-II for several objectives
    search = {"search_space": space, "sampler": {"type": "TPESampler"}}
    path = write_config(tmp_path / "mo.yaml", digits_dir, tmp_path / "runs", search, epochs=1)
    args = [
        "--config",
        str(path),
        "--study-name",
        "mo",
        "--n-trials",
        "6",
        "--optimize",
        "val_acc,latency_ms",
        "--directions",
        "maximize,minimize",
    ]
    assert search_main(args) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "ignored" in out  # MedianPruner of the config: said once
    study = study_of(tmp_path, "mo")
    assert study.user_attrs["sampler"] == "NSGAIISampler"
    front = sorted(study.best_trials, key=lambda t: t.number)
    rows = list(csv.DictReader((out_dir(tmp_path, "mo") / "pareto_front.csv").open()))
    assert [int(r["number"]) for r in rows] == [t.number for t in front]
    assert [[float(r["val_acc"]), float(r["latency_ms"])] for r in rows] == [t.values for t in front]
    assert all(t.values[1] > 0 for t in study.trials if t.state == COMPLETE)
    configs = sorted(p.name for p in (out_dir(tmp_path, "mo") / "pareto").glob("*.yaml"))
    assert configs == sorted(f"trial_{t.number}.yaml" for t in front)
    summary = json.loads((out_dir(tmp_path, "mo") / "summary.json").read_text())
    assert [p["trial"] for p in summary["pareto_front"]] == [t.number for t in front]
    # a Pareto config is a runnable training config reproducing the trial's accuracy
    from ml_framework.config import load_config
    from ml_framework.training.run import run_training

    cfg = load_config(out_dir(tmp_path, "mo") / "pareto" / f"trial_{front[0].number}.yaml")
    cfg.output.runs_dir = str(tmp_path / "repro")
    assert run_training(cfg, progress=False).value("val_acc") == front[0].values[0]


@pytest.mark.parametrize("stratified", [True, False], ids=["stratified", "plain"])
def test_cross_validation_records_fold_scores_and_their_mean(
    digits_dir: Path, tmp_path: Path, capsys, stratified: bool
) -> None:
    path = write_config(
        tmp_path / "cv.yaml", digits_dir, tmp_path / "runs", {"pruner": {"type": "NopPruner"}}, epochs=1
    )
    args = ["--config", str(path), "--study-name", "cv", "--n-trials", "2", "--cv", "3"]
    assert search_main([*args, f"search.cross_validation.stratified={str(stratified).lower()}"]) == 0
    assert "± " in capsys.readouterr().out
    study = study_of(tmp_path, "cv")
    finished = [t for t in study.trials if t.state == COMPLETE]
    assert len(finished) == 2
    for t in finished:
        scores = t.user_attrs["cv_scores"]
        assert len(scores) == 3 and t.value == pytest.approx(sum(scores) / 3)
        assert sorted(p.name for p in Path(t.user_attrs["run_dir"]).glob("fold_*")) == [
            "fold_0",
            "fold_1",
            "fold_2",
        ]
        fold_cfg = yaml.safe_load((Path(t.user_attrs["run_dir"]) / "fold_1" / "config.yaml").read_text())
        assert fold_cfg["data"]["stratified_folds"] is stratified
    rows = list(csv.DictReader((out_dir(tmp_path, "cv") / "cv_scores.csv").open()))
    assert len(rows) == 6 and {r["fold"] for r in rows} == {"0", "1", "2"}
    history = list(csv.DictReader((out_dir(tmp_path, "cv") / "trial_history.csv").open()))
    assert json.loads(history[0]["cv_scores"]) == finished[0].user_attrs["cv_scores"]


@pytest.mark.parametrize("workers", [1, 2])
def test_grid_runs_exactly_its_points(digits_dir: Path, tmp_path: Path, workers: int) -> None:
    path = write_config(
        tmp_path / "g.yaml",
        digits_dir,
        tmp_path / "runs",
        {"search_space": GRID, "pruner": {"type": "NopPruner"}, "n_trials": None},
        epochs=1,
    )
    # no n_trials: the grid's size (6)
    assert (
        search_main(
            ["--config", str(path), "--study-name", "g", "--strategy", "grid", "--n-workers", str(workers)]
        )
        == 0
    )
    study = study_of(tmp_path, "g")
    combos = [(t.params["optimizer.name"], t.params["model.width"]) for t in study.trials]
    assert len(combos) == 6 and len(set(combos)) == 6
    assert all(t.state == COMPLETE for t in study.trials)


def test_early_stopping_ends_before_budget(digits_dir: Path, tmp_path: Path, capsys) -> None:
    # one point only: every trial after the first repeats its value, so nothing improves
    space = {"model.width": {"type": "categorical", "choices": [8]}}
    path = write_config(
        tmp_path / "es.yaml",
        digits_dir,
        tmp_path / "runs",
        {"search_space": space, "pruner": {"type": "NopPruner"}},
        epochs=1,
    )
    assert (
        search_main(
            [
                "--config",
                str(path),
                "--study-name",
                "es",
                "--n-trials",
                "12",
                "--early-stopping",
                "--patience",
                "3",
            ]
        )
        == 0
    )
    assert "stopped early" in capsys.readouterr().out
    assert len(study_of(tmp_path, "es").trials) == 4
    summary = json.loads((out_dir(tmp_path, "es") / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["trials_without_improvement"] == 3


def test_inline_params_and_enqueue(digits_dir: Path, tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "i.yaml", digits_dir, tmp_path / "runs", {"pruner": {"type": "NopPruner"}}, epochs=1
    )
    warm = tmp_path / "warm.yaml"
    warm.write_text(yaml.safe_dump([{"optimizer.lr": 0.02, "training.batch_size": 32, "model.width": 12}]))
    assert (
        search_main(
            [
                "--config",
                str(path),
                "--study-name",
                "i",
                "--n-trials",
                "3",
                "--param",
                "optimizer.lr=continuous:0.001-0.05:log",
                "--param",
                "model.width=discrete:4-16:4",
                "--enqueue",
                str(warm),
            ]
        )
        == 0
    )
    study = study_of(tmp_path, "i")
    first = min(study.trials, key=lambda t: t.number)
    assert {k: first.params[k] for k in ("optimizer.lr", "training.batch_size", "model.width")} == {
        "optimizer.lr": 0.02,
        "training.batch_size": 32,
        "model.width": 12,
    }
    dists = study.trials[-1].distributions
    assert dists["optimizer.lr"].log and dists["model.width"].step == 4 and "model.dropout" in dists
    assert all(t.params["model.width"] in (4, 8, 12, 16) for t in study.trials)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--param", "optimizer.lr=continuous:0.01-0.1:lg"], "lg"),
        (["--param", "optimizer.lr=gaussian:0-1"], "gaussian"),
        (["--param", "optimizer.lr"], "NAME=TYPE:SPEC"),
        (["--param", "optimizer.lr=continuous:0.1-0.01"], "low"),
        (["--optimize", "val_acc,latency"], "latency_ms"),
        (["--optimize", "val_acc,latency_ms", "--directions", "maximize"], "one entry per metric"),
        (["--cv", "1"], "n_folds"),
        (["--early-stopping", "--patience", "0"], "patience"),
        (["--enqueue", "missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_strategy_input_fails_before_any_study(
    digits_dir: Path, tmp_path: Path, capsys, args: list[str], fragment: str
) -> None:
    path = write_config(tmp_path / "bad.yaml", digits_dir, tmp_path / "runs")
    assert search_main(["--config", str(path), *args]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "runs" / "optuna_studies" / "optuna.db").exists()


def test_enqueue_outside_space_is_rejected(digits_dir: Path, tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path / "e.yaml", digits_dir, tmp_path / "runs")
    bad: list[dict[str, Any]] = [{"training.batch_size": 48}]
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(bad))
    assert search_main(["--config", str(path), "--enqueue", str(tmp_path / "w.yaml")]) == 2
    assert "batch_size=48" in capsys.readouterr().err
