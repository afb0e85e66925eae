"""Warm start (`--enqueue FILE`): parameter sets run before the sampler's own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml

from ml_framework.errors import ConfigError
from ml_framework.search.space import SearchSpace


def load_enqueue_file(path: Path, space: SearchSpace) -> list[dict[str, Any]]:
    """A YAML list of parameter mappings (dotted keys of the search space), checked against the space."""
    if not Path(path).is_file():
        raise ConfigError(f"--enqueue: no file {path}")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--enqueue {path}: not valid YAML: {str(e).splitlines()[0]}") from e
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ConfigError(f"--enqueue {path}: expected a list of mappings like [{{optimizer.lr: 0.01}}]")
    for i, params in enumerate(data):
        for key, value in params.items():
            if key not in space:
                raise ConfigError(
                    f"--enqueue {path}: entry {i} sets '{key}', which is not in the search space "
                    f"({', '.join(space.names)})"
                )
            dist = space[key].distribution
            try:
                dist.to_internal_repr(value)
                ok = dist._contains(dist.to_internal_repr(value))
            except (ValueError, TypeError, IndexError):
                ok = False
            if not ok:
                raise ConfigError(f"--enqueue {path}: entry {i}: {key}={value!r} is outside {dist}")
    return data


def enqueue(study: optuna.Study, param_sets: Sequence[dict[str, Any]]) -> int:
    """Queue each set once (a resumed study does not run it again); returns how many are waiting."""
    for params in param_sets:
        study.enqueue_trial(params, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
