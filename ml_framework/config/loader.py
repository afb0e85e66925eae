"""Load a YAML config (self-contained or Hydra-composed), check every key, apply overrides."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ml_framework.config.schema import OPEN_MAPPINGS, Config, SearchConfig, takes_estimator_params
from ml_framework.errors import ConfigError, unknown_key_message
from ml_framework.fileio import atomic_write_text, check_name

CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer.name": ("sgd", "adam", "adamw", "rmsprop"),
    "scheduler.name": ("none", "step", "cosine", "plateau", "warmup_cosine"),
    "training.monitor_mode": ("min", "max"),
    "training.early_stopping.mode": ("min", "max"),
    "training.precision": ("auto", "fp32", "bf16", "fp16"),
    "search.direction": ("maximize", "minimize"),
    "search.keep_checkpoints": ("best", "all", "none"),
    "search.cross_validation.aggregation": ("mean", "median"),
    "data.augmentation.padding_mode": ("zeros", "reflect", "replicate"),
    "data.augmentation.auto_augment": ("none", "trivialaugment", "randaugment", "autoaugment"),
    "data.pipeline": ("auto", "memory", "stream"),
    "data.format": ("images", "csv", "parquet"),
    "data.task": ("classification", "regression"),
    "data.split": ("random", "timeseries"),
    "data.preprocess.numeric_impute": ("mean", "median", "most_frequent", "constant", "none"),
    "data.preprocess.categorical_impute": ("most_frequent", "constant", "none"),
    "data.preprocess.encoding": ("auto", "onehot", "ordinal", "native"),
    "data.preprocess.scaling": ("auto", "standard", "minmax", "robust", "none"),
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


def _estimator_model(cfg: Any) -> bool:
    """A tabular estimator's `model` section takes its parameters as plain keys (model.n_estimators)."""
    model = cfg.get("model") if isinstance(cfg, DictConfig | Mapping) else None
    return isinstance(model, DictConfig | Mapping) and takes_estimator_params(model.get("architecture"))


def is_known_key(key: str, cfg: Any = None) -> bool:
    """True for a schema leaf or a key inside an open mapping (`model.kwargs.anything`), and for any
    `model.<param>` when `cfg` configures a tabular estimator (checked against it by the model factory)."""
    if key in SCHEMA_KEYS or any(key.startswith(m + ".") for m in OPEN_MAPPINGS):
        return True
    return key.startswith("model.") and cfg is not None and _estimator_model(cfg)


def _check_keys(user: Mapping[str, Any], where: str) -> None:
    for key in _leaf_keys(user):
        if key in SCHEMA_KEYS or any(key == m or key.startswith(m + ".") for m in OPEN_MAPPINGS):
            continue
        if key.startswith("model.") and _estimator_model(user):
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


def _compose(path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose a config whose `defaults:` list names groups in folders beside it (configs/model/...);
    `overrides` are Hydra group overrides (`optimizer=sgd`, `+group=option`, `~group`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
            cfg = compose(config_name=path.stem, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        text = " ".join(line.strip() for line in str(e).split("Config search path")[0].splitlines())
        raise ConfigError(f"{path}: could not compose its defaults list: {text.strip()}") from None
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
    if d.format != "images":
        for key in ("path", "target"):
            if not d[key]:
                what = "the csv/parquet file" if key == "path" else "the column to predict"
                raise ConfigError(f"data.{key} is required with data.format={d.format}: set it to {what}")
    if d.channels not in (1, 3):
        raise ConfigError(f"data.channels: {d.channels} is not 1 (grayscale) or 3 (RGB)")
    if d.fold is not None and not 0 <= d.fold < d.n_folds:
        raise ConfigError(f"data.fold: {d.fold} is not in 0..{d.n_folds - 1} (data.n_folds={d.n_folds})")
    for key in ("training.num_epochs", "training.batch_size", "data.image_size", "data.n_folds"):
        if OmegaConf.select(cfg, key) is not None and OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {OmegaConf.select(cfg, key)}")
    if cfg.optimizer.lr < 0:
        raise ConfigError(f"optimizer.lr must be >= 0, got {cfg.optimizer.lr}")
    _check_speed_keys(cfg.training)
    for key in ("output.name", "search.study_name"):  # both become directory names
        if OmegaConf.select(cfg, key):
            check_name(OmegaConf.select(cfg, key), key)


def _check_speed_keys(t: DictConfig) -> None:
    for key in ("channels_last", "compile"):
        if not (t[key] == "auto" or isinstance(t[key], bool)):
            raise ConfigError(f"training.{key}: {t[key]!r} is not one of auto, true, false")
    if t.amp is not None and (t.precision == "fp32" if t.amp else t.precision in ("bf16", "fp16")):
        raise ConfigError(
            f"training.amp: {t.amp} contradicts training.precision: {t.precision} (amp is the old alias: "
            "true = auto, false = fp32); remove training.amp and keep training.precision"
        )


def set_value(cfg: DictConfig, key: str, value: Any, where: str = "override") -> None:
    """Set one dotted key, which must exist; types are checked by the schema."""
    if key == "model.architecture" and takes_estimator_params(value):
        OmegaConf.set_struct(cfg.model, False)
    if not is_known_key(key, cfg):
        raise ConfigError(unknown_key_message(key, config_keys(cfg), where))
    if key.startswith("search.") and cfg.search is None:
        cfg.search = OmegaConf.structured(SearchConfig)
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: invalid value {value!r} for '{key}': {str(e).splitlines()[0]}") from e


def apply_overrides(cfg: DictConfig, overrides: Sequence[str] | Mapping[str, Any]) -> DictConfig:
    """A new config: `cfg` with key overrides (Hydra grammar, see config/overrides.py). Every key of a
    loaded config is set, so `+key` fails and `~key` restores a default; group selections need the
    file (`load_config(path, overrides)`)."""
    from ml_framework.config.overrides import apply_values, parse_overrides

    parsed = parse_overrides(overrides)
    for o in parsed:
        if o.package is not None or "/" in o.key_or_group:
            raise ConfigError(f"override '{o.input_line}': a group selection needs the config file")
    data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    if data.get("search") is None:
        data.pop("search", None)
    return from_container(apply_values(data, parsed, "the config"), where="overrides")


def from_container(data: Mapping[str, Any], where: str = "config") -> DictConfig:
    """Merge a plain mapping onto the schema, with key checks."""
    _check_keys(data, where)
    base = OmegaConf.structured(Config)
    if data.get("search") is not None:
        base.search = OmegaConf.structured(SearchConfig)
    if _estimator_model(data):
        OmegaConf.set_struct(base.model, False)  # the estimator's own parameters: model.n_estimators
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
    from ml_framework.config.overrides import apply_values, is_group, parse_overrides, select_groups

    data = _read_yaml(path)
    parsed = parse_overrides(overrides)
    groups = [o for o in parsed if is_group(o, path.parent)]
    if "defaults" in data:
        data = _compose(path, [str(o.input_line) for o in groups])
    elif groups:
        data = select_groups(data, groups, path.parent)
    data = apply_values(data, [o for o in parsed if not is_group(o, path.parent)], where=str(path))
    return from_container(data, where=str(path))


def copy_config(cfg: DictConfig) -> DictConfig:
    """A deep copy of `cfg` (schema types and flags kept). A pickle round trip of this in-memory object
    (never of a file): several times faster than `copy.deepcopy` of an OmegaConf tree, and a search
    copies its config once per trial."""
    copied = pickle.loads(pickle.dumps(cfg, pickle.HIGHEST_PROTOCOL))
    assert isinstance(copied, DictConfig)
    return copied


def plain_config(cfg: DictConfig, drop_search: bool = False) -> dict[str, Any]:
    """The resolved config as plain dicts and lists (without `search:` when it is empty or dropped)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    if drop_search or container.get("search") is None:
        container.pop("search", None)
    return container


def to_yaml(cfg: DictConfig | dict[str, Any], drop_search: bool = False) -> str:
    """The config's YAML; a `plain_config` is written as it is."""
    container = cfg if isinstance(cfg, dict) else plain_config(cfg, drop_search)
    # libyaml's emitter when PyYAML has it (the same YAML, several times faster: a search writes many)
    return yaml.dump(container, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def save_config(
    cfg: DictConfig | dict[str, Any], path: Path, drop_search: bool = False, header: str = ""
) -> None:
    text = "".join(f"# {line}\n" for line in header.splitlines()) + to_yaml(cfg, drop_search)
    atomic_write_text(path, text)
