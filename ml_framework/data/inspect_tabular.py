"""Inspect a table for ml-init-config: rows, columns and dtypes, missing values, class balance or the
target's distribution, and leakage hints (ID-like columns, columns that give the target away)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_framework.data.tabular import infer_task, read_table
from ml_framework.errors import DataError, closest

ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)$|^(id|uuid|guid)[_\W]|^unnamed: ?0$", re.I)
# A text column with (almost) one value per row is an identifier, not a category.
ID_UNIQUE_SHARE = 0.95


@dataclass
class ColumnInfo:
    name: str
    dtype: str
    missing: int
    unique: int


@dataclass
class TableReport:
    path: str
    target: str
    rows: int
    columns: list[ColumnInfo]
    task: str
    class_counts: dict[str, int] = field(default_factory=dict)  # classification
    target_stats: dict[str, float] = field(default_factory=dict)  # regression: min, median, max, ...
    id_like: dict[str, str] = field(default_factory=dict)  # column -> why
    leaks: dict[str, str] = field(default_factory=dict)  # column -> why
    missing_target: int = 0

    @property
    def name(self) -> str:
        p = Path(self.path)
        return p.parent.name if p.stem in ("train", "data", "dataset") and p.parent.name else p.stem

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns if c.name != self.target]

    @property
    def imbalance(self) -> float:
        counts = list(self.class_counts.values())
        return max(counts) / max(min(counts), 1) if counts else 1.0


def _id_reason(name: str, values: Any, rows: int) -> str | None:
    import pandas as pd

    present = values.dropna()
    if len(present) == 0:
        return None
    share = present.nunique() / len(present)
    if ID_NAME.search(name) and share >= 0.5:
        return f"its name and {share:.0%} distinct values look like an identifier"
    if not pd.api.types.is_numeric_dtype(values) and share >= ID_UNIQUE_SHARE and rows >= 20:
        return f"{share:.0%} of its text values are distinct: an identifier, not a category"
    if pd.api.types.is_integer_dtype(values) and share == 1.0 and present.is_monotonic_increasing:
        return "distinct increasing integers: a row number"
    return None


def _leak_reason(values: Any, target: Any, task: str) -> str | None:
    import pandas as pd

    both = pd.DataFrame({"x": values, "y": target}).dropna()
    if len(both) < 2:
        return None
    if (both["x"].astype(str) == both["y"].astype(str)).all():
        return "equal to the target in every row"
    if task == "classification" or not pd.api.types.is_numeric_dtype(both["x"]):
        pairs = both.astype(str).drop_duplicates()
        if len(pairs) == both["x"].astype(str).nunique() == both["y"].astype(str).nunique():
            return "maps one-to-one onto the target's values"
        return None
    corr = both["x"].corr(both["y"]) if both["x"].std() > 0 and both["y"].std() > 0 else 0.0
    return f"correlates {corr:+.4f} with the target" if abs(corr) > 0.999 else None


def inspect_table(path: str | Path, target: str | None) -> TableReport:
    """Read the table and describe it; a missing target column is a DataError listing the columns."""
    df = read_table(path)
    df.columns = [str(c) for c in df.columns]
    columns = list(df.columns)
    if not target:
        raise DataError(f"--target COLUMN is required for a table: one of {', '.join(columns)}")
    if target not in columns:
        near = closest(target, columns)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise DataError(f"--target: {path} has no column '{target}'.{hint} Columns: {', '.join(columns)}")
    y = df[target]
    task = infer_task(y.dropna())
    report = TableReport(
        path=str(path),
        target=target,
        rows=len(df),
        columns=[
            ColumnInfo(c, str(df[c].dtype), int(df[c].isna().sum()), int(df[c].nunique())) for c in columns
        ],
        task=task,
        missing_target=int(y.isna().sum()),
    )
    if task == "classification":
        report.class_counts = {str(k): int(v) for k, v in y.value_counts().sort_index().items()}
    else:
        d = y.describe()
        report.target_stats = {k: float(d[k]) for k in ("min", "50%", "max", "mean", "std")}
    for c in report.features:
        why = _id_reason(c, df[c], len(df))
        if why:
            report.id_like[c] = why
        elif (leak := _leak_reason(df[c], y, task)) is not None:
            report.leaks[c] = leak
    return report


def table_warnings(report: TableReport) -> list[str]:
    warnings = [
        f"'{c}' looks like an ID column ({why}); it is put in data.drop so the model cannot memorise rows"
        for c, why in report.id_like.items()
    ]
    warnings += [
        f"'{c}' {why}: a leak? it would make validation scores meaningless; it is put in data.drop"
        for c, why in report.leaks.items()
    ]
    if report.missing_target:
        warnings.append(f"{report.missing_target} row(s) have no '{report.target}' value: they are left out")
    if len(report.class_counts) == 1:
        warnings.append(f"'{report.target}' has a single class: nothing to learn; pick another --target")
    if report.imbalance >= 3:
        warnings.append(
            f"classes are imbalanced ({report.imbalance:.1f}x): accuracy can hide a weak minority class; "
            "the config optimises roc_auc (two classes) or balanced_accuracy"
        )
    return warnings


def render_table_report(report: TableReport, max_rows: int = 40) -> list:
    """Rich renderables describing the table."""
    from rich.table import Table

    summary = Table(title=f"Table {report.name}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    missing = sum(c.missing for c in report.columns)
    rows = {
        "file": report.path,
        "size": f"{report.rows} rows, {len(report.columns)} columns",
        "target": f"{report.target} ({report.task})",
        "missing values": f"{missing} cell(s) missing in "
        f"{sum(c.missing > 0 for c in report.columns)} column(s)",
    }
    if report.class_counts:
        rows["classes"] = ", ".join(f"{k}: {v}" for k, v in report.class_counts.items())
        rows["class imbalance"] = f"{report.imbalance:.2f} (largest / smallest class)"
    else:
        s = report.target_stats
        rows["target distribution"] = (
            f"min {s['min']:.4g}, median {s['50%']:.4g}, max {s['max']:.4g}, "
            f"mean {s['mean']:.4g} ± {s['std']:.4g}"
        )
    for key, value in rows.items():
        summary.add_row(key, value)
    cols = Table(title="Columns", title_justify="left")
    for name in ("column", "dtype", "missing", "distinct", "note"):
        cols.add_column(name, justify="right" if name in ("missing", "distinct") else "left")
    for c in report.columns[:max_rows]:
        note = (
            "target"
            if c.name == report.target
            else "ID-like: dropped"
            if c.name in report.id_like
            else "leak?: dropped"
            if c.name in report.leaks
            else ""
        )
        cols.add_row(c.name, c.dtype, str(c.missing), str(c.unique), note)
    if len(report.columns) > max_rows:
        cols.add_row(f"... {len(report.columns) - max_rows} more", "", "", "", "")
    return [summary, cols, *(f"[yellow]warning:[/] {w}" for w in table_warnings(report))]
