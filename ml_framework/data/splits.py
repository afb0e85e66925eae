"""Stratified, seeded train/val/test splits and cross-validation folds over sample indices.

Per class (so every class keeps its proportion): the class's indices are shuffled with
`numpy.random.Generator(seed)`; the first `round(n * test_split)` go to test, the next
`round(n * val_split)` to val (at least 1 when `val_split > 0` and the class has >= 2 samples), the
rest to train; each class keeps >= 1 training sample. Stratified folds deal the train+val indices of
each class round-robin over `n_folds` folds (continuing where the previous class stopped), so every
fold holds every class and fold sizes differ by at most one; plain folds (`stratified_folds=False`)
deal one seeded permutation of all train+val indices, so sizes differ by at most one but a fold may
miss a rare class. The test set never enters a fold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_framework.errors import ConfigError, DataError


@dataclass(frozen=True)
class Splits:
    train: np.ndarray  # sorted int64 sample indices
    val: np.ndarray
    test: np.ndarray
    folds: list[np.ndarray] = field(default_factory=list)  # disjoint; their union is train + val
    seed: int = 0

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def for_fold(self, fold: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, val, test) indices: the fixed split for None, else val = folds[fold]."""
        if fold is None:
            return self.train, self.val, self.test
        if not self.folds:
            raise ConfigError(f"data.fold={fold} needs cross-validation folds, but data.n_folds < 2")
        if (
            isinstance(fold, bool)
            or not isinstance(fold, (int, np.integer))
            or not 0 <= fold < len(self.folds)
        ):
            raise ConfigError(
                f"data.fold={fold!r} is out of range: use 0..{len(self.folds) - 1} "
                f"(data.n_folds={len(self.folds)})"
            )
        train = np.sort(np.concatenate([f for k, f in enumerate(self.folds) if k != fold]))
        return train, self.folds[fold], self.test

    def fingerprint(self) -> str:
        """Short hash of the exact index sets: equal fingerprints mean identical splits."""
        h = hashlib.blake2b(digest_size=6)
        for name, part in [("train", self.train), ("val", self.val), ("test", self.test)] + [
            (f"fold{k}", f) for k, f in enumerate(self.folds)
        ]:
            h.update(name.encode())
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        return h.hexdigest()

    def to_json(self, files: Sequence[str], fold: int | None = None) -> dict[str, Any]:
        """File names per split (for `splits.json`); with `fold`, train/val are that fold's."""
        train, val, test = self.for_fold(fold)

        def names(idx: np.ndarray) -> list[str]:
            return [files[i] for i in idx.tolist()]

        return {
            "fingerprint": self.fingerprint(),
            "seed": self.seed,
            "fold": fold,
            "counts": {"train": len(train), "val": len(val), "test": len(test)},
            "train": names(train),
            "val": names(val),
            "test": names(test),
            "folds": [names(f) for f in self.folds],
        }


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _class_counts(n: int, val_split: float, test_split: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of n samples, keeping >= 1 train and >= 1 val when possible."""
    n_val = _round_half_up(n * val_split)
    if val_split > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    n_test = min(_round_half_up(n * test_split), max(n - 1 - n_val, 0))
    return n_val, n_test


def _validate(val_split: float, test_split: float, n_folds: int) -> None:
    for key, value in (("data.val_split", val_split), ("data.test_split", test_split)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key}={value} must be in [0, 1)")
    if val_split + test_split >= 1.0:
        raise ConfigError(
            f"data.val_split + data.test_split = {val_split + test_split:g} leaves no training data; "
            "keep their sum below 1 (e.g. 0.15 + 0.15)"
        )
    if n_folds < 0:
        raise ConfigError(f"data.n_folds={n_folds} must be >= 2 (or 0 for no folds)")


def make_splits(
    labels: Sequence[int] | np.ndarray,
    *,
    val_split: float,
    test_split: float,
    n_folds: int,
    seed: int,
    class_names: Sequence[str] | None = None,
    stratified_folds: bool = True,
) -> Splits:
    """Stratified train/val/test indices and `n_folds` folds over train+val (n_folds < 2: no folds).

    Raises DataError when there are fewer train+val samples than `n_folds`, or, for stratified
    folds, a class has (a fold would miss it); `class_names` (index = label) only make that message
    name the class folder.
    """
    _validate(val_split, test_split, n_folds)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    pools: dict[int, np.ndarray] = {}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val, n_test = _class_counts(len(idx), val_split, test_split)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
        pools[int(cls)] = idx[n_test:]

    folds: list[np.ndarray] = []
    if n_folds >= 2 and not stratified_folds:
        pool = rng.permutation(np.concatenate(list(pools.values())))
        if len(pool) < n_folds:
            raise DataError(
                f"data.n_folds={n_folds} is larger than the {len(pool)} train+val image(s): "
                f"lower data.n_folds (or search.cross_validation.n_folds) to <= {len(pool)}"
            )
        folds = [np.sort(pool[k::n_folds]).astype(np.int64) for k in range(n_folds)]
    elif n_folds >= 2:
        smallest = min(pools, key=lambda c: len(pools[c]))
        if len(pools[smallest]) < n_folds:
            name = repr(class_names[smallest]) if class_names is not None else str(smallest)
            raise DataError(
                f"data.n_folds={n_folds} is larger than class {name}'s {len(pools[smallest])} "
                f"train+val image(s): every fold needs at least one image of every class. "
                f"Lower data.n_folds (or search.cross_validation.n_folds) to <= {len(pools[smallest])}, "
                "or add images to that class."
            )
        assignment: list[list[np.ndarray]] = [[] for _ in range(n_folds)]
        offset = 0
        for cls in sorted(pools):
            pool = rng.permutation(pools[cls])
            for k in range(n_folds):
                assignment[(offset + k) % n_folds].append(pool[k::n_folds])
            offset = (offset + len(pool)) % n_folds
        folds = [np.sort(np.concatenate(f)).astype(np.int64) for f in assignment]

    def merged(arrays: list[np.ndarray]) -> np.ndarray:
        return np.sort(np.concatenate(arrays)).astype(np.int64) if arrays else np.empty(0, np.int64)

    return Splits(
        train=merged(parts["train"]),
        val=merged(parts["val"]),
        test=merged(parts["test"]),
        folds=folds,
        seed=seed,
    )
