"""Transfer learning: library weights from local caches (no network), presets, freeze/unfreeze, lr groups."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli, tiny_config
from PIL import Image

from ml_framework.config import from_container
from ml_framework.errors import ConfigError
from ml_framework.models import create_model, head_keys
from ml_framework.models.pretrained import WeightsUnavailable, hub_checkpoint_path, torchvision_weights
from ml_framework.training.callbacks import Callback
from ml_framework.training.finetune import parameter_groups
from ml_framework.training.images import resolve_preprocessing
from ml_framework.training.run import run_training

# No test may reach the network: every subprocess gets a closed port as its proxy.
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
TIMM_MODEL = "test_resnet"  # timm's own tiny test network (hub repo timm/test_resnet.r160_in1k)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Two classes of four small noise RGB JPEGs."""
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "photos" / "raw" / c).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / "raw" / c / f"{i}.jpg")
    return tmp_path / "photos"


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Empty torch hub and Hugging Face caches, no network, for this process and its subprocesses."""
    env = {
        **OFFLINE,
        "TORCH_HOME": str(tmp_path / "torch"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {**os.environ, **env}


def resnet18_file() -> tuple[Path, dict[str, torch.Tensor]]:
    """A generated state dict where torchvision looks for ResNet18_Weights.DEFAULT."""
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = hub_checkpoint_path(torchvision_weights("resnet18", "DEFAULT").url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, state


def timm_hub_file(hf_home: Path) -> dict[str, torch.Tensor]:
    """A generated safetensors file in the Hugging Face cache layout timm reads offline."""
    import safetensors.torch
    import timm

    torch.manual_seed(2)
    state = timm.create_model(TIMM_MODEL).state_dict()
    repo = hf_home / "hub" / "models--timm--test_resnet.r160_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    safetensors.torch.save_file(state, repo / "snapshots" / commit / "model.safetensors")
    return state


def write_config(path: Path, data: Path, runs: Path, model: dict[str, Any]) -> Path:
    cfg = {
        "data": {"dataset_name": "photos", "data_dir": str(data), "val_split": 0.25, "test_split": 0.0},
        "model": {"dropout": 0.0, **model},
        "training": {
            "num_epochs": 1,
            "batch_size": 4,
            "device": "cpu",
            "seed": 0,
            "precision": "fp32",
            "channels_last": False,
            "compile": False,
        },  # nothing to time at 224 px
        "optimizer": {"name": "adamw", "lr": 0.0},
        "output": {"runs_dir": str(runs), "name": "run"},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def backbone_equal(checkpoint: Path, reference: dict[str, torch.Tensor], head: str) -> None:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    params = [
        k for k in reference if not k.startswith(head) and "running_" not in k and "num_batches" not in k
    ]
    assert params and all(torch.equal(saved[k], reference[k]) for k in params)
    assert saved[f"{head}.weight"].shape[0] == 2  # the head was replaced for the 2 classes


@pytest.mark.slow
def test_torchvision_weights_from_torch_hub_cache_without_network(
    photos: Path, tmp_path: Path, offline_env: dict[str, str]
) -> None:
    config = write_config(tmp_path / "c.yaml", photos, tmp_path / "runs", {"architecture": "resnet18"})
    args = [
        "ml-train",
        "--config",
        str(config),
        "model.pretrained=true",
        "optimizer.lr=0",
        "--num_epochs",
        "1",
    ]
    empty = run_cli(args, tmp_path, env=offline_env)
    assert empty.returncode == 2 and "Traceback" not in empty.stderr + empty.stdout
    expected = hub_checkpoint_path(torchvision_weights("resnet18", "DEFAULT").url)
    for fragment in ("resnet18", "resnet18-f37072fd.pth", str(expected)):
        assert fragment in empty.stderr, empty.stderr

    _, state = resnet18_file()
    r = run_cli(args, tmp_path, env=offline_env)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "runs" / "run"
    backbone_equal(run / "checkpoints" / "best.pt", state, "fc")
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (saved["image_size"], saved["resize_size"]) == (224, 256)
    assert saved["mean"] == [0.485, 0.456, 0.406] and saved["std"] == [0.229, 0.224, 0.225]
    assert "preprocessing from ResNet18_Weights.IMAGENET1K_V1 transforms()" in r.stdout


@pytest.mark.slow
def test_timm_weights_from_the_hub_cache_offline(
    photos: Path, tmp_path: Path, offline_env: dict[str, str]
) -> None:
    config = write_config(
        tmp_path / "c.yaml", photos, tmp_path / "runs", {"architecture": f"timm/{TIMM_MODEL}"}
    )
    args = ["ml-train", "--config", str(config), "model.pretrained=true", "optimizer.lr=0"]
    empty = run_cli(args, tmp_path, env=offline_env)
    assert empty.returncode == 2 and "Traceback" not in empty.stderr + empty.stdout
    assert "timm/test_resnet.r160_in1k" in empty.stderr and "HF_HUB_OFFLINE" in empty.stderr

    state = timm_hub_file(tmp_path / "hf")
    r = run_cli(args, tmp_path, env=offline_env)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "runs" / "run"
    backbone_equal(run / "checkpoints" / "best.pt", state, "fc")
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["image_size"] == 160


def test_missing_weights_error_names_model_file_and_cache(offline_env: dict[str, str]) -> None:
    cfg = from_container({"model": {"architecture": "resnet18", "pretrained": True}}).model
    with pytest.raises(WeightsUnavailable) as e:
        create_model(cfg, channels=3, image_size=32, num_classes=2)
    assert "resnet18-f37072fd.pth" in str(e.value) and offline_env["TORCH_HOME"] in str(e.value)
    assert e.value.exit_code == 2


def test_pretrained_head_and_grayscale_stem(offline_env: dict[str, str]) -> None:
    _, state = resnet18_file()
    cfg = from_container(
        {"model": {"architecture": "resnet18", "pretrained": True, "weights": "IMAGENET1K_V1"}}
    )
    model = create_model(cfg.model, channels=1, image_size=32, num_classes=3)
    assert model.fc.out_features == 3
    assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ({"architecture": "resnet18", "pretrained": True, "weights": "IMAGENET9K"}, "IMAGENET1K_V1"),
        ({"architecture": "simple_cnn", "pretrained": True}, "no published"),
    ],
)
def test_bad_pretrained_settings(model: dict[str, Any], fragment: str, offline_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=fragment):
        create_model(from_container({"model": model}).model, channels=3, image_size=32, num_classes=2)


def test_presets_fill_unset_keys_and_config_keys_win() -> None:
    cfg = from_container({"model": {"architecture": "resnet18", "pretrained": True}})
    assert resolve_preprocessing(cfg)
    assert (cfg.data.image_size, cfg.data.resize_size) == (224, 256)
    assert list(cfg.data.mean) == [0.485, 0.456, 0.406]

    cfg = from_container(
        {
            "data": {"image_size": 160, "std": [0.2] * 3, "mean": [0.4] * 3},
            "model": {"architecture": "resnet18", "pretrained": True},
        }
    )
    resolve_preprocessing(cfg)
    assert (cfg.data.image_size, cfg.data.resize_size) == (160, 183) and list(cfg.data.mean) == [0.4] * 3

    cfg = from_container(
        {"data": {"channels": 1}, "model": {"architecture": f"timm/{TIMM_MODEL}", "pretrained": True}}
    )
    resolve_preprocessing(cfg)
    assert (cfg.data.image_size, cfg.data.resize_size) == (160, 168) and list(cfg.data.mean) == [0.5]

    cfg = from_container({"model": {"architecture": "resnet18"}})  # no weights: no preset
    assert resolve_preprocessing(cfg) == []
    assert (cfg.data.image_size, cfg.data.resize_size, cfg.data.mean) == (32, 32, None)


class Snapshots(Callback):
    """Parameters after each epoch (on_epoch_end runs after the finetune callback's)."""

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer: Any) -> None:
        self.head = head_keys(trainer.model)
        self.params.append({k: v.detach().clone() for k, v in trainer.model.named_parameters()})

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.params.append({k: v.detach().clone() for k, v in trainer.model.named_parameters()})


def test_frozen_backbone_is_unchanged_until_unfreeze_epoch(digits_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        digits_dir,
        tmp_path / "runs",
        model={"freeze_backbone": True, "dropout": 0.0},
        training={"num_epochs": 3, "unfreeze_epoch": 3},
        optimizer={"weight_decay": 0.1},
    )
    snap = Snapshots()
    run_training(cfg, [snap], progress=False)
    head = snap.head
    backbone = [k for k in snap.params[0] if k not in head]
    assert head and backbone

    def changed(a: int, b: int, keys: list[str]) -> bool:
        return any(not torch.equal(snap.params[a][k], snap.params[b][k]) for k in keys)

    assert not changed(0, 1, backbone) and not changed(1, 2, backbone)  # epochs 1 and 2: frozen
    assert changed(0, 1, sorted(head))
    assert changed(2, 3, backbone)  # epoch 3 trains the backbone


def test_backbone_lr_mult_makes_two_groups_and_unfreeze_needs_freeze(
    digits_dir: Path, tmp_path: Path
) -> None:
    cfg = from_container(
        {"model": {"architecture": "resnet18"}, "optimizer": {"lr": 0.01, "backbone_lr_mult": 0.1}}
    )
    model = create_model(cfg.model, channels=3, image_size=32, num_classes=2)
    groups = parameter_groups(model, cfg.optimizer)
    assert [len(g["params"]) for g in groups] == [2, len(list(model.parameters())) - 2]
    assert groups[1]["lr"] == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="freeze_backbone"):
        run_training(
            tiny_config(digits_dir, tmp_path / "runs", training={"unfreeze_epoch": 2}), progress=False
        )


def photo_report(tmp_path: Path, side: int = 96, n: int = 12) -> Any:
    from ml_framework.data.inspect import inspect_dataset

    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (tmp_path / "pets" / "raw" / c).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (side, side + 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / "raw" / c / f"{i}.jpg")
    return inspect_dataset(tmp_path / "pets")


def test_init_config_proposes_transfer_learning_for_photos(tmp_path: Path) -> None:
    from ml_framework.initconfig.generate import Choices, generate_config

    report = photo_report(tmp_path)
    plain = generate_config(report, Choices(data_dir="pets", optuna=True)).mapping
    assert plain["model"]["architecture"] == "simple_cnn"  # no cached weights, no --pretrained

    cpu = generate_config(
        report, Choices(data_dir="pets", optuna=True, cached_backbones=("resnet18",), memory_budget_mb=100)
    )
    m = cpu.mapping
    assert m["model"]["architecture"] == "resnet18" and m["model"]["pretrained"] is True
    assert m["data"]["image_size"] == 128 and m["data"]["pipeline"] == "memory"
    assert m["data"]["augmentation"]["random_resized_crop"] is True
    space = m["search"]["search_space"]
    assert {"optimizer.backbone_lr_mult", "model.freeze_backbone"} <= set(space)
    assert "in the local cache" in cpu.notes["model.architecture"] and "CPU" in cpu.notes["data.image_size"]
    from_container(m, where="generated")  # loads as a config

    cuda = generate_config(
        report, Choices(data_dir="pets", pretrained=True, cuda=True, memory_budget_mb=1)
    ).mapping
    assert cuda["data"]["image_size"] == 224 and cuda["model"]["architecture"] == "resnet18"
    assert cuda["data"]["pipeline"] == "stream"  # 24 x 3 x 256 x 256 bytes is over 1 MB

    digits_like = generate_config(
        photo_report(tmp_path / "small", side=12), Choices(data_dir="d", cached_backbones=("resnet18",))
    ).mapping
    assert digits_like["model"]["architecture"] == "simple_cnn"  # too small to be photo-like


@pytest.mark.slow
def test_init_config_cli_finds_cached_weights(tmp_path: Path, offline_env: dict[str, str]) -> None:
    photo_report(tmp_path)
    resnet18_file()
    out = tmp_path / "pets.yaml"
    r = run_cli(
        [
            "ml-init-config",
            str(tmp_path / "pets"),
            "--optuna",
            "--yes",
            "--device",
            "cpu",
            "--output",
            str(out),
        ],
        tmp_path,
        env=offline_env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load(out.read_text())
    assert cfg["model"]["architecture"] == "resnet18" and cfg["model"]["pretrained"] is True
    assert "fine-tune a pretrained resnet18 (its weights are in the local cache)" in out.read_text()
