"""Tabular data (`data.format: csv|parquet`): read the table, pick target and features, infer the
task, split the rows (stratified, plain or time-ordered) and build the scikit-learn ColumnTransformer
that preprocesses them. pandas and scikit-learn are the `[tabular]` extra, imported here only."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_framework.data.splits import Splits, make_splits
from ml_framework.errors import ConfigError, DataError, UserError, closest

TABULAR_FORMATS = ("csv", "parquet")
# An integer target with at most this many distinct values is a class label, not a quantity.
MAX_INTEGER_CLASSES = 20


def _pandas() -> Any:
    try:
        import pandas
        import sklearn  # noqa: F401  (the preprocessing needs it too)
    except ImportError as e:
        raise UserError(
            f'tabular data needs pandas and scikit-learn: pip install "ml_framework[tabular]" ({e})'
        ) from e
    return pandas


@dataclass
class Table:
    """The rows of a table: features with their original dtypes and the encoded target."""

    path: str
    target_name: str
    features: Any  # pandas.DataFrame
    target: np.ndarray  # class index (int64) or value (float64)
    task: str  # classification or regression
    classes: tuple[str, ...]  # class names by index; () for regression
    numeric: list[str]
    categorical: list[str]

    @property
    def row_names(self) -> list[str]:
        return [str(i) for i in self.features.index]


def read_table(path: str | Path, fmt: str | None = None) -> Any:
    """The whole table as a DataFrame; a missing, unreadable or empty file is a DataError."""
    pd = _pandas()
    path = Path(path)
    fmt = fmt or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if not path.is_file():
        raise DataError(f"data.path: table file not found: {path}")
    try:
        df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path} is empty: it has no header and no rows; point data.path at a table"
        ) from None
    except ImportError as e:
        raise UserError(f"reading {path} needs a parquet engine: pip install pyarrow ({e})") from e
    except Exception as e:
        raise DataError(f"{path}: cannot read it as {fmt}: {e}") from e
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataError(
            f"{path} is empty: {df.shape[0]} rows, {df.shape[1]} columns; it needs a header and rows"
        )
    return df


def infer_task(values: Any) -> str:
    """classification for text, booleans and integers with few distinct values; else regression."""
    pd = _pandas()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification"
    present = values.dropna()
    integral = pd.api.types.is_integer_dtype(values) or bool((present == present.round()).all())
    return "classification" if integral and present.nunique() <= MAX_INTEGER_CLASSES else "regression"


def _missing_columns(names: list[str], columns: list[str], key: str, path: str) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        hints = [
            f"{n} (did you mean {', '.join(closest(n, columns))}?)" if closest(n, columns) else n
            for n in missing
        ]
        raise DataError(f"{key}: {path} has no column {', '.join(hints)}; its columns: {', '.join(columns)}")


def load_table(d: Any) -> Table:
    """Read `data.path` and check it against `data.target/features/drop/task` (DataError naming the
    column and the fix). Rows without a target value are dropped. The last tables read are kept
    while their file is unchanged: the folds of a cross-validated trial all read the same one."""
    stat = Path(d.path).stat() if Path(d.path).is_file() else None
    features = tuple(d.features) if d.features is not None else None
    key = (str(d.path), d.format, stat and (stat.st_mtime_ns, stat.st_size), str(d.target), d.task)
    return _load_table(*key, features, tuple(d.drop or ()))


@functools.lru_cache(maxsize=4)
def _load_table(
    path: str, fmt: str, _version: Any, target: str, task: str | None, features: Any, drop: tuple[str, ...]
) -> Table:
    pd = _pandas()
    df = read_table(path, fmt)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if target not in columns:
        near = closest(target, columns)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise DataError(
            f"data.target: {path} has no column '{target}'.{hint} "
            f"Set data.target to one of: {', '.join(columns)}"
        )
    drop = [str(c) for c in drop]
    _missing_columns(drop, columns, "data.drop", path)
    if features is not None:
        features = [str(c) for c in features]
        _missing_columns(features, columns, "data.features", path)
    else:
        features = [c for c in columns if c != target and c not in drop]
    if target in features:
        raise DataError(f"data.features lists the target column '{target}': remove it from data.features")
    if not features:
        raise DataError(f"{path}: no feature columns left besides the target '{target}' (check data.drop)")
    df = df[df[target].notna()]
    if df.empty:
        raise DataError(f"data.target: column '{target}' of {path} has no values; pick the column to predict")
    y_raw = df[target]
    task = task or infer_task(y_raw)
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y_raw) or pd.api.types.is_bool_dtype(y_raw):
            example = next(iter(y_raw.astype(str)), "")
            raise DataError(
                f"data.task=regression but target column '{target}' of {path} is not numeric (e.g. "
                f"{example!r}); set data.task=classification, or convert the column to numbers"
            )
        y = y_raw.to_numpy(dtype=np.float64)
        classes: tuple[str, ...] = ()
    else:
        codes, uniques = pd.factorize(y_raw, sort=True)
        classes = tuple(str(u) for u in uniques)
        if len(classes) < 2:
            raise DataError(
                f"data.target: column '{target}' of {path} has only one class ({classes[0]!r}) in "
                f"{len(y_raw)} rows; a classifier needs at least two (pick another target or fix the file)"
            )
        y = codes.astype(np.int64)
    x = df[features].copy()
    numeric = [
        c for c in features if pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c])
    ]
    for c in features:  # booleans as 0/1; other non-numeric columns as text categories (NaN stays missing)
        if pd.api.types.is_bool_dtype(x[c]):
            x[c] = x[c].astype(np.float64)
            numeric.append(c)
        elif c not in numeric:
            x[c] = x[c].where(x[c].isna(), x[c].astype(str)).astype(object)
    numeric = [c for c in features if c in numeric]
    categorical = [c for c in features if c not in numeric]
    return Table(path, target, x, y, task, classes, numeric, categorical)


class TimeSeriesSplits(Splits):
    """Time-ordered folds (scikit-learn's TimeSeriesSplit): a fold trains only on rows before it."""

    def for_fold(self, fold: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if fold is None:
            return self.train, self.val, self.test
        _, val, test = super().for_fold(fold)
        pool = np.sort(np.concatenate([self.train, self.val]))
        return pool[pool < val.min()], val, test


def make_table_splits(table: Table, d: Any, seed: int) -> Splits:
    """train/val/test rows and folds: stratified for classification, plain for regression; with
    `data.split: timeseries` the rows keep their order (train, then val, then test) and folds are
    TimeSeriesSplit's expanding windows."""
    n_folds = d.n_folds if d.fold is not None else 0  # folds never change the fixed split
    n = len(table.target)
    if d.split != "timeseries":
        labels = table.target if table.task == "classification" else np.zeros(n, dtype=np.int64)
        return make_splits(
            labels,
            val_split=d.val_split,
            test_split=d.test_split,
            n_folds=n_folds,
            stratified_folds=bool(d.stratified_folds) and table.task == "classification",
            seed=seed,
            class_names=table.classes or None,
        )
    from sklearn.model_selection import TimeSeriesSplit

    n_test = int(np.floor(n * d.test_split + 0.5))
    n_val = max(int(np.floor(n * d.val_split + 0.5)), 1 if d.val_split > 0 else 0)
    if n - n_test - n_val < 1:
        raise DataError(f"{table.path}: {n} rows leave no training rows with data.val_split/test_split")
    rows = np.arange(n, dtype=np.int64)
    train, val, test = rows[: n - n_test - n_val], rows[n - n_test - n_val : n - n_test], rows[n - n_test :]
    folds: list[np.ndarray] = []
    if n_folds >= 2:
        pool = rows[: n - n_test]
        if len(pool) <= n_folds:
            raise DataError(
                f"data.n_folds={n_folds} needs more than {n_folds} train+val rows; "
                f"{table.path} has {len(pool)}"
            )
        folds = [pool[v] for _, v in TimeSeriesSplit(n_splits=n_folds).split(pool)]
    return TimeSeriesSplits(train=train, val=val, test=test, folds=folds, seed=seed)


SCALERS = {"standard": "StandardScaler", "minmax": "MinMaxScaler", "robust": "RobustScaler"}


def build_preprocessor(table: Table, p: Any, *, native: bool, scale: bool) -> tuple[Any, list[int]]:
    """The ColumnTransformer for `data.preprocess` (numeric columns first, then categorical) and the
    output positions of categorical features that stay ordinal codes for a model's native support.

    `native`: the model handles categorical codes and missing values itself (xgboost, lightgbm);
    `scale`: the model wants scaled inputs (linear models, SVMs, neighbours, the MLP)."""
    from sklearn import preprocessing
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    encoding = p.encoding if p.encoding != "auto" else ("native" if native else "onehot")
    if encoding == "native" and not native:
        raise ConfigError(
            "data.preprocess.encoding=native needs a model with native categorical support (xgboost, "
            "lightgbm); use onehot or ordinal for this model"
        )
    scaling = p.scaling if p.scaling != "auto" else ("standard" if scale else "none")
    numeric: list[Any] = []
    if p.numeric_impute != "none":
        numeric.append(SimpleImputer(strategy=p.numeric_impute, fill_value=0, keep_empty_features=True))
    if scaling != "none":
        numeric.append(getattr(preprocessing, SCALERS[scaling])())
    categorical: list[Any] = []
    if p.categorical_impute != "none" and encoding != "native":
        categorical.append(
            SimpleImputer(strategy=p.categorical_impute, fill_value="missing", keep_empty_features=True)
        )
    if encoding == "onehot":
        categorical.append(
            preprocessing.OneHotEncoder(
                handle_unknown="infrequent_if_exist", max_categories=p.max_categories, sparse_output=False
            )
        )
    else:  # ordinal codes; native models read NaN as missing and unknown
        missing = np.nan if encoding == "native" else -1
        categorical.append(
            preprocessing.OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=missing, encoded_missing_value=missing
            )
        )
    transformers = []
    if table.numeric:
        transformers.append(("num", make_pipeline(*numeric) if numeric else "passthrough", table.numeric))
    if table.categorical:
        transformers.append(("cat", make_pipeline(*categorical), table.categorical))
    transformer = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    native_positions = (
        list(range(len(table.numeric), len(table.numeric) + len(table.categorical)))
        if encoding == "native"
        else []
    )
    return transformer, native_positions
