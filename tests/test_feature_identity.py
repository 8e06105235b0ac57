"""A short ALGAN-feature run (and an ALGAN-image smoke run, which shares the training loop) gives, bit for bit on CPU with one thread, the history and scores recorded from the
code before the feature training step was made fast (issue 24): the book's cached runs keep their values.

The reference (tests/data/feature_identity.json) was written by `write_reference()` from commit 1de3150 (the
code before the change); floats are stored as float.hex, so equal means identical bits.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from algan import ALGAN
from algan.config import profile

REFERENCE = Path(__file__).parent / "data" / "feature_identity.json"
# name: (reading, overrides); the cpu profile's hidden width, the buffer under both readings
CASES = {
    "literal": ("literal", {}),
    "active": ("active", {}),
    # fit(X) without validation data; recorded when it kept the last epoch (now config.LABEL_FREE_DEFAULT): say so
    "no_val": ("literal", {"train.epochs": 2, "train.select": "last"}),
    "odd_sizes": ("literal", {"model.feature_hidden": 53, "train.batch_size": 12}),  # vector remainders
}


def feature_run(name: str) -> dict:
    reading, overrides = CASES[name]
    gen = torch.Generator().manual_seed(0)
    dim = 96
    x = torch.randn(168, dim, generator=gen)              # 10 batches of 16 and one of 8 (literal reading)
    x_val = torch.randn(48, dim, generator=gen)
    y_val = (torch.arange(48) >= 32).numpy().astype(int)
    x_val[32:] += 0.5
    x_test = torch.randn(40, dim, generator=gen) + 0.25 * (torch.arange(40) >= 20)[:, None]
    cfg = profile("cpu", kind="feature", reading=reading,
                  **{"train.epochs": 5, "train.eval_every": 2, "model.feature_hidden": 128, **overrides})
    if name == "odd_sizes":
        x, x_val, x_test = x[:, :37], x_val[:, :37], x_test[:, :37]
    return _recorded(ALGAN(cfg, seed=3, device="cpu", progress=False), x_test, x,
                     **({} if name == "no_val" else {"X_val": x_val, "y_val": y_val}))


def _recorded(det: ALGAN, x_score, *fit_args, **fit_kwargs) -> dict:
    """Fit `det` with one torch thread; its history (wall time left out), scores of `x_score` and threshold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        det.fit(*fit_args, **fit_kwargs)
        scores = det.decision_function(x_score)
    finally:
        torch.set_num_threads(before)
    history = det.history_.drop(columns=["seconds"])
    return {"history": {c: [float(v) for v in history[c]] for c in history.columns},
            "scores": [float(s) for s in scores], "best_epoch": int(det.best_epoch_),
            "threshold": float(det.threshold_)}


IMAGE_CASES = ("literal", "active")


def image_run(reading: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 32, 32, generator=gen) * 2 - 1
    x_val = torch.rand(12, 3, 32, 32, generator=gen) * 2 - 1
    x_val[6:, :, 8:16, 8:16] = 1.0
    y_val = np.r_[np.zeros(6, int), np.ones(6, int)]
    det = ALGAN(profile("smoke", reading=reading, **{"train.epochs": 3}), seed=0, device="cpu", progress=False)
    return _recorded(det, x_val, x, X_val=x_val, y_val=y_val)


def _hex(obj):
    if isinstance(obj, float):
        return "nan" if math.isnan(obj) else obj.hex()
    if isinstance(obj, dict):
        return {k: _hex(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_hex(v) for v in obj]
    return obj


def write_reference() -> None:
    REFERENCE.parent.mkdir(exist_ok=True)
    cases = {name: _hex(feature_run(name)) for name in CASES}
    cases.update({f"image_{r}": _hex(image_run(r)) for r in IMAGE_CASES})
    REFERENCE.write_text(json.dumps(cases, indent=1) + "\n")


@pytest.mark.parametrize("name", sorted(CASES) + [f"image_{r}" for r in IMAGE_CASES])
def test_run_is_bit_identical_to_the_recorded_one(name):
    expected = json.loads(REFERENCE.read_text())[name]
    got = _hex(image_run(name[len("image_"):]) if name.startswith("image_") else feature_run(name))
    assert got["best_epoch"] == expected["best_epoch"]
    for column, values in expected["history"].items():
        assert got["history"][column] == values, f"history column {column} differs"
    assert got["scores"] == expected["scores"]
    assert got["threshold"] == expected["threshold"]
    assert np.isfinite(np.array([float.fromhex(s) for s in got["scores"]])).all()
