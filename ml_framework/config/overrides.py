"""Command-line overrides in Hydra's grammar, read by Hydra's own override parser.

- `group=option` selects `<config dir>/<group>/<option>.yaml`: through Hydra's composition when the
  config has a `defaults:` list (`+group=option` adds a group to it, `~group` removes one); in a
  self-contained config the option file replaces the section (`~group` drops the section).
- `key=value` sets a key; a schema key can be set even where the file leaves it at its default.
- `+key=value` adds a key the config does not set (an error if it does); `++key=value` sets or adds.
- `~key` (or `~key=value`, only if it has that value) removes a key the config sets: it takes its
  default again.

Every key is checked against the schema (unknown keys are errors with the nearest names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from ml_framework.errors import ConfigError, unknown_key_message

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any]) -> list[Override]:
    """Hydra `Override`s; a mapping (already typed values, e.g. from shortcut flags) sets keys."""
    if not overrides:  # Hydra's parser is not imported (about 60 ms)
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Override, OverrideType, ValueType
    from hydra.errors import HydraException

    if isinstance(overrides, Mapping):
        return [
            Override(OverrideType.CHANGE, key, ValueType.ELEMENT, value, input_line=f"{key}={value!r}")
            for key, value in overrides.items()
        ]
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as e:
            raise ConfigError(
                f"override '{text}' is not of the form dotted.key=value, group=option, +key=value or "
                f"~key ({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})"
            ) from None
        if override.is_sweep_override():
            raise ConfigError(
                f"override '{text}' is a sweep; give one value per key (search ranges belong in "
                "search.search_space or ml-search --param)"
            )
        parsed.append(override)
    return parsed


def is_group(override: Override, config_dir: Path) -> bool:
    """A config group selection (`optimizer=sgd`, `~scheduler`, `model/backbone=x`, `group@pkg=x`)."""
    key = override.key_or_group
    if override.package is not None or "/" in key:
        return True
    return "." not in key and (config_dir / key).is_dir()


def select_groups(data: dict[str, Any], groups: Sequence[Override], config_dir: Path) -> dict[str, Any]:
    """Group selections for a config without a `defaults:` list: the option's file is the section."""
    from ml_framework.config.loader import _read_yaml

    conf = OmegaConf.create(data)
    for o in groups:
        target = o.package or o.key_or_group.replace("/", ".")
        if o.is_delete():
            if OmegaConf.select(conf, target) is None:
                raise ConfigError(
                    f"override '{o.input_line}': the config has no '{target}' section to remove"
                )
            parent, _, leaf = target.rpartition(".")
            del (OmegaConf.select(conf, parent) if parent else conf)[leaf]
            continue
        option = o.value()
        folder = config_dir / o.key_or_group
        path = folder / f"{option}.yaml"
        if not isinstance(option, str) or not path.resolve().is_relative_to(config_dir.resolve()):
            raise ConfigError(
                f"override '{o.input_line}': a group option names a file under {config_dir}, not {path}"
            )
        if not path.is_file():
            options = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
            raise ConfigError(f"override '{o.input_line}': no {path}; options in {folder}: {options}")
        OmegaConf.update(conf, target, _read_yaml(path), merge=False, force_add=True)
    return OmegaConf.to_container(conf, resolve=False)  # type: ignore[return-value]


def apply_values(data: dict[str, Any], overrides: Sequence[Override], where: str) -> dict[str, Any]:
    """Apply key overrides to a config's own mapping (before it is merged onto the schema), with
    Hydra's semantics for `+`, `++` and `~`."""
    if not overrides:
        return data
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import HydraException

    from ml_framework.config.loader import SCHEMA_KEYS, config_keys, is_known_key

    conf = OmegaConf.create(data)  # not struct: `key=value` may set a key the file leaves at its default
    for o in overrides:
        key, line = o.key_or_group, o.input_line
        section = [k for k in SCHEMA_KEYS if k.startswith(key + ".")]
        if not (is_known_key(key, data) or section):
            candidates = config_keys(OmegaConf.create(data))
            raise ConfigError(unknown_key_message(key, candidates, f"override '{line}'"))
        if section and not o.is_delete() and not isinstance(o.value(), dict):
            raise ConfigError(
                f"override '{line}': '{key}' is a section of settings, and there is no config group "
                f"folder '{key}/' beside {where} to pick '{o.value()}' from; "
                f"set a key in it ({section[0]}=...)"
            )
        try:
            ConfigLoaderImpl._apply_overrides_to_config([o], conf)
        except HydraException as e:
            text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
            hint = f" ({where} does not set it)" if o.is_delete() and "does not exist" in text else ""
            raise ConfigError(f"override '{line}': {text}{hint}") from None
    return OmegaConf.to_container(conf, resolve=False)  # type: ignore[return-value]
