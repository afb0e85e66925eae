"""ml-visualise: plot data, applicability, exports, report.html (screenshot), --mode train, the CLI."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest

from ml_framework.cli import visualise as cli
from ml_framework.errors import ConfigError, DataError
from ml_framework.search.importance import EVALUATORS
from ml_framework.visualise import data as D
from ml_framework.visualise import runs as R
from ml_framework.visualise.export import Browser, export_figures, find_browser, parse_formats
from ml_framework.visualise.plots import (
    PLOTS,
    PlotOptions,
    make_plots,
    param_importances,
)
from ml_framework.visualise.study import load_view, resolve_plot_types

optuna.logging.set_verbosity(optuna.logging.ERROR)
CHROMIUM = find_browser().path
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chrome/Chromium (apt-get install chromium)")

# Trial number -> (lr, dropout, batch_size); scores are known, so tests check exact values.
PARAMS = [
    (0.01, 0.1, 32),
    (0.001, 0.3, 64),
    (0.05, 0.2, 32),
    (0.02, 0.0, 16),
    (0.003, 0.4, 64),
    (0.008, 0.1, 16),
    (0.0005, 0.2, 32),
    (0.03, 0.3, 16),
]
PRUNED_AT = {2: 2, 6: 1}  # trial -> epoch at which it is pruned
FAILS = 4
EPOCHS = 3


def score(lr: float, dropout: float, bs: int) -> float:
    return round(0.9 - abs(lr - 0.01) * 4 - dropout * 0.1 + (bs == 32) * 0.02, 6)


def epoch_value(number: int, epoch: int) -> float:
    return round(score(*PARAMS[number]) * epoch / EPOCHS, 6)


def objective(trial: optuna.Trial) -> float:
    trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
    trial.suggest_float("model.dropout", 0.0, 0.5)
    trial.suggest_categorical("training.batch_size", [16, 32, 64])
    trial.set_user_attr("run_dir", f"trial_{trial.number}")
    if trial.number == FAILS:
        trial.set_user_attr("error", "RuntimeError: loss is NaN")
        raise RuntimeError("loss is NaN")
    for epoch in range(1, EPOCHS + 1):
        trial.report(epoch_value(trial.number, epoch), epoch)
        if PRUNED_AT.get(trial.number) == epoch:
            trial.set_user_attr("last_epoch", epoch)
            raise optuna.TrialPruned()
    trial.set_user_attr("last_epoch", EPOCHS)
    trial.set_user_attr("best_epoch", EPOCHS)
    return epoch_value(trial.number, EPOCHS)


def _storage(runs: Path) -> str:
    (runs / "optuna_studies").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{runs / 'optuna_studies' / 'optuna.db'}"


def _attrs(study: optuna.Study, runs: Path, **extra: object) -> None:
    attrs = {"metric": "val_acc", "sampler": "TPESampler", "pruner": "MedianPruner", "runs_dir": str(runs)}
    for k, v in {**attrs, **extra}.items():
        study.set_user_attr(k, v)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs dir with studies 'digits' (8 trials), 'single' (1 complete), 'multi' (2 objectives)."""
    runs = tmp_path_factory.mktemp("vis") / "runs"
    url = _storage(runs)
    study = optuna.create_study(study_name="digits", storage=url, direction="maximize")
    _attrs(study, runs, search_space={"optimizer.lr": {"type": "float"}})
    for lr, d, bs in PARAMS:
        study.enqueue_trial({"optimizer.lr": lr, "model.dropout": d, "training.batch_size": bs})
    study.optimize(objective, n_trials=len(PARAMS), catch=(RuntimeError,))
    sdir = runs / "optuna_studies" / "digits"
    sdir.mkdir(parents=True)
    (sdir / "best_config.yaml").write_text("optimizer:\n  lr: 0.01  # best-config-marker\n")
    (sdir / "summary.json").write_text(json.dumps({"n_trials": 8, "marker": "summary-json-marker"}))

    single = optuna.create_study(study_name="single", storage=url, direction="maximize")
    _attrs(single, runs)
    for lr, d, bs in PARAMS[:2]:
        single.enqueue_trial({"optimizer.lr": lr, "model.dropout": d, "training.batch_size": bs})
    single.optimize(lambda t: objective(t) if t.number == 0 else _prune(t), n_trials=2)

    multi = optuna.create_study(study_name="multi", storage=url, directions=["maximize", "minimize"])
    _attrs(multi, runs, metrics=["val_acc", "num_params"])
    for i, (acc, size) in enumerate([(0.9, 10.0), (0.8, 5.0), (0.7, 12.0), (0.95, 20.0)]):
        multi.enqueue_trial({"optimizer.lr": 0.001 * (i + 1), "model.dropout": 0.1 * i})
        multi.optimize(lambda t, v=(acc, size): _fixed(t, v), n_trials=1)
    return runs


def _prune(trial: optuna.Trial) -> float:
    trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
    trial.report(0.5, 1)
    raise optuna.TrialPruned()


def _fixed(trial: optuna.Trial, values: tuple[float, float]) -> tuple[float, float]:
    trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
    trial.suggest_float("model.dropout", 0.0, 0.5)
    return values


def view(runs: Path, name: str = "digits"):
    return load_view(_storage(runs), name)


# ---------------------------------------------------------------- plot data


def test_trial_rows_and_summary(runs: Path) -> None:
    v = view(runs)
    rows = D.trial_rows(list(reversed(v.trials)))
    assert [r.number for r in rows] == list(range(len(PARAMS)))
    assert [r.state for r in rows] == [
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
        "COMPLETE",
        "FAIL",
        "COMPLETE",
        "PRUNED",
        "COMPLETE",
    ]
    assert rows[FAILS].error == "RuntimeError: loss is NaN" and rows[FAILS].values is None
    assert (rows[2].last_epoch, rows[6].last_epoch, rows[0].best_epoch) == (2, 1, EPOCHS)
    s = D.study_summary(v.name, v.trials, v.directions, v.user_attrs)
    assert s.counts == {"COMPLETE": 5, "PRUNED": 2, "FAIL": 1, "RUNNING": 0, "WAITING": 0}
    complete = [i for i in range(len(PARAMS)) if i not in PRUNED_AT and i != FAILS]
    best = max(complete, key=lambda i: epoch_value(i, EPOCHS))
    assert s.best_numbers == [best] and s.best_values == [(epoch_value(best, EPOCHS),)]
    assert (s.sampler, s.pruner, s.objectives) == ("TPESampler", "MedianPruner", ["val_acc"])
    assert s.params == ["model.dropout", "optimizer.lr", "training.batch_size"]
    assert s.wall_time_s is not None and s.wall_time_s >= 0


def test_optimization_history_values_states_and_running_best(runs: Path) -> None:
    v = view(runs)
    (series,) = D.optimization_history(v.trials, v.directions, v.objectives)
    assert [p.number for p in series.points] == list(range(len(PARAMS)))
    by_number = {p.number: p for p in series.points}
    assert by_number[FAILS].state == "FAIL" and by_number[FAILS].value is None
    for n, epoch in PRUNED_AT.items():  # pruned trials sit at their last reported value
        assert (by_number[n].state, by_number[n].value, by_number[n].step) == (
            "PRUNED",
            epoch_value(n, epoch),
            epoch,
        )
    running, expected = None, []
    for p in series.points:
        if p.state == "COMPLETE":
            running = max(running or p.value, p.value)
            expected.append((p.number, running))
    assert series.best_so_far == expected


def _trial(number: int, values: list[float] | None, state=optuna.trial.TrialState.COMPLETE):
    t = optuna.trial.create_trial(
        state=state, values=values, params={"x": float(number)},
        distributions={"x": optuna.distributions.FloatDistribution(0, 100)},
    )  # fmt: skip
    t.number = number
    return t


@pytest.mark.parametrize(
    ("values", "directions", "best_numbers", "running_best"),
    [
        ([[3.0], [1.0], [2.0]], ["minimize"], [1], [3.0, 1.0, 1.0]),
        ([[3.0], [1.0], [5.0]], ["maximize"], [2], [3.0, 3.0, 5.0]),
        ([[2.0], [2.0]], ["maximize"], [0], [2.0, 2.0]),  # ties: the earliest trial
        (
            [[0.9, 10], [0.8, 5], [0.7, 12], [0.95, 20]],
            ["maximize", "minimize"],
            [0, 1, 3],
            [0.9, 0.9, 0.9, 0.95],
        ),
    ],
)
def test_best_trials_and_direction(values, directions, best_numbers, running_best) -> None:
    trials = [_trial(i, v) for i, v in enumerate(values)]
    assert [t.number for t in D.best_trials(trials, directions)] == best_numbers
    names = D.objective_names({}, len(directions))
    series = D.optimization_history(trials, directions, names)
    assert [v for _, v in series[0].best_so_far] == running_best
    assert len(series) == len(directions)


def test_intermediate_curves_and_slice(runs: Path) -> None:
    v = view(runs)
    curves = D.intermediate_curves(v.trials)
    assert [c.number for c in curves] == [n for n in range(len(PARAMS)) if n != FAILS]
    for c in curves:
        last = PRUNED_AT.get(c.number, EPOCHS)
        assert c.steps == list(range(1, last + 1))
        assert c.values == [epoch_value(c.number, e) for e in c.steps]
        assert c.state == ("PRUNED" if c.number in PRUNED_AT else "COMPLETE")
    pts = D.slice_points(v.trials, "optimizer.lr")
    assert [p.number for p in pts] == [n for n in range(len(PARAMS)) if n != FAILS]
    assert all(p.param_value == PARAMS[p.number][0] for p in pts)
    assert {p.number for p in pts if p.state == "PRUNED"} == set(PRUNED_AT)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, None),
        (["lr", "batch_size"], ["optimizer.lr", "training.batch_size"]),
        (["optimizer.lr", "lr"], ["optimizer.lr"]),
        (["lrr"], "Did you mean: optimizer.lr"),
        (["x"], "ambiguous"),
    ],
)
def test_resolve_params(requested, expected) -> None:
    available = ["optimizer.lr", "training.batch_size", "a.x", "b.x"]
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            D.resolve_params(requested, available)
    else:
        assert D.resolve_params(requested, available) == expected


# ---------------------------------------------------------------- applicability and drawing

REASONS = {
    ("single", "optimization_history"): None,
    ("single", "intermediate_values"): None,
    ("single", "timeline"): None,
    ("single", "slice"): "needs at least 2 completed trial(s), found 1",
    ("single", "contour"): "needs at least 2 completed trial(s), found 1",
    ("single", "param_importances"): "needs at least 2 completed trial(s), found 1",
    ("single", "edf"): "needs at least 2 completed trial(s), found 1",
    ("digits", "pareto_front"): "only for studies with 2 or 3 objectives (this study has 1)",
    ("digits", "contour"): None,
    ("multi", "pareto_front"): None,
    ("multi", "intermediate_values"): "no trial reported intermediate (per-epoch) values",
    ("multi", "contour"): None,
}


@pytest.mark.parametrize(("study", "plot"), list(REASONS))
def test_applicability(runs: Path, study: str, plot: str) -> None:
    assert PLOTS[plot].check(view(runs, study), PlotOptions()) == REASONS[(study, plot)]


def test_contour_needs_two_params(runs: Path) -> None:
    reason = PLOTS["contour"].check(view(runs), PlotOptions(params=["optimizer.lr"]))
    assert reason == "needs at least 2 parameter(s), found 1: optimizer.lr"


def test_make_plots_draws_every_applicable_plot(runs: Path) -> None:
    v = view(runs, "multi")
    outcomes = {o.name: o for o in make_plots(v, list(PLOTS), PlotOptions())}
    assert set(outcomes) == set(PLOTS)
    assert outcomes["intermediate_values"].figure is None
    drawn = {n for n, o in outcomes.items() if o.figure is not None}
    assert {"pareto_front", "optimization_history", "contour", "slice"} <= drawn
    history = outcomes["optimization_history"].figure
    assert len({tr.yaxis for tr in history.data}) == 2  # one panel per objective


def test_state_markers_distinct_in_history(runs: Path) -> None:
    v = view(runs)
    (o,) = make_plots(v, ["optimization_history"], PlotOptions())
    traces = {tr.name: tr for tr in o.figure.data}
    assert list(traces["failed"].x) == [FAILS]
    assert sorted(traces["pruned (last reported value)"].x) == sorted(PRUNED_AT)
    assert traces["failed"].marker.symbol != traces["complete"].marker.symbol


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_param_importances(runs: Path, evaluator: str) -> None:
    imp = param_importances(view(runs), evaluator)
    assert sorted(k for k, _ in imp) == ["model.dropout", "optimizer.lr", "training.batch_size"]
    assert [v for _, v in imp] == sorted((v for _, v in imp), reverse=True)
    assert sum(v for _, v in imp) == pytest.approx(1.0)


# ---------------------------------------------------------------- exports


def test_parse_formats_and_plot_types() -> None:
    assert parse_formats(["png"]) == ["html", "png"]
    assert parse_formats(["html,png"]) == ["html", "png"]
    with pytest.raises(ConfigError, match="Did you mean: png"):
        parse_formats(["pnj"])
    assert resolve_plot_types(["slice,contour", "slice"]) == ["slice", "contour"]
    with pytest.raises(ConfigError, match="Did you mean: contour"):
        resolve_plot_types(["contuor"])
    assert tuple(PLOTS) == cli.PLOT_TYPES


def test_no_browser_skips_png_keeps_html(tmp_path: Path) -> None:
    import plotly.graph_objects as go

    figs = {"a": go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), "b": go.Figure(go.Bar(x=[1], y=[2]))}
    res = export_figures(figs, tmp_path, ["html", "png"], Browser(None, "no Chrome or Chromium found"))
    assert sorted(p.name for p in res.written) == ["a.html", "b.html"]
    assert res.notes == ["PNG skipped: no Chrome or Chromium found; HTML written."]
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "plotly.min.js").is_file()


# ---------------------------------------------------------------- CLI, search mode


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def _search(runs: Path, out: Path, *extra: str) -> int:
    return cli.main(["--mode", "search", "--storage", _storage(runs), "--output", str(out), *extra])


def test_cli_search_writes_html_and_report(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "plots"
    assert _search(runs, out, "--study-name", "digits", "--format", "html") == 0
    text = capsys.readouterr().out
    drawn = [n for n in PLOTS if n != "pareto_front"]
    assert sorted(p.stem for p in out.glob("*.html")) == sorted([*drawn, "report"])
    assert "skipped pareto_front: only for studies with 2 or 3 objectives" in text
    assert "Parameter importances (default evaluator, val_acc)" in text and "optimizer.lr" in text
    js = (out / "plotly.min.js").stat().st_size
    for name in drawn:  # single plots share the local bundle: small, offline, no CDN
        page = (out / f"{name}.html").read_text()
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in page
        assert len(page) < js / 4 and "cdn.plot.ly" not in page
    report = (out / "report.html").read_text()
    assert len(report) > js and report.count("Plotly.newPlot") == len(drawn)
    assert not __import__("re").search(r"<script[^>]*\ssrc=", report)  # plotly.js inline, nothing fetched
    for marker in (
        "best-config-marker",
        "summary-json-marker",
        'class="sortable"',
        "TPESampler",
        "MedianPruner",
    ):
        assert marker in report
    assert "RuntimeError: loss is NaN" in report


def test_cli_one_completed_trial_exits_0_with_reasons(runs: Path, tmp_path: Path, capsys) -> None:
    assert _search(runs, tmp_path, "--study-name", "single", "--format", "html") == 0
    text = capsys.readouterr().out
    assert "skipped contour: needs at least 2 completed trial(s), found 1" in text
    assert "skipped slice: needs at least 2 completed trial(s), found 1" in text
    assert "parameter importances not computed: needs at least 2 completed trial(s), found 1" in text
    assert (tmp_path / "report.html").is_file() and (tmp_path / "optimization_history.html").is_file()


def test_cli_params_and_plot_type(runs: Path, tmp_path: Path) -> None:
    args = [
        "--study-name",
        "digits",
        "--plot-type",
        "contour",
        "--params",
        "lr",
        "dropout",
        "--format",
        "html",
    ]
    assert _search(runs, tmp_path, *args) == 0
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["contour.html", "report.html"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--study-name", "digts"],
            "unknown study 'digts'.*Did you mean: digits.*Studies there: digits, multi, single",
        ),
        ([], "pass --study-name; studies in .*: digits, multi, single"),
        (["--study-name", "digits", "--plot-type", "slise"], "Did you mean: slice"),
        (["--study-name", "digits", "--params", "momentum"], "unknown key 'momentum' in --params"),
    ],
)
def test_cli_search_bad_input(runs: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert _search(runs, tmp_path, *args) == 2
    assert __import__("re").search(message, " ".join(capsys.readouterr().err.split()))


def test_missing_storage_is_not_created(tmp_path: Path, capsys) -> None:
    db = tmp_path / "nowhere" / "optuna.db"
    assert cli.main(["--storage", f"sqlite:///{db}", "--study-name", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err and not db.exists()


@pytest.mark.parametrize(
    ("search_block", "expected"),
    [("search:\n  study_name: digits\n", None), ("", "unknown study 'digits_optimization'")],
)
def test_cli_config_gives_storage_and_study(
    runs: Path, tmp_path: Path, capsys, search_block, expected
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  dataset_name: digits\noutput:\n  runs_dir: {runs}\n{search_block}")
    code = cli.main(["--config", str(cfg), "--plot-type", "edf", "--format", "html"])
    if expected is None:
        assert code == 0 and (runs / "optuna_studies" / "digits" / "plots" / "edf.html").is_file()
    else:
        assert code == 2 and expected in capsys.readouterr().err


@needs_chromium
def test_png_export(runs: Path, tmp_path: Path) -> None:
    from PIL import Image

    args = ["--study-name", "digits", "--plot-type", "optimization_history", "slice", "--format", "html,png"]
    assert _search(runs, tmp_path, *args) == 0
    for name in ("optimization_history", "slice"):
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.size[0] >= 1000 and len(im.convert("RGB").getcolors(1 << 20) or []) > 50


@needs_chromium
def test_report_screenshot_shows_drawn_plots(runs: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    assert _search(runs, tmp_path / "p", "--study-name", "digits", "--format", "html") == 0
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'ud'}",
        f"--screenshot={shot}", "--window-size=1400,3000", "--virtual-time-budget=5000",
        (tmp_path / "p" / "report.html").resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=60, check=True)
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        plots = rgb.crop((0, rgb.height // 2, rgb.width, rgb.height))  # below the tables: the plots
        px = np.asarray(plots, dtype=np.int32).reshape(-1, 3)
    non_white = px[px.min(axis=1) < 235]
    saturated = non_white[non_white.max(axis=1) - non_white.min(axis=1) > 40]
    assert len(non_white) > 0.10 * len(px)  # plot backgrounds and traces, not a blank page
    assert len({tuple(c) for c in saturated // 32}) >= 6  # several hues: markers and lines were drawn


# ---------------------------------------------------------------- --mode train


def _run_dir(root: Path, name: str, accs: list[float], lr: float = 0.01) -> Path:
    d = root / name
    d.mkdir(parents=True)
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_acc": a - 0.01,
            "val_acc": a,
            "lr": lr / e,
        }
        for e, a in enumerate(accs, start=1)
    ]
    best = max(history, key=lambda h: h["val_acc"])
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "history": history,
                "monitor": "val_acc",
                "monitor_mode": "max",
                "best_epoch": best["epoch"],
                "best": best,
                "final": history[-1],
                "test": {"test_acc": 0.5 + len(accs) / 100},
                "stopped_early": False,
            }
        )
    )
    return d


def test_runs_curves_and_comparison(tmp_path: Path) -> None:
    a = _run_dir(tmp_path, "A", [0.5, 0.7, 0.6])
    b = _run_dir(tmp_path, "B", [0.4, 0.8])
    runs = R.load_runs([a, b])
    panels = R.curves(runs)
    assert list(panels) == ["Loss", "Accuracy", "Learning rate"]  # no val_f1 in these runs
    assert [(s.run, s.metric) for s in panels["Accuracy"]] == [
        ("A", "train_acc"), ("A", "val_acc"), ("B", "train_acc"), ("B", "val_acc")
    ]  # fmt: skip
    assert panels["Accuracy"][1].values == [0.5, 0.7, 0.6] and panels["Accuracy"][1].epochs == [1, 2, 3]
    rows = R.comparison_rows(runs)
    assert [
        (r["run"], r["epochs"], r["best epoch"], r["best val_acc"], r["final val_acc"]) for r in rows
    ] == [
        ("A", 3, 2, 0.7, 0.6),
        ("B", 2, 2, 0.8, 0.8),
    ]
    assert R.tensorboard_command(runs) == f"tensorboard --logdir_spec A:{a},B:{b}"
    assert R.tensorboard_command(runs[:1]) == f"tensorboard --logdir {a}"
    assert R.run_names([tmp_path / "x" / "trial_1", tmp_path / "y" / "trial_1"]) == ["x/trial_1", "y/trial_1"]


def test_cli_train_mode(tmp_path: Path, capsys) -> None:
    a = _run_dir(tmp_path, "A", [0.5, 0.7, 0.6])
    b = _run_dir(tmp_path, "B", [0.4, 0.8])
    assert cli.main(["--mode", "train", "--runs", str(a), str(b), "--format", "html"]) == 0
    text = capsys.readouterr().out
    assert "Run comparison" in text and f"tensorboard --logdir_spec A:{a},B:{b}" in text
    page = (tmp_path / "comparison" / "training_curves.html").read_text()
    assert (
        '"A val_acc"' in page and '"B lr"' in page and (tmp_path / "comparison" / "plotly.min.js").is_file()
    )


@pytest.mark.parametrize(("content", "message"), [(None, "has no metrics.json"), ("{", "not valid JSON")])
def test_cli_train_bad_run_dir(tmp_path: Path, capsys, content: str | None, message: str) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    if content is not None:
        (bad / "metrics.json").write_text(content)
    assert cli.main(["--runs", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and str(bad) in err
    with pytest.raises(DataError):
        R.load_run(tmp_path / "missing")


@pytest.mark.slow
def test_launch_tensorboard_serves(tmp_path: Path) -> None:
    runs = R.load_runs([_run_dir(tmp_path, "A", [0.5, 0.6])])
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = R.launch_tensorboard(runs, port)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "tensorboard exited"
                time.sleep(0.5)
        else:
            pytest.fail("tensorboard did not answer within 45 s")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_help_is_fast_and_lazy() -> None:
    exe = Path(sys.executable).with_name("ml-visualise")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ml_framework.cli.visualise"]
    code = (
        "import sys, ml_framework.cli.visualise; print([m for m in ('optuna', 'plotly') if m in sys.modules])"
    )
    start = time.monotonic()
    res = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "--study-name" in res.stdout and time.monotonic() - start < 1.5
    lazy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert lazy.stdout.strip() == "[]"


def test_find_browser_reports_reason() -> None:
    b = find_browser()
    assert (b.path is None) == ("no Chrome or Chromium found" in b.reason)
    if b.path is None:
        assert shutil.which("chromium") is None


# A tiny helper so the date import is used by a real check: wall time spans start to last finish.
def test_wall_time_spans_trials() -> None:
    t0 = datetime(2024, 1, 1, 12, 0, 0)
    trials = [_trial(0, [1.0]), _trial(1, [2.0])]
    for i, t in enumerate(trials):
        t.datetime_start = t0 + timedelta(seconds=10 * i)
        t.datetime_complete = t0 + timedelta(seconds=10 * i + 5)
    assert D.study_summary("s", trials, ["maximize"], {}).wall_time_s == 15.0
