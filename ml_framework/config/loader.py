"""Load a YAML config (self-contained or Hydra-composed), check every key, apply overrides."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ml_framework.config.schema import OPEN_MAPPINGS, Config, SearchConfig
from ml_framework.errors import ConfigError, unknown_key_message
from ml_framework.fileio import atomic_write_text

CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer.name": ("sgd", "adam", "adamw", "rmsprop"),
    "scheduler.name": ("none", "step", "cosine", "plateau", "warmup_cosine"),
    "training.monitor_mode": ("min", "max"),
    "training.early_stopping.mode": ("min", "max"),
    "search.direction": ("maximize", "minimize"),
    "search.keep_checkpoints": ("best", "all", "none"),
    "search.cross_validation.aggregation": ("mean", "median"),
    "data.augmentation.padding_mode": ("zeros", "reflect", "replicate"),
}


def _schema() -> DictConfig:
    cfg = OmegaConf.structured(Config)
    cfg.search = OmegaConf.structured(SearchConfig)
    return cfg


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    if isinstance(node, DictConfig | Mapping) and prefix not in OPEN_MAPPINGS:
        for k, v in node.items():
            keys.extend(_leaf_keys(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        keys.append(prefix)
    return keys


SCHEMA_KEYS: tuple[str, ...] = tuple(_leaf_keys(_schema()))


def config_keys(cfg: DictConfig | None = None) -> list[str]:
    """Dotted keys a config can set: every schema leaf, plus the keys present in open mappings."""
    keys = list(SCHEMA_KEYS)
    if cfg is not None:
        for k in _leaf_keys(cfg):
            if k not in keys:
                keys.append(k)
    return keys


def is_known_key(key: str) -> bool:
    """True for a schema leaf or a key inside an open mapping (`model.kwargs.anything`)."""
    return key in SCHEMA_KEYS or any(key.startswith(m + ".") for m in OPEN_MAPPINGS)


def _check_keys(user: Mapping[str, Any], where: str) -> None:
    for key in _leaf_keys(user):
        if key in SCHEMA_KEYS or any(key == m or key.startswith(m + ".") for m in OPEN_MAPPINGS):
            continue
        # A mapping given where the schema has a section: check its own leaves.
        if any(s.startswith(key + ".") for s in SCHEMA_KEYS):
            raise ConfigError(f"{where}: '{key}' must be a mapping of settings, not a single value")
        raise ConfigError(unknown_key_message(key, SCHEMA_KEYS, where))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections (data, model, training, ...)")
    return data


def _compose(path: Path) -> dict[str, Any]:
    """Compose a config whose `defaults:` list names groups in folders beside it (configs/model/...)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
            cfg = compose(config_name=path.stem)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{path}: could not compose its defaults list: {e}") from e
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def validate(cfg: DictConfig) -> None:
    """Checks that need no heavy imports: enumerated values and numeric ranges."""
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
    d = cfg.data
    if not (0 <= d.val_split < 1 and 0 <= d.test_split < 1 and d.val_split + d.test_split < 1):
        raise ConfigError(
            f"data.val_split ({d.val_split}) and data.test_split ({d.test_split}) must be in [0, 1) "
            "and leave a training split"
        )
    if d.channels not in (1, 3):
        raise ConfigError(f"data.channels: {d.channels} is not 1 (grayscale) or 3 (RGB)")
    if d.fold is not None and not 0 <= d.fold < d.n_folds:
        raise ConfigError(f"data.fold: {d.fold} is not in 0..{d.n_folds - 1} (data.n_folds={d.n_folds})")
    for key in ("training.num_epochs", "training.batch_size", "data.image_size", "data.n_folds"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {OmegaConf.select(cfg, key)}")
    if cfg.optimizer.lr < 0:
        raise ConfigError(f"optimizer.lr must be >= 0, got {cfg.optimizer.lr}")


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ('a.b', parsed value); the value is read as YAML (`null`, `[1, 2]`, `1e-3`)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("+")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': cannot read value '{raw}': {e}") from e
    return key, value


def set_value(cfg: DictConfig, key: str, value: Any, where: str = "override") -> None:
    """Set one dotted key, which must exist; types are checked by the schema."""
    if not is_known_key(key):
        raise ConfigError(unknown_key_message(key, config_keys(cfg), where))
    if key.startswith("search.") and cfg.search is None:
        cfg.search = OmegaConf.structured(SearchConfig)
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: invalid value {value!r} for '{key}': {str(e).splitlines()[0]}") from e


def apply_overrides(cfg: DictConfig, overrides: Iterable[str] | Mapping[str, Any]) -> DictConfig:
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for key, value in items:
        set_value(cfg, key, value)
    validate(cfg)
    return cfg


def from_container(data: Mapping[str, Any], where: str = "config") -> DictConfig:
    """Merge a plain mapping onto the schema, with key checks."""
    _check_keys(data, where)
    base = OmegaConf.structured(Config)
    if data.get("search") is not None:
        base.search = OmegaConf.structured(SearchConfig)
    try:
        cfg = OmegaConf.merge(base, data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {str(e).splitlines()[0]} ({getattr(e, 'full_key', '')})") from e
    validate(cfg)
    return cfg  # type: ignore[return-value]


def load_config(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> DictConfig:
    """Read FILE (composing its Hydra `defaults:` list if it has one), check it, apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = _read_yaml(path)
    if "defaults" in data:
        data = _compose(path)
    cfg = from_container(data, where=str(path))
    return apply_overrides(cfg, overrides)


def to_yaml(cfg: DictConfig, drop_search: bool = False) -> str:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    if drop_search or container.get("search") is None:
        container.pop("search", None)
    return yaml.safe_dump(container, sort_keys=False)


def save_config(cfg: DictConfig, path: Path, drop_search: bool = False, header: str = "") -> None:
    text = "".join(f"# {line}\n" for line in header.splitlines()) + to_yaml(cfg, drop_search)
    atomic_write_text(path, text)
