"""ml-visualise: plots and report.html for an Optuna study, or overlaid training curves of runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ml_framework.cli._common import EXIT_OK, console, run_cli
from ml_framework.search.importance import EVALUATORS

# Kept in sync with visualise.plots.PLOTS (tested), listed here so that --help needs neither optuna
# nor plotly.
PLOT_TYPES = (
    "optimization_history", "intermediate_values", "param_importances", "slice", "contour",
    "parallel_coordinate", "edf", "rank", "timeline", "pareto_front",
)  # fmt: skip
IMPORTANCE = tuple(EVALUATORS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ml-visualise",
        description="Plot an Optuna study (HTML + PNG + report.html) or compare training runs.",
        epilog="Examples:\n"
        "  ml-visualise --mode search --study-name digits_optimization\n"
        "  ml-visualise --mode search --config configs/digits.yaml --plot-type contour --params lr dropout\n"
        "  ml-visualise --mode train --runs runs/A runs/B --launch\n"
        "  ml-visualise --mode dashboard --study-name digits_optimization --port 8080\n\n"
        f"Plot types (default: all that apply): {', '.join(PLOT_TYPES)}.\n"
        "PNG needs Chrome or Chromium (Debian/Ubuntu: apt-get install chromium); without one, HTML only.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--mode",
        choices=("search", "train", "dashboard"),
        help="default: train with --runs, else search; dashboard: serve optuna-dashboard (Ctrl-C stops)",
    )
    s = p.add_argument_group("search mode")
    s.add_argument("--study-name", "--study_name", dest="study_name", help="study to plot")
    src = s.add_mutually_exclusive_group()
    src.add_argument(
        "--storage",
        help="Optuna storage URL (default: $ML_SEARCH_STORAGE, else sqlite:///<runs-dir>/optuna_studies/optuna.db)",
    )
    src.add_argument("--config", type=Path, help="config YAML: use its search.storage and search.study_name")
    s.add_argument(
        "--runs-dir", "--runs_dir", dest="runs_dir", help="runs dir for the default storage (runs)"
    )
    s.add_argument(
        "--plot-type", "--plot_type", dest="plot_type", nargs="+", metavar="T", help="plots to draw"
    )
    s.add_argument(
        "--params", nargs="+", metavar="P", help="restrict to these params (dotted key or last part)"
    )
    s.add_argument("--importance", choices=IMPORTANCE, default="default", help="importance evaluator")
    t = p.add_argument_group("train mode")
    t.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="run or trial dirs holding metrics.json")
    t.add_argument("--launch", action="store_true", help="start TensorBoard on the runs (Ctrl-C stops it)")
    p.add_argument("--port", type=int, help="TensorBoard port (6006) or dashboard port (8080)")
    p.add_argument("--output", type=Path, help="output dir (default: runs/optuna_studies/<study>/plots)")
    p.add_argument(
        "--format", nargs="+", default=["html,png"], metavar="F", help="html,png (HTML is always written)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = args.mode or ("train" if args.runs else "search")
    return run_cli(lambda: MODES[mode](args))


def _study_source(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """(storage URL, study name, runs dir) from the flags, a config file, or the defaults. The storage:
    --storage, else $ML_SEARCH_STORAGE, else the config's search.storage, else the default file."""
    from ml_framework.fileio import check_name
    from ml_framework.search.storage import storage_url

    runs_dir = args.runs_dir or "runs"
    configured, name = None, args.study_name
    if args.config is not None:
        from ml_framework.config import load_config

        cfg = load_config(args.config)
        runs_dir = args.runs_dir or cfg.output.runs_dir
        search = cfg.get("search")
        configured = search.storage if search is not None else None
        name = (
            name
            or (search.study_name if search is not None else None)
            or f"{cfg.data.dataset_name}_optimization"
        )
    if name is not None:
        check_name(name, "--study-name")
    return storage_url(args.storage, configured, runs_dir), name, runs_dir


def _print_importances(out: Any, result: Any, evaluator: str) -> None:
    from rich.table import Table

    if result.importances is None:
        if result.importance_note:
            out.print(result.importance_note)
        return
    table = Table(title=f"Parameter importances ({evaluator} evaluator, {result.view.objectives[0]})")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    table.add_column("")
    for name, value in result.importances:
        table.add_row(name, f"{value:.4f}", "█" * round(value * 30))
    out.print(table)


def _search(args: argparse.Namespace) -> int:
    from ml_framework.visualise.export import find_browser, parse_formats
    from ml_framework.visualise.report import best_text, fmt_seconds
    from ml_framework.visualise.study import default_output, load_view, resolve_plot_types, visualise_study

    out = console()
    formats = parse_formats(args.format)
    plot_types = resolve_plot_types(args.plot_type)
    storage, name, runs_dir = _study_source(args)
    view = load_view(storage, name)
    out_dir = args.output or default_output(view, runs_dir)
    result = visualise_study(
        view,
        out_dir,
        plot_types,
        formats,
        find_browser() if "png" in formats else None,
        params=args.params,
        importance=args.importance,
        study_path=default_output(view, runs_dir).parent,
    )
    s = result.summary
    counts = ", ".join(f"{n} {k.lower()}" for k, n in s.counts.items() if n)
    best = best_text(s)
    out.print(f"[bold]study[/] {view.name}: {s.n_trials} trials ({counts or 'none'}); best {best or 'none'}; "
              f"wall time {fmt_seconds(s.wall_time_s)}")  # fmt: skip
    if "param_importances" in plot_types:
        _print_importances(out, result, args.importance)
    for o in result.outcomes:
        if o.skipped:
            out.print(f"skipped {o.name}: {o.skipped}")
    for note in result.notes:
        out.print(note)
    drawn = [o.name for o in result.outcomes if o.figure is not None]
    out.print(f"plots: {', '.join(drawn) or 'none'}")
    out.print(f"wrote {len(result.written)} files to {out_dir} (open {out_dir / 'report.html'})")
    from ml_framework.search.tracking import log_to_parent

    uploaded = log_to_parent(view.study, [out_dir], "plots")  # when the study has an MLflow parent run
    if uploaded:
        out.print(uploaded)
    return EXIT_OK


def _dashboard(args: argparse.Namespace) -> int:
    from ml_framework.visualise.dashboard import DEFAULT_PORT, serve_dashboard

    storage, name, _ = _study_source(args)
    serve_dashboard(storage, name, args.port or DEFAULT_PORT, console())
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ml_framework.visualise.export import export_figures, find_browser, parse_formats
    from ml_framework.visualise.report import fmt
    from ml_framework.visualise.runs import (
        COMPARISON_COLUMNS,
        comparison_rows,
        draw_curves,
        launch_tensorboard,
        load_runs,
        tensorboard_command,
    )

    out = console()
    formats = parse_formats(args.format)
    runs = load_runs(args.runs or [])
    table = Table(title="Run comparison")
    for col in COMPARISON_COLUMNS:
        table.add_column(col, justify="left" if col == "run" else "right")
    for row in comparison_rows(runs):
        table.add_row(*(fmt(row[c]) for c in COMPARISON_COLUMNS))
    out.print(table)
    out_dir = args.output or _common_parent([r.path for r in runs]) / "comparison"
    exported = export_figures(
        {"training_curves": draw_curves(runs)}, out_dir, formats, find_browser() if "png" in formats else None
    )
    for note in exported.notes:
        out.print(note)
    out.print(f"wrote {', '.join(str(p) for p in exported.written)}")
    out.print(tensorboard_command(runs))
    if args.launch:
        port = args.port or 6006
        proc = launch_tensorboard(runs, port)
        out.print(f"TensorBoard at http://localhost:{port} (Ctrl-C to stop)")
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=10)
    return EXIT_OK


def _common_parent(paths: list[Path]) -> Path:
    import os

    resolved = [str(p.resolve()) for p in paths]
    common = Path(os.path.commonpath(resolved))
    return common if len(paths) > 1 else common.parent


MODES = {"search": _search, "train": _train, "dashboard": _dashboard}


if __name__ == "__main__":
    raise SystemExit(main())
