"""Pretrained weights through the libraries' own APIs, and the preprocessing that goes with them.

- torchvision: `torchvision.models.get_model_weights(arch)[model.weights]`; the file is torch hub's
  cache, `$TORCH_HOME/hub/checkpoints/<file name of weights.url>`, downloaded there when missing and
  the machine has a network. torchvision reads it with `torch.load(weights_only=True)`.
- timm: timm's pretrained loading from the Hugging Face hub cache (`HF_HUB_OFFLINE=1` honoured). A
  file already in the cache is handed to timm as `pretrained_cfg_overlay=dict(file=...)`, so a cached
  model never waits on the network; timm reads safetensors, or torch files with `weights_only=True`.

Without the file and without a network: one `WeightsUnavailable` error naming the model, the file and
where to put it. `weights_preset` gives the weights' own input size, resize and mean/std.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_framework.errors import ConfigError, UserError

HF_ENDPOINT_PROBE_TIMEOUT_S = 5.0
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for, in its order


class WeightsUnavailable(UserError):
    """Pretrained weights are neither in the local cache nor downloadable."""


@dataclass(frozen=True)
class Preset:
    """The preprocessing the weights were trained with."""

    image_size: int  # crop side
    resize_size: int  # side before the centre crop
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # e.g. "ResNet18_Weights.IMAGENET1K_V1 transforms()"


# --------------------------------------------------------------------------- torchvision


def torchvision_weights(arch: str, name: str) -> Any:
    """The weights enum member `name` (`DEFAULT`, `IMAGENET1K_V1`, ...) of a torchvision model."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"model.architecture={arch!r} has no torchvision pretrained weights ({e})") from e
    try:
        return enum[name]
    except KeyError:
        members = ", ".join(enum.__members__)
        raise ConfigError(
            f"model.weights={name!r} is not a weights name of {arch}; choose from {members}"
        ) from None


def hub_checkpoint_path(url: str) -> Path:
    """Where torch hub keeps (and looks for) the file of `url`."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def ensure_torchvision_file(arch: str, weights: Any) -> Path:
    """The weights' file in torch hub's cache, downloaded there first when missing."""
    target = hub_checkpoint_path(weights.url)
    if target.is_file():
        return target
    try:
        weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:
        raise WeightsUnavailable(
            f"model.architecture={arch!r} with model.pretrained=true needs the file {target.name} "
            f"({weights}) and it is not in torch hub's cache, nor could it be downloaded ({_reason(e)}). "
            f"Put the file at {target} (download {weights.url} on a machine with a network; TORCH_HOME "
            "moves the cache), or set model.weights_path to a local state_dict"
        ) from None
    return target


# --------------------------------------------------------------------------- timm


def _timm_cfg(name: str) -> Any:
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ConfigError(f"model.architecture='timm/{name}' has no pretrained weights in timm")
    return cfg


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hf_cached_file(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in HF_WEIGHT_FILES:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def _probe(url: str) -> str | None:
    """None when `url` answers (any HTTP status), else why not: the hub client would retry for a minute."""
    try:
        urllib.request.urlopen(
            urllib.request.Request(url, method="HEAD"), timeout=HF_ENDPOINT_PROBE_TIMEOUT_S
        )
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as e:
        return _reason(e)
    return None


def timm_pretrained_args(name: str) -> dict[str, Any]:
    """`timm.create_model` arguments that load the pretrained weights of `name` (no `timm/` prefix)."""
    cfg = _timm_cfg(name)
    if not cfg.hf_hub_id:  # weights only at a URL: torch hub's cache, as torchvision
        target = hub_checkpoint_path(cfg.url)
        if target.is_file():
            return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(target)}}
        why = _probe(cfg.url)
        if why is not None:
            raise WeightsUnavailable(
                f"model.architecture='timm/{name}' with model.pretrained=true needs {target.name}, which is "
                f"not in torch hub's cache and cannot be downloaded ({why}). Put {cfg.url} at {target}, "
                "or set model.weights_path to a local state_dict"
            )
        return {"pretrained": True}
    from huggingface_hub import constants, hf_hub_url

    repo = cfg.hf_hub_id.split("@")[0]
    cached = _hf_cached_file(repo)
    if cached is not None:
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": cached}}
    why = "HF_HUB_OFFLINE is set" if _hf_offline() else _probe(hf_hub_url(repo, HF_WEIGHT_FILES[0]))
    if why is not None:
        where = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        files = " or ".join(HF_WEIGHT_FILES)
        raise WeightsUnavailable(
            f"model.architecture='timm/{name}' with model.pretrained=true needs {files} "
            f"of the Hugging Face repo {repo}, which is not in the hub cache ({where}) and cannot be "
            f"downloaded ({why}). On a machine with a network run `hf download {repo}` and copy {where} "
            "to this machine's cache (HF_HOME moves it), or set model.weights_path to a local state_dict"
        )
    return {"pretrained": True}


# --------------------------------------------------------------------------- presets


def weights_preset(family: str, arch: str, weights_name: str) -> Preset:
    """Input size, resize and mean/std of the pretrained weights (torchvision's `weights.transforms()`,
    timm's `resolve_data_config`)."""
    if family == "torchvision":
        weights = torchvision_weights(arch, weights_name)
        t = weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        return Preset(crop, resize, tuple(t.mean), tuple(t.std), f"{weights} transforms()")
    import timm.data

    name = arch.removeprefix("timm/")
    data = timm.data.resolve_data_config(pretrained_cfg=_timm_cfg(name).to_dict())
    size = int(data["input_size"][-1])
    resize = int(size / float(data.get("crop_pct") or 1.0))
    return Preset(size, resize, tuple(data["mean"]), tuple(data["std"]), f"timm {name} data config")


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    return str(reason if reason is not None else e).strip() or type(e).__name__


def cached_backbones(candidates: tuple[str, ...]) -> tuple[str, ...]:
    """The torchvision models among `candidates` whose DEFAULT weights are in torch hub's cache."""
    return tuple(
        arch for arch in candidates if hub_checkpoint_path(torchvision_weights(arch, "DEFAULT").url).is_file()
    )
