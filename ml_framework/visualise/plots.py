"""Drawing: plot data -> plotly figures, one registry entry per plot type with its applicability check.

Simple plots are drawn here from `data.py`; the complex ones (contour, parallel coordinate, EDF,
rank, timeline, Pareto front) use `optuna.visualization`, guarded by the same kind of check, and a
failure while drawing becomes a skip reason instead of a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml_framework.search.importance import param_importances as study_importances
from ml_framework.visualise import data as D

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

STATE_STYLE: dict[str, dict[str, Any]] = {
    D.COMPLETE: {"color": "#1f77b4", "symbol": "circle", "label": "complete"},
    D.PRUNED: {"color": "#ff7f0e", "symbol": "diamond-open", "label": "pruned (last reported value)"},
    D.FAIL: {"color": "#d62728", "symbol": "x", "label": "failed"},
    D.RUNNING: {"color": "#2ca02c", "symbol": "triangle-up", "label": "running"},
    D.WAITING: {"color": "#7f7f7f", "symbol": "square-open", "label": "waiting"},
}
BEST_COLOR = "#9467bd"
CONTOUR_MAX_PARAMS = 3  # an n x n grid of contours gets unreadable beyond this
GRID_PLOTS = ("plot_contour", "plot_rank")
GRID_CELL_HEIGHT = 260


@dataclass
class StudyView:
    """A loaded study as the plots need it."""

    name: str
    study: optuna.Study
    trials: list[Any]
    directions: list[str]
    user_attrs: dict[str, Any]
    objectives: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # every param of the study

    def __post_init__(self) -> None:
        self.objectives = self.objectives or D.objective_names(self.user_attrs, len(self.directions))
        self.params = self.params or D.param_names(self.trials)

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1


@dataclass
class PlotOptions:
    params: list[str] | None = None  # --params, resolved; None = all
    importance: str = "default"
    importances: list[tuple[str, float]] | None = None  # computed once, reused by the plots


# ---------------------------------------------------------------- importances


def importance_reason(view: StudyView, params: Sequence[str] | None = None) -> str | None:
    return D.first_reason(D.need_completed(view.trials), D.need_params(list(params or view.params), 2))


def param_importances(
    view: StudyView, evaluator: str = "default", params: Sequence[str] | None = None
) -> list[tuple[str, float]]:
    return study_importances(view.study, evaluator, params)


# ---------------------------------------------------------------- drawing from plot data


def _integer_ticks(fig: go.Figure, largest: int, **where: int) -> None:
    """Trial numbers and epochs are integers: no 0.5 ticks on short axes."""
    if largest <= 25:
        fig.update_xaxes(dtick=1, **where)


def _title(view: StudyView, what: str) -> str:
    return f"{what}: {view.name}"


def draw_history(view: StudyView, series: list[D.HistorySeries]) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=len(series), cols=1, shared_xaxes=True, subplot_titles=[s.objective for s in series]
    )
    for row, s in enumerate(series, start=1):
        finite = [p.value for p in s.points if p.value is not None]
        floor = min(finite) if finite else 0.0
        for state, style in STATE_STYLE.items():
            pts = [p for p in s.points if p.state == state]
            if not pts:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p.number for p in pts],
                    # Failed trials have no value: mark them along the bottom of the axis.
                    y=[p.value if p.value is not None else floor for p in pts],
                    mode="markers",
                    name=style["label"],
                    legendgroup=state,
                    showlegend=row == 1,
                    marker={"color": style["color"], "symbol": style["symbol"], "size": 9},
                    text=[f"trial {p.number}" + (f", epoch {p.step}" if p.step else "") for p in pts],
                ),
                row=row,
                col=1,
            )
        if s.best_so_far:
            fig.add_trace(
                go.Scatter(
                    x=[n for n, _ in s.best_so_far],
                    y=[v for _, v in s.best_so_far],
                    mode="lines",
                    line={"color": BEST_COLOR, "shape": "hv"},
                    name="best so far",
                    showlegend=row == 1,
                ),
                row=row,
                col=1,
            )
        fig.update_yaxes(title_text=f"{s.objective} ({s.direction})", row=row, col=1)
    fig.update_xaxes(title_text="trial", row=len(series), col=1)
    _integer_ticks(fig, max((p.number for p in series[0].points), default=0))
    fig.update_layout(title=_title(view, "Optimization history"), height=420 + 220 * (len(series) - 1))
    return fig


def draw_intermediate(view: StudyView, curves: list[D.Curve]) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    shown: set[str] = set()
    for c in curves:
        style = STATE_STYLE[c.state]
        fig.add_trace(
            go.Scatter(
                x=c.steps,
                y=c.values,
                mode="lines+markers",
                name=c.state.lower(),
                legendgroup=c.state,
                showlegend=c.state not in shown,
                line={"color": style["color"], "dash": "solid" if c.state == D.COMPLETE else "dot"},
                marker={"size": 5},
                hovertext=f"trial {c.number} ({c.state.lower()})",
                hoverinfo="text+x+y",
            )
        )
        shown.add(c.state)
    fig.update_layout(
        title=_title(view, "Intermediate values"),
        xaxis_title="epoch",
        yaxis_title=view.objectives[0],
        height=480,
    )
    _integer_ticks(fig, max((c.steps[-1] for c in curves), default=0))
    return fig


def draw_slice(view: StudyView, per_param: dict[str, list[D.SlicePoint]]) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    params = list(per_param)
    cols = min(3, len(params))
    rows = -(-len(params) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=params, shared_yaxes=True)
    for i, param in enumerate(params):
        r, c = i // cols + 1, i % cols + 1
        for state in (D.COMPLETE, D.PRUNED):
            pts = [p for p in per_param[param] if p.state == state]
            if not pts:
                continue
            style = STATE_STYLE[state]
            fig.add_trace(
                go.Scatter(
                    x=[p.param_value for p in pts],
                    y=[p.value for p in pts],
                    mode="markers",
                    name=style["label"],
                    legendgroup=state,
                    showlegend=i == 0,
                    text=[f"trial {p.number}" for p in pts],
                    marker={
                        "symbol": style["symbol"],
                        "size": 9,
                        "color": [p.number for p in pts] if state == D.COMPLETE else style["color"],
                        "colorscale": "Blues",
                        "showscale": False,
                        "line": {"width": 1, "color": "#333"},
                    },
                ),
                row=r,
                col=c,
            )
        if _log_scale(view, param):
            fig.update_xaxes(type="log", row=r, col=c)
    fig.update_yaxes(title_text=view.objectives[0], col=1)
    fig.update_layout(title=_title(view, "Slice"), height=360 * rows)
    return fig


def _log_scale(view: StudyView, param: str) -> bool:
    for t in view.trials:
        dist = t.distributions.get(param)
        if dist is not None:
            return bool(getattr(dist, "log", False))
    return False


def draw_importances(view: StudyView, importances: list[tuple[str, float]], evaluator: str) -> go.Figure:
    import plotly.graph_objects as go

    ordered = list(reversed(importances))  # most important at the top of a horizontal bar chart
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in ordered],
            y=[k for k, _ in ordered],
            orientation="h",
            marker_color="#1f77b4",
            text=[f"{v:.3f}" for _, v in ordered],
            textposition="outside",
        )
    )
    fig.update_layout(
        title=_title(view, f"Parameter importances ({evaluator} evaluator, {view.objectives[0]})"),
        xaxis_title="importance",
        height=max(320, 80 + 40 * len(ordered)),
    )
    return fig


# ---------------------------------------------------------------- builders (registry entries)


def _params(view: StudyView, opts: PlotOptions) -> list[str]:
    return opts.params or view.params


def _target(view: StudyView) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"target_name": view.objectives[0]}
    if view.multi:
        kwargs["target"] = lambda t: t.values[0]
    return kwargs


def _build_history(view: StudyView, opts: PlotOptions) -> go.Figure:
    return draw_history(view, D.optimization_history(view.trials, view.directions, view.objectives))


def _build_intermediate(view: StudyView, opts: PlotOptions) -> go.Figure:
    return draw_intermediate(view, D.intermediate_curves(view.trials))


def _build_slice(view: StudyView, opts: PlotOptions) -> go.Figure:
    return draw_slice(view, {p: D.slice_points(view.trials, p) for p in _params(view, opts)})


def _build_importances(view: StudyView, opts: PlotOptions) -> go.Figure:
    importances = opts.importances or param_importances(view, opts.importance, opts.params)
    return draw_importances(view, importances, opts.importance)


def _contour_params(view: StudyView, opts: PlotOptions) -> list[str]:
    if opts.params:
        return opts.params
    ranked = [k for k, _ in opts.importances] if opts.importances else view.params
    return ranked[:CONTOUR_MAX_PARAMS]


def _optuna_plot(name: str, with_params: bool = False, with_target: bool = False) -> Callable[..., go.Figure]:
    def build(view: StudyView, opts: PlotOptions) -> go.Figure:
        import optuna.visualization as ov

        kwargs: dict[str, Any] = _target(view) if with_target else {}
        if with_params:
            kwargs["params"] = _contour_params(view, opts) if name == "plot_contour" else _params(view, opts)
        if name == "plot_pareto_front":
            kwargs["target_names"] = view.objectives
        fig = getattr(ov, name)(view.study, **kwargs)
        title = fig.layout.title.text or name
        if name == "plot_contour" and not opts.params and len(view.params) > CONTOUR_MAX_PARAMS:
            title += f" (top {CONTOUR_MAX_PARAMS} of {len(view.params)} parameters; pick with --params)"
        fig.update_layout(title=_title(view, title))
        if name in GRID_PLOTS and len(kwargs["params"]) > 2:  # an n x n grid needs room per cell
            fig.update_layout(height=GRID_CELL_HEIGHT * len(kwargs["params"]) + 120)
        return fig

    return build


# ---------------------------------------------------------------- applicability checks


def _check_history(view: StudyView, opts: PlotOptions) -> str | None:
    return D.need_completed(view.trials, 1)


def _check_intermediate(view: StudyView, opts: PlotOptions) -> str | None:
    return None if D.intermediate_curves(view.trials) else "no trial reported intermediate (per-epoch) values"


def _check_params(n_params: int) -> Callable[[StudyView, PlotOptions], str | None]:
    def check(view: StudyView, opts: PlotOptions) -> str | None:
        return D.first_reason(D.need_completed(view.trials), D.need_params(_params(view, opts), n_params))

    return check


def _check_importances(view: StudyView, opts: PlotOptions) -> str | None:
    return importance_reason(view, opts.params)


def _check_timeline(view: StudyView, opts: PlotOptions) -> str | None:
    return None if any(t.datetime_start for t in view.trials) else "no trial has started"


def _check_pareto(view: StudyView, opts: PlotOptions) -> str | None:
    n = len(view.directions)
    if n not in (2, 3):
        return f"only for studies with 2 or 3 objectives (this study has {n})"
    return D.need_completed(view.trials, 1)


@dataclass(frozen=True)
class PlotSpec:
    check: Callable[[StudyView, PlotOptions], str | None]
    build: Callable[[StudyView, PlotOptions], go.Figure]
    description: str


PLOTS: dict[str, PlotSpec] = {
    "optimization_history": PlotSpec(_check_history, _build_history, "objective per trial and best so far"),
    "intermediate_values": PlotSpec(
        _check_intermediate, _build_intermediate, "per-epoch metric of every trial"
    ),
    "param_importances": PlotSpec(_check_importances, _build_importances, "most influential parameters"),
    "slice": PlotSpec(_check_params(1), _build_slice, "objective against each parameter"),
    "contour": PlotSpec(
        _check_params(2), _optuna_plot("plot_contour", True, True), "2-D parameter interaction"
    ),
    "parallel_coordinate": PlotSpec(
        _check_params(1), _optuna_plot("plot_parallel_coordinate", True, True), "all parameters at once"
    ),
    "edf": PlotSpec(
        _check_params(0), _optuna_plot("plot_edf", False, True), "distribution of objective values"
    ),
    "rank": PlotSpec(_check_params(1), _optuna_plot("plot_rank", True, True), "parameters coloured by rank"),
    "timeline": PlotSpec(_check_timeline, _optuna_plot("plot_timeline"), "when each trial ran, by state"),
    "pareto_front": PlotSpec(_check_pareto, _optuna_plot("plot_pareto_front"), "multi-objective trade-offs"),
}


@dataclass
class PlotOutcome:
    name: str
    figure: go.Figure | None
    skipped: str | None  # reason, when not drawn


def make_plots(view: StudyView, names: Sequence[str], opts: PlotOptions) -> list[PlotOutcome]:
    """Check then draw each requested plot; a failed check or drawing error becomes a skip reason."""
    import warnings

    import optuna

    outcomes = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        for name in names:
            spec = PLOTS[name]
            reason = spec.check(view, opts)
            if reason:
                outcomes.append(PlotOutcome(name, None, reason))
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    outcomes.append(PlotOutcome(name, spec.build(view, opts), None))
            except Exception as e:  # an evaluator or optuna plot can reject odd data; report, go on
                outcomes.append(PlotOutcome(name, None, f"could not be drawn: {type(e).__name__}: {e}"))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return outcomes
