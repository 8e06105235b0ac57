"""Feature baselines (SPADE, Mah.AD, PaDiM, PatchCore, DifferNet): separation, exact formulas, coreset, bad input."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from algan.data import load_features
from algan.models.feature_baselines import (
    FEATURE_BASELINES, LABELS, DifferNet, MahalanobisAD, PaDiM, PatchCore, SPADE, coreset_size, fit_rotations,
    greedy_coreset, nearest_sq_distances, score_rotations,
)

FAST = {"differnet": dict(hidden=64, epochs=10, n_blocks=4)}  # keeps the flow at a fraction of a second


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (conftest)


def make(name, seed=0, **kw):
    return FEATURE_BASELINES[name](seed=seed, **{**FAST.get(name, {}), **kw})


def pooled(seed=0, d=16):
    """Normals N(0, I); anomalies shifted by +4 in 3 of the d dimensions."""
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((200, d)).astype(np.float32)
    test = rng.standard_normal((70, d)).astype(np.float32)
    y = np.r_[np.zeros(50), np.ones(20)].astype(int)
    test[50:, :3] += 4
    return train, test, y


def maps(seed=0):
    """Patch maps (N, 8, 4, 4) of noise; anomalous maps have one patch shifted by +4 in every channel."""
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((80, 8, 4, 4)).astype(np.float32)
    test = rng.standard_normal((40, 8, 4, 4)).astype(np.float32)
    y = np.r_[np.zeros(30), np.ones(10)].astype(int)
    test[30:, :, 1, 2] += 4
    return train, test, y


@pytest.fixture(scope="module")
def bottle(data_root):
    return load_features(data_root / "adbench" / "mvtec_resnet18" / "bottle.npz", seed=0)


def test_registry_and_labels():
    assert set(LABELS) == set(FEATURE_BASELINES)
    assert LABELS["mahalanobis"] == "Mah.AD" and LABELS["patchcore_1"] == "PatchCore-1"
    assert make("patchcore_25").coreset == 0.25 and make("patchcore_25", coreset=0.5).coreset == 0.5


@pytest.mark.parametrize("name", list(FEATURE_BASELINES))
def test_separates_shifted_vectors(name):
    train, test, y = pooled()
    assert roc_auc_score(y, make(name).fit(train).decision_function(test)) > 0.95


@pytest.mark.parametrize("name", ["padim", "patchcore_25", "patchcore_10"])
def test_finds_the_anomalous_patch(name):
    train, test, y = maps()
    assert roc_auc_score(y, make(name).fit(train).decision_function(test)) > 0.95


@pytest.mark.parametrize("name", list(FEATURE_BASELINES))
def test_real_features_bottle(name, bottle):
    det = make(name, **({"epochs": 8} if name == "differnet" else {})).fit(bottle.train.x)
    auc = roc_auc_score(bottle.test.y, det.decision_function(bottle.test.x))
    print(f"{name}: bottle test AUROC {auc:.4f}")
    assert auc > (0.7 if name == "differnet" else 0.8)


def numpy_ledoit_wolf(x):
    """Ledoit & Wolf (2004): (1 - s) S + s mu I with S the biased covariance and s = min(b2, d2) / d2."""
    n, p = x.shape
    xc = x - x.mean(0)
    S = xc.T @ xc / n
    mu = np.trace(S) / p
    d2 = ((S - mu * np.eye(p)) ** 2).sum() / p
    b2 = sum(((np.outer(r, r) - S) ** 2).sum() for r in xc) / n ** 2 / p
    s = min(b2, d2) / d2
    return (1 - s) * S + s * mu * np.eye(p)


def test_mahalanobis_matches_numpy():
    rng = np.random.default_rng(3)
    train, test = rng.standard_normal((30, 5)) @ rng.standard_normal((5, 5)), rng.standard_normal((7, 5))
    inv = np.linalg.inv(numpy_ledoit_wolf(train))
    expected = [np.sqrt((t - train.mean(0)) @ inv @ (t - train.mean(0))) for t in test]
    np.testing.assert_allclose(MahalanobisAD().fit(train).decision_function(test), expected, rtol=1e-6)


def test_padim_matches_numpy():
    rng = np.random.default_rng(4)
    train, test = rng.standard_normal((20, 3, 2, 3)), rng.standard_normal((4, 3, 2, 3))
    expected = np.zeros(len(test))
    for i, j in np.ndindex(2, 3):
        f = train[:, :, i, j]
        inv = np.linalg.inv(np.cov(f, rowvar=False) + 0.01 * np.eye(3))
        d = test[:, :, i, j] - f.mean(0)
        expected = np.maximum(expected, np.sqrt(np.einsum("ni,ij,nj->n", d, inv, d)))
    np.testing.assert_allclose(PaDiM().fit(train).decision_function(test), expected, rtol=1e-6)


def test_padim_on_pooled_is_one_gaussian_and_subsets_channels():
    train, test, _ = pooled(d=6)
    inv = np.linalg.inv(np.cov(train.astype(np.float64), rowvar=False) + 0.01 * np.eye(6))
    d = test - train.astype(np.float64).mean(0)
    np.testing.assert_allclose(PaDiM().fit(train).decision_function(test),
                               np.sqrt(np.einsum("ni,ij,nj->n", d, inv, d)), rtol=1e-6)
    wide = np.random.default_rng(0).standard_normal((150, 120))
    det = PaDiM(seed=1).fit(wide)
    assert len(det.channels_) == 100 and len(set(det.channels_)) == 100  # PaDiM's default: 100 random channels
    np.testing.assert_array_equal(det.channels_, PaDiM(seed=1).fit(wide).channels_)
    assert not np.array_equal(det.channels_, PaDiM(seed=2).fit(wide).channels_)


def test_spade_matches_brute_force_and_clips_k():
    train, test, _ = pooled()
    dist = np.sqrt(((test[:, None].astype(np.float64) - train[None]) ** 2).sum(-1))
    np.testing.assert_allclose(SPADE(k=5).fit(train).decision_function(test), np.sort(dist, 1)[:, :5].mean(1),
                               rtol=1e-4)
    np.testing.assert_allclose(SPADE(k=50).fit(train[:10]).decision_function(test), dist[:, :10].mean(1), rtol=1e-4)


@pytest.mark.parametrize("fraction, expected", [(0.25, (160, 49)), (0.10, (64, 20)), (0.01, (6, 2))])
def test_coreset_size_is_the_fraction(fraction, expected):
    rng = np.random.default_rng(0)
    train = rng.standard_normal((40, 8, 4, 4)).astype(np.float32)  # 640 patches
    for x, n, size in [(train, 640, expected[0]), (rng.standard_normal((196, 8)), 196, expected[1])]:
        assert coreset_size(fraction, n) == size  # 196 rows: 19.6 -> 20 and 1.96 -> 2, rounded, not truncated
        det = PatchCore(coreset=fraction).fit(x)
        assert det.memory_.shape == (size, 8)
        assert len(np.unique(det.memory_, axis=0)) == size  # distinct patches, none picked twice
    assert PatchCore(coreset=0.01).fit(train[:3, :, 0, 0]).memory_.shape == (1, 8)  # never empty


def test_greedy_coreset_spreads_out():
    rng = np.random.default_rng(0)
    far = np.r_[rng.standard_normal((50, 200)), rng.standard_normal((50, 200)) + 100]  # 200-d: projected to 128
    for seed in range(5):
        assert sorted(greedy_coreset(far, 2, seed=seed) // 50) == [0, 1]
    # Without projection every pick is the row farthest from the centres chosen before it.
    x = rng.standard_normal((60, 4))
    picks = greedy_coreset(x, 10, proj_dim=4)
    for j in range(1, 10):
        nearest = np.sqrt(((x[:, None] - x[picks[:j]][None]) ** 2).sum(-1)).min(1)
        assert nearest[picks[j]] == pytest.approx(nearest.max(), rel=1e-5)


def test_patchcore_scores_are_max_patch_distance():
    train, test, _ = maps()
    det = PatchCore(coreset=0.25).fit(train)
    patches = test.transpose(0, 2, 3, 1).reshape(len(test), -1, 8).astype(np.float64)
    dist = np.sqrt(((patches[:, :, None] - det.memory_[None, None]) ** 2).sum(-1)).min(2).max(1)
    np.testing.assert_allclose(det.decision_function(test), dist, rtol=1e-4)


def test_same_seed_same_scores():
    rng = np.random.default_rng(0)
    wide, test = rng.standard_normal((300, 200)), rng.standard_normal((10, 200))  # > 128 dims: projection used
    a, b = (PatchCore(coreset=0.1, seed=7).fit(wide) for _ in range(2))
    np.testing.assert_array_equal(a.memory_, b.memory_)
    np.testing.assert_array_equal(a.decision_function(test), b.decision_function(test))
    assert not np.array_equal(a.memory_, PatchCore(coreset=0.1, seed=8).fit(wide).memory_)
    train, test, _ = pooled()
    np.random.seed(123)
    before = np.random.rand()
    s1 = make("differnet", seed=3).fit(train).decision_function(test)
    np.random.seed(123)
    s2 = make("differnet", seed=3).fit(train).decision_function(test)
    assert np.random.rand() == before  # FrEIA's PermuteRandom reseeds numpy: the caller's stream is restored
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, make("differnet", seed=4).fit(train).decision_function(test))


def test_differnet_keeps_best_validation_state():
    train, test, y = pooled()
    shuffled = np.random.default_rng(0).permutation(y)  # noise labels: with this seed the best epoch is an early one
    kw = dict(hidden=32, n_blocks=2, eval_every=2, lr=1e-3)
    det = DifferNet(epochs=6, **kw).fit(train, test, shuffled)
    assert [h["epoch"] for h in det.history] == [1, 2, 3, 4, 5, 6]
    aucs = {h["epoch"]: h["val_auroc"] for h in det.history if h["val_auroc"] is not None}
    assert sorted(aucs) == [2, 4, 6] and all(np.isfinite(h["loss"]) for h in det.history)
    assert det.best_epoch_ == max(aucs, key=aucs.get) == 2
    assert roc_auc_score(shuffled, det.decision_function(test)) == pytest.approx(aucs[2])
    # The kept state is the one a plain 2-epoch run reaches (validation consumes no randomness).
    plain = DifferNet(epochs=2, **kw).fit(train)
    np.testing.assert_array_equal(det.decision_function(test), plain.decision_function(test))
    with pytest.raises(ValueError, match="y_val"):
        DifferNet(epochs=1).fit(train, test, np.zeros(len(test)))


def test_differnet_score_is_a_normalised_nll():
    """exp(-score) integrates to (2 pi)^(D/2) * prod(std): the log-determinant is in the score."""
    rng = np.random.default_rng(0)
    train = rng.standard_normal((400, 2)) @ np.array([[1.0, 0.0], [1.8, 0.4]]) * [2.0, 0.5]  # correlated
    det = DifferNet(hidden=32, n_blocks=2, epochs=30, lr=1e-3).fit(train)
    axes = [np.linspace(-10, 10, 401) * s + m for s, m in zip(det.std_, det.mean_)]
    grid = np.stack(np.meshgrid(*axes), -1).reshape(-1, 2)
    cell = np.prod([a[1] - a[0] for a in axes])
    mass = np.exp(-det.decision_function(grid)).sum() * cell
    assert mass == pytest.approx(2 * np.pi * np.prod(det.std_), rel=0.02)


def test_rotations_average_over_copies():
    rng = np.random.default_rng(0)
    train, test = rng.standard_normal((40, 4, 6)), rng.standard_normal((5, 4, 6))
    det = fit_rotations(MahalanobisAD(), train)
    ref = MahalanobisAD().fit(train.reshape(160, 6))
    expected = ref.decision_function(test.reshape(20, 6)).reshape(5, 4).mean(1)
    np.testing.assert_allclose(score_rotations(det, test), expected)
    with pytest.raises(ValueError, match=r"X_rot has shape \(5, 6\)"):
        score_rotations(det, test[:, 0])
    y = np.r_[0, 0, 1, 0, 1]
    flow = fit_rotations(DifferNet(hidden=8, n_blocks=1, epochs=1), train, X_val=test, y_val=y)
    assert flow.history[0]["val_auroc"] == pytest.approx(
        roc_auc_score(np.repeat(y, 4), flow.decision_function(test.reshape(20, 6))))


@pytest.mark.parametrize("name", list(FEATURE_BASELINES))
def test_bad_input(name):
    train, test, _ = pooled()
    with pytest.raises(ValueError, match="not fitted"):
        make(name).decision_function(test)
    det = make(name, **({"epochs": 1} if name == "differnet" else {})).fit(train)
    with pytest.raises(ValueError, match=r"X has shape \(70, 15\): expected \(N, 16\)"):
        det.decision_function(test[:, :15])
    bad = test.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X of shape \(70, 16\) holds NaN or inf in 1 sample"):
        det.decision_function(bad)
    with pytest.raises(ValueError, match=r"X has shape \(16,\)"):
        det.decision_function(test[0])
    with pytest.raises(ValueError, match=r"X has shape \(200, 16, 1\)"):
        make(name).fit(train[:, :, None])


def test_patchcore_nearest_distances_equal_faiss():
    import faiss

    rng = np.random.default_rng(0)
    bank, queries = (rng.standard_normal(s).astype(np.float32) for s in ((3000, 152), (5000, 152)))
    index = faiss.IndexFlatL2(152)
    index.add(bank)
    want = index.search(queries, 1)[0][:, 0]
    b = torch.from_numpy(bank)
    got = nearest_sq_distances(queries, b, (b * b).sum(1), block=1024)  # several blocks
    assert np.allclose(got, want, rtol=1e-5, atol=1e-3)
