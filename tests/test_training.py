"""The trainer through `run_training` and `ml-train`: real training on the real digits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli, tiny_config
from PIL import Image

from ml_framework.config import apply_overrides, copy_config, load_config, set_value
from ml_framework.errors import ConfigError


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optimizer.lrr=0.1", "Did you mean: optimizer.lr"),
        ("training.batch_size=abc", "training.batch_size"),
        ("optimizer.name=lamb", "optimizer.name: 'lamb' is not one of"),
        ("data.val_split=0.9", "data.val_split"),
        ("training.num_epochs=0", "training.num_epochs must be at least 1"),
        ("nokey", "dotted.key=value"),
    ],
)
def test_override_errors(override: str, fragment: str) -> None:
    cfg = load_config(REPO / "configs" / "digits.yaml")
    with pytest.raises(ConfigError, match=None) as info:
        apply_overrides(cfg, [override])
    assert fragment in str(info.value)


def test_overrides_and_zero_values() -> None:
    cfg = load_config(REPO / "configs" / "digits.yaml", {"optimizer.lr": 0.0})
    cfg = apply_overrides(cfg, ["model.dropout=0", "optimizer.betas=[0.8, 0.9]", "model.kwargs.foo=1"])
    assert cfg.optimizer.lr == 0.0 and cfg.model.dropout == 0.0
    assert list(cfg.optimizer.betas) == [0.8, 0.9] and cfg.model.kwargs.foo == 1


def test_a_config_without_overrides_loads_without_hydra() -> None:
    """Hydra (about 60 ms of imports) parses overrides and composes `defaults:` lists only."""
    path = REPO / "configs" / "breast_cancer_xgboost.yaml"  # no defaults list
    code = f"import sys; from ml_framework.config import load_config; load_config({str(path)!r}); "
    code += "print('hydra' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_copied_config_is_independent_and_keeps_its_schema() -> None:
    cfg = load_config(REPO / "configs" / "digits.yaml")
    copied = copy_config(cfg)
    copied.optimizer.lr, copied.model.kwargs = 0.5, {"foo": 1}
    assert (
        cfg.optimizer.lr != 0.5
        and "foo" not in cfg.model.kwargs
        and copied == apply_overrides(cfg, ["optimizer.lr=0.5", "model.kwargs.foo=1"])
    )
    with pytest.raises(ConfigError, match=r"training\.num_epochs"):  # the copy's values are still typed
        set_value(copied, "training.num_epochs", "abc")


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  num_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"training\.num_epochs") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_same_config_twice_gives_identical_metrics(tiny_cfg) -> None:
    from ml_framework.training.run import run_training

    a = run_training(tiny_cfg, progress=False)
    b = run_training(tiny_cfg, progress=False)
    assert a.run_dir != b.run_dir
    ma, mb = _metrics(a.run_dir), _metrics(b.run_dir)
    for key in ("history", "best", "final", "test", "best_epoch"):
        strip = (
            (lambda rows: [{k: v for k, v in r.items() if k != "epoch_time"} for r in rows])
            if key == "history"
            else None
        )
        assert (strip(ma[key]) if strip else _no_time(ma[key])) == (
            strip(mb[key]) if strip else _no_time(mb[key])
        )


def _no_time(d):
    return {k: v for k, v in d.items() if k != "epoch_time"} if isinstance(d, dict) else d


def test_resume_matches_uninterrupted_run(digits_dir: Path, tmp_path: Path) -> None:
    from ml_framework.training.run import run_training

    # speed settings pinned: `auto` may choose differently for a 4-epoch and a 2-epoch run
    fixed = {"precision": "fp32", "channels_last": False}
    full_cfg = tiny_config(
        digits_dir,
        tmp_path / "runs",
        training={"num_epochs": 4, **fixed},
        scheduler={"name": "step", "step_size": 1, "gamma": 0.5},
    )
    full = run_training(full_cfg, progress=False)
    part_cfg = tiny_config(
        digits_dir,
        tmp_path / "runs",
        training={"num_epochs": 2, **fixed},
        scheduler={"name": "step", "step_size": 1, "gamma": 0.5},
    )
    part = run_training(part_cfg, progress=False)
    resumed = run_training(full_cfg, resume=part.run_dir / "checkpoints" / "last.pt", progress=False)
    assert resumed.run_dir == part.run_dir
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert _no_time(resumed.final) == _no_time(full.final)
    assert _no_time(resumed.best) == _no_time(full.best)
    assert "resumed from" in (part.run_dir / "train.log").read_text()


def test_run_dir_contents_and_tensorboard(tiny_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ml_framework.training.run import run_training

    result = run_training(tiny_cfg, progress=False)
    d = result.run_dir
    for name in (
        "config.yaml",
        "metrics.json",
        "summary.txt",
        "train.log",
        "splits.json",
        "checkpoints/best.pt",
    ):
        assert (d / name).is_file(), name
    m = _metrics(d)
    assert len(m["history"]) == 3 and m["best_epoch"] in (1, 2, 3)
    assert set(m["history"][0]) >= {
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_f1",
        "lr",
        "epoch_time",
    }
    assert set(m["test"]) == {"test_loss", "test_acc", "test_f1"}
    acc = EventAccumulator(str(d), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_acc")] == [1, 2, 3]
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins
    # the reloaded config trains the same way
    assert load_config(d / "config.yaml").optimizer.lr == tiny_cfg.optimizer.lr


def test_small_remainder_batches_do_not_break_batchnorm(digits_dir: Path, tmp_path: Path) -> None:
    from ml_framework.training.run import prepare_data, run_training

    cfg = tiny_config(digits_dir, tmp_path / "runs", training={"num_epochs": 1})
    import torch

    n_train = len(prepare_data(cfg, torch.device("cpu")).train.labels)
    for remainder in (1, 2):
        bs = next(b for b in range(8, n_train) if n_train % b == remainder)
        cfg.training.batch_size = bs
        run_training(cfg, progress=False)  # would raise in BatchNorm on a batch of 1


def test_messy_folder_trains_and_reports_skipped_file(tmp_path: Path) -> None:
    from ml_framework.training.run import run_training

    raw = tmp_path / "messy" / "raw"
    import numpy as np

    rng = np.random.default_rng(0)
    for c, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (raw / c).mkdir(parents=True)
        for i in range(12):
            size = (20 + 7 * (i % 3), 24 + 5 * (i % 4))
            arr = np.clip(rng.normal(colour, 40, (size[1], size[0], 3)), 0, 255).astype("uint8")
            img = Image.fromarray(arr)
            if i == 0:
                img = img.convert("L")  # a grayscale image among RGB ones
            img.save(raw / c / f"{i}.{'jpg' if i % 2 else 'png'}")
        (raw / c / "notes.txt").write_text("not an image")
    (raw / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = tiny_config(
        tmp_path / "messy",
        tmp_path / "runs",
        data={"channels": 3, "image_size": 16, "val_split": 0.25, "test_split": 0.0},
        training={"num_epochs": 2, "batch_size": 8},
    )
    result = run_training(cfg, progress=False)
    log = (result.run_dir / "train.log").read_text()
    assert "broken.png" in log and "skipped 1" in log
    assert len(result.history) == 2


def test_class_names_must_match(digits_dir: Path, tmp_path: Path) -> None:
    from ml_framework.errors import DataError
    from ml_framework.training.run import run_training

    cfg = tiny_config(digits_dir, tmp_path / "runs", data={"class_names": ["a", "b"]})
    with pytest.raises(DataError, match="class_names"):
        run_training(cfg, progress=False)


@pytest.mark.slow
def test_ml_train_cli_end_to_end(digits_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{data_dir: {digits_dir}, image_size: 8, channels: 1}}\n"
        "model: {architecture: simple_cnn, width: 8, depth: 1}\n"
        f"training: {{num_epochs: 2, device: cpu}}\noutput: {{runs_dir: {tmp_path / 'runs'}}}\n"
    )
    r = run_cli(
        ["ml-train", "--config", str(cfg), "--lr", "0.01", "--name", "e2e", "model.dropout=0.0"], tmp_path
    )
    assert r.returncode == 0, r.stderr + r.stdout
    run = tmp_path / "runs" / "e2e"
    assert load_config(run / "config.yaml").optimizer.lr == 0.01
    assert len(_metrics(run)["history"]) == 2
    again = run_cli(["ml-train", "--config", str(cfg), "--name", "e2e"], tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = run_cli(["ml-train", "--config", str(cfg), "optimizer.lrr=1"], tmp_path)
    assert bad.returncode == 2 and "optimizer.lr" in bad.stderr
    resumed = run_cli(["ml-train", "--resume", str(run), "--num_epochs", "3"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in _metrics(run)["history"]] == [1, 2, 3]


@pytest.mark.parametrize("command", ["ml-train", "ml-search", "ml-init-config", "ml-visualise"])
def test_help_is_fast_and_imports_nothing_heavy(command: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    module = {
        "ml-train": "train",
        "ml-search": "search",
        "ml-init-config": "init_config",
        "ml-visualise": "visualise",
    }
    code = (
        f"import sys; from ml_framework.cli.{module[command]} import build_parser\n"
        "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'optuna', 'plotly') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli([command, "--help"], tmp_path)
    assert r.returncode == 0 and "usage" in r.stdout
