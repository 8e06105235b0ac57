"""Data layer on tiny fixtures made here: bad roots, corrupt and unpaired files, big images, feature files,
`data check` on a user's category folder, and the progress bars of `data check` and `score` on large folders."""
import numpy as np
import pytest
import torch
from PIL import Image

from algan.cli import main
from algan.config import profile
from algan.data import DataError, load_dataset, load_features, load_images, resolve_root
from algan.data.check import check_root, format_report
from algan.data.decode import PROGRESS_MIN, cache_size
from algan.detector import ALGAN

SIZE = 16


def write_image(path, size=24, value=128, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(path.name.encode()))
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    arr = np.clip(rng.integers(-40, 40, shape) + value, 0, 255).astype(np.uint8)
    Image.fromarray(arr, mode).save(path)


def make_category(folder, size=24, n_train=6, n_good=4, defects=("crack",), n_defect=4, masks=True, mode="RGB"):
    """A tiny category in MVTec layout."""
    for i in range(n_train):
        write_image(folder / "train/good" / f"{i:03d}.png", size, mode=mode)
    for i in range(n_good):
        write_image(folder / "test/good" / f"{i:03d}.png", size, mode=mode)
    for d in defects:
        for i in range(n_defect):
            write_image(folder / "test" / d / f"{i:03d}.png", size, value=200, mode=mode)
            if masks:
                mask = np.zeros((size, size), np.uint8)
                mask[: size // 2, : size // 2] = 255
                (folder / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(folder / "ground_truth" / d / f"{i:03d}_mask.png")
    return folder


@pytest.fixture
def tiny_root(tmp_path):
    """tmp/data/mvtec/bottle (tiny), so roots one level off can be tried."""
    make_category(tmp_path / "data/mvtec/bottle")
    return tmp_path / "data"


def message(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and isinstance(excinfo.value, ValueError)
    return text


def test_tiny_mvtec_loads(tiny_root):
    s = load_dataset("mvtec", tiny_root, category="bottle", image_size=SIZE, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (6, 4, 4)
    assert [int(s.val.y.sum()), int(s.test.y.sum())] == [2, 2]
    assert s.val.paths[0].startswith("mvtec/bottle/test/")
    assert s.val.masks[s.val.y == 1].flatten(1).sum(1).tolist() == [64, 64]  # an 8x8 quarter of 16x16


def test_missing_root(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        resolve_root(tmp_path / "nope")
    assert str(tmp_path / "nope") in message(e) and "does not exist" in message(e)
    monkeypatch.delenv("ALGAN_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("mtd")
    assert "ALGAN_DATA" in message(e)
    monkeypatch.setenv("ALGAN_DATA", str(tmp_path))
    assert resolve_root(None) == tmp_path


@pytest.mark.parametrize("sub", ["mvtec", "mvtec/bottle", "mvtec/bottle/train"])
def test_root_too_low(tiny_root, sub):
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", tiny_root / sub, category="bottle", image_size=SIZE)
    assert "too low" in message(e) and f"use {tiny_root} as the root" in message(e)


def test_root_too_high(tiny_root):
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", tiny_root.parent, category="bottle", image_size=SIZE)
    assert "too high" in message(e) and f"use {tiny_root} as the root" in message(e)


def test_folder_root_too_high_on_real_data(data_root):
    with pytest.raises(DataError) as e:
        load_dataset("folder", data_root, image_size=SIZE)
    assert "two levels too high" in message(e) and str(data_root / "mvtec" / "bottle") in message(e)
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", data_root / "mvtec", category="bottle", image_size=SIZE)
    assert "too low" in message(e) and f"use {data_root} as the root" in message(e)


def test_unknown_category_and_dataset(tiny_root):
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", tiny_root, category="bottles", image_size=SIZE)
    assert "'folder'" in message(e) and "bottle, cable" in message(e)
    with pytest.raises(DataError):
        load_dataset("mvtec", tiny_root, image_size=SIZE)
    with pytest.raises(DataError):
        load_dataset("imagenet", tiny_root)


def test_corrupt_file_caches_nothing(tiny_root):
    bad = tiny_root / "mvtec/bottle/test/crack/002.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated PNG
    before = cache_size()
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", tiny_root, category="bottle", image_size=SIZE)
    assert str(bad) in message(e) and "cannot decode" in message(e)
    assert cache_size() == before  # the good files decoded before the failure are not kept either
    with pytest.raises(DataError):
        load_images([bad], SIZE, grayscale=False)
    bad.write_bytes(data)
    s = load_dataset("mvtec", tiny_root, category="bottle", image_size=SIZE)
    assert len(s.val) + len(s.test) == 8 and cache_size() == before + 14 + 4  # images + defect masks


def test_corrupt_mask_caches_no_images(tiny_root):
    """Images decode fine, then a mask fails: the images decoded by this load must not stay cached."""
    mask = tiny_root / "mvtec/bottle/ground_truth/crack/001_mask.png"
    mask.write_bytes(mask.read_bytes()[:40])
    before = cache_size()
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", tiny_root, category="bottle", image_size=SIZE)
    assert str(mask) in message(e)
    assert cache_size() == before


def test_big_category_is_resized(tmp_path):
    """A user's full-size 900x900 copy: left half white, right half black, mask in the top-left quarter."""
    folder = make_category(tmp_path / "bottle", size=900, n_train=2, n_good=2, n_defect=2)
    arr = np.zeros((900, 900, 3), np.uint8)
    arr[:, :450] = 255
    Image.fromarray(arr).save(folder / "train/good/000.png")
    s = load_dataset("folder", folder, image_size=SIZE, seed=0, augment="mvtec:bottle")
    assert s.category == "bottle" and s.augmentations == ("hflip", "vflip", "rotate")
    assert s.train.paths[0] == "train/good/000.png"
    x = s.train.x[0]
    assert x.shape == (3, SIZE, SIZE)
    assert torch.allclose(x[:, :, :7], torch.ones(3, SIZE, 7)) and torch.allclose(x[:, :, 9:], -torch.ones(3, SIZE, 7))
    masks = torch.cat([s.val.masks, s.test.masks])[torch.cat([s.val.y, s.test.y]) == 1]
    assert masks.shape == (2, 1, SIZE, SIZE) and masks[:, 0, :8, :8].all() and masks.sum() == 2 * 64


def test_folder_defaults(tmp_path):
    own = make_category(tmp_path / "my_parts", masks=False, mode="L")
    s = load_dataset("folder", own, image_size=SIZE)
    assert s.category == "my_parts" and s.augmentations == ("hflip",) and s.val.masks is None
    assert s.channels == 1 and s.input_channels == 3 and s.extra_channels
    assert load_dataset("folder", own, augment="mvtec:screw", image_size=SIZE).augmentations == ("rotate",)
    assert load_dataset("folder", own, augment="none", image_size=SIZE).augmentations == ()


def test_folder_name_decides_nothing(tmp_path):
    """A folder (or --category) named like an MVTec-AD category inherits neither its augmentation nor its
    grayscale conversion: the augmentation is chosen by `augment` only (default: flip)."""
    screw = load_dataset("folder", make_category(tmp_path / "screw"), image_size=SIZE)
    assert screw.category == "screw" and screw.augmentations == ("hflip",)
    named = load_dataset("folder", screw.root, category="bottle", image_size=SIZE)
    assert named.category == "bottle" and named.augmentations == ("hflip",)
    brush = load_dataset("folder", make_category(tmp_path / "toothbrush"), image_size=SIZE)
    assert brush.channels == 3 and brush.augmentations == ("hflip",)  # RGB stays RGB


@pytest.mark.parametrize("spec,names", [("rotate", "unknown augmentation"), ("mvtec:scerw", "'scerw'"),
                                        ("mvtec:", "category ''"), ("Flip", "unknown augmentation")])
def test_folder_augment_errors(tmp_path, spec, names):
    with pytest.raises(DataError) as e:
        load_dataset("folder", tmp_path / "not_read", augment=spec, image_size=SIZE)  # checked before any file
    assert names in message(e) and "flip, none or mvtec:<category>" in message(e) and "screw" in message(e)
    with pytest.raises(DataError, match="only a 'folder' data set"):
        load_dataset("mtd", tmp_path, augment="flip", image_size=SIZE)


def test_empty_class_folder(tiny_root):
    empty = tiny_root / "mvtec/bottle/test/scratch"
    empty.mkdir()
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", tiny_root, category="bottle", image_size=SIZE)
    assert str(empty) in message(e) and "empty class folder" in message(e)


def test_mask_without_image(tiny_root):
    (tiny_root / "mvtec/bottle/test/crack/003.png").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mvtec", tiny_root, category="bottle", image_size=SIZE)
    assert "003_mask.png" in message(e) and "mask without its image" in message(e)


def test_mtd_and_coil_layout_errors(tmp_path):
    write_image(tmp_path / "mtd/MT_Free/Imgs/a.jpg", mode="L")
    write_image(tmp_path / "mtd/MT_Free/Imgs/a.png", mode="L")
    write_image(tmp_path / "mtd/MT_Crack/Imgs/b.png", mode="L")  # mask, no image
    write_image(tmp_path / "mtd/MT_Crack/Imgs/c.jpg", mode="L")
    write_image(tmp_path / "mtd/MT_Crack/Imgs/c.png", mode="L")
    with pytest.raises(DataError) as e:
        load_dataset("mtd", tmp_path, image_size=SIZE)
    assert "b.png" in message(e) and "mask without its image" in message(e)
    (tmp_path / "coil-100").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset("coil100", tmp_path, image_size=SIZE)
    assert "coil-100" in message(e)


def test_feature_file_errors(tmp_path):
    np.savez(tmp_path / "noy.npz", X=np.zeros((10, 4), np.float32))
    with pytest.raises(DataError) as e:
        load_features(tmp_path / "noy.npz")
    assert "noy.npz" in message(e) and "['y'] missing" in message(e)
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    X[7, 2] = np.nan
    y = np.array([0] * 15 + [1] * 5)
    np.savez(tmp_path / "nan.npz", X=X, y=y)
    with pytest.raises(DataError) as e:
        load_features(tmp_path / "nan.npz")
    assert "1 rows of X hold NaN or inf (first row 7)" in message(e)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError) as e:
        load_features(tmp_path / "junk.npz")
    assert "cannot read" in message(e)
    X[7, 2] = 0.0
    np.savez(tmp_path / "good.npz", X=X, y=y)
    f = load_features(tmp_path / "good.npz", seed=0)
    assert [len(f.train), len(f.val), len(f.test)] == [9, 5, 6]  # normals 9/3/3, anomalies 2/3


def test_check_finds_problems(tiny_root):
    bad = tiny_root / "mvtec/bottle/train/good/001.png"
    bad.write_bytes(bad.read_bytes()[:60])
    (tiny_root / "mvtec/bottle/test/crack/000.png").unlink()
    (tiny_root / "mvtec/bottle/train/good/notes.txt").write_text("x")
    df, ok = check_root(tiny_root)
    assert not ok
    problems = df[~df["ok"]]
    kinds = set(zip(problems["check"], problems["detail"].str.split(":").str[0]))
    assert ("corrupt", "mvtec/bottle/train/good/001.png") in kinds
    assert ("orphan mask", "mvtec/bottle/ground_truth/crack/000_mask.png") in kinds
    assert ("unexpected", "mvtec/bottle/train/good/notes.txt") in kinds
    counts = df.set_index("check")["found"]
    assert counts["train/good"] == 6 and counts["test/<defect> total"] == 3  # txt not counted
    assert "problems" in format_report(df) and "001.png" in format_report(df)


def test_check_reports_symlink_loops_and_dangling_links(tiny_root):
    (tiny_root / "mvtec/bottle/train/good/loop").symlink_to(tiny_root / "mvtec/bottle")
    (tiny_root / "mvtec/bottle/test/good/gone.png").symlink_to(tiny_root / "nowhere.png")
    df, ok = check_root(tiny_root)
    links = df.loc[df["check"] == "symlink", "detail"].tolist()
    assert not ok and len(links) == 2
    assert any(d.startswith("mvtec/bottle/train/good/loop:") and "a loop" in d for d in links)
    assert any(d.startswith("mvtec/bottle/test/good/gone.png:") and "does not exist" in d for d in links)


def test_check_bad_roots(tiny_root, tmp_path):
    with pytest.raises(DataError):
        check_root(tmp_path / "missing")
    df, ok = check_root(tiny_root / "mvtec/bottle")
    assert not ok and len(df) == 1 and f"use {tiny_root} as the root" in df["detail"].iloc[0]


def test_check_a_users_category_folder(tmp_path, capsys):
    own = make_category(tmp_path / "my_parts")
    (own / "ground_truth/crack/003_mask.png").unlink()  # masks are optional in a user's folder
    df, ok = check_root(own)
    assert ok and set(df["dataset"]) == {"my_parts"}, format_report(df)
    assert dict(zip(df["check"], df["found"]))["test/<defect> total"] == 4
    (own / "test/crack/001.png").write_bytes(b"not a png")
    for i in (2, 3):
        (own / f"test/good/{i:03d}.png").unlink()
    df, ok = check_root(own)
    kinds = set(zip(df.loc[~df["ok"], "check"], df.loc[~df["ok"], "detail"].str.split(":").str[0]))
    assert not ok and kinds == {("corrupt", "test/crack/001.png"), ("too few", "test/")}
    assert main(["data", "check", str(own)]) == 1
    assert "[my_parts] too few" in capsys.readouterr().out


def test_progress_bars_on_large_folders(tmp_path, capsys):
    big = make_category(tmp_path / "big", size=8, n_train=PROGRESS_MIN, masks=False)
    assert check_root(big)[1] and "checking" not in capsys.readouterr().err
    assert main(["data", "check", str(big)]) == 0
    assert "checking: 100%" in capsys.readouterr().err
    det = ALGAN.initialised(profile("smoke"), device="cpu")
    det.threshold_ = 0.0
    det.save(tmp_path / "model.pt")
    small = ["score", str(tmp_path / "model.pt"), str(big / "test"), "--out", str(tmp_path / "s.csv"), "--device", "cpu"]
    assert main(small) == 0 and "decoding" not in capsys.readouterr().err
    assert main(small[:2] + [str(big / "train")] + small[3:]) == 0
    assert "decoding: 100%" in capsys.readouterr().err


def test_sixteen_bit_grayscale_is_scaled(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(path)
    x = load_images([path], SIZE, grayscale=True)
    assert x.shape == (1, 1, SIZE, SIZE) and torch.allclose(x, torch.ones_like(x))  # white, not clipped noise
    Image.fromarray(np.full((20, 20), 32768, np.uint16)).save(path)
    assert load_images([path], SIZE, grayscale=True).mean().item() == pytest.approx(128 / 127.5 - 1, abs=1e-6)
