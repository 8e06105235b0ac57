"""PyOD's detectors (Zhao et al., JMLR 2019) behind the library's detector API, for the tabular page.

`PyODDetector(name, seed=...)` fits one of PyOD's models on normal training rows (N, D) with its
default hyperparameters (ADBench's protocol), after the page's one scaling step (`scale_columns`:
each column standardised with its training mean and std, and a column constant over the training
rows set to 0, the same as ALGAN-feature's `model.feature_scaling = "drop_constant"`). Scores:
higher = more anomalous (PyOD's `decision_function`). PyOD is an optional dependency
(`pip install algan[tabular]`).
"""
from __future__ import annotations

import importlib
from typing import Optional

import numpy as np

from ..detector import FEATURE_STD_FLOOR, BaseDetector
from .feature_baselines import check_features

# name -> (module, class, the seed's keyword or None for a deterministic method)
PYOD_MODELS = {
    "iforest": ("pyod.models.iforest", "IForest", "random_state"),
    "knn": ("pyod.models.knn", "KNN", None),
    "lof": ("pyod.models.lof", "LOF", None),
    "ocsvm": ("pyod.models.ocsvm", "OCSVM", None),
    "ecod": ("pyod.models.ecod", "ECOD", None),
    "copod": ("pyod.models.copod", "COPOD", None),
    "deepsvdd": ("pyod.models.deep_svdd", "DeepSVDD", "random_state"),
}
LABELS = {"iforest": "IForest", "knn": "KNN", "lof": "LOF", "ocsvm": "OCSVM", "ecod": "ECOD", "copod": "COPOD",
          "deepsvdd": "DeepSVDD"}
# The deep detector is DeepSVDD (Ruff et al., ICML 2018), not PyOD's AutoEncoder: the AutoEncoder's scoring
# compiles a numba kernel in every new process (20-30 s on this machine's busy cores), which a sweep's
# workers and the smoke page would pay again and again. Settings that are not hyperparameters: quiet.
QUIET = {"deepsvdd": {"verbose": 0}}
NEEDS_DIM = frozenset({"deepsvdd"})  # takes the number of columns when built


def scale_columns(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per column of the training rows; std floored at FEATURE_STD_FLOOR, and inf for a column
    constant over them, so that it is 0 after `(x - mean) / std` (ALGAN's "drop_constant")."""
    x = np.asarray(train, dtype=np.float64)
    mean, std = x.mean(0), x.std(0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1])
    return mean, np.where(std < FEATURE_STD_FLOOR, np.inf, std)


def pyod_class(name: str):
    """PyOD's class for `name`; a one-line error when PyOD is not installed."""
    if name not in PYOD_MODELS:
        raise ValueError(f"unknown PyOD detector {name!r}: expected one of {list(PYOD_MODELS)}")
    module, cls, _ = PYOD_MODELS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as err:
        raise ImportError(f"PyOD's {cls} needs the package pyod ({err}): pip install 'algan[tabular]'") from None


class PyODDetector(BaseDetector):
    """One of PyOD's detectors with fit(X, X_val=None, y_val=None) / decision_function(X) -> (N,)."""

    def __init__(self, name: str, seed: int = 0, **params):
        self.name, self.seed = name, seed
        self._cls = pyod_class(name)
        seed_key = PYOD_MODELS[name][2]
        self.params = {**QUIET.get(name, {}), **({seed_key: seed} if seed_key else {}), **params}
        self.model = None
        self.mean_: Optional[np.ndarray] = None
        self.std_: Optional[np.ndarray] = None

    def _scaled(self, X, what: str) -> np.ndarray:
        x = check_features(X, what).astype(np.float64)
        if self.mean_ is not None and x.shape[1] != len(self.mean_):
            raise ValueError(f"{what} has {x.shape[1]} columns: expected {len(self.mean_)} as in training")
        return ((x - self.mean_) / self.std_).astype(np.float32)

    def fit(self, X, X_val=None, y_val=None) -> "PyODDetector":
        """Fit on normal rows X (no labels are used); the threshold is set at the 5 % FPR of the normal
        validation rows when given, else of the training rows."""
        x = check_features(X, "X")
        self.mean_, self.std_ = scale_columns(x)
        self.model = self._cls(**({"n_features": x.shape[1]} if self.name in NEEDS_DIM else {}), **self.params)
        self.model.fit(self._scaled(x, "X"))
        normal = x if X_val is None or y_val is None else np.asarray(X_val)[np.asarray(y_val) == 0]
        self.set_threshold(self.decision_function(normal), 0.05)
        return self

    def decision_function(self, X) -> np.ndarray:
        if self.mean_ is None:
            raise ValueError(f"the {LABELS[self.name]} detector is not fitted: call fit() first")
        return np.asarray(self.model.decision_function(self._scaled(X, "X")), dtype=np.float64)
