"""Training on tables (`data.format: csv|parquet`), called by `run_training`.

scikit-learn, XGBoost and LightGBM estimators are fitted here, after the ColumnTransformer of
`data.preprocess`, and write the same run dir as the trainer (config.yaml, metrics.json,
summary.txt, train.log, splits.json, TensorBoard events) plus the fitted pipeline in safe formats.
Boosters report their validation metrics to the callbacks every `training.eval_every` boosting
rounds as "epochs" (`on_epoch_end(rounds, round, metrics)`), so the search's pruning callback and
`training.early_stopping` work on them unchanged; an exception raised by a callback (a pruned
trial) leaves the booster's fit. Estimators without rounds are fitted whole: the callbacks see one
epoch. The torch `mlp` trains through the trainer (`prepare_tabular_tensors`).
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ml_framework.config import save_config
from ml_framework.errors import ConfigError, DataError
from ml_framework.fileio import atomic_write_text
from ml_framework.training.callbacks import EarlyStopping
from ml_framework.training.tabular_metrics import check_monitor, compute_metrics, probabilities

log = logging.getLogger("ml_framework.training")

# Types a saved scikit-learn pipeline may hold; anything else in the file is refused on load.
TRUSTED_MODULES = ("sklearn.", "numpy.", "builtins.")


# --------------------------------------------------------------------------- data


class Prepared:
    """The table, its split and the preprocessed arrays of one run."""

    def __init__(self, cfg: DictConfig, table: Any, native: bool, scale: bool) -> None:
        from ml_framework.data.tabular import build_preprocessor, make_table_splits

        d = cfg.data
        self.table = table
        seed = cfg.training.seed if d.split_seed is None else d.split_seed
        splits = make_table_splits(self.table, d, seed)
        self.train_idx, self.val_idx, self.test_idx = splits.for_fold(d.fold)
        if len(self.val_idx) == 0:
            raise ConfigError("the validation split is empty: raise data.val_split or add rows")
        self.splits_json = {
            **splits.to_json(self.table.row_names, d.fold),
            "fold": d.fold,
            "fingerprint": splits.fingerprint(),
        }
        self.splits_text = json.dumps(self.splits_json)  # splits.json of every run on this split
        self.preprocessor, self.native_positions = build_preprocessor(
            self.table, d.preprocess, native=native, scale=scale
        )
        x = self.table.features
        train = np.asarray(self.preprocessor.fit_transform(x.iloc[self.train_idx]), dtype=np.float64)
        # One C-ordered array of the train, val and test rows; the splits are views of it, so a fitted
        # model scores every split with one predict call (`_final_metrics`).
        parts = [
            train,
            self._transform(self.val_idx, train.shape[1]),
            self._transform(self.test_idx, train.shape[1]),
        ]
        self.x_all = np.ascontiguousarray(np.concatenate(parts))
        a, b = len(self.train_idx), len(self.train_idx) + len(self.val_idx)
        self.x_train, self.x_val, self.x_test = self.x_all[:a], self.x_all[a:b], self.x_all[b:]
        y = self.table.target
        self.y_train, self.y_val, self.y_test = y[self.train_idx], y[self.val_idx], y[self.test_idx]

    def _transform(self, idx: np.ndarray, width: int) -> np.ndarray:
        if len(idx) == 0:
            return np.empty((0, width))
        return np.asarray(self.preprocessor.transform(self.table.features.iloc[idx]), dtype=np.float64)

    @property
    def n_classes(self) -> int:
        return len(self.table.classes)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x_all, self.y_train, self.y_val, self.y_test))


# Preprocessed splits are kept in memory (up to this many bytes) while their file is unchanged: every
# trial of a search fits the same ColumnTransformer on the same rows of each fold, so it is fitted once
# per fold, as a hand-written search would.
PREPARED_CACHE_BYTES = 512 * 2**20
_prepared_cache: OrderedDict[str, Prepared] = OrderedDict()


def prepared_data(cfg: DictConfig, table: Any, native: bool, scale: bool) -> Prepared:
    """`Prepared(cfg, table, native, scale)`, from the cache when the same file, data config, seed
    and preprocessing were prepared before in this process."""
    stat = Path(cfg.data.path).stat()
    text = str(cfg.data)  # the node's repr: a fraction of to_container's cost, once per fold of a search
    if "${" in text:  # an interpolation: its resolved value is the key
        text = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True, default=str)
    key = json.dumps([text, cfg.training.seed, native, scale, stat.st_mtime_ns, stat.st_size])
    if key in _prepared_cache:
        _prepared_cache.move_to_end(key)
        return _prepared_cache[key]
    data = Prepared(cfg, table, native, scale)
    if data.nbytes <= PREPARED_CACHE_BYTES:
        _prepared_cache[key] = data
        while sum(d.nbytes for d in _prepared_cache.values()) > PREPARED_CACHE_BYTES:
            _prepared_cache.popitem(last=False)
    return data


# --------------------------------------------------------------------------- boosting rounds


class Rounds:
    """What callbacks see as the trainer of an estimator: boosting rounds are its epochs."""

    def __init__(
        self,
        model: Any,
        num_epochs: int,
        every: int,
        evaluate: Callable[[dict[str, float], Callable[[], Any]], dict[str, float]],
        callbacks: Sequence[Any],
        progress: Any = None,
    ) -> None:
        self.model, self.num_epochs, self.every = model, num_epochs, max(int(every), 1)
        self.evaluate, self.callbacks, self.progress = evaluate, list(callbacks), progress
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self.stopped_early = False
        self._started = time.perf_counter()

    def start(self) -> None:
        for cb in self.callbacks:
            cb.on_train_start(self)

    def report(self, done: int, native: dict[str, float], predict: Callable[[], Any]) -> bool:
        """After `done` rounds: every `every` rounds (and the last) turn the library's own validation
        metrics (`native`) or else the validation predictions (`predict()`) into metrics and hand them
        to the callbacks. Returns True when a callback asked to stop."""
        self.epoch = done
        if done % self.every and done < self.num_epochs:
            return False
        self.emit({"epoch": done, **self.evaluate(native, predict)})
        return self.should_stop

    def emit(self, row: dict[str, float]) -> None:
        """Record the row of epoch `row["epoch"]` and hand it to the progress bar and callbacks."""
        row["epoch_time"] = time.perf_counter() - self._started
        self._started = time.perf_counter()
        self.history.append(row)
        if self.progress is not None:
            self.progress(int(row["epoch"]), row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, int(row["epoch"]), row)

    def end(self) -> None:
        for cb in self.callbacks:
            cb.on_train_end(self)


class _RoundsEarlyStopping(EarlyStopping):
    """The trainer's early stopping over rounds; the monitor is a table metric (checked by the caller)."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0) -> None:
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta


# Metrics the boosters compute themselves on the validation rows each round (in C++, far cheaper
# than predicting and scoring in Python): (family, metric) -> (library name by class count
# ("binary", "multi") or task ("regression"), conversion). Others are computed from predictions.
def _same(v: float) -> float:
    return v


NATIVE_METRICS: dict[tuple[str, str], tuple[dict[str, str], Callable[[float], float]]] = {
    ("xgboost", "roc_auc"): ({"binary": "auc"}, _same),
    ("xgboost", "log_loss"): ({"binary": "logloss", "multi": "mlogloss"}, _same),
    ("xgboost", "acc"): ({"binary": "error", "multi": "merror"}, lambda v: 1.0 - v),
    ("xgboost", "rmse"): ({"regression": "rmse"}, _same),
    ("xgboost", "mae"): ({"regression": "mae"}, _same),
    ("lightgbm", "roc_auc"): ({"binary": "auc"}, _same),
    ("lightgbm", "log_loss"): ({"binary": "binary_logloss", "multi": "multi_logloss"}, _same),
    ("lightgbm", "acc"): ({"binary": "binary_error", "multi": "multi_error"}, lambda v: 1.0 - v),
    ("lightgbm", "rmse"): ({"regression": "rmse"}, _same),
    ("lightgbm", "mae"): ({"regression": "l1"}, _same),
}


def native_metrics(
    family: str, task: str, n_classes: int, names: Sequence[str]
) -> dict[str, tuple[str, Any]]:
    """metric -> (the booster's eval metric name, conversion) for the `names` it computes itself."""
    kind = "regression" if task == "regression" else ("binary" if n_classes == 2 else "multi")
    found = {}
    for name in names:
        base = "log_loss" if name == "loss" and task == "classification" else name
        library, convert = NATIVE_METRICS.get((family, base), ({}, _same))
        if kind in library:
            found[name] = (library[kind], convert)
    return found


def _xgboost_callback(rounds: Rounds, x_val: np.ndarray) -> Any:
    import xgboost

    class Report(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            done = epoch + 1
            native = {k: v[-1] for k, v in evals_log.get("validation_0", {}).items()}
            return rounds.report(
                done, native, lambda: model.inplace_predict(x_val, iteration_range=(0, done))
            )

    return Report()


def _lightgbm_callback(rounds: Rounds, x_val: np.ndarray) -> Callable[[Any], None]:
    import lightgbm

    def report(env: Any) -> None:
        done = env.iteration + 1
        native = {name: value for _, name, value, _ in env.evaluation_result_list or ()}
        if rounds.report(done, native, lambda: env.model.predict(x_val, num_iteration=done)):
            # keeps every round trained so far (best_iteration = done)
            raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    report.order = 30  # type: ignore[attr-defined]
    return report


def _fit(family: str, estimator: Any, data: Prepared, rounds: Rounds | None, eval_metrics: list[str]) -> None:
    """Fit on the training rows, reporting rounds to `rounds` (None: nobody reads them, the fit runs
    without a callback); `eval_metrics` are the boosters' own metrics to compute on the validation
    rows each round (see `native_metrics`)."""
    x, y = data.x_train, data.y_train
    if family == "xgboost":  # its parameters are attributes (get_params costs more than a small fit's rounds)
        if data.native_positions:
            types = ["c" if i in data.native_positions else "q" for i in range(x.shape[1])]
            estimator.set_params(feature_types=types, enable_categorical=True)
        user_metric = estimator.eval_metric
        if eval_metrics and user_metric is None:
            estimator.set_params(eval_metric=eval_metrics)
        estimator.set_params(callbacks=[_xgboost_callback(rounds, data.x_val)] if rounds else None)
        # also for xgboost's own early_stopping_rounds
        watch = eval_metrics or user_metric or estimator.early_stopping_rounds
        try:
            estimator.fit(x, y, eval_set=[(data.x_val, data.y_val)] if watch else None, verbose=False)
        finally:  # the saved model keeps no reference to this run (set_params would reconfigure it)
            estimator.callbacks = None
    elif family == "lightgbm":
        watch = eval_metrics or any(k.startswith("early_stopping") for k in estimator.get_params())
        if not watch:
            evals: dict[str, Any] = {}
        elif "eval_X" in inspect.signature(estimator.fit).parameters:  # LightGBM >= 4.6
            evals = {"eval_X": (data.x_val,), "eval_y": (data.y_val,)}
        else:
            evals = {"eval_set": [(data.x_val, data.y_val)]}
        estimator.fit(
            x,
            y,
            **evals,
            eval_metric=eval_metrics or None,
            categorical_feature=data.native_positions or "auto",
            callbacks=[_lightgbm_callback(rounds, data.x_val)] if rounds else None,
        )
    else:
        estimator.fit(x, y)
        if rounds is not None:
            rounds.report(1, {}, lambda: _predict(estimator, data.x_val, data))


def _rounds_trained(family: str, estimator: Any, n_rounds: int) -> int:
    """Boosting rounds in the fitted model (its own early stopping may have ended it before `n_rounds`);
    1 for an estimator fitted whole."""
    if family == "xgboost":
        if estimator.early_stopping_rounds is None:  # every round (asking the booster costs ~0.2 ms)
            return n_rounds
        return int(estimator.get_booster().num_boosted_rounds())
    if family == "lightgbm":
        return int(estimator.booster_.current_iteration())
    return 1


def _predict(estimator: Any, x: np.ndarray, data: Prepared) -> np.ndarray:
    """Class probabilities (n, K) over all classes, or regression values."""
    if data.table.task == "regression":
        return np.asarray(estimator.predict(x), dtype=np.float64)
    k = data.n_classes
    if hasattr(estimator, "predict_proba"):
        scores = np.asarray(estimator.predict_proba(x), dtype=np.float64)
    elif hasattr(estimator, "decision_function"):  # margins -> probabilities (softmax / sigmoid)
        d = np.asarray(estimator.decision_function(x), dtype=np.float64)
        d = np.column_stack([-d, d]) if d.ndim == 1 else d
        e = np.exp(d - d.max(1, keepdims=True))
        scores = e / e.sum(1, keepdims=True)
    else:
        hard = np.asarray(estimator.predict(x))
        scores = (hard[:, None] == np.asarray(estimator.classes_)[None, :]).astype(np.float64)
    full = np.zeros((len(x), k))
    full[:, np.asarray(estimator.classes_, dtype=np.int64)] = scores  # a class absent from training
    return full


# --------------------------------------------------------------------------- saving


def save_fitted(
    run_dir: Path, family: str, estimator: Any, data: Prepared, cfg: DictConfig
) -> dict[str, Any]:
    """The fitted pipeline: XGBoost UBJSON / LightGBM text + the preprocessor, or the whole
    scikit-learn pipeline, with skops (loads without running code) when installed."""
    from sklearn.pipeline import Pipeline

    out = run_dir / "model"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if family == "xgboost":
        estimator.save_model(out / "model.ubj")
        files["model"] = "model.ubj"
        files["preprocessor"] = _dump(data.preprocessor, out / "preprocessor")
    elif family == "lightgbm":
        estimator.booster_.save_model(str(out / "model.txt"))
        files["model"] = "model.txt"
        files["preprocessor"] = _dump(data.preprocessor, out / "preprocessor")
    else:
        pipeline = Pipeline([("preprocess", data.preprocessor), ("model", estimator)])
        files["pipeline"] = _dump(pipeline, out / "pipeline")
    info = {
        "architecture": str(cfg.model.architecture),
        "family": family,
        "task": data.table.task,
        "target": data.table.target_name,
        "classes": list(data.table.classes),
        "features": list(data.table.features.columns),
        "files": files,
        "trusted_only": any(f.endswith(".joblib") for f in files.values()),
    }
    atomic_write_text(out / "model_info.json", json.dumps(info, indent=1))
    return info


def _dump(obj: Any, stem: Path) -> str:
    try:
        import skops.io as sio
    except ImportError:
        import joblib

        path = stem.with_suffix(".joblib")
        joblib.dump(obj, path)
        log.warning(
            "%s is a pickle: trusted-only (loading it runs code); pip install skops for a safe format", path
        )
        return path.name
    path = stem.with_suffix(".skops")
    sio.dump(obj, path)
    return path.name


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
    if refused:
        raise DataError(f"{path} holds types outside scikit-learn/numpy ({', '.join(refused)}): not loaded")
    return sio.load(path, trusted=untrusted)


def load_fitted(run_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(preprocessor or None, model, model_info) of a tabular run dir, without unpickling: a whole
    scikit-learn pipeline comes back as the model (its preprocessor inside)."""
    out = Path(run_dir) / "model"
    info_path = out / "model_info.json"
    if not info_path.is_file():
        raise DataError(f"{run_dir} holds no fitted tabular model ({info_path} is missing)")
    info = json.loads(info_path.read_text())
    files = info["files"]
    if any(f.endswith(".joblib") for f in files.values()):
        raise DataError(f"{out} was saved as a pickle (trusted-only): load it with joblib if you made it")
    if "pipeline" in files:
        return None, _load_skops(out / files["pipeline"]), info
    preprocessor = _load_skops(out / files["preprocessor"])
    from ml_framework.models.tabular import estimator_class

    if info["family"] == "xgboost":
        model = estimator_class("xgboost", info["task"])()
        model.load_model(out / files["model"])
    else:
        import lightgbm

        model = lightgbm.Booster(model_file=str(out / files["model"]))
    return preprocessor, model, info


# --------------------------------------------------------------------------- the run


def run_estimator(
    cfg: DictConfig,
    callbacks: Sequence[Any] = (),
    *,
    run_dir: Path | None = None,
    progress: bool = True,
    hparams_extra: dict[str, Any] | None = None,
    console: Any = None,
    trial: bool = False,
) -> Any:
    """Fit the `sklearn/<Estimator>`, `xgboost` or `lightgbm` model of `cfg` and write its run dir.
    A search trial (`trial`) saves no fitted pipeline: `ml-train --config best_config.yaml` refits the
    best trial's exactly. A cross-validation fold of a trial writes no config.yaml (its trial's
    config.yaml with `data.fold=<k>` is the fold's) and, when nobody reads its rounds, no TensorBoard
    events: its one row is in metrics.json, and the trial's TensorBoard session holds the folds."""
    from ml_framework.models.tabular import create_estimator, family, fit_steps, is_tree_model
    from ml_framework.training.result import LogEpochs, TrainResult, write_outputs
    from ml_framework.training.rundir import create_run_dir, train_log, trial_fold
    from ml_framework.training.tensorboard import TensorBoardLogger, run_hparams

    started = time.perf_counter()
    t = cfg.training
    random.seed(t.seed)  # the estimators take their own seed (random_state); torch is not involved
    np.random.seed(t.seed % 2**32)
    from ml_framework.data.tabular import load_table

    arch = str(cfg.model.architecture)
    fam = family(arch)
    table = load_table(cfg.data)
    task = table.task
    estimator = create_estimator(cfg.model, task, seed=t.seed)
    check_monitor(t.monitor, "training.monitor", task)
    es = t.early_stopping
    if es.enabled:
        check_monitor(es.monitor, "training.early_stopping.monitor", task)
    data = prepared_data(cfg, table, native=fam != "sklearn", scale=not is_tree_model(arch, estimator))

    if run_dir is None:
        run_dir = create_run_dir(cfg.output.runs_dir, cfg.output.name, f"{cfg.data.dataset_name}_{fam}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not trial_fold(cfg, trial):  # a fold's config is its trial's (trial_<n>/config.yaml), data.fold=<k>
        save_config(cfg, run_dir / "config.yaml", drop_search=True)
    (run_dir / "splits.json").write_text(data.splits_text)

    # Rounds are evaluated for pruning, early stopping and ml-train's progress and curves; a callback
    # that reads no epochs (`per_epoch = False`: a cross-validation fold's) leaves only the end. Per
    # round only the metrics someone reads (the monitor, early stopping's); all of them at the end.
    per_round = es.enabled or progress or any(getattr(cb, "per_epoch", True) for cb in callbacks)
    n_rounds = fit_steps(fam, getattr(estimator, "n_estimators", None))  # = run_steps(cfg)
    watched = list(dict.fromkeys([t.monitor, *([es.monitor] if es.enabled else [])]))
    names = [w.removeprefix("val_") for w in watched]
    natives = native_metrics(fam, task, data.n_classes, names) if per_round else {}
    if fam == "xgboost" and estimator.eval_metric is not None:
        natives = {}  # the user's own eval_metric: score predictions instead
    computed = [n for n in names if n not in natives]

    def evaluate(native: dict[str, float], predict: Callable[[], Any]) -> dict[str, float]:
        row = {f"val_{n}": convert(float(native[lib])) for n, (lib, convert) in natives.items()}
        if computed:
            pred = predict()
            if task == "classification":
                pred = probabilities(pred, data.n_classes)
            row.update(compute_metrics(task, data.y_val, pred, "val", computed))
        return row

    with train_log(run_dir):
        hparams = run_hparams(cfg, hparams_extra, trial)
        tb = TensorBoardLogger(run_dir, hparams) if hparams or per_round else None
        all_callbacks: list[Any] = [LogEpochs()]
        if es.enabled:
            all_callbacks.append(_RoundsEarlyStopping(es.monitor, es.mode, es.patience, es.min_delta))
        all_callbacks.extend(callbacks)
        bar, show = _progress(console, n_rounds, progress and fam != "sklearn")
        every = int(t.eval_every) if per_round else n_rounds
        rounds = Rounds(estimator, n_rounds, every, evaluate, all_callbacks, show)
        result = TrainResult(
            run_dir=run_dir, monitor=t.monitor, monitor_mode=t.monitor_mode, history=rounds.history,
            best_epoch=None, best={}, final={},
        )  # fmt: skip
        try:
            rounds.start()
            with bar:
                libs = list(dict.fromkeys(lib for lib, _ in natives.values()))
                _fit(fam, estimator, data, rounds if per_round else None, libs)
            rounds.stopped_early = rounds.stopped_early or rounds.should_stop
            if not per_round:  # the callbacks see the fitted model's row only
                rounds.epoch = _rounds_trained(fam, estimator, n_rounds)
            final, result.test = _final_metrics(estimator, data, rounds)
            if not per_round:
                rounds.emit(final)
            rounds.end()
            if result.history and result.history[-1]["epoch"] == final["epoch"]:
                result.history[-1] = final
            else:  # the booster stopped itself between reports (its own early_stopping_rounds)
                result.history.append(final)
            result.best_epoch, result.best, result.final = int(final["epoch"]), final, final
            result.stopped_early = rounds.stopped_early
            if not trial:
                save_fitted(run_dir, fam, estimator, data, cfg)
        except BaseException as e:
            result.status = f"stopped: {type(e).__name__}: {e}".strip().rstrip(":")
            log.warning("run %s: %s", run_dir, result.status)
            raise
        finally:
            result.duration_s = time.perf_counter() - started
            for row in result.history if tb is not None else ():
                for key, value in row.items():
                    if key != "epoch":
                        tb.add_scalar(key, value, int(row["epoch"]))
            write_outputs(result, tb)
    return result


def _final_metrics(
    estimator: Any, data: Prepared, rounds: Rounds
) -> tuple[dict[str, float], dict[str, float]]:
    """Every metric of the fitted model: (the last row, with the training and validation rows'
    metrics; the test rows' metrics), from one prediction over all rows."""
    task = data.table.task
    pred = _predict(estimator, data.x_all, data)
    a, b = len(data.y_train), len(data.y_train) + len(data.y_val)
    row: dict[str, float] = {"epoch": rounds.epoch or 1}
    row.update(compute_metrics(task, data.y_train, pred[:a], "train"))
    row.update(compute_metrics(task, data.y_val, pred[a:b], "val"))
    if rounds.history:
        row["epoch_time"] = rounds.history[-1].get("epoch_time", 0.0)
    return row, compute_metrics(task, data.y_test, pred[b:], "test")


def _progress(
    console: Any, total: int, show: bool
) -> tuple[Any, Callable[[int, dict[str, float]], None] | None]:
    """A rich bar over boosting rounds for ml-train; nothing in search trials."""
    from contextlib import nullcontext

    if not show:
        return nullcontext(), None
    from rich.console import Console

    from ml_framework.training.progress import make_progress

    bar = make_progress(console or Console(highlight=False))
    task = bar.add_task("rounds", total=total)

    def update(done: int, row: dict[str, float]) -> None:
        bar.update(task, completed=done)

    return bar, update


# --------------------------------------------------------------------------- the torch MLP


class ArrayBatches:
    """(x float32 [B, F], y int64 [B]) batches of preprocessed rows in memory, shuffled per epoch by
    the same (seed, epoch) generator as image batches, with the same remainder rule."""

    def __init__(self, x: Any, y: Any, *, batch_size: int, shuffle: bool, seed: int, device: Any) -> None:
        from ml_framework.data.loader import batch_bounds

        self.x, self.y = x.to(device), y.to(device)
        self.shuffle, self.seed, self._epoch = shuffle, int(seed), 0
        self.bounds = batch_bounds(len(self.y), batch_size, shuffle)

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def generator(self, epoch: int) -> Any:
        from ml_framework.data.loader import TensorBatches

        return TensorBatches.generator(self, epoch)  # type: ignore[arg-type]  # reads only .seed

    def __iter__(self) -> Any:
        import torch

        epoch, self._epoch = self._epoch, self._epoch + 1
        order = (
            torch.randperm(len(self.y), generator=self.generator(epoch)).to(self.x.device)
            if self.shuffle
            else None
        )
        for start, end in self.bounds:
            if order is None:
                yield self.x[start:end], self.y[start:end]
            else:
                idx = order[start:end]
                yield self.x[idx], self.y[idx]


def prepare_tabular_tensors(cfg: DictConfig, device: Any) -> Any:
    """The table as the trainer's PreparedData: preprocessed, scaled features of `F` columns appear as
    `F` channels of 1x1 images, which the built-in MLP flattens back."""
    import torch

    from ml_framework.data.tabular import load_table
    from ml_framework.training.run import PreparedData

    arch = str(cfg.model.architecture)
    if arch != "mlp":
        raise ConfigError(
            f"model.architecture={arch!r} trains on images; on a table use mlp, xgboost, lightgbm or "
            "sklearn/<Estimator>"
        )
    table = load_table(cfg.data)
    if table.task != "classification":
        raise ConfigError(
            "model.architecture=mlp trains classifiers on tables; for regression use sklearn/MLPRegressor, "
            "xgboost or lightgbm"
        )
    data = prepared_data(cfg, table, native=False, scale=True)
    t = cfg.training

    def batches(x: np.ndarray, y: np.ndarray, train: bool) -> ArrayBatches:
        return ArrayBatches(
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.int64),
            batch_size=t.batch_size if train else max(t.batch_size, 256),
            shuffle=train,
            seed=t.seed,
            device=device,
        )

    def save(run_dir: Path) -> None:
        out = run_dir / "model"
        out.mkdir(parents=True, exist_ok=True)
        name = _dump(data.preprocessor, out / "preprocessor")
        info = {
            "architecture": arch, "family": "torch", "task": table.task, "target": table.target_name,
            "classes": list(table.classes), "features": list(table.features.columns),
            "files": {"preprocessor": name, "model": "../checkpoints/best.pt"},
            "trusted_only": name.endswith(".joblib"),
        }  # fmt: skip
        atomic_write_text(out / "model_info.json", json.dumps(info, indent=1))

    return PreparedData(
        train=batches(data.x_train, data.y_train, True),
        val=batches(data.x_val, data.y_val, False),
        test=batches(data.x_test, data.y_test, False),
        classes=table.classes,
        channels=data.x_train.shape[1],
        image_size=1,
        splits_json=data.splits_json,
        skipped=(),
        save=save,
    )


def preflight(cfg: DictConfig, searched: Sequence[str] = (), metrics: Sequence[str] = ()) -> None:
    """What a search on a table checks before its study exists: the table (target, task, folds), the
    model with its searched `model.<param>` keys, and the metrics for the task."""
    import copy

    from ml_framework.config.schema import takes_estimator_params
    from ml_framework.data.tabular import load_table, make_table_splits
    from ml_framework.models.tabular import check_param_names, create_estimator
    from ml_framework.training.metrics import METRIC_NAMES, TABULAR_METRIC_NAMES

    table = load_table(cfg.data)
    probe = copy.deepcopy(cfg.data)
    cv = cfg.search.cross_validation if cfg.search is not None else None
    if cv is not None and cv.enabled:
        probe.n_folds, probe.fold = int(cv.n_folds), 0
    make_table_splits(table, probe, cfg.training.seed if probe.split_seed is None else probe.split_seed)
    arch = str(cfg.model.architecture)
    if takes_estimator_params(arch):
        estimator = create_estimator(cfg.model, table.task, seed=cfg.training.seed)
        params = [n.removeprefix("model.") for n in searched if n.startswith("model.")]
        check_param_names(arch, type(estimator), [p for p in params if "." not in p and p != "kwargs"])
        for m in metrics:
            if m in TABULAR_METRIC_NAMES or m in METRIC_NAMES:
                check_monitor(m, "search.metric", table.task)
    elif table.task != "classification":
        raise ConfigError(
            f"model.architecture={arch} trains classifiers on tables, but '{table.target_name}' is a "
            "regression target; use sklearn/<Regressor>, xgboost or lightgbm"
        )


def run_steps(cfg: DictConfig) -> int:
    """The steps a run reports to a pruner: epochs, boosting rounds (model.n_estimators), or 1 for an
    estimator fitted whole."""
    from ml_framework.config.schema import takes_estimator_params
    from ml_framework.models.tabular import estimator_params, family, fit_steps

    arch = str(cfg.model.architecture)
    if cfg.data.format == "images" or not takes_estimator_params(arch):
        return int(cfg.training.num_epochs)
    return fit_steps(family(arch), estimator_params(cfg.model).get("n_estimators"))
