"""Raw-pixel k-nearest-neighbour detector: the trivial reference row beside every AUROC table.

Images are resized to a small square (32x32 by default), flattened and compared by Euclidean
distance; the score is the mean distance to the k nearest training images (exact search with
scikit-learn, batched). It has no epochs, so there is no validation-based model selection: the
validation split is used only for the threshold, as for ALGAN.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors

from .. import results
from ..detector import BaseDetector, as_tensor


class PixelKNN(BaseDetector):
    """Score = mean Euclidean distance to the k nearest training images at `size` x `size` pixels."""

    def __init__(self, size: int = 32, k: int = 1, batch_size: int = 1024):
        if size < 1 or k < 1:
            raise ValueError(f"size={size}, k={k}: expected positive integers")
        self.size, self.k, self.batch_size = size, k, batch_size
        self.input_shape: tuple[int, ...] | None = None
        self.train_: np.ndarray | None = None
        self._index: NearestNeighbors | None = None

    def _embed(self, X, name: str) -> np.ndarray:
        x = as_tensor(X, name)
        if x.dim() != 4:
            raise ValueError(f"{name} has shape {tuple(x.shape)}: expected images (N, C, H, W)")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{name} has images of shape {tuple(x.shape[1:])}: expected {self.input_shape} "
                             "as in fit (resize the images to the fitted size)")
        # Same scaling as the other methods' inputs ([-1, 1]); antialiased resize to size x size.
        small = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return small.flatten(1).numpy().astype(np.float32)

    def fit(self, X, *, X_val=None, y_val=None, threshold_fpr: float = 0.05) -> "PixelKNN":
        n = len(X)
        if self.k > n:
            raise ValueError(f"k={self.k} neighbours requested but the training set has {n} image(s): "
                             f"expected k <= {n}")
        self.input_shape = None
        train = self._embed(X, "X")
        self.input_shape = tuple(as_tensor(X[:1], "X").shape[1:])
        self.train_ = train
        self._index = NearestNeighbors(n_neighbors=self.k, algorithm="brute").fit(train)
        if X_val is not None and y_val is not None:
            normal = np.asarray(y_val) == 0
            self.set_threshold(self.decision_function(as_tensor(X_val, "X_val")[torch.as_tensor(normal)]), threshold_fpr)
        return self

    def decision_function(self, X) -> np.ndarray:
        if self._index is None:
            raise ValueError("the detector is not fitted: call fit() or PixelKNN.load() first")
        emb = self._embed(X, "X")
        out = [self._index.kneighbors(emb[i:i + self.batch_size])[0].mean(1)
               for i in range(0, len(emb), self.batch_size)]
        return np.concatenate(out).astype(np.float64)

    def save(self, path: str | Path) -> None:
        results.torch_save({"format": "pixel-knn-1", "size": self.size, "k": self.k,
                            "input_shape": list(self.input_shape), "train": torch.from_numpy(self.train_),
                            "threshold": self.threshold_}, path)

    @classmethod
    def load(cls, path: str | Path) -> "PixelKNN":
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != "pixel-knn-1":
            raise ValueError(f"checkpoint {path}: expected a PixelKNN checkpoint (format 'pixel-knn-1')")
        det = cls(size=state["size"], k=state["k"])
        det.input_shape = tuple(state["input_shape"])
        det.train_ = state["train"].numpy()
        det._index = NearestNeighbors(n_neighbors=det.k, algorithm="brute").fit(det.train_)
        det.threshold_ = state["threshold"]
        return det
