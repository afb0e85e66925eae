"""--mode search: load a study from its storage, draw every applicable plot, write files and report.html."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_framework.errors import ConfigError, unknown_key_message
from ml_framework.search.importance import EVALUATORS
from ml_framework.visualise import data as D
from ml_framework.visualise.export import Browser, export_figures
from ml_framework.visualise.plots import PLOTS, PlotOptions, PlotOutcome, StudyView, make_plots


def load_view(storage_url: str, study_name: str | None) -> StudyView:
    """The study as `StudyView`; an unknown (or missing) name lists the studies in the storage."""
    import optuna

    from ml_framework.search.storage import mask_url, open_storage

    storage = open_storage(storage_url, must_exist=True)
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        listed = ", ".join(sorted(names)) if names else "none (the storage holds no study)"
        if study_name is None:
            raise ConfigError(f"pass --study-name; studies in {mask_url(storage_url)}: {listed}")
        msg = unknown_key_message(study_name, names, mask_url(storage_url))
        msg = msg.replace("unknown key", "unknown study")
        raise ConfigError(f"{msg}. Studies there: {listed}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    return StudyView(
        name=study_name,
        study=study,
        trials=study.get_trials(deepcopy=False),
        directions=[d.name.lower() for d in study.directions],
        user_attrs=dict(study.user_attrs),
    )


def resolve_plot_types(requested: Sequence[str] | None) -> list[str]:
    """`--plot-type` names (repeatable, comma lists allowed), checked; default: all, registry order."""
    if not requested:
        return list(PLOTS)
    out = []
    for item in requested:
        for name in filter(None, (s.strip() for s in item.split(","))):
            if name not in PLOTS:
                raise ConfigError(unknown_key_message(name, PLOTS, "--plot-type"))
            out.append(name)
    return list(dict.fromkeys(out))


@dataclass
class SearchResult:
    view: StudyView
    summary: D.StudySummary
    outcomes: list[PlotOutcome]
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    importances: list[tuple[str, float]] | None = None
    importance_note: str | None = None  # why importances were not computed


def default_output(view: StudyView, runs_dir: str | Path) -> Path:
    """runs/optuna_studies/<study>/plots, with the runs dir the search recorded when it did."""
    from ml_framework.search.storage import study_dir

    return study_dir(view.name, view.user_attrs.get("runs_dir") or runs_dir) / "plots"


def _read_optional(study_path: Path) -> tuple[str | None, dict[str, Any] | None]:
    cfg = study_path / "best_config.yaml"
    summ = study_path / "summary.json"
    best_config = cfg.read_text() if cfg.is_file() else None
    summary_json = None
    if summ.is_file():
        try:
            summary_json = json.loads(summ.read_text())
        except json.JSONDecodeError as e:
            summary_json = {"error": f"{summ} is not valid JSON: {e}"}
    return best_config, summary_json


def compute_importances(
    view: StudyView, opts: PlotOptions
) -> tuple[list[tuple[str, float]] | None, str | None]:
    from ml_framework.visualise.plots import importance_reason, param_importances

    reason = importance_reason(view, opts.params)
    if reason:
        return None, f"parameter importances not computed: {reason}"
    try:
        return param_importances(view, opts.importance, opts.params), None
    except Exception as e:  # evaluators reject e.g. constant objectives: report and go on
        return None, f"parameter importances not computed: {type(e).__name__}: {e}"


def visualise_study(
    view: StudyView,
    out_dir: Path,
    plot_types: Sequence[str],
    formats: Sequence[str],
    browser: Browser | None,
    params: Sequence[str] | None = None,
    importance: str = "default",
    study_path: Path | None = None,
) -> SearchResult:
    """Draw, export (HTML always, PNG when possible) and write report.html with every drawn plot."""
    from ml_framework.visualise.report import ReportInputs, write_report

    opts = PlotOptions(params=D.resolve_params(params, view.params), importance=importance)
    importances, imp_note = (None, None)
    if "param_importances" in plot_types or "contour" in plot_types:
        importances, imp_note = compute_importances(view, opts)
        opts.importances = importances
    outcomes = make_plots(view, plot_types, opts)
    summary = D.study_summary(view.name, view.trials, view.directions, view.user_attrs)
    figures = {o.name: o.figure for o in outcomes if o.figure is not None}
    exported = export_figures(figures, out_dir, formats, browser)
    best_config, summary_json = _read_optional(study_path or out_dir.parent)
    report = write_report(
        ReportInputs(
            summary=summary,
            rows=D.trial_rows(view.trials),
            outcomes=outcomes,
            importances=importances,
            importance_evaluator=EVALUATORS[importance][0],
            best_config=best_config,
            summary_json=summary_json,
        ),
        out_dir,
    )
    return SearchResult(
        view=view,
        summary=summary,
        outcomes=outcomes,
        out_dir=out_dir,
        written=[*exported.written, report],
        notes=exported.notes,
        importances=importances,
        importance_note=imp_note,
    )
