"""Feature-based baselines of the paper's Table 2 as detectors on pre-extracted features.

SPADE, Mahalanobis AD, PaDiM, PatchCore-25/-10/-1 and DifferNet. The backbone is not part of this
module: inputs are pooled vectors (N, D), e.g. ADBench's MVTec-AD ResNet-18 embeddings, or patch
maps (N, C, H, W) for PaDiM and PatchCore. Every detector has fit(X, X_val=None, y_val=None) and
decision_function(X) -> (N,) with higher = more anomalous; scores are never normalised over the
scored set, so a score does not depend on which other samples are scored with it.
"""
from __future__ import annotations

import copy
from functools import partial

import faiss
import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from torch import nn


def _fmt(trailing: tuple) -> str:
    return "(" + ", ".join(["N", *map(str, trailing)]) + ")"


def check_features(X, name: str, ndims: tuple[int, ...] = (2,)) -> np.ndarray:
    """X as a numeric array with ndim in `ndims`, non-empty and finite; else a one-line ValueError."""
    x = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X)
    wanted = " or ".join({2: "(N, D)", 3: "(N, R, D)", 4: "(N, C, H, W)"}[k] for k in ndims)
    if x.ndim not in ndims:
        raise ValueError(f"{name} has shape {x.shape}: expected {wanted}")
    if x.size == 0 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} has shape {x.shape} and dtype {x.dtype}: expected non-empty numeric {wanted}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(len(x), -1))).any(1).sum())
        raise ValueError(f"{name} of shape {x.shape} holds NaN or inf in {bad} sample(s): expected finite values")
    return x


class _FeatureDetector:
    """Input checks shared by all detectors: the trailing shape at scoring must equal the one at fit."""

    ndims: tuple[int, ...] = (2,)
    shape_: tuple | None = None

    @staticmethod
    def _canon(trailing: tuple) -> tuple:
        return trailing

    def _check(self, X, name: str, fit: bool = False, min_rows: int = 1) -> np.ndarray:
        if not fit and self.shape_ is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit() first")
        x = check_features(X, name, self.ndims)
        if fit:
            if len(x) < min_rows:
                raise ValueError(f"{name} has shape {x.shape}: expected at least {min_rows} training rows")
            self.shape_ = x.shape[1:]
        elif self._canon(x.shape[1:]) != self._canon(self.shape_):
            raise ValueError(f"{name} has shape {x.shape}: expected {_fmt(self.shape_)} as in fit")
        return x


class _MapDetector(_FeatureDetector):
    """Detectors on patch maps; pooled (N, D) input is one position, i.e. (N, D, 1, 1)."""

    ndims = (2, 4)

    @staticmethod
    def _canon(trailing: tuple) -> tuple:
        return (*trailing, 1, 1) if len(trailing) == 1 else trailing

    def _maps(self, X, name: str, fit: bool = False, min_rows: int = 1) -> np.ndarray:
        x = self._check(X, name, fit, min_rows)
        return x[:, :, None, None] if x.ndim == 2 else x


class MahalanobisAD(_FeatureDetector):
    """Rippel et al. (ICPR 2020): one Gaussian, Ledoit-Wolf covariance; score = Mahalanobis distance, not squared."""

    def __init__(self, seed: int = 0):
        self.seed = seed  # deterministic; kept so every baseline takes the same arguments

    def fit(self, X, X_val=None, y_val=None) -> "MahalanobisAD":
        x = self._check(X, "X", fit=True, min_rows=2).astype(np.float64)
        lw = LedoitWolf().fit(x)  # shrinkage keeps the covariance invertible when N is not >> D
        self.mean_, self.precision_ = lw.location_, lw.precision_
        return self

    def decision_function(self, X) -> np.ndarray:
        d = self._check(X, "X").astype(np.float64) - self.mean_
        return np.sqrt(np.einsum("ni,ij,nj->n", d, self.precision_, d).clip(min=0))


class SPADE(_FeatureDetector):
    """Cohen & Hoshen (2020), image level: mean Euclidean distance to the k nearest training vectors."""

    def __init__(self, k: int = 50, seed: int = 0):
        if k < 1:
            raise ValueError(f"k={k}: expected a positive integer")
        self.k, self.seed = k, seed

    def fit(self, X, X_val=None, y_val=None) -> "SPADE":
        x = np.ascontiguousarray(self._check(X, "X", fit=True), dtype=np.float32)
        self.k_ = min(self.k, len(x))  # small training sets: use all rows rather than fail
        self.index_ = faiss.IndexFlatL2(x.shape[1])
        self.index_.add(x)
        return self

    def decision_function(self, X) -> np.ndarray:
        x = np.ascontiguousarray(self._check(X, "X"), dtype=np.float32)
        d2, _ = self.index_.search(x, self.k_)  # faiss returns squared L2 distances
        return np.sqrt(np.maximum(d2, 0)).mean(1).astype(np.float64)


class PaDiM(_MapDetector):
    """Defard et al. (2021): a Gaussian per position on a random channel subset; score = max Mahalanobis distance.

    On pooled input (N, D) there is one position, so PaDiM is a single Gaussian: with
    n_features=D it coincides with Mahalanobis AD except for the covariance regulariser
    (eps * I here, Ledoit-Wolf shrinkage there).
    """

    def __init__(self, n_features: int | None = None, eps: float = 0.01, seed: int = 0, batch_size: int = 64):
        self.n_features, self.eps, self.seed, self.batch_size = n_features, eps, seed, batch_size

    def _positions(self, x: np.ndarray) -> np.ndarray:
        n, _, h, w = x.shape
        return x[:, self.channels_].reshape(n, len(self.channels_), h * w).transpose(2, 0, 1).astype(np.float64)

    def fit(self, X, X_val=None, y_val=None) -> "PaDiM":
        x = self._maps(X, "X", fit=True, min_rows=2)
        c = x.shape[1]
        d = self.n_features if self.n_features is not None else min(c, 100)  # PaDiM keeps 100 of 448 channels
        if not 1 <= d <= c:
            raise ValueError(f"n_features={d}: expected 1 <= n_features <= {c} channels of X {x.shape}")
        rng = np.random.default_rng(self.seed)
        self.channels_ = np.arange(c) if d == c else np.sort(rng.choice(c, d, replace=False))
        f = self._positions(x)  # (HW, N, d)
        self.mean_ = f.mean(1, keepdims=True)
        centred = f - self.mean_
        cov = centred.transpose(0, 2, 1) @ centred / (len(x) - 1) + self.eps * np.eye(d)
        self.precision_ = np.linalg.inv(cov)
        return self

    def decision_function(self, X) -> np.ndarray:
        x = self._maps(X, "X")
        out = []
        for i in range(0, len(x), self.batch_size):  # bounds memory at (HW, batch, d)
            c = self._positions(x[i:i + self.batch_size]) - self.mean_
            m2 = ((c @ self.precision_) * c).sum(-1)  # (HW, batch)
            out.append(np.sqrt(m2.clip(min=0)).max(0))
        return np.concatenate(out)


def coreset_size(fraction: float, n: int) -> int:
    """Number of memory-bank rows kept: max(1, round(fraction * n)) (Python's round: halves go to even)."""
    return max(1, int(round(fraction * n)))


def greedy_coreset(features, n_select: int, proj_dim: int = 128, seed: int = 0) -> np.ndarray:
    """Indices of a greedy k-center coreset (PatchCore Alg. 1) on a seeded Johnson-Lindenstrauss projection."""
    g = torch.Generator().manual_seed(seed)
    f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if not 1 <= n_select <= len(f):
        raise ValueError(f"n_select={n_select}: expected 1 <= n_select <= {len(f)} rows of features {tuple(f.shape)}")
    if f.shape[1] > proj_dim:  # a Gaussian map / sqrt(k) keeps distances within 1 +- eps, cutting the cost
        f = f @ (torch.randn(f.shape[1], proj_dim, generator=g) / proj_dim ** 0.5)
    f = f.contiguous()
    sq = (f * f).sum(1)
    d2, buf = torch.empty_like(sq), torch.empty_like(sq)

    def distances_to(i: int, out: torch.Tensor) -> torch.Tensor:
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one matrix-vector product per step, no (N, k) temporary
        # (the difference form allocated three: 871 s against 96 s for COIL-100's 84,672 patches at 25 %)
        torch.mv(f, f[i], out=out)
        return out.mul_(-2).add_(sq).add_(sq[i]).clamp_min_(0)

    chosen = torch.empty(n_select, dtype=torch.long)
    chosen[0] = torch.randint(len(f), (1,), generator=g)
    threads = torch.get_num_threads()
    # Thousands of small memory-bound steps: a second thread only adds barrier waits, which on a busy
    # machine made the loop 9x slower (40,964 patches: 264 s on 2 threads, 29 s on 1).
    torch.set_num_threads(1)
    try:
        min_d2 = distances_to(int(chosen[0]), d2)  # squared distance of every row to its nearest centre so far
        for j in range(1, n_select):
            chosen[j] = torch.argmax(min_d2)  # the row worst covered by the current centres
            torch.minimum(min_d2, distances_to(int(chosen[j]), buf), out=min_d2)
    finally:
        torch.set_num_threads(threads)
    return chosen.numpy()


class PatchCore(_MapDetector):
    """Roth et al. (2022): coreset memory bank of training patches; score = max over patches of the nearest distance.

    The paper's re-weighting of the image score (Eq. 7) is skipped, as in the authors' released
    code: the image score is the plain maximum of the patch scores.
    """

    def __init__(self, coreset: float = 0.10, proj_dim: int = 128, seed: int = 0):
        if not 0 < coreset <= 1:
            raise ValueError(f"coreset={coreset}: expected a fraction in (0, 1]")
        self.coreset, self.proj_dim, self.seed = coreset, proj_dim, seed

    @staticmethod
    def _patches(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1]), dtype=np.float32)

    def fit(self, X, X_val=None, y_val=None) -> "PatchCore":
        patches = self._patches(self._maps(X, "X", fit=True))
        keep = greedy_coreset(patches, coreset_size(self.coreset, len(patches)), self.proj_dim, self.seed)
        self.memory_ = patches[keep]  # full-dimensional patches; the projection only guides the selection
        self._bank = torch.from_numpy(self.memory_)
        self._bank_sq = (self._bank * self._bank).sum(1)
        return self

    def decision_function(self, X) -> np.ndarray:
        x = self._maps(X, "X")
        d2 = nearest_sq_distances(self._patches(x), self._bank, self._bank_sq)
        return np.sqrt(np.maximum(d2, 0)).reshape(len(x), -1).max(1).astype(np.float64)


def nearest_sq_distances(queries: np.ndarray, bank: torch.Tensor, bank_sq: torch.Tensor, block: int = 2048) -> np.ndarray:
    """Each query row's squared L2 distance to its nearest bank row, exactly: ||q||^2 - 2 q.b + ||b||^2 by one
    matmul per block of `block` queries. faiss's flat index computes the same, but took 20 ms against 3 ms here
    for one image's 196 patches against PatchCore-25's 10,241 (2 threads of this book's CPU, Table 5)."""
    q = torch.from_numpy(queries)
    out = torch.empty(len(q))
    with torch.inference_mode():
        for i in range(0, len(q), block):
            part = q[i:i + block]
            d = torch.addmm(bank_sq, part, bank.T, alpha=-2).add_((part * part).sum(1, keepdim=True))
            out[i:i + block] = d.min(1).values
    return out.numpy()


class DifferNet(_FeatureDetector):
    """Rudolph et al. (WACV 2021): a normalizing flow (FrEIA, GLOW couplings) on standardised pooled features.

    Score = 0.5 ||z||^2 - log|det J|, the negative log-likelihood up to a constant. With X_val and
    y_val, the state with the best validation AUROC (checked every `eval_every` epochs) is kept.
    """

    def __init__(self, n_blocks: int = 8, hidden: int = 512, clamp: float = 3.0, epochs: int = 64,
                 batch_size: int = 64, lr: float = 2e-4, weight_decay: float = 1e-5, eval_every: int = 4,
                 seed: int = 0):
        if epochs < 0 or eval_every < 1 or n_blocks < 1:
            raise ValueError(f"epochs={epochs}, eval_every={eval_every}, n_blocks={n_blocks}: expected >= 0, >= 1, >= 1")
        self.n_blocks, self.hidden, self.clamp, self.epochs = n_blocks, hidden, clamp, epochs
        self.batch_size, self.lr, self.weight_decay = batch_size, lr, weight_decay
        self.eval_every, self.seed = eval_every, seed
        self.history: list[dict] = []

    def _build(self, d: int) -> Ff.SequenceINN:
        def subnet(c_in: int, c_out: int) -> nn.Module:  # DifferNet's fully connected subnet
            net = nn.Sequential(nn.Linear(c_in, self.hidden), nn.ReLU(), nn.Linear(self.hidden, c_out))
            # Glow's zero init: each block starts as the identity. With default init the unclamped
            # shift t compounds over the blocks and ||z||^2 reaches 1e17 on ADBench features.
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            return net

        flow = Ff.SequenceINN(d)
        perm_seeds = np.random.default_rng(self.seed).integers(0, 2 ** 31, self.n_blocks)
        numpy_state = np.random.get_state()  # PermuteRandom reseeds numpy's global RNG: restore the caller's
        try:
            for s in perm_seeds:
                flow.append(Fm.GLOWCouplingBlock, subnet_constructor=subnet, clamp=self.clamp)
                flow.append(Fm.PermuteRandom, seed=int(s))
        finally:
            np.random.set_state(numpy_state)
        return flow

    def _nll(self, x: torch.Tensor) -> torch.Tensor:
        z, log_jac_det = self.flow_(x)
        return 0.5 * (z ** 2).sum(1) - log_jac_det

    def fit(self, X, X_val=None, y_val=None) -> "DifferNet":
        x = self._check(X, "X", fit=True).astype(np.float32)
        n, d = x.shape
        if d < 2:
            raise ValueError(f"X has shape {x.shape}: expected (N, D) with D >= 2 for coupling blocks")
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val: expected both or neither")
        if y_val is not None:
            y_val = np.asarray(y_val)
            xv = self._check(X_val, "X_val")
            if y_val.shape != (len(xv),) or len(np.unique(y_val)) != 2:
                raise ValueError(f"y_val has shape {y_val.shape}: expected ({len(xv)},) holding both labels 0 and 1")
        std = x.std(0)
        self.mean_, self.std_ = x.mean(0), np.where(std > 0, std, 1.0)  # constant dims keep their raw scale
        with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.flow_ = self._build(d)
        order = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.flow_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        xt = torch.from_numpy((x - self.mean_) / self.std_)
        self.history, best_auc, best_state, self.best_epoch_ = [], -np.inf, None, self.epochs
        for epoch in range(1, self.epochs + 1):
            self.flow_.train()
            total = 0.0
            for idx in torch.randperm(n, generator=order).split(self.batch_size):
                loss = self._nll(xt[idx]).mean() / d  # per dimension, as in DifferNet
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"DifferNet loss is {loss.item()} at epoch {epoch}: lower lr or clamp")
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            row = {"epoch": epoch, "loss": total / n, "val_auroc": None}
            if y_val is not None and (epoch % self.eval_every == 0 or epoch == self.epochs):
                row["val_auroc"] = float(roc_auc_score(y_val, self.decision_function(xv)))
                if row["val_auroc"] > best_auc:  # model selection on the validation split only
                    best_auc, self.best_epoch_ = row["val_auroc"], epoch
                    best_state = copy.deepcopy(self.flow_.state_dict())
            self.history.append(row)
        if best_state is not None:
            self.flow_.load_state_dict(best_state)
        self.flow_.eval()
        return self

    def decision_function(self, X) -> np.ndarray:
        x = (self._check(X, "X").astype(np.float32) - self.mean_) / self.std_
        self.flow_.eval()
        with torch.no_grad():
            return np.concatenate([self._nll(torch.from_numpy(b)).double().numpy()
                                   for b in np.array_split(x, max(1, len(x) // 1024))])


FEATURE_BASELINES = {
    "spade": SPADE,
    "mahalanobis": MahalanobisAD,
    "padim": PaDiM,
    "patchcore_25": partial(PatchCore, coreset=0.25),
    "patchcore_10": partial(PatchCore, coreset=0.10),
    "patchcore_1": partial(PatchCore, coreset=0.01),
    "differnet": DifferNet,
}
LABELS = {"spade": "SPADE", "mahalanobis": "Mah.AD", "padim": "PaDiM", "patchcore_25": "PatchCore-25",
          "patchcore_10": "PatchCore-10", "patchcore_1": "PatchCore-1", "differnet": "DifferNet"}


def _rotations(X, name: str) -> np.ndarray:
    return check_features(X, name, ndims=(3,))


def fit_rotations(det, X_train_rot, X_val=None, y_val=None):
    """Fit on every rotated copy: (N, R, D) -> (N*R, D) rows.

    X_val (N_val, R, D) is flattened the same way and each label repeated R times, so DifferNet's
    model selection sees a row-level validation AUROC, not the rotation-averaged image score.
    """
    x = _rotations(X_train_rot, "X_train_rot")
    if X_val is None:
        return det.fit(x.reshape(-1, x.shape[2]), None, y_val)
    xv = _rotations(X_val, "X_val")
    y = None if y_val is None else np.repeat(np.asarray(y_val), xv.shape[1])
    return det.fit(x.reshape(-1, x.shape[2]), xv.reshape(-1, xv.shape[2]), y)


def score_rotations(det, X_rot) -> np.ndarray:
    """Image score = mean over the R rotated copies of the row scores; X_rot has shape (N, R, D)."""
    x = _rotations(X_rot, "X_rot")
    return det.decision_function(x.reshape(-1, x.shape[2])).reshape(x.shape[:2]).mean(1)
