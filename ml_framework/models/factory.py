"""One factory for every model: built-ins, torchvision classifiers and timm models.

`model.architecture` picks the family:

| architecture                         | family      | config keys that reach the constructor   |
|--------------------------------------|-------------|------------------------------------------|
| `simple_cnn`, `mlp`                  | built-in    | width, depth, dropout, kwargs (see below)|
| `resnet18`, `torchvision/<name>`     | torchvision | dropout, kwargs                          |
| `timm/<name>`                        | timm        | dropout (as `drop_rate`), kwargs         |
| `sklearn/<Estimator>`, `xgboost`, `lightgbm` | tabular (models/tabular.py) | `model.<param>`, kwargs |

`num_classes`, `pretrained` and `weights_path` apply to every family. torchvision models whose
constructor takes `dropout` (efficientnet, mobilenet, vgg, vit, ...) get it there; the others
(resnet, convnext, densenet, regnet, ...) get it as dropout before their classifier Linear
(`DropoutLinear`, same state_dict keys), so searching `model.dropout` across architectures works.
A key that cannot reach its family's constructor (`width`/`depth` off their defaults for
torchvision or timm, `weights_path` without `pretrained`) is a ConfigError, never silently ignored.
Built-in kwargs: `simple_cnn` takes `convs_per_block`; `mlp` takes none.

`model.pretrained: true` loads the library's weights (`models/pretrained.py`: torchvision's weights API
with torch hub's cache, timm's Hugging Face hub cache) and replaces the classifier head for
`num_classes`; with `model.weights_path` it loads that local file instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ml_framework.checkpoint import load_checkpoint
from ml_framework.config.schema import ModelConfig, takes_estimator_params
from ml_framework.errors import ConfigError, closest, unknown_key_message
from ml_framework.models.builtin import BUILTIN_MODELS

logger = logging.getLogger(__name__)

_DEFAULTS = ModelConfig()

# Keys of the `model` section that only the built-ins use, checked against their defaults.
_BUILTIN_ONLY_KEYS = ("width", "depth")

# Checkpoint dict entries that hold the model's state_dict, tried in order.
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")

# Prefixes that wrappers add to state_dict keys (DataParallel, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Constructor defaults the trainer needs: auxiliary heads return tuples, not logits, in train mode.
TORCHVISION_DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (constructors and torch.load'ed dicts want those)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _cfg(model_cfg: Any, key: str) -> Any:
    return _plain(getattr(model_cfg, key, getattr(_DEFAULTS, key)))


@functools.lru_cache(maxsize=1)
def torchvision_models() -> tuple[str, ...]:
    """Names of torchvision's classification models (`resnet18`, `efficientnet_b0`, ...)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


# --------------------------------------------------------------------------- families


def _signature_params(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """(named parameters, whether it takes **kwargs)."""
    params = inspect.signature(fn).parameters
    named = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return named - {"self"}, any(p.kind == p.VAR_KEYWORD for p in params.values())


def _check_kwargs(kwargs: Mapping[str, Any], allowed: set[str], arch: str) -> None:
    for key in kwargs:
        if key not in allowed:
            candidates = [f"model.kwargs.{a}" for a in sorted(allowed)]
            msg = unknown_key_message(f"model.kwargs.{key}", candidates, f"the {arch} model")
            if not allowed:
                msg += f" ({arch} takes no extra arguments: remove model.kwargs)"
            raise ConfigError(msg)


def _construct(fn: Callable[..., nn.Module], arch: str, **kwargs: Any) -> nn.Module:
    """Call a constructor, turning argument errors into a ConfigError about `model.kwargs`."""
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"model.architecture={arch!r} rejected its arguments {kwargs}: {e}; check model.kwargs"
        ) from e


def _check_builtin_only(arch: str, model_cfg: Any) -> None:
    """`width`/`depth` set away from their defaults for a model that ignores them is an error."""
    for key in _BUILTIN_ONLY_KEYS:
        value = _cfg(model_cfg, key)
        if value != getattr(_DEFAULTS, key):
            raise ConfigError(
                f"model.{key}={value!r} has no effect on model.architecture={arch!r} (width and depth "
                f"configure the built-in models {', '.join(BUILTIN_MODELS)}); remove model.{key}, or "
                f"set torchvision/timm constructor arguments in model.kwargs"
            )


def _build_builtin(
    arch: str, model_cfg: Any, channels: int, image_size: int, num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    cls = BUILTIN_MODELS[arch]
    width, depth = int(_cfg(model_cfg, "width")), int(_cfg(model_cfg, "depth"))
    min_depth = getattr(cls, "min_depth", 1)
    if width < 1:
        raise ConfigError(f"model.width must be >= 1 for {arch}, got {width}")
    if depth < min_depth:
        raise ConfigError(f"model.depth must be >= {min_depth} for {arch}, got {depth}")
    # What the factory fills in; a constructor takes the subset it names.
    filled = {
        "channels": channels,
        "image_size": image_size,
        "in_features": channels * image_size**2,
        "num_classes": num_classes,
        "width": width,
        "depth": depth,
        "dropout": float(_cfg(model_cfg, "dropout")),
    }
    named, _ = _signature_params(cls.__init__)
    _check_kwargs(kwargs, named - set(filled), arch)
    args = {k: v for k, v in filled.items() if k in named}
    return _construct(cls, arch, **args, **kwargs)


def _build_torchvision(
    arch: str, model_cfg: Any, channels: int, image_size: int, num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    import torchvision

    _check_builtin_only(arch, model_cfg)
    builder = torchvision.models.get_model_builder(arch)
    model_cls = inspect.signature(builder).return_annotation
    named, open_kwargs = _signature_params(model_cls.__init__)
    if not open_kwargs:
        _check_kwargs(kwargs, named - {"num_classes"}, arch)
    pretrained = library_weights(model_cfg)
    # With weights the builder sets what they need (aux heads, input size) itself.
    args = {**({} if pretrained else TORCHVISION_DEFAULT_KWARGS.get(arch, {})), **kwargs}
    dropout = float(_cfg(model_cfg, "dropout"))
    takes_dropout = "dropout" in named
    if takes_dropout:
        args.setdefault("dropout", dropout)
    for param, value in _image_size_args(image_size).items():
        if param in named and not pretrained:
            args.setdefault(param, value)
    get_model = torchvision.models.get_model
    if pretrained:
        model = _torchvision_pretrained(arch, model_cfg, num_classes, args)
    else:
        model = _construct(get_model, arch, name=arch, weights=None, num_classes=num_classes, **args)
    if channels != 3:
        _adapt_first_conv(model, channels, keep_filters=pretrained)
    if not takes_dropout and dropout > 0:
        _add_head_dropout(model, arch, dropout)
    return model


def _build_timm(
    arch: str, model_cfg: Any, channels: int, image_size: int, num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    import timm

    _check_builtin_only(arch, model_cfg)
    name = arch.removeprefix("timm/")
    pretrained: dict[str, Any] = {"pretrained": False}
    if library_weights(model_cfg):  # timm loads them (HF hub cache) and fits the head to num_classes
        from ml_framework.models.pretrained import timm_pretrained_args

        pretrained = timm_pretrained_args(name)
    return _construct(
        timm.create_model,
        arch,
        model_name=name,
        **pretrained,
        num_classes=num_classes,
        in_chans=channels,
        drop_rate=float(_cfg(model_cfg, "dropout")),
        **kwargs,
    )


def _torchvision_pretrained(arch: str, model_cfg: Any, num_classes: int, args: dict[str, Any]) -> nn.Module:
    """Build with `weights=` (the file from torch hub's cache), then replace the head for num_classes."""
    import pickle

    import torchvision

    from ml_framework.models.pretrained import ensure_torchvision_file, torchvision_weights

    weights = torchvision_weights(arch, str(_cfg(model_cfg, "weights")))
    path = ensure_torchvision_file(arch, weights)
    try:  # torchvision reads the file with torch.load(weights_only=True)
        model = _construct(torchvision.models.get_model, arch, name=arch, weights=weights, **args)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ConfigError(f"cannot load the {weights} file {path}: {e}; delete it (or replace it)") from e
    _replace_head(model, arch, num_classes)
    return model


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> None:
    """A fresh classifier with `num_classes` outputs in place of the pretrained one (same input)."""
    found = _classifier(model)
    if found is None:
        raise ConfigError(f"model.architecture={arch!r}: no classifier layer to fit to {num_classes} classes")
    name, old = found
    if isinstance(old, nn.Linear):
        if old.out_features != num_classes:
            _replace(model, name, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    elif old.out_channels != num_classes:  # a 1x1-conv classifier (squeezenet)
        _replace(model, name, nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size))
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes


def _image_size_args(image_size: int) -> dict[str, Any]:
    """Constructor arguments that fix the input size (ViT position embeddings, MaxViT partitions)."""
    return {"image_size": image_size, "input_size": (image_size, image_size)}


_Builder = Callable[[str, Any, int, int, int, dict[str, Any]], nn.Module]
FAMILIES: dict[str, _Builder] = {
    "builtin": _build_builtin,
    "torchvision": _build_torchvision,
    "timm": _build_timm,
}
# `<prefix>/<name>` picks a family explicitly.
PREFIXES: dict[str, str] = {"torchvision/": "torchvision", "timm/": "timm"}


def _timm_suggestions(name: str) -> list[str]:
    import timm

    parts = [name, *sorted(name.replace("-", "_").split("_"), key=len, reverse=True)]
    for part in parts:
        found = timm.list_models(f"*{part}*") if len(part) >= 3 else []
        if found:
            return closest(name, found, n=5) or found[:5]
    return closest(name, timm.list_models(), n=5)


def resolve_architecture(arch: str) -> tuple[str, str]:
    """`model.architecture` -> (family, canonical architecture), or a ConfigError with suggestions.
    Tabular estimators (`sklearn/<Estimator>`, `xgboost`, `lightgbm`) are built by models/tabular.py."""
    if takes_estimator_params(arch):
        from ml_framework.models.tabular import family

        return family(arch), arch
    prefix = next((p for p in PREFIXES if arch.startswith(p)), None)
    if prefix is not None:
        family, name = PREFIXES[prefix], arch.removeprefix(prefix)
    else:
        family, name = ("builtin", arch) if arch in BUILTIN_MODELS else ("torchvision", arch)

    if family == "builtin" or (family == "torchvision" and name in torchvision_models()):
        return family, name
    if family == "timm":
        import timm

        if timm.is_model(name):
            return family, arch
        near = [f"timm/{n}" for n in _timm_suggestions(name)]
        raise ConfigError(
            f"model.architecture={arch!r}: timm has no model {name!r}"
            + (f". Did you mean: {', '.join(near)}?" if near else "")
        )

    near = closest(name, [*BUILTIN_MODELS, *torchvision_models()])
    import timm

    if timm.is_model(name):
        near.insert(0, f"timm/{name}")
    raise ConfigError(
        f"model.architecture={arch!r} is not a built-in ({', '.join(BUILTIN_MODELS)}) or torchvision "
        "model; timm models are named timm/<name>" + (f". Did you mean: {', '.join(near)}?" if near else "")
    )


# --------------------------------------------------------------------------- stem and head


class DropoutLinear(nn.Linear):
    """A Linear layer with dropout on its input: adds `model.dropout` to a classifier head
    without renaming its parameters, so state_dicts stay interchangeable with the plain model."""

    def __init__(self, linear: nn.Linear, p: float) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        self.load_state_dict(linear.state_dict())
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.dropout(x, self.p, self.training))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.p}"


def _classifier(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier: the last Linear (or 1x1-conv classifier, as in squeezenet) module."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            found = name, module
    return found


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, module)


def _add_head_dropout(model: nn.Module, arch: str, p: float) -> None:
    found = _classifier(model)
    if found is None or not isinstance(found[1], nn.Linear):
        raise ConfigError(
            f"model.dropout={p} cannot be applied to model.architecture={arch!r}: its classifier is not "
            "a Linear layer; set model.dropout=0"
        )
    _replace(model, found[0], DropoutLinear(found[1], p))


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def _adapt_first_conv(model: nn.Module, channels: int, keep_filters: bool = False) -> None:
    """Replace an RGB stem conv by one taking `channels` inputs (same geometry otherwise); with
    `keep_filters` a 1-channel stem gets the pretrained RGB filters summed (as timm's in_chans=1)."""
    found = _first_conv(model)
    if found is None or found[1].in_channels == channels:
        return
    name, old = found
    new = nn.Conv2d(
        channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if keep_filters and channels == 1:
        with torch.no_grad():
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    _replace(model, name, new)


# --------------------------------------------------------------------------- weights


def head_keys(model: nn.Module) -> set[str]:
    """Names of the classifier's parameters (as in state_dict and named_parameters): the head that
    fine-tuning keeps trainable while the rest, the backbone, is frozen or gets its own lr."""
    found = _classifier(model)
    if found is None:
        return set()
    name, module = found
    return {f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    data = load_checkpoint(path, what="model.weights_path")  # weights-only: never runs code
    if isinstance(data, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConfigError(
            f"model.weights_path={str(path)!r} holds no state_dict: expected a mapping of tensors or a "
            f"checkpoint dict with one of {', '.join(STATE_DICT_KEYS)}"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = value
    return state


def _list(keys: set[str] | list[str], n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local state_dict (or checkpoint) into `model`; return the head keys it skipped.

    A classifier head of another shape (other num_classes) keeps its fresh init, with a logged
    note. RGB stem filters are summed for a 1-channel model. Any other missing, extra or
    mismatched key is a ConfigError naming the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model.weights_path={str(path)!r} does not exist; point it at a local .pt file, or remove it "
            "to load the library's published weights (model.pretrained=true)"
        )
    loaded = _read_state_dict(path)
    own = model.state_dict()
    missing, unexpected = set(own) - set(loaded), set(loaded) - set(own)
    if missing or unexpected:
        raise ConfigError(
            f"model.weights_path={str(path)!r} does not fit this model: "
            + "; ".join(
                f"{what}: {_list(keys)}"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected))
                if keys
            )
        )
    first = _first_conv(model)
    stem = f"{first[0]}.weight" if first else None
    heads, skipped, bad = head_keys(model), [], []
    for key, value in loaded.items():
        want = own[key].shape
        if value.shape == want:
            continue
        if key in heads and value.shape[1:] == want[1:]:  # only the class count differs
            skipped.append(key)
        elif key == stem and value.dim() == 4 and value.shape[1] == 3 and want[1] == 1:
            loaded[key] = value.sum(dim=1, keepdim=True)
        else:
            bad.append(f"{key} {tuple(value.shape)} vs model {tuple(want)}")
    if bad:
        raise ConfigError(f"model.weights_path={str(path)!r}: shapes differ for {_list(bad)}")
    for key in skipped:
        loaded[key] = own[key]
    if skipped:
        logger.info(
            "Loaded %s except the classifier head (%s): it has another number of classes and starts fresh",
            path,
            ", ".join(skipped),
        )
    model.load_state_dict(loaded)
    return skipped


# --------------------------------------------------------------------------- factory


def _num_classes(model_cfg: Any, num_classes: int) -> int:
    configured = _cfg(model_cfg, "num_classes")
    if configured is not None and int(configured) != num_classes:
        raise ConfigError(
            f"model.num_classes={configured} but the data has {num_classes} classes; remove "
            f"model.num_classes (it defaults to the number of class folders) or set it to {num_classes}"
        )
    return num_classes


def library_weights(model_cfg: Any) -> bool:
    """Whether the pretrained weights come from torchvision's / timm's API (not model.weights_path)."""
    return bool(_cfg(model_cfg, "pretrained")) and not _cfg(model_cfg, "weights_path")


def _check_pretrained(model_cfg: Any, family: str) -> str | None:
    pretrained, weights_path = bool(_cfg(model_cfg, "pretrained")), _cfg(model_cfg, "weights_path")
    if pretrained and not weights_path and family == "builtin":
        raise ConfigError(
            f"model.pretrained=true: the built-in {_cfg(model_cfg, 'architecture')} has no published "
            "weights; set model.weights_path to a local state_dict, or use a torchvision or timm/<name> model"
        )
    if weights_path and not pretrained:
        raise ConfigError(
            f"model.weights_path={weights_path!r} is set but model.pretrained is false, so it would "
            "do nothing; set model.pretrained=true to load it, or remove model.weights_path"
        )
    return str(weights_path) if weights_path else None


def _check_forward(model: nn.Module, arch: str, channels: int, image_size: int, num_classes: int) -> None:
    """One eval-mode forward pass, so a size the model cannot take fails now, with a clear message."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, channels, image_size, image_size))
    except Exception as e:
        hint = (
            f"; if it takes img_size, set model.kwargs.img_size: {image_size}"
            if arch.startswith("timm/")
            else ""
        )
        raise ConfigError(
            f"model.architecture={arch!r} cannot take {channels}x{image_size}x{image_size} images "
            f"(data.channels, data.image_size): {str(e).rstrip('.')}. Change data.image_size or pick "
            f"another model{hint}"
        ) from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model.architecture={arch!r} returns {shape} for one image, expected (1, {num_classes}) logits"
        )


def create_model(model_cfg: Any, *, channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Build the model the `model` config section describes, for the data's geometry.

    `model_cfg` is a ModelConfig or the `model` DictConfig of a loaded config. The model is on
    the CPU in train mode, checked with one forward pass.
    """
    num_classes = _num_classes(model_cfg, num_classes)
    arch = str(_cfg(model_cfg, "architecture"))
    dropout = float(_cfg(model_cfg, "dropout"))
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    family, arch = resolve_architecture(arch)
    weights_path = _check_pretrained(model_cfg, family)
    if family not in FAMILIES:
        raise ConfigError(
            f"model.architecture={arch!r} is a tabular estimator: it trains on a table (set data.format: csv "
            "or parquet, data.path and data.target), not on images"
        )
    kwargs = dict(_cfg(model_cfg, "kwargs") or {})
    model = FAMILIES[family](arch, model_cfg, channels, image_size, num_classes, kwargs)
    if weights_path is not None:
        load_weights(model, weights_path)
    _check_forward(model, arch, channels, image_size, num_classes)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size_mb(model: nn.Module) -> float:
    """Parameter plus buffer bytes, in MiB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20
