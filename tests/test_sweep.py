"""Sweeps: grid expansion (same hashes as the tables), bad input, failures recorded, resume after a
kill, per-run locks, the local pool, submitit's local executor and `algan sweep` on real smoke runs."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from algan import results, sweep as sweep_mod
from algan.cli import main
from algan.pages import common as P, images as IM
from algan.runs import feature as RF, image as RI
from algan.sweep import (acquire_lock, expand_grid, lock_path, release_lock, run_state, sweep, sweep_status)

BOTTLE = {"method": "algan", "dataset": "mvtec", "category": "bottle", "seed": 0, "profile": "smoke"}


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    """Runs in this process use one torch thread (tiny smoke networks on busy cores)."""


def test_expand_grid_counts_and_the_tables_hashes(data_root):
    grid = {"method": ["algan", "knn"], "dataset": ["mvtec", "mtd"], "category": "bottle", "seed": [0, 1],
            "profile": "smoke", "train.sigma": [2, 4.0]}
    specs = expand_grid(grid)
    # algan: 2 data sets x 2 sigmas x 2 seeds; knn takes no config keys: 2 x 2; mtd has no category
    assert len(specs) == 12 and len({s.hash for s in specs}) == 12
    for s in specs:
        k = s.kwargs
        args = RI.image_run_args(k["method"], k["dataset"], k["category"], k["profile"], k["seed"],
                                 k["overrides"])
        assert s.args == args and s.hash == results.run_dir(args, "/runs").name
        assert k["category"] == ("bottle" if k["dataset"] == "mvtec" else None)
    # sigma 4.0 is the profile's own value: that run is the table's default run (no overrides)
    default = RI.image_run_args("algan", "mvtec", "bottle", "smoke", 0)
    assert results.config_hash(default) in {s.hash for s in specs}
    assert {s.label for s in specs} >= {"algan mvtec/bottle smoke seed 0 train.sigma=2", "knn mtd smoke seed 1"}

    # a union of axes shares its centre point; "all" is every category under the data root
    axes = [{**BOTTLE, "train.sigma": [2.0, 4.0]}, {**BOTTLE, "train.alpha": [0.5, 0.75]}]
    assert len(expand_grid(axes)) == 3
    every = expand_grid({**BOTTLE, "category": "all"}, data_root=data_root)
    assert [s.kwargs["category"] for s in every] == RI.categories_present("mvtec", data_root)

    feature = expand_grid({"method": ["feature:algan", "feature:spade"], "dataset": ["adbench", "mvtec"],
                           "category": ["bottle", "cable"], "seed": 0, "profile": "smoke", "train.sigma": 2})
    assert len(feature) == 8
    for s in feature:
        k = s.kwargs
        assert s.kind == "feature" and s.args == feature_run_args(k)
        assert k["overrides"] == ({"train.sigma": 2} if k["method"] == "algan" else {})


def feature_run_args(k):
    return RF.feature_run_args(k["method"], k["source"], k["category"], k["profile"], k["seed"], None,
                               k["overrides"])


def test_hashes_are_stable_across_processes():
    grid = [{**BOTTLE, "method": ["algan", "knn", "ganomaly"], "seed": [0, 1, 2], "train.n_z": [1, 2]},
            {"method": "feature:algan", "dataset": "adbench", "category": ["bottle", "zipper"], "seed": 0,
             "profile": "cpu", "train.use_buffer": False}]
    code = f"import json; from algan.sweep import expand_grid; print(json.dumps([s.hash for s in expand_grid({grid!r})]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [s.hash for s in expand_grid(grid)]


@pytest.mark.parametrize("grid, message", [
    ({**BOTTLE, "train.sigmaa": 2}, "unknown grid key 'train.sigmaa'"),
    ({**BOTTLE, "epochs": 2}, "unknown grid key 'epochs'"),
    ({**BOTTLE, "train.n_z": "two"}, r"'train.n_z': 'two' \(str\), expected int"),
    ({**BOTTLE, "train.n_z": [2, 2.5]}, r"'train.n_z': 2.5 \(float\), expected int"),
    ({**BOTTLE, "train.use_buffer": "no"}, "'train.use_buffer': 'no' .*expected bool"),
    ({**BOTTLE, "train.sigma": True}, "'train.sigma': True .*expected float"),
    ({**BOTTLE, "train.alpha": 1.5}, r"train.alpha=1.5: expected a value in \[0, 1\]"),
    ({}, "empty grid"),
    ([], "empty list of grids"),
    ({**BOTTLE, "seed": []}, "grid key 'seed': empty list"),
    ({**BOTTLE, "seed": "0"}, "grid key 'seed': '0' .*expected an integer"),
    ({k: v for k, v in BOTTLE.items() if k != "profile"}, "grid key 'profile' missing"),
    ({**BOTTLE, "method": "algann"}, "grid key 'method': 'algann'"),
    ({**BOTTLE, "method": "feature:nope"}, "grid key 'method': 'feature:nope'"),
    ({**BOTTLE, "profile": "gpu"}, "grid key 'profile': 'gpu'"),
    ({**BOTTLE, "dataset": "mnist"}, "grid key 'dataset': 'mnist'"),
    ({**BOTTLE, "category": "bottel"}, "grid key 'category': 'bottel'"),
    ({k: v for k, v in BOTTLE.items() if k != "category"}, "'category' missing: data set 'mvtec'"),
    ({**BOTTLE, "dataset": "mtd"}, "data sets \\['mtd'\\] have no categories"),
    ({**BOTTLE, "dataset": "adbench"}, "image methods take one of"),
    ([BOTTLE, {**BOTTLE, "seed": 1.0}], "grid 2: grid key 'seed'"),
])
def test_bad_grids_fail_before_any_run(grid, message, tmp_path, data_root):
    with pytest.raises(ValueError, match=message) as info:
        sweep(grid, executor="serial", data_root=data_root, runs_dir=tmp_path / "runs", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()


def test_missing_data_and_bad_options_fail_before_any_run(tmp_path, data_root):
    root, runs = tmp_path / "root", tmp_path / "runs"
    (root / "mvtec").mkdir(parents=True)
    for grid, message in [(BOTTLE, "mvtec/bottle: folder not found"),
                          ({"method": "algan", "dataset": "mtd", "seed": 0, "profile": "smoke"}, "mtd: folder not found"),
                          ({"method": "knn", "dataset": "coil100", "seed": 0, "profile": "smoke"}, "coil-100"),
                          ({"method": "feature:spade", "dataset": "adbench", "category": "bottle", "seed": 0,
                            "profile": "smoke"}, "adbench/mvtec_resnet18/bottle.npz: file not found"),
                          ({**BOTTLE, "category": "all"}, "no MVTec-AD category folder")]:
        with pytest.raises(ValueError, match=message) as info:
            sweep(grid, executor="serial", data_root=root, runs_dir=runs, progress=False)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="data root does not exist"):
        sweep(BOTTLE, executor="serial", data_root=tmp_path / "nowhere", runs_dir=runs)
    for kwargs, message in [({"executor": "slurm"}, "executor 'slurm'"), ({"workers": 0}, "workers=0"),
                            ({"executor": "serial", "timeout_min": 5}, "only executor='submitit'")]:
        with pytest.raises(ValueError, match=message):
            sweep(BOTTLE, data_root=data_root, runs_dir=runs, **kwargs)
    assert not runs.exists()


def make_flaky(monkeypatch, method: str, bad_seed: int, error: Exception) -> None:
    """`method` raises `error` for one seed (in this process: the serial executor)."""
    fit = RI.METHODS[method]

    def flaky(splits, profile, seed, *rest):
        if seed == bad_seed:
            raise error
        return fit(splits, profile, seed, *rest)

    monkeypatch.setitem(RI.METHODS, method, flaky)


def test_failure_is_recorded_the_others_finish_and_a_retry_clears_it(tmp_path, data_root, monkeypatch):
    fit = RI.METHODS["algan"]
    make_flaky(monkeypatch, "algan", 1, RuntimeError("diverged at epoch 1"))
    grid = {**BOTTLE, "method": ["algan", "knn"], "seed": [0, 1]}
    runs = tmp_path / "runs"
    res = sweep(grid, executor="serial", data_root=data_root, runs_dir=runs, progress=False)
    assert (res.total, res.finished, res.cached, res.failed) == (4, 3, 0, 1)
    bad = res.failures[0]
    assert bad["label"] == "algan mvtec/bottle smoke seed 1" and bad["error"] == "RuntimeError: diverged at epoch 1"
    folder = runs / bad["hash"]
    info = json.loads((folder / "failed.json").read_text())
    assert info["error"] == "RuntimeError" and info["message"] == "diverged at epoch 1"
    assert "Traceback" in info["traceback"] and "flaky" in info["traceback"]
    assert info["host"] == socket.gethostname() and info["time_utc"]
    assert not (folder / "done").exists() and not list(runs.glob("*.lock"))

    status = sweep_status(grid, data_root=data_root, runs_dir=runs)
    assert status.counts == {"done": 3, "running": 0, "failed": 1, "todo": 0}
    assert str(status) == "done 3 / running 0 / failed 1 / todo 0"
    assert status.table.set_index("run").at[bad["hash"], "error"] == "RuntimeError: diverged at epoch 1"

    left = sweep(grid, executor="serial", data_root=data_root, runs_dir=runs, progress=False, retry_failed=False)
    assert (left.cached, left.finished, left.failed) == (3, 0, 1) and (folder / "failed.json").exists()
    monkeypatch.setitem(RI.METHODS, "algan", fit)
    done_at = {p.name: (p / "done").stat().st_mtime_ns for p in runs.iterdir() if (p / "done").exists()}
    retried = sweep(grid, executor="serial", data_root=data_root, runs_dir=runs, progress=False)
    assert (retried.cached, retried.finished, retried.failed) == (3, 1, 0)
    assert results.is_done(folder) and not (folder / "failed.json").exists()

    # the sweep filled the cache the tables read: same runs, none redone
    tidy = IM.image_auroc_table("mvtec", profile="smoke", seeds=[0, 1], categories=["bottle"],
                                methods=("algan", "knn"), data_root=data_root, runs_dir=runs,
                                progress=False)
    assert set(tidy["run"]) == {s.hash for s in expand_grid(grid)}
    assert {h: (runs / h / "done").stat().st_mtime_ns for h in done_at} == done_at


def test_local_pool_runs_and_records_a_failure_in_training(tmp_path, data_root):
    # max_width_mult=0 passes the config's checks but makes zero-width layers: it fails in training
    grid = {**BOTTLE, "model.max_width_mult": [8, 0]}
    runs = tmp_path / "runs"
    res = sweep(grid, executor="local", workers=2, data_root=data_root, runs_dir=runs, progress=False)
    assert (res.total, res.finished, res.failed) == (2, 1, 1)
    failed = runs / res.failures[0]["hash"]
    assert res.failures[0]["label"].endswith("model.max_width_mult=0")
    assert json.loads((failed / "failed.json").read_text())["error"] == "RuntimeError"
    assert (failed / "config.json").exists() and not (failed / "done").exists()  # it failed inside the run
    assert results.is_done(runs / results.config_hash(RI.image_run_args("algan", "mvtec", "bottle",
                                                                        "smoke", 0)))
    assert not list(runs.glob("*.lock"))


def test_locks_live_stale_and_elsewhere(tmp_path):
    folder = tmp_path / "runs" / "0123456789abcdef"
    assert acquire_lock(folder) and run_state(folder) == "running"
    assert not acquire_lock(folder)  # held by a live process (this one)
    release_lock(folder)
    assert not lock_path(folder).exists() and run_state(folder) == "todo"

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(folder).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    assert run_state(folder) == "todo"  # its process is gone: stale
    assert acquire_lock(folder)
    assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()
    release_lock(folder)
    assert [p.name for p in folder.parent.iterdir()] == []  # nothing left beside it

    lock_path(folder).write_text(json.dumps({"host": "another-node", "pid": 1}))
    assert run_state(folder) == "running" and not acquire_lock(folder)


def _start_sweep(grid, data_root, runs, executor="serial"):
    code = ("import json, torch; torch.set_num_threads(1); from algan.sweep import sweep; "
            f"r = sweep({grid!r}, executor={executor!r}, data_root={str(data_root)!r}, runs_dir={str(runs)!r}, "
            "progress=False); print(json.dumps([r.cached, r.finished, r.running, r.failed]))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_resume_after_a_sweep_is_killed_midway(tmp_path, data_root):
    grid = {**BOTTLE, "seed": [0, 1, 2]}
    runs = tmp_path / "runs"
    proc = _start_sweep(grid, data_root, runs)
    deadline = time.time() + 300
    while True:  # kill while a run is in progress, after at least one finished
        folders = [p for p in runs.iterdir() if p.is_dir() and p.name != results.SPLITS] if runs.exists() else []
        if any(results.is_done(p) for p in folders) and any(not results.is_done(p) for p in folders):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.communicate()}"
        assert time.time() < deadline, "no run in progress within 300 s"
        time.sleep(0.02)
    proc.wait()
    finished = {p.name: ((p / "done").stat().st_mtime_ns, json.loads((p / "config.json").read_text())["finished_utc"])
                for p in runs.iterdir() if p.is_dir() and p.name != results.SPLITS and results.is_done(p)}
    interrupted = [p for p in runs.iterdir() if p.is_dir() and p.name != results.SPLITS and not results.is_done(p)]
    assert finished and len(interrupted) == 1 and lock_path(interrupted[0]).exists()  # a dead process's lock

    res = sweep(grid, executor="serial", data_root=data_root, runs_dir=runs, progress=False)
    assert (res.cached, res.finished, res.failed, res.running) == (len(finished), 3 - len(finished), 0, 0)
    for spec in expand_grid(grid):
        run = results.load_run(runs / spec.hash)  # config.json and metrics.json parse
        assert results.is_done(run["folder"]) and run["config"]["args"] == spec.args and "finished_utc" in run["config"]
        assert 0.0 <= run["metrics"]["test_auroc"] <= 1.0 and not (run["folder"] / "failed.json").exists()
    assert {h: ((runs / h / "done").stat().st_mtime_ns,
                json.loads((runs / h / "config.json").read_text())["finished_utc"]) for h in finished} == finished
    left = sorted(p.name for p in runs.iterdir() if p.name != results.SPLITS)
    assert left == sorted(s.hash for s in expand_grid(grid))  # no locks, no temp files
    assert not [p for p in runs.rglob("*") if p.name.endswith(".tmp")]


def test_two_sweeps_at_once_never_run_the_same_run(tmp_path, data_root):
    grid = {**BOTTLE, "method": "knn", "seed": [0, 1, 2, 3]}
    runs = tmp_path / "runs"
    procs = [_start_sweep(grid, data_root, runs) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    counts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sum(c[1] for c in counts) == 4 and all(c[3] == 0 for c in counts)  # each run ran exactly once
    assert sweep_status(grid, data_root=data_root, runs_dir=runs).counts["done"] == 4


def test_submitit_local_executor(tmp_path, data_root):
    grid = {**BOTTLE, "method": ["algan", "knn"]}
    runs, jobs = tmp_path / "runs", tmp_path / "jobs"
    res = sweep(grid, executor="submitit", cluster="local", folder=jobs, timeout_min=10, data_root=data_root,
                runs_dir=runs, progress=False)
    assert (res.total, res.finished, res.failed) == (2, 2, 0)
    assert all(results.is_done(runs / s.hash) for s in expand_grid(grid))
    assert list(jobs.glob("*_result.pkl")) and not list(runs.glob("*.lock"))
    with pytest.raises(ValueError, match="submitit options"):
        sweep({**BOTTLE, "seed": 1}, executor="submitit", cluster="local", folder=jobs, slurm_partitio="gpu",
              data_root=data_root, runs_dir=runs, progress=False)


def test_sweep_command_status_and_failures(tmp_path, data_root, monkeypatch, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("method: knn\ndataset: mvtec\ncategory: bottle\nseed: [0, 1, 2]\nprofile: smoke\n")
    where = ["--data-root", str(data_root), "--runs-dir", str(tmp_path / "runs")]
    assert main(["sweep", str(grid), "--status", *where]) == 0
    assert capsys.readouterr().out == "done 0 / running 0 / failed 0 / todo 3\n"

    make_flaky(monkeypatch, "knn", 2, MemoryError("out of memory\nwhile fitting"))
    assert main(["sweep", str(grid), "--executor", "serial", *where]) == 1
    out = capsys.readouterr().out
    assert "done 2 (2 run now) / running 0 / failed 1 of 3 runs" in out
    assert main(["sweep", str(grid), "--status", *where]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "done 2 / running 0 / failed 1 / todo 0"
    assert len(lines) == 2 and lines[1].startswith("failed ")
    assert lines[1].endswith("knn mvtec/bottle smoke seed 2: MemoryError: out of memory while fitting")

    as_json = tmp_path / "grid.json"
    as_json.write_text(json.dumps({"method": "knn", "dataset": "mvtec", "category": "bottle", "seed": 0,
                                   "profile": "smoke", "train.sigma": "big"}))
    assert main(["sweep", str(as_json), *where]) == 2
    assert "'train.sigma': 'big' (str), expected float" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "nope.json"), *where]) == 2
    assert "grid file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "retried by default" in " ".join(capsys.readouterr().out.split())


def test_runs_for_the_books_cache_come_from_committed_code(monkeypatch, tmp_path):
    from algan import results as R

    monkeypatch.setattr(R, "git_commit", lambda: "abc123+dirty")
    book = R.REPO_ROOT / "results" / "runs"
    grid = {"method": "knn", "dataset": "mvtec", "category": "bottle", "profile": "smoke", "seed": 0}
    with pytest.raises(ValueError, match="uncommitted changes .*abc123\\+dirty.*--allow-dirty"):
        sweep(grid, runs_dir=book, executor="serial", progress=False)
    sweep_mod.check_clean(book, allow_dirty=True)  # told so, it goes ahead
    sweep_mod.check_clean(tmp_path)  # any other runs folder takes uncommitted code


def test_a_page_counts_the_code_versions_behind_its_runs():
    import pandas as pd


    runs = pd.DataFrame({"commit": ["a", "a", "b+dirty", "b+dirty", "c+dirty"],
                         "code": [None, None, "h1", "h2", None]})
    assert P.code_versions(runs) == "3 code versions; 1 run of uncommitted code"  # a, h1, h2; c+dirty unnamed
    assert P.code_versions(pd.DataFrame({"commit": ["a", "a"]})) == "1 code version"
