#!/usr/bin/env python
"""Write scikit-learn's bundled tables (no network) as CSV files for the tabular examples.

    python scripts/make_tabular.py [--out data] [NAME ...]

`<out>/<name>/train.csv` for breast_cancer (binary), wine (3 classes) and diabetes (regression); the
column to predict is `target` (class names for the classifiers). Rows keep scikit-learn's order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DATASETS = {"breast_cancer": "load_breast_cancer", "wine": "load_wine", "diabetes": "load_diabetes"}


def write_dataset(name: str, out: Path) -> Path:
    """Write `<out>/<name>/train.csv` and return its path."""
    from sklearn import datasets

    bunch = getattr(datasets, DATASETS[name])(as_frame=True)
    frame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    if names is not None and len(names) and name != "diabetes":
        frame["target"] = [str(names[int(i)]) for i in frame["target"]]
    path = out / name / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"datasets: {', '.join(DATASETS)} (default: all)")
    p.add_argument("--out", type=Path, default=Path("data"), help="folder to write <name>/train.csv into")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    for name in args.names or DATASETS:
        path = write_dataset(name, args.out)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
