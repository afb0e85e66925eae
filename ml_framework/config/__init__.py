"""Config loading, checking and overrides (OmegaConf schema + optional Hydra composition)."""

from ml_framework.config.loader import (
    apply_overrides,
    config_keys,
    copy_config,
    from_container,
    is_known_key,
    load_config,
    plain_config,
    save_config,
    set_value,
    to_yaml,
    validate,
)

__all__ = [
    "apply_overrides",
    "config_keys",
    "copy_config",
    "from_container",
    "is_known_key",
    "load_config",
    "plain_config",
    "save_config",
    "set_value",
    "to_yaml",
    "validate",
]
