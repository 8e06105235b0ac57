"""Resumable training (algan.resume): a smoke run killed after a checkpoint (kill -9, or SIGTERM) and
resumed ends with the same history and scores, to the bit, as the same run uninterrupted.

Both runs use one torch thread on the CPU (the subprocess and this process), so every kernel runs
the same reductions in the same order: the comparisons are exact, not within a tolerance. Only the
history's `seconds` (wall time) differs.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from algan import results, resume
from algan.runs.feature import run_feature
from algan.runs.image import run_image
from algan.runs.tabular import run_tabular
from algan.sweep import sweep

EPOCHS, EVERY = 6, 2
SMOKE = {"profile": "smoke", "seed": 0, "overrides": {"train.epochs": EPOCHS}}
CASES = {  # name: (how the interrupted process runs it, the run's function and keywords)
    "algan-image, kill -9": ("run", run_image, dict(method="algan", dataset="mvtec", category="bottle", **SMOKE)),
    "algan-image, SIGTERM": ("run", run_image, dict(method="algan", dataset="mvtec", category="bottle", **SMOKE)),
    "ganomaly through the sweep, kill -9": ("sweep", run_image, dict(method="ganomaly", dataset="mvtec",
                                                                     category="bottle", **SMOKE)),
    "algan-feature, kill -9": ("run", run_feature, dict(method="algan", source="adbench", category="bottle", **SMOKE)),
    # cpu widths on a small set, so that it outlives its first checkpoint; its scores.csv holds the last epoch's
    "algan tabular, kill -9": ("run", run_tabular, dict(method="algan", dataset="classical", category="43_WDBC",
                                                        **{**SMOKE, "profile": "cpu"})),
    # train.fast_step: the fused Adam's state resumes as the foreach one does
    "algan tabular, fast_step, kill -9": ("run", run_tabular, dict(
        method="algan", dataset="classical", category="43_WDBC", **{**SMOKE, "profile": "cpu", "overrides": {
            "train.epochs": EPOCHS, "train.fast_step": True}})),
    # the EMA of D's weights is part of the training state: the resumed run scores with the same average
    "algan-feature, select=ema, kill -9": ("run", run_feature, dict(
        method="algan", source="adbench", category="bottle", **{**SMOKE, "overrides": {
            "train.epochs": EPOCHS, "train.select": "ema"}})),
}


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    """One torch thread here, as in the interrupted process."""


def _start(how, fn, kwargs, data_root, runs):
    if how == "sweep":
        grid = {"method": kwargs["method"], "dataset": kwargs["dataset"], "category": kwargs["category"],
                "seed": kwargs["seed"], "profile": kwargs["profile"], **kwargs["overrides"]}
        call = f"from algan.sweep import sweep; sweep({grid!r}, executor='serial', progress=False, "
    else:
        call = f"from {fn.__module__} import {fn.__name__}; {fn.__name__}(**{kwargs!r}, device='cpu', "
    code = f"import torch; torch.set_num_threads(1); {call}data_root={str(data_root)!r}, runs_dir={str(runs)!r})"
    env = {**os.environ, "ALGAN_CHECKPOINT_EVERY": str(EVERY), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def _interrupt(proc, state, sig):
    """Send `sig` once the first training state is on disk (written atomically, so whole when there)."""
    deadline = time.time() + 300
    while not state.is_file():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.communicate()}"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=120)


def _folder(fn, kwargs, runs):
    from algan.runs.image import image_run_args
    from algan.runs.feature import feature_run_args
    from algan.runs.tabular import tabular_run_args

    k = kwargs
    args = (image_run_args(k["method"], k["dataset"], k["category"], k["profile"], k["seed"], k["overrides"])
            if fn is run_image else
            tabular_run_args(k["method"], k["category"], k["profile"], k["seed"], k["overrides"]) if fn is run_tabular
            else feature_run_args(k["method"], k["source"], k["category"], k["profile"], k["seed"], None, k["overrides"]))
    return results.run_dir(args, runs)


@pytest.mark.parametrize("case", CASES)
def test_a_killed_run_resumes_to_the_uninterrupted_result(case, tmp_path, data_root, capsys):
    how, fn, kwargs = CASES[case]
    runs = tmp_path / "interrupted"
    folder = _folder(fn, kwargs, runs)
    state = folder / resume.TRAINING_STATE
    sig = signal.SIGTERM if "SIGTERM" in case else signal.SIGKILL
    proc = _start(how, fn, kwargs, data_root, runs)
    _, err = _interrupt(proc, state, sig)
    assert proc.returncode == -signal.SIGKILL if sig == signal.SIGKILL else proc.returncode == 128 + signal.SIGTERM, err
    assert not results.is_done(folder)
    stopped = torch.load(state, weights_only=True)["epoch"]
    assert EVERY <= stopped < EPOCHS
    if sig == signal.SIGTERM:  # the epoch under way was finished and written
        assert "stopping after this epoch" in err
    (tmp_path / "state.pt").write_bytes(state.read_bytes())

    if how == "sweep":
        res = sweep({"method": kwargs["method"], "dataset": kwargs["dataset"], "category": kwargs["category"],
                     "seed": 0, "profile": "smoke", **kwargs["overrides"]}, executor="serial", data_root=data_root,
                    runs_dir=runs, progress=False)
        assert (res.finished, res.failed) == (1, 0)
        resumed = results.load_run(folder)
    else:
        resumed = fn(**kwargs, data_root=data_root, runs_dir=runs, device="cpu")
    assert f"after epoch {stopped}" in capsys.readouterr().err  # it continued, not restarted
    whole = fn(**kwargs, data_root=data_root, runs_dir=tmp_path / "whole", device="cpu", checkpoint_every=0)

    a, b = (results.read_history(run["folder"]) for run in (resumed, whole))
    assert list(a["epoch"]) == list(range(1, EPOCHS + 1))
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"), check_exact=True)
    assert (resumed["folder"] / results.SCORES).read_bytes() == (whole["folder"] / results.SCORES).read_bytes()
    for key in ("test_auroc", "val_auroc", "best_epoch", "test_auroc_last"):
        assert resumed["metrics"].get(key) == whole["metrics"].get(key)
    assert not state.exists() and not [p for p in runs.rglob("*") if p.name.endswith(".tmp")]  # finished: no state

    # a training state is refused by a run with other arguments, with a line that names the difference
    other = {**kwargs, "overrides": {**kwargs["overrides"], "train.sigma": 2.0}}
    elsewhere = _folder(fn, other, runs) / resume.TRAINING_STATE
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes((tmp_path / "state.pt").read_bytes())
    with pytest.raises(ValueError, match=r"made by another run \(args\.overrides\.train\.sigma: .*\); delete it"):
        fn(**other, data_root=data_root, runs_dir=runs, device="cpu")


def test_first_difference_names_the_setting():
    stored = {"resolved": {"train": {"sigma": 4.0, "epochs": 6}}, "loop": {"train_shape": (10, 3)}}
    assert resume.first_difference(stored, json.loads(json.dumps(stored))) == ""  # tuples and lists alike
    changed = {"resolved": {"train": {"sigma": 2.0, "epochs": 6}}, "loop": {"train_shape": [10, 3]}}
    assert resume.first_difference(stored, changed) == "resolved.train.sigma: 4.0 in the checkpoint, 2.0 here"
