"""Feature arrays (.npz with X (n, d) and y (n,)), e.g. ADBench's MVTec-AD ResNet-18 embeddings."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import DataError
from .splits import NORMAL_60_20_20, VAL_TEST_HALVES, _sizes, hash_lists, stratified_assign

_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@dataclass
class FeatureSplit:
    """One split of a feature file: rows X (N, D) float32, labels y (N,) int64, row indices into the file."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class FeatureSplits:
    """A feature file split by seed: normals 60/20/20 train/val/test, anomalies 50/50 val/test."""

    name: str
    category: str
    seed: int
    path: Path
    train: FeatureSplit
    val: FeatureSplit
    test: FeatureSplit

    def _parts(self) -> dict[str, FeatureSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def file_lists(self) -> dict[str, list[int]]:
        """Row indices of each split, to save with a run's results."""
        return {name: [int(r) for r in s.rows] for name, s in self._parts().items()}

    def split_hash(self) -> str:
        """A short fingerprint of the row lists and labels."""
        return hash_lists(self.file_lists(), {n: s.y.tolist() for n, s in self._parts().items()})

    def describe(self) -> dict:
        """JSON-ready summary: file, seed, dimension, sizes per split and label."""
        return {
            "name": self.name, "category": self.category, "seed": self.seed, "path": str(self.path),
            "dim": int(self.train.x.shape[1]), "sizes": _sizes(self._parts()), "split_hash": self.split_hash(),
        }


def read_arrays(path: Path, names: tuple[str, ...], fix: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Those of the named arrays an .npz holds, and all its array names, read without pickles; a missing
    file, one that is not an .npz archive, or an unreadable one is a DataError (`fix` says what was expected)."""
    if not path.is_file():
        raise DataError(f"{path}: feature file not found, {fix}; check the path")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single array (.npy), not an .npz archive, {fix}; re-export it")
        with z:
            return {k: z[k] for k in names if k in z.files}, list(z.files)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read feature file ({type(exc).__name__}: {exc}), {fix}; re-export it") from exc


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validated (X float32 (n, d), y int64 (n,) in {0, 1}) from an .npz; every problem is a DataError."""
    fix = "expected an .npz with arrays X (n, d) and y (n,), 1 = anomalous"
    arrays, keys = read_arrays(path, ("X", "y"), fix)
    if len(arrays) < 2:
        missing = [k for k in ("X", "y") if k not in arrays]
        raise DataError(f"{path}: arrays {missing} missing (found {keys}), {fix}; re-export the file with both arrays")
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(y) == 0:
        raise DataError(f"{path}: X has shape {X.shape} and y {y.shape}, {fix} with matching n > 0; re-export it")
    if X.dtype.kind not in "iuf" or not np.issubdtype(y.dtype, np.number):  # complex X: not real features
        raise DataError(f"{path}: X is {X.dtype} and y {y.dtype}, expected real numbers; re-export it")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path}: {int(bad.sum())} rows of X hold NaN or inf (first row {int(np.flatnonzero(bad)[0])}), "
            f"expected finite features; drop or recompute those rows"
        )
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{path}: y holds {sorted(np.unique(y).tolist())[:5]}, expected only 0 (normal) and 1 (anomalous); fix the labels")
    y = y.astype(np.int64)
    if (y == 0).sum() < 3 or (y == 1).sum() < 2:
        raise DataError(
            f"{path}: {(y == 0).sum()} normal and {(y == 1).sum()} anomalous rows, expected at least 3 normal and 2 "
            f"anomalous to make train/val/test; add rows"
        )
    return X.astype(np.float32), y


def read_rows(path: Path, dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows X (n, dim) of an .npz to score, and its labels y when it has them; X must be real numbers
    (a DataError otherwise; their shape and values are the detector's to check)."""
    fix = f"expected an .npz with an array X (n, {dim}) (and optionally labels y)"
    arrays, keys = read_arrays(path, ("X", "y"), fix)
    if "X" not in arrays:
        raise DataError(f"{path}: array 'X' missing (found {keys}), {fix}; re-export it")
    X = arrays["X"]
    if X.dtype.kind not in "iuf":
        raise DataError(f"{path}: X is {X.dtype}, {fix} of real numbers; re-export it")
    return X, arrays.get("y")


def load_features(path: str | os.PathLike, seed: int = 0) -> FeatureSplits:
    """Load and split a feature file; train/test are merged in such files, so the split is made here, by seed."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
        key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    cached = _CACHE.get(key) if key else None
    X, y = cached if cached is not None else read_npz(path)
    if key is not None:
        _CACHE[key] = (X, y)  # reached only after validation passed
    return split_arrays(X, y, seed, path)


def split_arrays(X: np.ndarray, y: np.ndarray, seed: int, path: Path, rows=None) -> FeatureSplits:
    """The seeded split of validated arrays (as `read_npz` returns them): normal rows 60/20/20 into
    train / validation / test, anomalous rows halved between validation and test (none in training).
    `rows`: each array row's index in the file (default: 0..n-1), for a subset of a file's rows."""
    rows = np.arange(len(y)) if rows is None else np.asarray(rows)
    cut = stratified_assign(y, {0: NORMAL_60_20_20, 1: VAL_TEST_HALVES}, np.random.default_rng(seed))
    parts = {name: FeatureSplit(X[idx], y[idx], rows[idx].astype(np.int64)) for name, idx in cut.items()}
    return FeatureSplits(name="features", category=Path(path).stem, seed=seed, path=Path(path), **parts)
