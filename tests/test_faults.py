"""Faults: a full disk and read-only targets (monkeypatched writes: root ignores file modes, so chmod
proves nothing), a kill -9 of a sweep's parent, and the thread count of the calling process.

What must hold: output locations are checked before training; a failure while writing leaves nothing,
or the earlier output, never a folder that looks finished; metrics.json is valid JSON; a sweep goes on
past a run whose failure cannot be written, and says so; a killed sweep's workers end within seconds;
a run's hash determines its scores whatever the caller's torch threads.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from algan import results
from algan.cli import main
from algan.detector import ALGAN
from algan.runs import image as RI
from algan.sweep import UNRECORDED, expand_grid, sweep

SMOKE = {"method": "algan", "dataset": "mvtec", "category": "bottle", "profile": "smoke", "seed": 0}
OUTPUTS = {"model.pt", "history.csv", "splits.json", "metrics.json", "done"}


def full_disk(*, only: str | None = None):
    """An atomic_path that fails as a full disk does (for files named `only`, or all)."""
    real = results.atomic_path

    def atomic_path(path):
        if only is None or Path(path).name == only:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path)

    return atomic_path


def read_only(path):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def train_argv(data_root, out):
    return ["train", "--dataset", "mvtec", "--category", "bottle", "--profile", "smoke", "--data-root",
            str(data_root), "--out", str(out), "--quiet"]


def no_training(monkeypatch):
    monkeypatch.setattr(ALGAN, "fit", lambda *a, **k: pytest.fail("training started though the output is unusable"))


def one_error_line(capsys, *names):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


# ---- output locations, checked before training ----------------------------------------------------
@pytest.mark.parametrize("fault,message", [(read_only, "Permission denied"), (full_disk(), "No space left")])
def test_an_unwritable_out_is_refused_before_training(fault, message, tmp_path, data_root, monkeypatch, capsys):
    no_training(monkeypatch)
    monkeypatch.setattr(results, "atomic_path", fault)
    assert main(train_argv(data_root, tmp_path / "out")) == 2
    one_error_line(capsys, "--out", str(tmp_path), message)
    assert list(tmp_path.iterdir()) == []


def test_an_out_without_room_is_refused_before_training(tmp_path, data_root, monkeypatch, capsys):
    no_training(monkeypatch)
    real = results.shutil.disk_usage
    monkeypatch.setattr(results.shutil, "disk_usage", lambda p: real(p)._replace(free=10 * 2**20))
    assert main(train_argv(data_root, tmp_path / "a" / "b")) == 2
    one_error_line(capsys, "--out", "10 MiB free", "expected at least")
    assert list(tmp_path.iterdir()) == []


def test_table_and_sweep_check_the_runs_folder_first(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.setattr(RI, "run_image", lambda *a, **k: pytest.fail("a run started"))
    monkeypatch.setattr(results, "atomic_path", read_only)
    monkeypatch.setenv("ALGAN_RUNS", str(tmp_path / "runs"))
    assert main(["table", "mvtec", "--profile", "smoke", "--categories", "bottle", "--data-root", str(data_root)]) == 2
    one_error_line(capsys, "runs folder", str(tmp_path), "Permission denied")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(SMOKE))
    monkeypatch.setattr(results, "atomic_path", full_disk())
    assert main(["sweep", str(grid), "--executor", "serial", "--data-root", str(data_root),
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    one_error_line(capsys, "--runs-dir", str(tmp_path / "runs"), "No space left")
    assert not (tmp_path / "runs").exists()


# ---- writing: all or nothing ------------------------------------------------------------------------
def test_train_writes_all_or_nothing(tmp_path, data_root, monkeypatch, capsys, one_torch_thread):
    out = tmp_path / "out"
    with monkeypatch.context() as m:  # the disk fills up after training, at the last file
        m.setattr(results, "atomic_path", full_disk(only="metrics.json"))
        assert main(train_argv(data_root, out)) == 1
    one_error_line(capsys, "No space left", "metrics.json")
    assert list(tmp_path.iterdir()) == []  # no out, no temporary folder beside it

    assert main(train_argv(data_root, out)) == 0
    assert {p.name for p in out.iterdir()} == OUTPUTS
    json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as m:  # again into the same folder: a failure leaves the first output whole
        m.setattr(results, "torch_save", lambda *a: read_only(out / "model.pt"))
        assert main(train_argv(data_root, out)) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert list(tmp_path.iterdir()) == [out]


def test_atomic_folder_replaces_an_existing_folder_done_last(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "done").write_text("then")
    with pytest.raises(RuntimeError), results.atomic_folder(out) as folder:
        results.write_text(folder / "old.txt", "new")
        raise RuntimeError("killed")
    assert (out / "old.txt").read_text() == "old" and (out / "done").read_text() == "then"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    with results.atomic_folder(out) as folder:
        results.write_text(folder / "old.txt", "new")
    assert (out / "old.txt").read_text() == "new" and (out / "done").read_text() != "then"


def test_metrics_json_never_holds_nan(tmp_path):
    results.write_json(tmp_path / "m.json", {"auroc": float("nan"), "t": np.float32("inf"), "v": [np.nan, 1.5],
                                             "n": np.int64(3), "a": np.array([0.25, -np.inf])})
    data = json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail)
    assert data == {"auroc": None, "t": None, "v": [None, 1.5], "n": 3, "a": [0.25, None]}


# ---- the sweep goes on ------------------------------------------------------------------------------
def test_a_sweep_goes_on_when_a_failure_cannot_be_written(tmp_path, data_root, monkeypatch, one_torch_thread):
    fit = RI.METHODS["knn"]

    def flaky(splits, profile, seed, *rest):
        if seed == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fit(splits, profile, seed, *rest)

    monkeypatch.setitem(RI.METHODS, "knn", flaky)
    monkeypatch.setattr(results, "atomic_path", full_disk(only="failed.json"))
    grid = {**SMOKE, "method": "knn", "seed": [0, 1]}
    res = sweep(grid, executor="serial", data_root=data_root, runs_dir=tmp_path / "runs", progress=False)
    assert (res.finished, res.failed, res.unrecorded) == (1, 1, 1)
    assert res.failures[0]["error"].endswith(f"({UNRECORDED}: No space left on device)")
    assert "1 not recorded on disk" in str(res)
    bad, good = (tmp_path / "runs" / s.hash for s in expand_grid(grid))
    assert not (bad / "failed.json").exists() and not results.is_done(bad) and results.is_done(good)
    assert not list((tmp_path / "runs").glob("*.lock"))


# ---- threads: the hash determines the result ----------------------------------------------------------
def test_the_callers_thread_count_does_not_change_a_run(tmp_path, data_root):
    before = torch.get_num_threads()
    scores = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            run = RI.run_image(**SMOKE, data_root=data_root, runs_dir=tmp_path / str(threads), device="cpu")
            assert torch.get_num_threads() == threads  # restored after the run
            assert run["config"]["torch_threads"] == 1 and "1 threads" in run["config"]["device"]
            scores[threads] = (run["folder"] / results.SCORES).read_bytes()
    finally:
        torch.set_num_threads(before)
    assert scores[1] == scores[2]


def test_a_bad_run_threads_setting_stops_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RUN_THREADS_ENV, "0")
    with pytest.raises(ValueError, match="ALGAN_RUN_THREADS='0'"):
        results.cached_run({"task": "t"}, lambda folder: pytest.fail("ran"), tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---- kill -9 of a sweep's parent -------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes through /proc")
def test_killing_a_sweeps_parent_ends_its_workers(tmp_path, data_root):
    runs = tmp_path / "runs"
    grid = {**SMOKE, "seed": [0, 1], "train.epochs": 10_000}  # runs that would not end on their own
    code = (f"from algan.sweep import sweep; sweep({grid!r}, workers=2, progress=False, "
            f"data_root={str(data_root)!r}, runs_dir={str(runs)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers = set()
    try:
        deadline = time.time() + 240
        while len(workers) < 2:  # the workers' pids, from the lock files of the runs they hold
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no two runs started within 240 s"
            workers = {json.loads(p.read_text() or "{}").get("pid") for p in runs.glob("*.lock")} - {None}
            time.sleep(0.2)
        assert all(_alive(pid) for pid in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 10
        while any(_alive(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), f"workers {workers} outlived their sweep by 10 s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the sweep's own session: what this test started, no more
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
