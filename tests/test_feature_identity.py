"""A short ALGAN-feature run (and an ALGAN-image smoke run, which shares the training loop) gives, bit for bit on CPU
with one thread, the history and scores that the code before the feature training step was made fast (issue 24,
commit 1de3150) gives on the same kind of CPU: the book's cached runs keep their values.

Floating-point bits depend on the CPU (MKL picks its kernels by vendor and instruction set), so
tests/data/feature_identity.json holds one reference per kind of CPU, each written from commit 1de3150 by
`write_reference()` (floats as float.hex, so equal means identical bits). A run passes when it equals one of them;
on a kind of CPU without one it fails and says how to record it (from a checkout of 1de3150's algan package).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from algan import ALGAN
from algan.config import profile

HERE = Path(__file__).parent
REFERENCE = HERE / "data" / "feature_identity.json"
# name: (reading, overrides); the cpu profile's hidden width, the buffer under both readings
CASES = {
    "literal": ("literal", {}),
    "active": ("active", {}),
    # fit(X) without validation data; recorded when it kept the last epoch (now config.LABEL_FREE_DEFAULT): say so
    "no_val": ("literal", {"train.epochs": 2, "train.select": "last"}),
    "odd_sizes": ("literal", {"model.feature_hidden": 53, "train.batch_size": 12}),  # vector remainders
}


def feature_run(name: str, cases: dict = CASES) -> dict:
    reading, overrides = cases[name]
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


def cpu_kind() -> str:
    """What the bits depend on: the CPU's vendor and model, torch's CPU instruction set, and torch's version."""
    vendor = model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                vendor = value.strip()
            elif key.strip() == "model name":
                model = value.strip()
                break
    except OSError:
        pass
    return f"{vendor} {model}, {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"


def write_reference(commit: str = "1de3150") -> None:
    """Add this CPU's reference, run with the algan package that Python imports (a checkout of `commit`, as the
    failure message says; the case "no_val" without train.select, which that code did not have)."""
    old_cases = {**CASES, "no_val": ("literal", {"train.epochs": 2})}
    cases = {name: _hex(feature_run(name, old_cases)) for name in CASES}
    cases.update({f"image_{r}": _hex(image_run(r)) for r in IMAGE_CASES})
    refs = json.loads(REFERENCE.read_text())["references"] if REFERENCE.exists() else []
    refs.append({"cpu": cpu_kind(), "commit": commit, "cases": cases})
    REFERENCE.write_text(json.dumps({"references": refs}, indent=1) + "\n")


def _compare(got: dict, expected: dict) -> str | None:
    """None where the run equals the reference bit for bit, else what differs first."""
    if got["best_epoch"] != expected["best_epoch"]:
        return f"best_epoch {got['best_epoch']} != {expected['best_epoch']}"
    for column, values in expected["history"].items():
        if got["history"][column] != values:
            return f"history column {column} differs"
    for key in ("scores", "threshold"):
        if got[key] != expected[key]:
            return f"{key} differ"
    return None


@pytest.mark.parametrize("name", sorted(CASES) + [f"image_{r}" for r in IMAGE_CASES])
def test_run_is_bit_identical_to_the_recorded_one(name):
    refs = json.loads(REFERENCE.read_text())["references"]
    got = _hex(image_run(name[len("image_"):]) if name.startswith("image_") else feature_run(name))
    assert np.isfinite(np.array([float.fromhex(s) for s in got["scores"]])).all()
    differences = {ref["cpu"]: _compare(got, ref["cases"][name]) for ref in refs}
    here = cpu_kind()
    assert None in differences.values(), (
        f"{name}: equal to none of the references ({differences}); this CPU is {here!r}"
        + ("" if here in differences else f": with no reference of its own, record one from commit 1de3150 (git "
           f"worktree add /tmp/old 1de3150 && cd /tmp/old && python -c 'import sys; sys.path.append(\"{HERE}\"); "
           f"import test_feature_identity as t; t.write_reference()')"))
