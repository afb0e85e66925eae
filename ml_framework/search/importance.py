"""Hyperparameter importances of a study: one helper for ml-search's summary and ml-visualise."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

# --importance name -> (label, Optuna evaluator class or None for Optuna's default, takes a seed)
EVALUATORS: dict[str, tuple[str, str | None, bool]] = {
    "default": ("PED-ANOVA, Optuna's default", None, False),
    "fanova": ("fANOVA", "FanovaImportanceEvaluator", True),
    "ped_anova": ("PED-ANOVA", "PedAnovaImportanceEvaluator", False),
    "mdi": ("mean decrease impurity", "MeanDecreaseImpurityImportanceEvaluator", True),
}


def _evaluator(name: str) -> Any:
    import optuna

    _, cls, seeded = EVALUATORS[name]
    if cls is None:
        return None
    factory = getattr(optuna.importance, cls)
    return factory(seed=0) if seeded else factory()


def param_importances(
    study: optuna.Study, evaluator: str = "default", params: Sequence[str] | None = None
) -> list[tuple[str, float]]:
    """(param, normalised importance) for objective 0, most important first."""
    import optuna

    target = None
    if len(study.directions) > 1:  # objective 0, negated when maximised: PED-ANOVA ranks *low* targets
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    with warnings.catch_warnings():
        # PED-ANOVA's notes on small studies ("computes ...", "some regimes have less than 2 trials")
        warnings.simplefilter("ignore", UserWarning)
        result = optuna.importance.get_param_importances(
            study, evaluator=_evaluator(evaluator), params=list(params) if params else None, target=target
        )
    return sorted(((k, float(v)) for k, v in result.items()), key=lambda kv: (-kv[1], kv[0]))
