"""Models: `create_model(cfg.model, channels=, image_size=, num_classes=)` builds every model.

Exports load lazily, so importing this package does not import torch (CLIs answer `--help` fast).
"""

from __future__ import annotations

import importlib
from typing import Any

# Exported name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "BUILTIN_MODELS": "builtin",
    "MLP": "builtin",
    "SimpleCNN": "builtin",
    "FAMILIES": "factory",
    "count_parameters": "factory",
    "create_model": "factory",
    "head_keys": "factory",
    "load_weights": "factory",
    "model_size_mb": "factory",
    "resolve_architecture": "factory",
    "torchvision_models": "factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
