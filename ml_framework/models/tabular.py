"""Tabular estimators of the model factory: `sklearn/<Estimator>` (any scikit-learn classifier or
regressor), `xgboost` and `lightgbm`. Their parameters are plain keys of the `model` section
(`model.n_estimators`), checked against the estimator's `get_params()` with suggestions."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ml_framework.config.schema import ESTIMATOR_PREFIX, ModelConfig
from ml_framework.errors import ConfigError, UserError, closest, unknown_key_message

# library family -> (module, classifier class, regressor class)
BOOSTERS: dict[str, tuple[str, str, str]] = {
    "xgboost": ("xgboost", "XGBClassifier", "XGBRegressor"),
    "lightgbm": ("lightgbm", "LGBMClassifier", "LGBMRegressor"),
}
DEFAULT_ROUNDS = 100  # XGBoost's and LightGBM's n_estimators when it is not set
# Defaults that differ from the library's: LightGBM prints a line per warning otherwise.
BOOSTER_DEFAULTS: dict[str, dict[str, Any]] = {"lightgbm": {"verbose": -1}, "xgboost": {}}
# Modules looked in first (scikit-learn's all_estimators imports every module: ~1.5 s).
COMMON_SKLEARN_MODULES = (
    "ensemble", "linear_model", "tree", "svm", "neighbors", "naive_bayes", "neural_network",
)  # fmt: skip
# scikit-learn modules of tree models: they need no scaling.
TREE_MODULES = ("sklearn.ensemble", "sklearn.tree")
TASK_TYPES = {"classification": "classifier", "regression": "regressor"}
_SCHEMA_KEYS = frozenset(ModelConfig.__dataclass_fields__)


def family(architecture: str) -> str:
    """`sklearn`, `xgboost` or `lightgbm`."""
    return "sklearn" if architecture.startswith(ESTIMATOR_PREFIX) else architecture


@functools.lru_cache(maxsize=1)
def _sklearn_estimators() -> dict[str, dict[str, type]]:
    from sklearn.utils import all_estimators

    return {kind: dict(all_estimators(type_filter=kind)) for kind in ("classifier", "regressor")}


def _sklearn_class(name: str, task: str) -> type:
    from sklearn.base import ClassifierMixin, RegressorMixin

    kind = TASK_TYPES[task]
    mixin = ClassifierMixin if kind == "classifier" else RegressorMixin
    for module in COMMON_SKLEARN_MODULES:
        cls = getattr(importlib.import_module(f"sklearn.{module}"), name, None)
        if isinstance(cls, type) and issubclass(cls, mixin):
            return cls
    found = _sklearn_estimators()
    if name in found[kind]:
        return found[kind][name]
    other = "regressor" if kind == "classifier" else "classifier"
    if name in found[other]:
        twin = (
            name.replace("Regressor", "Classifier")
            if kind == "classifier"
            else name.replace("Classifier", "Regressor")
        )
        example = f"sklearn/{twin}" if twin in found[kind] else f"a {kind}"
        raise ConfigError(
            f"model.architecture=sklearn/{name} is a {other}, but data.task is {task}: use {example}, "
            "or set data.task"
        )
    near = [f"sklearn/{n}" for n in closest(name, found[kind], n=5)]
    raise ConfigError(
        f"model.architecture=sklearn/{name}: scikit-learn has no {kind} '{name}'"
        + (f". Did you mean: {', '.join(near)}?" if near else "")
    )


def estimator_class(architecture: str, task: str) -> type:
    """The estimator class for `model.architecture` and `data.task`."""
    fam = family(architecture)
    if fam == "sklearn":
        return _sklearn_class(architecture.removeprefix(ESTIMATOR_PREFIX), task)
    module, classifier, regressor = BOOSTERS[fam]
    try:
        lib = importlib.import_module(module)
    except ImportError as e:
        raise UserError(
            f'model.architecture={fam} needs {module}: pip install "ml_framework[tabular]" ({e})'
        ) from e
    return getattr(lib, classifier if task == "classification" else regressor)


def estimator_params(model_cfg: Any) -> dict[str, Any]:
    """The estimator's parameters: the model section's own keys besides the schema's, plus kwargs."""
    section = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if isinstance(model_cfg, DictConfig)
        else dict(model_cfg)
    )
    params = {k: v for k, v in section.items() if k not in _SCHEMA_KEYS}
    params.update(section.get("kwargs") or {})
    return params


@functools.cache
def param_defaults(cls: type) -> dict[str, Any]:
    """The estimator's own parameters and their defaults (`get_params` of a default instance)."""
    return cls().get_params(deep=False)


def check_param_names(architecture: str, cls: type, names: Iterable[str], where: str = "") -> None:
    """Each name must be a parameter of the estimator; the error lists the nearest valid ones."""
    valid = sorted(param_defaults(cls))
    for name in names:
        if name not in valid:
            msg = unknown_key_message(f"model.{name}", [f"model.{v}" for v in valid], where or architecture)
            raise ConfigError(f"{msg} ({cls.__name__} takes: {', '.join(valid)})")


def _check_torch_keys(model_cfg: Any, architecture: str) -> None:
    """Keys of the torch models that an estimator would silently ignore are an error."""
    defaults = ModelConfig()
    for key in ("width", "depth", "dropout", "pretrained", "weights_path", "num_classes"):
        value = model_cfg.get(key) if hasattr(model_cfg, "get") else getattr(model_cfg, key)
        if value != getattr(defaults, key):
            raise ConfigError(
                f"model.{key}={value!r} has no effect on model.architecture={architecture!r} (it configures "
                "the torch models); remove it and set the estimator's own parameters as model.<param>"
            )


def create_estimator(model_cfg: Any, task: str, seed: int) -> Any:
    """An unfitted estimator with the configured parameters; `random_state` defaults to `seed`."""
    architecture = str(model_cfg.architecture)
    _check_torch_keys(model_cfg, architecture)
    cls = estimator_class(architecture, task)
    params = estimator_params(model_cfg)
    check_param_names(architecture, cls, params)
    valid = param_defaults(cls)
    defaults = {**BOOSTER_DEFAULTS.get(family(architecture), {})}
    if "random_state" in valid:
        defaults["random_state"] = seed
    try:
        return cls(**{**defaults, **params})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.architecture={architecture!r} rejected its parameters {params}: {e}") from e


def fit_steps(fam: str, n_estimators: Any) -> int:
    """The steps of a fit: a booster's rounds (`n_estimators`, DEFAULT_ROUNDS when unset), else 1 (an
    estimator fitted whole)."""
    return int(n_estimators or DEFAULT_ROUNDS) if fam in BOOSTERS else 1


def is_tree_model(architecture: str, estimator: Any) -> bool:
    """Tree ensembles need no feature scaling."""
    return family(architecture) in BOOSTERS or type(estimator).__module__.startswith(TREE_MODULES)
