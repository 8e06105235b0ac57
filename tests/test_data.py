"""Data layer on the real shared data: the paper's split sizes, seeding, pre-processing, augmentation, data check."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from algan.data import (AUGMENTATIONS, DATASETS, GRAYSCALE, MVTEC_CATEGORIES, add_extra_channels, augment,
                        load_dataset, load_features, load_images)
from algan.data.check import check_root, format_report
from algan.data.transforms import rotate

SIZE = 32


def sizes(split):
    return int((split.y == 0).sum()), int((split.y == 1).sum())


def assert_disjoint(splits, n_total):
    lists = splits.file_lists()
    sets = {k: set(v) for k, v in lists.items()}
    assert all(len(sets[k]) == len(lists[k]) for k in lists)  # no duplicates within a split
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert sum(len(s) for s in sets.values()) == n_total


@pytest.fixture(scope="module")
def bottle(data_root):
    return load_dataset("mvtec", data_root, category="bottle", image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def mtd(data_root):
    return load_dataset("mtd", data_root, image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def coil(data_root):
    return load_dataset("coil100", data_root, image_size=SIZE, seed=0)


def test_dataset_names():
    assert DATASETS == ("mvtec", "mtd", "coil100", "folder")
    assert len(MVTEC_CATEGORIES) == 15 and set(MVTEC_CATEGORIES) <= set(AUGMENTATIONS)


def test_bottle_split(bottle):
    assert (bottle.name, bottle.category) == ("mvtec", "bottle")
    assert (len(bottle.train), len(bottle.val), len(bottle.test)) == (209, 41, 42)
    assert sizes(bottle.train) == (209, 0) and sizes(bottle.val) == (10, 31) and sizes(bottle.test) == (10, 32)
    assert bottle.train.x.shape == (209, 3, SIZE, SIZE) and bottle.train.x.dtype == torch.float32
    assert bottle.train.y.dtype == torch.int64
    assert -1.0 <= bottle.train.x.min() < -0.5 and 0.5 < bottle.train.x.max() <= 1.0
    assert bottle.extra_channels and bottle.channels == 3 and bottle.input_channels == 5
    assert all(p.startswith("mvtec/bottle/train/good/") for p in bottle.train.paths)
    assert set(bottle.val.paths + bottle.test.paths) == {
        f"mvtec/bottle/test/{p.parent.name}/{p.name}" for p in (bottle.root / "mvtec/bottle/test").glob("*/*.png")}
    assert_disjoint(bottle, 292)


def test_bottle_masks(bottle):
    for split in (bottle.train, bottle.val, bottle.test):
        assert split.masks.shape == (len(split), 1, SIZE, SIZE) and split.masks.dtype == torch.uint8
        assert set(split.masks.unique().tolist()) <= {0, 1}
        per_image = split.masks.flatten(1).sum(1)
        assert (per_image[split.y == 0] == 0).all()  # normal images get blank masks
    assert (bottle.val.masks.flatten(1).sum(1)[bottle.val.y == 1] > 0).all()  # every bottle defect is marked


def test_mtd_split(mtd):
    assert sizes(mtd.train) == (476, 0) and sizes(mtd.val) == (238, 196) and sizes(mtd.test) == (238, 196)
    assert mtd.train.x.shape == (476, 1, SIZE, SIZE)
    assert not mtd.extra_channels and mtd.input_channels == 1 and mtd.augmentations == ("hflip",)
    assert all("/MT_Free/" in p for p in mtd.train.paths)
    assert all(("/MT_Free/" in p) == (y == 0) for p, y in zip(mtd.val.paths, mtd.val.y.tolist()))
    assert mtd.val.masks.shape == (434, 1, SIZE, SIZE)
    assert_disjoint(mtd, 1344)


def test_coil_split(coil):
    assert sizes(coil.train) == (432, 0) and sizes(coil.val) == (144, 3240) and sizes(coil.test) == (144, 3240)
    assert coil.train.x.shape == (432, 3, SIZE, SIZE) and coil.train.masks is None
    normal = coil.describe()["normal_objects"]
    assert len(normal) == 10 and len(set(normal)) == 10
    for split in (coil.train, coil.val, coil.test):
        objs = [int(p.split("/")[-1][3:].split("__")[0]) for p in split.paths]
        assert [int(o in normal) for o in objs] == (1 - split.y).tolist()
    assert_disjoint(coil, 7200)


def test_seeds(data_root, coil, mtd):
    again = load_dataset("coil100", data_root, image_size=SIZE, seed=0)
    other = load_dataset("coil100", data_root, image_size=SIZE, seed=1)
    assert again.file_lists() == coil.file_lists() and again.split_hash() == coil.split_hash()
    assert torch.equal(again.val.x, coil.val.x)
    assert other.split_hash() != coil.split_hash()
    assert other.describe()["normal_objects"] != coil.describe()["normal_objects"]
    mtd1 = load_dataset("mtd", data_root, image_size=SIZE, seed=1)
    assert mtd1.file_lists()["train"] != mtd.file_lists()["train"] and sizes(mtd1.train) == (476, 0)
    assert len(coil.split_hash()) == 16 and int(coil.split_hash(), 16) >= 0
    described = coil.describe()
    assert described["seed"] == 0 and described["image_size"] == SIZE
    assert described["sizes"]["val"] == {"total": 3384, "normal": 144, "anomalous": 3240}
    json.dumps(described)  # JSON-ready for the run record


def test_decode_values_match_pil(data_root, bottle):
    """[-1, 1] scaling of the PIL bilinear resize: 0 -> -1, 255 -> 1."""
    path = data_root / bottle.val.paths[0]
    ref = np.asarray(Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = torch.from_numpy(ref).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(bottle.val.x[0], expected, atol=1e-6)
    assert torch.allclose(load_images([path], SIZE, grayscale=False)[0], expected, atol=1e-6)
    gray = load_images([path], SIZE, grayscale=True)
    assert gray.shape == (1, 1, SIZE, SIZE)


def test_extra_channels_known_values(bottle):
    x = torch.tensor([0.2, -0.5, 0.8]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = add_extra_channels(x)
    assert out.shape == (1, 5, 2, 2)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.2, -0.5, 0.8, 0.8, 0.5 / 3]))
    real = bottle.prepare(bottle.val.x[:4])
    assert real.shape == (4, 5, SIZE, SIZE)
    assert torch.equal(real[:, 3], bottle.val.x[:4].amax(1)) and torch.allclose(real[:, 4], bottle.val.x[:4].mean(1))


def _flip_variants(x):
    return {"id": x, "h": x.flip(-1), "v": x.flip(-2), "hv": x.flip(-1).flip(-2)}


def _which(out, x):
    """Per sample: which flip variant of x it equals, or None."""
    variants = _flip_variants(x)
    return [next((k for k, v in variants.items() if torch.equal(out[i], v[i])), None) for i in range(len(x))]


@pytest.mark.parametrize("category, allowed", [
    ("toothbrush", {"id", "h"}), ("transistor", {"id", "h"}), ("zipper", {"id", "h"}), ("wood", {"id", "h"}),
    ("mtd", {"id", "h"}), ("coil100", {"id", "h"}), ("carpet", {"id", "h", "v", "hv"}),
    ("grid", {"id", "h", "v", "hv"}), ("cable", {"id"}), ("capsule", {"id"}), ("pill", {"id"}),
])
def test_flip_augmentations_per_category(category, allowed):
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    out = augment(x, AUGMENTATIONS[category], torch.Generator().manual_seed(0))
    seen = set(_which(out, x))
    assert seen == allowed  # with 64 samples every allowed variant shows up, nothing else does


@pytest.mark.parametrize("category", ["bottle", "hazelnut", "metal_nut", "screw"])
def test_rotation_categories(category):
    assert "rotate" in AUGMENTATIONS[category]
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = augment(x, AUGMENTATIONS[category], torch.Generator().manual_seed(0))
    assert _which(out, x).count(None) >= 14  # rotated by a random angle: no longer a flip of the input
    assert out.shape == x.shape and out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


def test_rotate_geometry():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.allclose(rotate(x, torch.tensor([90.0])), torch.rot90(x, 1, (-2, -1)), atol=1e-4)
    assert torch.allclose(rotate(x, torch.tensor([0.0])), x, atol=1e-5)
    ones = rotate(torch.ones(1, 1, 8, 8), torch.tensor([45.0]))[0, 0]
    assert ones[0, 0].item() == pytest.approx(-1.0) and ones[4, 4].item() == pytest.approx(1.0)


def test_augment_deterministic_by_generator(bottle):
    x = bottle.train.x[:8]
    a = bottle.augment(x, torch.Generator().manual_seed(3))
    b = bottle.augment(x, torch.Generator().manual_seed(3))
    c = bottle.augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bottle.augmentations == ("hflip", "vflip", "rotate") and "toothbrush" in GRAYSCALE


def test_features_split(data_root):
    path = data_root / "adbench/mvtec_resnet18/bottle.npz"
    feats = load_features(path, seed=0)
    assert (feats.name, feats.category) == ("features", "bottle")
    assert [(int((s.y == 0).sum()), int((s.y == 1).sum())) for s in (feats.train, feats.val, feats.test)] == [
        (137, 0), (45, 31), (47, 32)]
    rows = feats.file_lists()
    assert sorted(rows["train"] + rows["val"] + rows["test"]) == list(range(292))
    with np.load(path) as z:
        assert np.array_equal(feats.val.x, z["X"][feats.val.rows].astype(np.float32))
        assert np.array_equal(feats.val.y, z["y"][feats.val.rows])
    assert feats.train.x.dtype == np.float32 and feats.train.y.dtype == np.int64 and feats.train.x.shape[1] == 512
    assert load_features(path, seed=0).split_hash() == feats.split_hash() != load_features(path, seed=1).split_hash()
    assert feats.describe()["sizes"]["test"]["total"] == 79


def test_check_passes_on_shared_data(data_root):
    df, ok = check_root(data_root)
    assert ok, format_report(df)
    assert set(df["dataset"]) == {"mvtec/bottle", "mtd", "coil-100", "adbench/mvtec_resnet18"}
    found = df.set_index(["dataset", "check"])["found"]
    assert found[("mvtec/bottle", "train/good")] == 209 and found[("mtd", "MT_Free")] == 952
    assert found[("coil-100", "images")] == 7200 and found[("adbench/mvtec_resnet18", "pill rows")] == 434
    assert "0 problems" in format_report(df)
