"""Issue 12 (trust) for training: safe checkpoint loading, resume with changed settings, Hydra's
override grammar and `--cfg`, errors before the first epoch, and cross-validation checkpoints of
search trials (kept or dropped, resumed after a worker died)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import pathlib
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, tiny_config

from ml_framework.config import load_config
from ml_framework.errors import ConfigError, UserError


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _tiny_yaml(path: Path, digits_dir: Path, runs: Path, **training: object) -> Path:
    return _write(
        path,
        {
            "data": {"dataset_name": "digits", "data_dir": str(digits_dir), "image_size": 8, "channels": 1},
            "model": {"architecture": "simple_cnn", "width": 8, "depth": 1},
            "training": {"num_epochs": 2, "device": "cpu", "seed": 0, **training},
            "optimizer": {"name": "adamw", "lr": 0.01},
            "output": {"runs_dir": str(runs)},
        },
    )


# ----------------------------------------------------------------------------- unsafe unpickling


class _Touch:
    """Unpickling this creates a file: what a malicious checkpoint could do with any callable."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def _malicious(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": _Touch(marker)}, "epoch": 1, "optimizer": {}, "history": []}, path)
    # The payload is real: the full unpickler runs it (then the marker is removed again).
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path


def test_malicious_weights_path_is_refused_in_process(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from ml_framework.config.schema import ModelConfig
    from ml_framework.models import create_model

    marker = tmp_path / "pwned"
    evil = _malicious(tmp_path / "evil.pt", marker)
    cfg = OmegaConf.structured(ModelConfig(architecture="simple_cnn", width=4, depth=1, pretrained=True))
    cfg.weights_path = str(evil)
    with pytest.raises(UserError, match="not a plain tensor checkpoint; refusing to unpickle it") as info:
        create_model(cfg, channels=1, image_size=8, num_classes=10)
    assert str(evil) in str(info.value)
    assert not marker.exists()


@pytest.mark.slow
def test_malicious_pickle_as_weights_path_and_resume_never_runs(digits_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    config = _tiny_yaml(tmp_path / "c.yaml", digits_dir, tmp_path / "runs")
    evil = _malicious(tmp_path / "evil.pt", marker)
    weights = ["model.pretrained=true", f"model.weights_path={evil}"]
    r = run_cli(["ml-train", "--config", str(config), *weights], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to unpickle" in r.stderr and "evil.pt" in r.stderr
    assert "Traceback" not in r.stderr and not marker.exists()

    run = tmp_path / "runs" / "victim"
    _malicious(run / "checkpoints" / "last.pt", marker)
    shutil.copy(config, run / "config.yaml")
    r = run_cli(["ml-train", "--resume", str(run)], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to unpickle" in r.stderr and "last.pt" in r.stderr
    assert "Traceback" not in r.stderr and not marker.exists()


# ----------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def two_epoch_run(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run with cosine decay (lr 0.01)."""
    from ml_framework.training.run import run_training

    runs = tmp_path_factory.mktemp("runs")
    return run_training(tiny_config(digits_dir, runs, training={"num_epochs": 2}), progress=False).run_dir


def _copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_checkpoints_load_weights_only(two_epoch_run: Path) -> None:
    state = torch.load(two_epoch_run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["rng"]["numpy"][1]) == 624
    assert torch.load(two_epoch_run / "checkpoints" / "best.pt", weights_only=True)["epoch"] >= 1


def test_resume_with_more_epochs_rebuilds_the_cosine_schedule(two_epoch_run: Path, tmp_path: Path) -> None:
    from ml_framework.training.run import run_training

    run = _copy_run(two_epoch_run, tmp_path)
    cfg = load_config(run / "config.yaml", ["training.num_epochs=4"])
    result = run_training(cfg, resume=run / "checkpoints" / "last.pt", progress=False)
    lrs = [row["lr"] for row in result.history]
    # epochs 1-2 ran on the 2-epoch horizon; 3-4 follow cosine over 4 epochs (never lr 0)
    assert lrs[:2] == pytest.approx([0.01, 0.005])
    assert lrs[2:] == pytest.approx([0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (2, 3)])
    assert load_config(run / "config.yaml").training.num_epochs == 4
    assert load_config(run / "config_to_epoch_2.yaml").training.num_epochs == 2
    assert "training.num_epochs: 2 -> 4" in (run / "config.yaml").read_text()
    assert "resumed with training.num_epochs: 2 -> 4" in (run / "train.log").read_text()


def test_resume_applies_lr_and_scheduler_from_the_current_epoch(two_epoch_run: Path, tmp_path: Path) -> None:
    from ml_framework.training.run import run_training

    run = _copy_run(two_epoch_run, tmp_path)
    overrides = ["training.num_epochs=3", "optimizer.lr=0.04", "scheduler.name=step", "scheduler.step_size=1"]
    cfg = load_config(run / "config.yaml", [*overrides, "scheduler.gamma=0.5"])
    result = run_training(cfg, resume=run / "checkpoints" / "last.pt", progress=False)
    # the new schedule as if set from the start: epoch 3 gets 0.04 * 0.5**2
    assert result.history[2]["lr"] == pytest.approx(0.01)
    saved = load_config(run / "config.yaml")
    assert (saved.optimizer.lr, saved.scheduler.name) == (0.04, "step")


@pytest.mark.parametrize(
    "override", ["model.width=16", "optimizer.name=sgd", "training.batch_size=32", "training.num_epochs=1"]
)
def test_resume_refuses_what_it_cannot_apply(two_epoch_run: Path, tmp_path: Path, override: str) -> None:
    from ml_framework.training.run import run_training

    run = _copy_run(two_epoch_run, tmp_path)
    before = (run / "config.yaml").read_text()
    cfg = load_config(run / "config.yaml", [override])
    with pytest.raises(ConfigError, match=override.split("=")[0]) as info:
        run_training(cfg, resume=run / "checkpoints" / "last.pt", progress=False)
    if override != "training.num_epochs=1":
        assert "training.num_epochs" in str(info.value) and "scheduler.*" in str(info.value)
    assert (run / "config.yaml").read_text() == before  # nothing recorded that did not run


def test_ml_train_resume_refuses_another_name(two_epoch_run: Path, tmp_path: Path) -> None:
    run = _copy_run(two_epoch_run, tmp_path)
    r = run_cli(["ml-train", "--resume", str(run), "--name", "other"], tmp_path)
    assert r.returncode == 2 and "--name other" in r.stderr and "Traceback" not in r.stderr
    assert not (run.parent / "other").exists()


# ----------------------------------------------------------------------------- override grammar


@pytest.fixture
def composed(tmp_path: Path) -> Path:
    """A config with a `defaults:` list and groups beside it, as in configs/."""
    _write(tmp_path / "optimizer" / "adam.yaml", {"name": "adam", "lr": 0.001})
    _write(tmp_path / "optimizer" / "sgd.yaml", {"name": "sgd", "lr": 0.1, "momentum": 0.5})
    _write(tmp_path / "scheduler" / "step.yaml", {"name": "step", "step_size": 2})
    main = {
        "defaults": [{"optimizer": "adam"}, {"scheduler": "step"}, "_self_"],
        "training": {"num_epochs": 3},
    }
    return _write(tmp_path / "main.yaml", main)


def test_group_override_selects_the_option_file(composed: Path) -> None:
    cfg = load_config(composed, ["optimizer=sgd"])
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum) == ("sgd", 0.1, 0.5)
    with pytest.raises(ConfigError, match="Available options in 'optimizer': adam sgd"):
        load_config(composed, ["optimizer=lamb"])


def test_plus_adds_tilde_deletes_and_plain_sets(composed: Path) -> None:
    cfg = load_config(
        composed, ["+model.kwargs.foo=1", "~training.num_epochs", "~scheduler", "model.dropout=0.5"]
    )
    assert cfg.model.kwargs.foo == 1 and cfg.model.dropout == 0.5
    assert cfg.training.num_epochs == 10 and cfg.scheduler.name == "cosine"  # back to the defaults
    with pytest.raises(ConfigError, match=r"An item is already at 'training\.num_epochs'"):
        load_config(composed, ["+training.num_epochs=5"])
    assert load_config(composed, ["++training.num_epochs=5"]).training.num_epochs == 5


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("~unknown", "unknown key 'unknown'"),
        ("~optimizer.lrr", "Did you mean: optimizer.lr"),
        ("+optimizer.lrr=1", "Did you mean: optimizer.lr"),
        ("~model.width", "'model.width' does not exist"),
        ("training=3", "is a section of settings"),
        ("optimizer.lr=1,2", "is a sweep"),
    ],
)
def test_override_errors_name_the_override(composed: Path, override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(composed, [override])
    assert fragment in str(info.value) and override in str(info.value)


def test_group_override_on_a_self_contained_config(tmp_path: Path) -> None:
    _write(tmp_path / "optimizer" / "sgd.yaml", {"name": "sgd", "lr": 0.1})
    path = _write(tmp_path / "c.yaml", {"optimizer": {"name": "adam", "lr": 0.003, "weight_decay": 0.1}})
    cfg = load_config(path, ["optimizer=sgd"])
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("sgd", 0.1, 0.0)
    with pytest.raises(ConfigError, match="no config group folder 'scheduler/'"):
        load_config(path, ["scheduler=cosine"])


@pytest.mark.slow
def test_ml_train_cfg_prints_the_resolved_config(composed: Path, tmp_path: Path) -> None:
    r = run_cli(["ml-train", "--config", str(composed), "optimizer=sgd", "--lr", "0.3", "--cfg"], tmp_path)
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["optimizer"]["name"] == "sgd" and printed["optimizer"]["lr"] == 0.3
    assert printed["scheduler"]["name"] == "step" and not (tmp_path / "runs").exists()
    bad = run_cli(["ml-train", "--config", str(composed), "~nokey", "--cfg"], tmp_path)
    assert bad.returncode == 2 and "unknown key 'nokey'" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- errors before training


def test_early_stopping_monitor_typo_fails_before_anything_runs(digits_dir: Path, tmp_path: Path) -> None:
    from ml_framework.training.run import run_training

    cfg = tiny_config(
        digits_dir,
        tmp_path / "runs",
        training={"early_stopping": {"enabled": True, "monitor": "val_los", "mode": "min"}},
    )
    with pytest.raises(ConfigError, match=r"training\.early_stopping\.monitor: 'val_los'.*val_loss"):
        run_training(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ml_train_errors_are_one_line_exits(digits_dir: Path, tmp_path: Path) -> None:
    config = _tiny_yaml(tmp_path / "c.yaml", digits_dir, tmp_path / "runs")
    typo = run_cli(["ml-train", "--config", str(config), "training.monitor=val_acc_"], tmp_path)
    assert typo.returncode == 2 and "Did you mean val_acc" in typo.stderr and "Traceback" not in typo.stderr

    args = ["optimizer.name=sgd", "optimizer.lr=1e30", "optimizer.momentum=0", "--name", "boom"]
    r = run_cli(["ml-train", "--config", str(config), *args], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "training diverged" in r.stderr and "Traceback" not in r.stderr
    run = tmp_path / "runs" / "boom"
    assert "TrainingDiverged" in json.loads((run / "metrics.json").read_text())["status"]
    assert (run / "train.log").is_file()


# ----------------------------------------------------------------------------- cross-validation trials


class _Died(Exception):
    pass


class _DieAfterEpoch:
    def on_train_start(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        raise _Died

    def on_train_end(self, trainer) -> None:
        pass


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_cv_trial_retry_resumes_each_fold_and_keeps_only_best_weights(
    digits_dir: Path, tmp_path: Path
) -> None:
    import optuna

    from ml_framework.search.objective import prune_non_best_weights, trial_config
    from ml_framework.search.runner import make_objective
    from ml_framework.search.space import suggest
    from ml_framework.search.study import open_study, resolve_settings
    from ml_framework.training.run import run_training

    search = {
        "study_name": "cv",
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "metric": "val_acc",
        "pruner": {"type": "NopPruner"},
        "search_space": {"optimizer.lr": {"type": "categorical", "choices": [0.01, 0.02]}},
        "cross_validation": {"enabled": True, "n_folds": 2},
        "heartbeat_interval": 1,
        "grace_period": 1,
    }
    cfg = tiny_config(digits_dir, tmp_path / "runs", training={"num_epochs": 2}, search=search)
    settings = resolve_settings(cfg)
    study, _ = open_study(settings, "new")
    objective = make_objective(cfg, settings)

    # A worker died in trial 0 during fold 1's second epoch: fold 0 done, fold 1 has epoch 1.
    dead = study.ask()
    params = suggest(dead, settings.space)
    study._storage.record_heartbeat(dead._trial_id)
    trial_cfg = trial_config(cfg, params, "val_acc", "maximize")
    for k, callbacks in ((0, []), (1, [_DieAfterEpoch()])):
        fold_cfg = copy.deepcopy(trial_cfg)
        fold_cfg.data.fold, fold_cfg.data.n_folds = k, 2
        with contextlib.suppress(_Died):
            run_training(fold_cfg, callbacks, run_dir=settings.path / "trial_0" / f"fold_{k}", progress=False)
    time.sleep(2.5)  # the heartbeat goes stale

    study.optimize(objective, n_trials=1)  # fails trial 0 and runs its retry
    retry = study.trials[-1]
    assert retry.state == optuna.trial.TrialState.COMPLETE, retry.user_attrs
    assert retry.user_attrs["resumed_from_trial"] == 0 and retry.params == params
    folds = settings.path / f"trial_{retry.number}"
    assert "at epoch 2" in (folds / "fold_0" / "train.log").read_text()  # finished fold: not retrained
    assert "at epoch 1" in (folds / "fold_1" / "train.log").read_text()
    assert not list(folds.glob("fold_*/checkpoints/last.pt"))  # keep_checkpoints: best
    assert len(list(folds.glob("fold_*/checkpoints/best.pt"))) == 2

    study.optimize(objective, n_trials=1)
    prune_non_best_weights(study, settings.path)
    kept = {p.parts[-4] for p in settings.path.glob("trial_*/fold_*/checkpoints/best.pt")}
    assert kept == {f"trial_{study.best_trial.number}"}
