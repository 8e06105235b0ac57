"""The timing harness (Tables 5 and 6): FLOP counts against a hand count, a finite row per method, the
scoring fast paths leaving scores unchanged. Speed itself is a benchmark figure, never a test."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from algan import claims, paper, timing
from algan.config import profile
from algan.detector import ALGAN
from algan.pages import speed
from algan.score import discriminator_scores


def hand_count_discriminator(size: int, channels: int, width: int, max_mult: int = 8) -> int:
    """2 * H_out * W_out * C_out * C_in * k^2 per conv (a multiply-add = 2 FLOPs), biases ignored."""
    n_layers = int(math.log2(size)) - 1
    widths = [width * min(2 ** i, max_mult) for i in range(n_layers - 1)]
    total, c_in, s = 0, channels, size
    for c_out in widths:  # 4x4, stride 2, padding 1: halves the side
        s //= 2
        total += 2 * s * s * c_out * c_in * 16
        c_in = c_out
    return total + 2 * 1 * c_in * 16  # the 4x4 -> 1x1 logit


@pytest.mark.parametrize("size, width", [(32, 8), (64, 4)])
def test_discriminator_flops_match_a_hand_count(size, width):
    det = ALGAN.initialised(profile("smoke", **{"model.image_size": size, "model.d_width": width}))
    x = torch.zeros(1, 3, size, size)
    counted = timing.count_flops(lambda: det.decision_function(x))  # under inference_mode, as scoring runs
    assert counted == hand_count_discriminator(size, 5, width)
    assert hand_count_discriminator(32, 5, 8) == 852_992  # written out once: 327,680 + 2 x 262,144 + 1,024


def test_peak_memory_sees_an_allocation():
    with timing.PeakMemory(torch.device("cpu")) as mem:
        block = np.ones((64, 2 ** 20), dtype=np.uint8)  # 64 MiB touched
        block.sum()
    del block
    assert mem.mib > 32


def test_bytes_of_a_linear_layer_counted_by_hand():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with torch.inference_mode():
        n = timing.count_bytes(lambda: layer(x))
    # addmm reads bias (3), input (2 x 4) and weight (3 x 4), writes the output (2 x 3); the weight's
    # transpose is a view and moves nothing. fp32: 4 bytes each.
    assert n == 4 * (3 + 8 + 12 + 6)


def test_bytes_of_a_depthwise_conv_grow_with_the_batch_and_weights_are_counted_once():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    x1, x4 = torch.randn(1, 8, 16, 16), torch.randn(4, 8, 16, 16)
    with torch.inference_mode():
        one, four = timing.count_bytes(lambda: conv(x1)), timing.count_bytes(lambda: conv(x4))
    weights, per_image = 4 * 8 * 9, 4 * 2 * 8 * 16 * 16  # the map read and the map written
    assert one == weights + per_image and four == weights + 4 * per_image


def test_roofline_is_the_slower_of_compute_and_memory():
    machine = {"matmul_gflops": 100.0, "conv_gflops": 50.0, "mem_gbs": 10.0}
    assert timing.roofline_ms(1e9, 1e6, machine) == pytest.approx(10.0)   # 1 GFLOP at 100 GFLOP/s
    assert timing.roofline_ms(1e6, 1e9, machine) == pytest.approx(100.0)  # 1 GB at 10 GB/s
    measured = timing.device_throughput(torch.device("cpu"), reps=1)
    assert measured["mem_gbs"] > 0.1


@pytest.fixture(scope="module")
def tiny_table(one_torch_thread):
    return timing.timing_table("smoke", batch=2, reps=1, n_train=16, n_val=4, device="cpu")


def test_harness_gives_a_finite_positive_row_per_method(tiny_table):
    t = tiny_table
    assert list(t["method"]) == list(timing.METHODS)
    for col in ("predict_ms_b1", "predict_ms", "gflops_per_image", "mb_per_image_b1", "mb_per_image", "floor_ms_b1",
                "floor_ms", "x_floor_b1", "x_floor", "train_s_full", "matmul_gflops", "conv_gflops", "mem_gbs"):
        assert np.isfinite(t[col]).all() and (t[col] > 0).all(), col
    epochs = t[t["method"].isin(["algan", "ganomaly", "skip_ganomaly", "alocc", "algan_feature", "differnet"])]
    assert (epochs["train_s_per_epoch"] > 0).all()
    assert t.loc[t["method"] == "algan", "x_algan_image"].item() == 1.0
    assert t.loc[t["method"] == "algan_feature", "x_algan_feature"].item() == 1.0
    assert t["device"].str.startswith("cpu").all() and t["commit"].notna().all()
    # the feature methods count their backbone: far more work per image than the smoke discriminator
    assert (t.loc[t["method"].isin(timing.FEATURE_METHODS), "gflops_per_image"]
            > 10 * t.loc[t["method"] == "algan", "gflops_per_image"].item()).all()


def test_page_helpers_read_the_table(tiny_table, tmp_path):
    text = claims.speed_claims(tiny_table)
    assert f"the paper: {paper.TABLE5['image_ratio'][0]} to {paper.TABLE5['image_ratio'][1]}" in text
    assert len(speed.table5_display(tiny_table)) == len(timing.METHODS)
    assert len(speed.table6_display(tiny_table)) == len(timing.METHODS)
    pd.DataFrame({"dataset": "mvtec", "category": "bottle", "method": "algan", "seed": [0, 1, 0],
                  "reading": ["literal", "literal", "active"], "metric": "test_auroc",
                  "value": [0.8, 0.9, 0.1]}).to_csv(tmp_path / "table1_smoke.csv", index=False)  # active: left out
    fig6 = speed.figure6_frame(tiny_table, "smoke", "mvtec", results_dir=tmp_path)
    assert fig6.set_index("method").loc["algan", "auroc_mean"] == pytest.approx(0.85)
    assert fig6.set_index("method").loc["ganomaly", "auroc_mean"] != fig6.set_index("method").loc["ganomaly", "auroc_mean"]


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown method.*'fastflow'"):
        timing.timing_table("smoke", methods=["algan", "fastflow"])


def test_fast_paths_keep_the_scores():
    det = ALGAN.initialised(profile("smoke"))
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    ref = discriminator_scores(det.discriminator, x, prepare=det._prepare)
    nhwc = discriminator_scores(det.discriminator, x, prepare=det._prepare, channels_last=True, batch_size=4)
    bf16 = discriminator_scores(det.discriminator, x, prepare=det._prepare, amp_dtype=torch.bfloat16)
    scale = np.abs(ref).max()
    assert np.abs(nhwc - ref).max() <= 1e-5 * scale
    assert np.abs(bf16 - ref).max() <= 2e-2 * scale and bf16.dtype == np.float32
