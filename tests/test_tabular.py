"""Tables as a first-class input: scikit-learn's real breast_cancer and diabetes as CSV files through
ml-train, ml-search (cross-validation, pruning at boosting rounds, best_config.yaml) and ml-init-config,
time-ordered splits, and clear errors for bad tables."""

from __future__ import annotations

import csv
import gc
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from conftest import REPO

from ml_framework.cli.init_config import main as init_main
from ml_framework.cli.search import main as search_main
from ml_framework.cli.train import main as train_main
from ml_framework.training.metrics import CLASSIFICATION_METRICS

sys.path.insert(0, str(REPO / "scripts"))
from make_tabular import write_dataset

PRUNED = optuna.trial.TrialState.PRUNED
COMPLETE = optuna.trial.TrialState.COMPLETE


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tables")
    return {name: write_dataset(name, out) for name in ("breast_cancer", "diabetes")}


def write_config(path: Path, table: Path, runs: Path, model: dict[str, Any], **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "data": {"dataset_name": path.stem, "format": "csv", "path": str(table), "target": "target"},
        "model": model,
        "training": {"seed": 0, "monitor": "val_roc_auc"},
        "output": {"runs_dir": str(runs)},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs' / 'optuna_studies' / 'optuna.db'}"


XGB = {"architecture": "xgboost", "n_estimators": 20, "max_depth": 3, "n_jobs": 1}
SPACES = {
    "sklearn/RandomForestClassifier": {"model.max_depth": {"type": "int", "low": 2, "high": 6}},
    "xgboost": {"model.learning_rate": {"type": "loguniform", "low": 0.01, "high": 0.3}},
    "lightgbm": {"model.num_leaves": {"type": "int", "low": 4, "high": 31}},
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(SPACES))
def test_cv_search_prints_mean_and_std_over_five_folds(
    tables: dict[str, Path], tmp_path: Path, capsys: Any, arch: str
) -> None:
    model = {"architecture": arch, "n_estimators": 10, "n_jobs": 1}
    search = {"n_trials": 2, "sampler": {"type": "RandomSampler", "seed": 0}, "search_space": SPACES[arch]}
    path = write_config(
        tmp_path / "bc.yaml", tables["breast_cancer"], tmp_path / "runs", model, search=search
    )
    assert search_main(["--config", str(path), "--cv", "5", "--metric", "roc_auc"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("Best Score: ") and lines[-1].endswith("(5-fold CV)") and "±" in lines[-1]
    rows = list(csv.DictReader((tmp_path / "runs/optuna_studies/bc_optimization/cv_scores.csv").open()))
    per_trial: dict[str, list[float]] = {}
    for r in rows:
        per_trial.setdefault(r["trial"], []).append(float(r["score"]))
    assert len(per_trial) == 2 and all(len(s) == 5 for s in per_trial.values())
    for r in rows:
        assert float(r["mean"]) == pytest.approx(np.mean(per_trial[r["trial"]]))
    study = optuna.load_study(study_name="bc_optimization", storage=storage(tmp_path))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert all(0.8 < t.value <= 1.0 for t in study.trials)


def search_every_5_rounds(
    tables: dict[str, Path], tmp_path: Path, name: str, model: dict[str, Any], search: dict[str, Any]
) -> list[optuna.trial.FrozenTrial]:
    """ml-search on breast_cancer with boosters reporting every 5 rounds; the study's trials."""
    training = {"seed": 0, "eval_every": 5}
    path = write_config(
        tmp_path / f"{name}.yaml",
        tables["breast_cancer"],
        tmp_path / "runs",
        model,
        search=search,
        training=training,
    )
    assert search_main(["--config", str(path)]) == 0
    return optuna.load_study(study_name=f"{name}_optimization", storage=storage(tmp_path)).trials


@pytest.mark.slow
def test_xgboost_hyperband_prunes_at_boosting_rounds_and_best_config_reproduces(
    tables: dict[str, Path], tmp_path: Path
) -> None:
    model = {**XGB, "n_estimators": 60}
    search = {
        "n_trials": 10,
        "metric": "val_roc_auc",
        "sampler": {"type": "RandomSampler", "seed": 1},
        "pruner": {"type": "HyperbandPruner", "min_resource": 5, "max_resource": 60, "reduction_factor": 3},
        "search_space": {
            "model.learning_rate": {"type": "loguniform", "low": 0.0005, "high": 0.5},
            "model.max_depth": {"type": "int", "low": 1, "high": 6},
        },
    }
    trials = search_every_5_rounds(tables, tmp_path, "hb", model, search)
    pruned = [t for t in trials if t.state == PRUNED]
    assert pruned, "Hyperband pruned no trial"
    for t in pruned:  # reported every 5 boosting rounds, stopped before the last
        assert set(t.intermediate_values) <= set(range(5, 61, 5)) and t.last_step < 60
    best = json.loads((tmp_path / "runs/optuna_studies/hb_optimization/best_params.json").read_text())
    best_config = tmp_path / "runs/optuna_studies/hb_optimization/best_config.yaml"
    assert train_main(["--config", str(best_config), "--name", "again"]) == 0
    metrics = json.loads((tmp_path / "runs" / "again" / "metrics.json").read_text())
    assert metrics["best"]["val_roc_auc"] == best["value"]  # exactly, on the CPU
    from ml_framework.training.tabular import load_fitted

    pre, fitted, info = load_fitted(tmp_path / "runs" / "again")
    frame = pd.read_csv(tables["breast_cancer"])
    test_rows = [int(r) for r in json.loads((tmp_path / "runs/again/splits.json").read_text())["test"]]
    x = pre.transform(frame.drop(columns="target").iloc[test_rows])
    y = (frame["target"].iloc[test_rows] == info["classes"][1]).to_numpy()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, fitted.predict_proba(x)[:, 1]) == pytest.approx(metrics["test"]["test_roc_auc"])


@pytest.mark.slow
def test_regression_search_minimises_rmse_by_itself(tables: dict[str, Path], tmp_path: Path) -> None:
    model = {"architecture": "lightgbm", "n_estimators": 15, "n_jobs": 1}
    search = {"n_trials": 2, "search_space": {"model.num_leaves": {"type": "int", "low": 4, "high": 16}}}
    path = write_config(tmp_path / "db.yaml", tables["diabetes"], tmp_path / "runs", model, search=search)
    assert search_main(["--config", str(path), "--metric", "rmse"]) == 0
    study = optuna.load_study(study_name="db_optimization", storage=storage(tmp_path))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    summary = json.loads((tmp_path / "runs/optuna_studies/db_optimization/summary.json").read_text())
    assert summary["metric"] == "val_rmse" and summary["direction"] == "minimize"
    assert all(30 < t.value < 90 for t in study.trials)  # diabetes targets are 25..346


def messy_table(path: Path, rows: int = 160) -> Path:
    rng = np.random.default_rng(0)
    color = rng.choice(["red", "green", "blue"], rows).astype(object)
    size = rng.normal(size=rows)
    label = np.where((color == "red") | (size > 0.8), "yes", "no")
    color[rng.random(rows) < 0.1] = None
    size[rng.random(rows) < 0.1] = np.nan
    frame = pd.DataFrame({"customer_id": [f"C{i:05d}" for i in range(rows)], "color": color, "size": size})
    frame["city"] = rng.choice(["Oslo", "Lima", None], rows)
    frame["label"] = label
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("arch", ["sklearn/LogisticRegression", "xgboost", "lightgbm"])
def test_messy_table_trains_without_manual_preprocessing(tmp_path: Path, arch: str) -> None:
    table = messy_table(tmp_path / "messy.csv")
    model = {
        "architecture": arch,
        **({"n_estimators": 10, "n_jobs": 1} if arch != "sklearn/LogisticRegression" else {}),
    }
    path = write_config(tmp_path / "m.yaml", table, tmp_path / "runs", model)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["target"] = "label"
    path.write_text(yaml.safe_dump(cfg))
    assert train_main(["--config", str(path), "--name", "m"]) == 0
    metrics = json.loads((tmp_path / "runs/m/metrics.json").read_text())
    assert metrics["best"]["val_acc"] > 0.7 and "test_roc_auc" in metrics["test"]
    info = json.loads((tmp_path / "runs/m/model/model_info.json").read_text())
    assert info["features"] == ["customer_id", "color", "size", "city"] and not info["trusted_only"]


def test_init_config_inspects_the_table_warns_about_the_id_column(tmp_path: Path, capsys: Any) -> None:
    table = messy_table(tmp_path / "messy.csv")
    out = tmp_path / "messy.yaml"
    argv = [str(table), "--target", "label", "--optuna", "--yes", "--output", str(out)]
    assert init_main(argv) == 0
    text = capsys.readouterr().out
    assert "customer_id" in text and "ID" in text
    assert "160 rows" in text and "missing" in text
    cfg = yaml.safe_load(out.read_text())
    assert cfg["data"]["drop"] == ["customer_id"] and cfg["data"]["target"] == "label"
    assert any(k.startswith("model.") for k in cfg["search"]["search_space"])
    from ml_framework.config import load_config

    load_config(out)  # a valid config


def test_init_config_warns_about_a_column_equal_to_the_target(tmp_path: Path, capsys: Any) -> None:
    frame = pd.DataFrame({"x": np.arange(40) % 7, "y": np.arange(40) % 2})
    frame["copy_of_y"] = frame["y"]
    frame.to_csv(tmp_path / "leak.csv", index=False)
    argv = [str(tmp_path / "leak.csv"), "--target", "y", "--yes", "--output", str(tmp_path / "l.yaml")]
    assert init_main(argv) == 0
    assert "copy_of_y" in capsys.readouterr().out


def test_timeseries_split_never_validates_on_earlier_rows(tables: dict[str, Path]) -> None:
    from ml_framework.config import from_container
    from ml_framework.data.tabular import load_table, make_table_splits

    data = {"format": "csv", "path": str(tables["diabetes"]), "target": "target", "split": "timeseries"}
    for fold in [None, 0, 1, 2, 3]:
        cfg = from_container({"data": {**data, "n_folds": 4, "fold": fold}})
        table = load_table(cfg.data)
        train, val, test = make_table_splits(table, cfg.data, seed=0).for_fold(fold)
        assert len(train) and len(val) and train.max() < val.min() and val.max() < test.min()
        assert not set(train) & set(val)


BAD_TABLES = {
    "missing target": ("a,b\n1,2\n3,4\n", {}, "no column 'target'"),
    "one class": ("a,target\n1,x\n2,x\n3,x\n", {}, "only one class"),
    "text regression target": ("a,target\n1,x\n2,y\n", {"task": "regression"}, "is not numeric"),
    "empty file": ("", {}, "is empty"),
    "header only": ("a,target\n", {}, "is empty"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_table_is_a_clear_error_before_any_study(tmp_path: Path, capsys: Any, case: str) -> None:
    text, data, message = BAD_TABLES[case]
    (tmp_path / "bad.csv").write_text(text)
    search = {"n_trials": 1, "search_space": SPACES["xgboost"]}
    path = write_config(tmp_path / "bad.yaml", tmp_path / "bad.csv", tmp_path / "runs", XGB, search=search)
    overrides = [f"data.{k}={v}" for k, v in data.items()]
    assert search_main(["--config", str(path), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # no study, no storage
    assert train_main(["--config", str(path), *overrides]) == 2


def test_unknown_estimator_parameter_is_an_error_with_suggestions(
    tables: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    space = {"model.n_estimatorz": {"type": "int", "low": 5, "high": 10}}
    search = {"n_trials": 1, "search_space": space}
    path = write_config(tmp_path / "k.yaml", tables["breast_cancer"], tmp_path / "runs", XGB, search=search)
    assert search_main(["--config", str(path)]) == 2
    assert "model.n_estimators" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert train_main(["--config", str(path), "model.colsample_bytre=0.5"]) == 2
    assert "model.colsample_bytree" in capsys.readouterr().err


def test_mlp_trains_on_a_table_through_the_trainer(tables: dict[str, Path], tmp_path: Path) -> None:
    model = {"architecture": "mlp", "width": 16, "depth": 1}
    training = {"num_epochs": 4, "monitor": "val_acc", "device": "cpu", "batch_size": 32}
    path = write_config(
        tmp_path / "mlp.yaml", tables["breast_cancer"], tmp_path / "runs", model, training=training
    )
    assert train_main(["--config", str(path), "--name", "mlp"]) == 0
    metrics = json.loads((tmp_path / "runs/mlp/metrics.json").read_text())
    assert len(metrics["history"]) == 4 and metrics["best"]["val_acc"] > 0.85
    assert (tmp_path / "runs/mlp/model/preprocessor.skops").is_file()


def test_numpy_metrics_equal_scikit_learns() -> None:
    from sklearn import metrics as m

    from ml_framework.training.tabular_metrics import compute_metrics

    rng = np.random.default_rng(0)
    for k in (2, 3):
        y = rng.integers(0, k, 200)
        proba = rng.dirichlet(np.ones(k), 200)
        proba[:20] = np.round(proba[:20], 1)  # ties
        proba /= proba.sum(1, keepdims=True)
        hard = proba.argmax(1)
        ours = compute_metrics("classification", y, proba, "val")
        auc = m.roc_auc_score(y, proba[:, 1]) if k == 2 else m.roc_auc_score(y, proba, multi_class="ovr")
        expected = {
            "val_acc": m.accuracy_score(y, hard),
            "val_balanced_accuracy": m.balanced_accuracy_score(y, hard),
            "val_f1": m.f1_score(y, hard, average="macro"),
            "val_roc_auc": auc,
            "val_log_loss": m.log_loss(y, proba),
        }
        for name, value in expected.items():
            assert ours[name] == pytest.approx(value, rel=1e-12), name
    y, pred = rng.normal(size=50), rng.normal(size=50)
    ours = compute_metrics("regression", y, pred, "test")
    assert ours["test_rmse"] == pytest.approx(m.root_mean_squared_error(y, pred), rel=1e-12)
    assert ours["test_mae"] == pytest.approx(m.mean_absolute_error(y, pred), rel=1e-12)
    assert ours["test_r2"] == pytest.approx(m.r2_score(y, pred), rel=1e-12)


def test_early_stopping_ends_a_booster_at_the_validation_metric(
    tables: dict[str, Path], tmp_path: Path
) -> None:
    model = {"architecture": "lightgbm", "n_estimators": 400, "learning_rate": 0.5, "n_jobs": 1}
    training = {
        "monitor": "val_log_loss",
        "monitor_mode": "min",
        "eval_every": 5,
        "early_stopping": {"enabled": True, "monitor": "val_log_loss", "mode": "min", "patience": 20},
    }
    path = write_config(
        tmp_path / "es.yaml", tables["breast_cancer"], tmp_path / "runs", model, training=training
    )
    assert train_main(["--config", str(path), "--name", "es"]) == 0
    metrics = json.loads((tmp_path / "runs/es/metrics.json").read_text())
    rounds = [int(h["epoch"]) for h in metrics["history"]]
    assert metrics["stopped_early"] and rounds[-1] < 400 and rounds[:3] == [5, 10, 15]
    best_round = min(metrics["history"][:-1], key=lambda h: h["val_log_loss"])["epoch"]
    assert rounds[-1] - best_round >= 20


def test_parquet_regression_table_and_its_generated_config(
    tables: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    parquet = tmp_path / "diabetes.parquet"
    pd.read_csv(tables["diabetes"]).to_parquet(parquet)
    out = tmp_path / "d.yaml"
    argv = [str(parquet), "--target", "target", "--architecture", "sklearn/Ridge", "--optuna", "--yes"]
    assert init_main([*argv, "--output", str(out)]) == 0
    assert "median" in capsys.readouterr().out  # the target's distribution
    cfg = yaml.safe_load(out.read_text())
    assert cfg["data"]["format"] == "parquet" and cfg["data"]["task"] == "regression"
    assert cfg["search"]["metric"] == "val_rmse" and cfg["search"]["cross_validation"]["enabled"]
    assert train_main(["--config", str(out), "--name", "ridge", f"output.runs_dir={tmp_path / 'runs'}"]) == 0
    metrics = json.loads((tmp_path / "runs/ridge/metrics.json").read_text())
    assert 40 < metrics["best"]["val_rmse"] < 80 and "test_r2" in metrics["test"]


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["MedianPruner", "SuccessiveHalvingPruner"])
def test_other_pruners_see_boosting_rounds(tables: dict[str, Path], tmp_path: Path, pruner: str) -> None:
    kwargs = {"n_startup_trials": 2, "n_warmup_steps": 5} if pruner == "MedianPruner" else {"min_resource": 5}
    search = {
        "n_trials": 5,
        "sampler": {"type": "RandomSampler", "seed": 0},
        "pruner": {"type": pruner, **kwargs},
        "search_space": {"model.learning_rate": {"type": "loguniform", "low": 0.0005, "high": 0.5}},
    }
    model = {"architecture": "lightgbm", "n_estimators": 30, "n_jobs": 1}
    trials = search_every_5_rounds(tables, tmp_path, "p", model, search)
    assert all(t.state in (COMPLETE, PRUNED) for t in trials)
    assert all(set(t.intermediate_values) <= set(range(5, 31, 5)) and t.intermediate_values for t in trials)


def test_features_and_drop_pick_columns_and_name_missing_ones(tmp_path: Path) -> None:
    from ml_framework.config import from_container
    from ml_framework.data.tabular import load_table
    from ml_framework.errors import DataError

    table = messy_table(tmp_path / "messy.csv")
    data = {"format": "csv", "path": str(table), "target": "label"}
    t = load_table(from_container({"data": {**data, "drop": ["customer_id"]}}).data)
    assert list(t.features.columns) == ["color", "size", "city"] and t.classes == ("no", "yes")
    assert t.numeric == ["size"] and t.categorical == ["color", "city"]
    t = load_table(from_container({"data": {**data, "features": ["size"]}}).data)
    assert list(t.features.columns) == ["size"]
    with pytest.raises(DataError, match=r"data.drop: .* no column colour .*did you mean color"):
        load_table(from_container({"data": {**data, "drop": ["colour"]}}).data)


def test_a_table_search_never_imports_torch(tables: dict[str, Path], tmp_path: Path) -> None:
    """Table runs write TensorBoard events with TensorBoard's own writer: torch's import (seconds per
    process) is not paid by a scikit-learn/XGBoost search."""
    import subprocess

    search = {"n_trials": 2, "search_space": SPACES["xgboost"]}
    path = write_config(tmp_path / "bc.yaml", tables["breast_cancer"], tmp_path / "runs", XGB, search=search)
    code = (
        "import sys; from ml_framework.cli.search import main; "
        f"rc = main(['--config', {str(path)!r}, '--cv', '2']); "
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH'); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("NO_TORCH")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial = tmp_path / "runs/optuna_studies/bc_optimization/trial_0"
    acc = EventAccumulator(str(trial))  # one session per trial, with its folds' scores
    acc.Reload()
    metric = optuna.load_study(
        study_name="bc_optimization", storage=f"sqlite:///{tmp_path / 'runs/optuna_studies/optuna.db'}"
    ).user_attrs["metric"]
    assert [e.step for e in acc.Scalars(f"folds/{metric}")] == [0, 1]
    assert {f"cv/{metric}", f"cv/{metric}_std"} <= set(acc.Tags()["scalars"])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert not list((trial / "fold_0").glob("events.*"))  # nor one per fold
    fold_cfg = yaml.safe_load((trial / "config.yaml").read_text())
    assert fold_cfg["data"]["fold"] is None and fold_cfg["data"]["n_folds"] == 2
    assert (trial / "fold_0" / "metrics.json").is_file() and not (trial / "fold_0" / "config.yaml").exists()


def test_preprocessed_folds_are_reused_until_the_table_changes(
    tables: dict[str, Path], tmp_path: Path
) -> None:
    import os

    from ml_framework.config import load_config
    from ml_framework.data.tabular import load_table
    from ml_framework.training.tabular import prepared_data

    table = tmp_path / "bc.csv"
    table.write_bytes(tables["breast_cancer"].read_bytes())
    cfg = load_config(write_config(tmp_path / "bc.yaml", table, tmp_path / "runs", XGB))
    cfg.data.n_folds = 3

    def prepare(fold: int) -> Any:
        cfg.data.fold = fold
        return prepared_data(cfg, load_table(cfg.data), native=True, scale=False)

    first = prepare(0)
    assert prepare(0) is first  # the next trial's fold 0: the same fitted preprocessor and arrays
    other = prepare(1)
    assert other is not first and not np.array_equal(other.val_idx, first.val_idx)
    stat = table.stat()
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    again = prepare(0)
    assert again is not first and np.array_equal(again.x_val, first.x_val)
    # the splits are views of one array of every row (one predict call scores them all)
    assert np.shares_memory(again.x_train, again.x_all) and again.x_all.flags["C_CONTIGUOUS"]
    assert len(again.x_all) == len(again.train_idx) + len(again.val_idx) + len(again.test_idx)
    # an interpolated value is keyed by what it resolves to
    cfg.data.split_seed = "${training.num_epochs}"
    cfg.training.num_epochs = 1
    one = prepare(0)
    cfg.training.num_epochs = 2
    two = prepare(0)
    assert two is not one and not np.array_equal(two.val_idx, one.val_idx)


def test_a_fast_search_rewrites_its_outputs_seldom_and_ends_with_every_trial(
    tables: dict[str, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    """Trials of a fraction of a second: the study outputs are rewritten at most every
    OUTPUT_INTERVAL_S, and once more at the end with every trial. Without a pruner a CV trial reports
    no intermediate values (its fold scores are in cv_scores); a fold whose rounds nobody reads has the
    fitted model's row only."""
    from ml_framework.search import runner

    writes: list[int] = []
    real = runner.write_outputs

    def counting(study: Any, *args: Any) -> Any:
        writes.append(len(study.trials))
        return real(study, *args)

    monkeypatch.setattr(runner, "write_outputs", counting)
    monkeypatch.setattr(runner, "OUTPUT_INTERVAL_S", 3600.0)
    seen: list[tuple[int, bool]] = []  # (the progress bar's complete count, objects frozen) per trial
    report = runner._Reporter.__call__

    def reporting(self: Any, study: Any, trial: Any) -> None:
        report(self, study, trial)
        seen.append((self.counts.get("complete", 0), gc.get_freeze_count() > 0))

    monkeypatch.setattr(runner._Reporter, "__call__", reporting)
    search = {
        "n_trials": 4,
        "sampler": {"type": "RandomSampler", "seed": 0},
        "search_space": SPACES["xgboost"],
    }
    path = write_config(tmp_path / "bc.yaml", tables["breast_cancer"], tmp_path / "runs", XGB, search=search)
    assert search_main(["--config", str(path), "--cv", "2", "--pruner", "none"]) == 0
    assert writes == [1, 4]  # after the first trial, then the final rewrite
    # the counts go on without reading the study back; the collector skips objects older than the
    # search while it runs, and gets them back when it ends
    assert seen == [(1, True), (2, True), (3, True), (4, True)] and gc.get_freeze_count() == 0
    history = list(
        csv.DictReader((tmp_path / "runs/optuna_studies/bc_optimization/trial_history.csv").open())
    )
    assert [r["state"] for r in history] == ["COMPLETE"] * 4
    trials = optuna.load_study(study_name="bc_optimization", storage=storage(tmp_path)).trials
    assert all(t.intermediate_values == {} and len(t.user_attrs["cv_scores"]) == 2 for t in trials)
    fold = json.loads(
        (tmp_path / "runs/optuna_studies/bc_optimization/trial_0/fold_1/metrics.json").read_text()
    )
    assert [row["epoch"] for row in fold["history"]] == [20] and "train_roc_auc" in fold["history"][0]
    assert set(fold["test"]) == {f"test_{m}" for m in CLASSIFICATION_METRICS}
    assert (
        "epoch 20:" in (tmp_path / "runs/optuna_studies/bc_optimization/trial_0/fold_1/train.log").read_text()
    )
