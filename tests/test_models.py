"""The model factory: built-ins, torchvision and timm models, config errors, local weights."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ml_framework.config.schema import ModelConfig
from ml_framework.errors import ConfigError
from ml_framework.models import (
    MLP,
    SimpleCNN,
    count_parameters,
    create_model,
    load_weights,
    model_size_mb,
)
from ml_framework.models.factory import DropoutLinear

NUM_CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Any:
    """Tiny models run fastest on one thread; two threads on a shared 2-core box spin ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(channels: int = 3, image_size: int = 16, classes: int = NUM_CLASSES, **cfg: Any) -> nn.Module:
    """create_model for a ModelConfig with `cfg`, for data of this geometry and class count."""
    return create_model(ModelConfig(**cfg), channels=channels, image_size=image_size, num_classes=classes)


def modules(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def logits(model: nn.Module, channels: int = 3, size: int = 16) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.linspace(-1, 1, 2 * channels * size * size).reshape(2, channels, size, size))


# --------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("arch", ["simple_cnn", "mlp"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_builtin_forward_and_backward(arch: str, channels: int, size: int) -> None:
    model = make(channels, size, architecture=arch)
    out = model(torch.randn(4, channels, size, size))
    assert out.shape == (4, NUM_CLASSES)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "key", "small", "large"),
    [
        ("simple_cnn", "width", 8, 16),
        ("simple_cnn", "depth", 1, 3),
        ("mlp", "width", 16, 64),
        ("mlp", "depth", 1, 3),
    ],
)
def test_width_and_depth_change_the_model(arch: str, key: str, small: int, large: int) -> None:
    counts = [count_parameters(make(architecture=arch, **{key: v})) for v in (small, large)]
    assert counts[0] < counts[1]


@pytest.mark.parametrize(
    ("cfg", "kind", "expected"),
    [
        ({"architecture": "simple_cnn", "depth": 3}, nn.Conv2d, 6),  # 2 convs a block by default
        ({"architecture": "simple_cnn", "depth": 3, "kwargs": {"convs_per_block": 1}}, nn.Conv2d, 3),
        ({"architecture": "mlp", "depth": 3}, nn.Linear, 4),  # hidden layers + head
        ({"architecture": "mlp", "depth": 0}, nn.Linear, 1),  # softmax regression
    ],
)
def test_depth_and_kwargs_reach_the_layers(cfg: dict[str, Any], kind: type[nn.Module], expected: int) -> None:
    assert len(modules(make(**cfg), kind)) == expected


@pytest.mark.parametrize("arch", ["simple_cnn", "mlp"])
def test_dropout_reaches_builtins(arch: str) -> None:
    drops = modules(make(architecture=arch, dropout=0.37), nn.Dropout)
    assert drops and all(d.p == 0.37 for d in drops)


def test_simple_cnn_stops_pooling_at_2x2() -> None:
    model = SimpleCNN(1, 3, width=4, depth=4, image_size=8)
    assert len(modules(model, nn.MaxPool2d)) == 2  # 8 -> 4 -> 2, then no more
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_builtin_signatures() -> None:
    mlp = MLP(in_features=3 * 4 * 4, num_classes=2, width=8, depth=1)
    assert mlp(torch.randn(2, 3, 4, 4)).shape == (2, 2)
    assert SimpleCNN(3, 2, width=8, depth=1, image_size=8)(torch.randn(2, 3, 8, 8)).shape == (2, 2)


@pytest.mark.parametrize("arch", ["simple_cnn", "mlp"])
def test_builtins_learn_a_simple_task(arch: str) -> None:
    """Bright-left vs bright-right 8x8 images: a few Adam steps must fit them."""
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8) * 0.3
    y = torch.arange(64) % 2
    x[y == 0, :, :, :4] += 1.0
    x[y == 1, :, :, 4:] += 1.0
    model = make(1, 8, classes=2, architecture=arch, width=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95


# --------------------------------------------------------------------------- torchvision and timm


@pytest.mark.parametrize("arch", ["resnet18", "torchvision/resnet18"])
def test_torchvision_resnet18_one_channel_small_images(arch: str) -> None:
    model = make(1, 16, architecture=arch)
    assert model.conv1.in_channels == 1
    assert (model.conv1.out_channels, model.conv1.kernel_size, model.conv1.stride) == (64, (7, 7), (2, 2))
    assert model.conv1.bias is None
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, NUM_CLASSES)


def test_torchvision_dropout_reaches_the_model() -> None:
    # mobilenet_v3 takes `dropout` in its constructor ...
    drops = modules(make(1, 32, architecture="mobilenet_v3_small", dropout=0.3), nn.Dropout)
    assert [d.p for d in drops] == [0.3]
    # ... resnet does not: its classifier gets it, with unchanged state_dict keys.
    model = make(3, 16, architecture="resnet18", dropout=0.4)
    assert isinstance(model.fc, DropoutLinear) and model.fc.p == 0.4
    assert {"fc.weight", "fc.bias"} <= set(model.state_dict())
    assert not isinstance(make(architecture="resnet18", dropout=0.0).fc, DropoutLinear)


def test_torchvision_kwargs_reach_the_constructor() -> None:
    model = make(architecture="resnet18", kwargs={"zero_init_residual": True})
    assert torch.count_nonzero(model.layer1[0].bn2.weight) == 0


def test_timm_model_one_channel() -> None:
    model = make(1, 16, architecture="timm/test_resnet", dropout=0.3)
    assert model.drop_rate == 0.3
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, NUM_CLASSES)


def test_timm_kwargs_reach_the_constructor() -> None:
    model = make(3, 16, architecture="timm/test_vit", kwargs={"img_size": 16, "patch_size": 4})
    assert tuple(model.patch_embed.img_size) == (16, 16)
    assert model.patch_embed.num_patches == 16


def test_accepts_a_loaded_dictconfig() -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"width": 8, "kwargs": {"convs_per_block": 1}})
    model = create_model(cfg, channels=3, image_size=8, num_classes=2)
    assert len(modules(model, nn.Conv2d)) == 2


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("arch", "suggestion"),
    [
        ("resnt18", "resnet18"),
        ("simple_cn", "simple_cnn"),
        ("efficientnet-b0", "efficientnet_b0"),
        ("resnet18d", "timm/resnet18d"),  # a timm name without the prefix
        ("torchvision/resnet19", "resnet18"),
        ("timm/resnet18x", "timm/resnet18"),
    ],
)
def test_unknown_architecture_suggests_names(arch: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.architecture") as info:
        make(architecture=arch)
    assert suggestion in str(info.value).split("Did you mean:")[1]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"num_classes": 7}, "model.num_classes=7 but the data has 5 classes"),
        ({"architecture": "resnet18", "width": 64}, "model.width=64 has no effect"),
        ({"architecture": "timm/test_resnet", "depth": 4}, "model.depth=4 has no effect"),
        ({"kwargs": {"convs_per_blok": 1}}, "model.kwargs.convs_per_blok.*convs_per_block"),
        ({"architecture": "mlp", "kwargs": {"image_size": 8}}, "model.kwargs.image_size.*takes no extra"),
        ({"architecture": "resnet18", "kwargs": {"zero_init": True}}, "model.kwargs.zero_init"),
        ({"architecture": "timm/test_resnet", "kwargs": {"bogus": 1}}, "bogus.*model.kwargs"),
        ({"dropout": 1.5}, r"model.dropout must be in \[0, 1\)"),
        ({"depth": 0}, "model.depth must be >= 1"),
        ({"width": 0}, "model.width must be >= 1"),
        ({"architecture": "squeezenet1_1"}, "cannot take 3x16x16 images.*data.image_size"),
        ({"pretrained": True}, "no published weights.*model.weights_path"),
        ({"weights_path": "w.pt"}, "model.pretrained is false"),
        ({"pretrained": True, "weights_path": "/no/such.pt"}, "does not exist.*local .pt file"),
    ],
)
def test_config_errors(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(**cfg)


# --------------------------------------------------------------------------- local weights


def _save(obj: Any, tmp_path: Path, name: str = "w.pt") -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "model_state_dict"])
def test_weights_from_same_architecture_give_identical_outputs(tmp_path: Path, wrapper: str | None) -> None:
    torch.manual_seed(1)
    source = make(architecture="simple_cnn", width=8)
    logits(source)  # eval mode; BN running stats stay at their initial values, as saved
    state = source.state_dict()
    path = _save(state if wrapper is None else {wrapper: state, "epoch": 3}, tmp_path)
    torch.manual_seed(2)
    loaded = make(architecture="simple_cnn", width=8, pretrained=True, weights_path=path)
    assert torch.equal(logits(loaded), logits(source))


def test_weights_from_a_full_training_checkpoint(tmp_path: Path) -> None:
    """`last.pt` holds RNG states as plain values, so the weights-only unpickler reads it; a numpy
    array (which needs the full unpickler) is refused rather than unpickled."""
    import random

    import numpy as np

    from ml_framework.errors import UserError

    source = make(architecture="mlp", width=8)
    plain = {"numpy": ("MT19937", list(range(624)), 0, 0, 0.0), "python": random.getstate()}
    path = _save({"model": source.state_dict(), "rng": plain}, tmp_path)
    loaded = make(architecture="mlp", width=8, pretrained=True, weights_path=path)
    assert torch.equal(logits(loaded), logits(source))
    path = _save({"model": source.state_dict(), "rng": {"numpy": np.random.get_state()}}, tmp_path)
    with pytest.raises(UserError, match="refusing to unpickle"):
        make(architecture="mlp", width=8, pretrained=True, weights_path=path)


def test_weights_with_another_head_load_all_but_the_head(tmp_path: Path, caplog: Any) -> None:
    source = make(architecture="simple_cnn", width=8, classes=10)
    path = _save({"model": source.state_dict()}, tmp_path)
    with caplog.at_level(logging.INFO, logger="ml_framework.models.factory"):
        loaded = make(architecture="simple_cnn", width=8, pretrained=True, weights_path=path)
    assert "classifier.weight" in caplog.text
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]) != key.startswith("classifier.")


def test_torchvision_weights_into_one_channel_model_sum_rgb_filters(tmp_path: Path) -> None:
    import torchvision

    source = torchvision.models.resnet18(num_classes=1000)  # a torchvision-format .pth file
    path = _save(source.state_dict(), tmp_path)
    model = create_model(
        ModelConfig(architecture="resnet18", pretrained=True, weights_path=path),
        channels=1,
        image_size=16,
        num_classes=3,
    )
    assert torch.allclose(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.fc.weight.shape == (3, 512)


def test_load_weights_returns_the_skipped_head(tmp_path: Path) -> None:
    path = _save(MLP(48, 10, width=8, depth=1).state_dict(), tmp_path)
    assert load_weights(MLP(48, 3, width=8, depth=1), path) == ["classifier.weight", "classifier.bias"]
    with pytest.raises(ConfigError, match=r"classifier\.weight \(10, 8\) vs model \(10, 16\)"):
        load_weights(MLP(48, 10, width=16, depth=1), path)  # a head of another width is no class change


@pytest.mark.parametrize(
    ("source_cfg", "message"),
    [
        ({"width": 16}, r"shapes differ for .*features\.0\.weight \(16, 3, 3, 3\) vs model \(8, 3, 3, 3\)"),
        ({"depth": 3}, r"unexpected keys: features\.14\.weight"),
        ({"architecture": "mlp", "width": 8}, r"missing keys: .*features\.0\.weight"),
    ],
)
def test_weights_that_do_not_fit_name_the_keys(
    tmp_path: Path, source_cfg: dict[str, Any], message: str
) -> None:
    path = _save(make(**{"width": 8, **source_cfg}).state_dict(), tmp_path)
    with pytest.raises(ConfigError, match=message):
        make(width=8, pretrained=True, weights_path=path)


def test_weights_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = _save({"epoch": 3, "metrics": {"val_acc": 0.5}}, tmp_path)
    with pytest.raises(ConfigError, match="holds no state_dict"):
        make(pretrained=True, weights_path=path)


# --------------------------------------------------------------------------- sizes and imports


def test_count_parameters_and_size() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))  # 8 + 4 params, 2 + 2 + 1 buffers
    assert count_parameters(model) == 12
    model[1].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 10
    assert model_size_mb(model) == (12 * 4 + 4 * 4 + 8) / 2**20


def test_package_import_does_not_import_torch() -> None:
    code = "import sys, ml_framework.models as m; assert 'torch' not in sys.modules; print(m.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "create_model" in out.stdout
