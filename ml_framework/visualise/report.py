"""report.html: one self-contained page per study (plotly.js inline once, opens offline)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_framework.visualise import data as D

if TYPE_CHECKING:
    from ml_framework.visualise.plots import PlotOutcome

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f3f3f3} table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{background:#e6e6e6} th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
tr.COMPLETE td.state{color:#1f77b4} tr.PRUNED td.state{color:#ff7f0e} tr.FAIL td.state{color:#d62728}
tr.best{background:#f4ecfb} .plot{margin:12px 0 28px} pre{background:#f7f7f7;padding:10px;overflow:auto}
.muted{color:#777} .scroll{overflow-x:auto}
"""

# Click a header to sort; numbers sort numerically via data-v, empty cells last.
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc ? 'asc' : 'desc');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(r){var c=r.cells[col], v=c.getAttribute('data-v'); return v===null ? c.textContent : v;}
      rows.sort(function(a, b){
        var x = key(a), y = key(b);
        if (x === '' || y === '') return (x === '') - (y === '');
        var nx = parseFloat(x), ny = parseFloat(y);
        var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? r : -r;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def _cell(value: Any, cls: str = "") -> str:
    sort = f' data-v="{html.escape(str(value))}"' if isinstance(value, int | float) else ""
    klass = f' class="{cls}"' if cls else ""
    return f"<td{klass}{sort}>{html.escape(fmt(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[str], sortable: bool = False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    cls = ' class="sortable"' if sortable else ""
    table = f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def best_text(s: D.StudySummary) -> str:
    """'#5: val_acc=0.96' (or one entry per Pareto-optimal trial); '' when none completed."""
    return "; ".join(
        f"#{n}: " + ", ".join(f"{o}={fmt(v)}" for o, v in zip(s.objectives, vals, strict=True))
        for n, vals in zip(s.best_numbers, s.best_values, strict=True)
    )


def summary_table(s: D.StudySummary) -> str:
    best = best_text(s)
    items = [
        ("objective", ", ".join(f"{o} ({d})" for o, d in zip(s.objectives, s.directions, strict=True))),
        ("trials", str(s.n_trials)),
        *(
            (state.lower(), str(n))
            for state, n in s.counts.items()
            if n or state in (D.COMPLETE, D.PRUNED, D.FAIL)
        ),
        ("best trial" if len(s.directions) == 1 else "Pareto-optimal trials", best or "none completed"),
        ("wall time", fmt_seconds(s.wall_time_s)),
        ("sampler", s.sampler),
        ("pruner", s.pruner),
        ("parameters", ", ".join(s.params) or "none"),
    ]
    rows = [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items]
    return f"<table>{''.join(rows)}</table>"


def trials_table(
    rows: Sequence[D.TrialRow], objectives: Sequence[str], params: Sequence[str], best: set[int]
) -> str:
    headers = [
        "trial",
        "state",
        *objectives,
        *params,
        "epochs",
        "best epoch",
        "duration (s)",
        "started",
        "error",
    ]
    body = []
    for r in rows:
        values = list(r.values) if r.values else [None] * len(objectives)
        cells = [
            _cell(r.number),
            _cell(r.state.lower(), "state"),
            *(_cell(v) for v in values),
            *(_cell(r.params.get(p)) for p in params),
            _cell(r.last_epoch),
            _cell(r.best_epoch),
            _cell(round(r.duration_s, 2) if r.duration_s is not None else None),
            _cell(r.started.strftime("%Y-%m-%d %H:%M:%S") if r.started else None),
            _cell(r.error),
        ]
        cls = r.state + (" best" if r.number in best else "")
        body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    return _table(headers, body, sortable=True)


def params_table(best: Sequence[D.TrialRow], params: Sequence[str]) -> str:
    if not best:
        return '<p class="muted">No completed trial yet.</p>'
    headers = ["parameter", *(f"trial {r.number}" for r in best)]
    body = [
        f"<tr><th>{html.escape(p)}</th>{''.join(_cell(r.params.get(p)) for r in best)}</tr>" for p in params
    ]
    return _table(headers, body)


@dataclass
class ReportInputs:
    summary: D.StudySummary
    rows: list[D.TrialRow]
    outcomes: list[PlotOutcome]
    importances: list[tuple[str, float]] | None = None
    importance_evaluator: str = "default"
    best_config: str | None = None  # best_config.yaml text
    summary_json: dict[str, Any] | None = None
    extra_notes: list[str] = field(default_factory=list)


def render_report(inp: ReportInputs) -> str:
    """The whole page as a string; plotly.js is inlined once in <head>."""
    from plotly.offline import get_plotlyjs

    s = inp.summary
    best_numbers = set(s.best_numbers)
    best_rows = [r for r in inp.rows if r.number in best_numbers]
    parts = [
        f"<h1>Study {html.escape(s.study_name)}</h1>",
        '<p class="muted">Written by ml-visualise. Click a column header of the trials table to sort.</p>',
        "<h2>Summary</h2>",
        summary_table(s),
        "<h2>Best parameters</h2>",
        params_table(best_rows, s.params),
    ]
    if inp.importances:
        rows = [f"<tr><th>{html.escape(k)}</th>{_cell(round(v, 4))}</tr>" for k, v in inp.importances]
        parts += [
            f"<h2>Parameter importances ({html.escape(inp.importance_evaluator)})</h2>",
            _table(["parameter", "importance"], rows),
        ]
    if inp.best_config is not None:
        parts += ["<h2>Best config (best_config.yaml)</h2>", f"<pre>{html.escape(inp.best_config)}</pre>"]
    if inp.summary_json is not None:
        text = json.dumps(inp.summary_json, indent=2, default=str)
        parts += [
            "<h2>summary.json</h2>",
            f"<details><summary>show</summary><pre>{html.escape(text)}</pre></details>",
        ]
    parts += ["<h2>Trials</h2>", trials_table(inp.rows, s.objectives, s.params, best_numbers)]
    drawn = [o for o in inp.outcomes if o.figure is not None]
    skipped = [o for o in inp.outcomes if o.figure is None]
    parts.append("<h2>Plots</h2>")
    for o in drawn:
        div = o.figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"plot-{o.name}", config={"responsive": True}
        )
        parts.append(f'<div class="plot" id="section-{o.name}">{div}</div>')
    if skipped:
        items = "".join(
            f"<li><b>{html.escape(o.name)}</b>: {html.escape(o.skipped or '')}</li>" for o in skipped
        )
        parts += ["<h2>Skipped plots</h2>", f"<ul>{items}</ul>"]
    for note in inp.extra_notes:
        parts.append(f'<p class="muted">{html.escape(note)}</p>')
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(s.study_name)}: optimization report</title>"
        f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(parts)}<script>{SORT_JS}</script></body></html>\n"
    )


def write_report(inp: ReportInputs, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(render_report(inp), encoding="utf-8")
    return path
