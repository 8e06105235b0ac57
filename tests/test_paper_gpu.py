"""benchmarks/paper_gpu.sh and the pack it reads (`algan pack --for paper-gpu`): the pack has the files the
runs read, at 256 x 256, and names a missing one; the dry run passes with every installed package blocked
that a bare GPU machine (torch, torchvision, pandas, scikit-learn, numpy, pillow) would lack; the budget
stops it cleanly and the next call finishes the rest."""
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from algan.cli import main
from algan.data import DataError, load_dataset
from algan.pack import check_pack, make_pack, size_report

REPO = Path(__file__).resolve().parents[1]
BARE = ("torch", "torchvision", "pandas", "scikit-learn", "numpy", "pillow")  # and what they require
PYTHON_ITSELF = {"pip", "setuptools", "wheel"}  # in any Python install
BLOCKER = '''import json, os, sys
BLOCKED = frozenset(json.loads(os.environ["ALGAN_TEST_BLOCKED"]))
class _Bare:
    """A finder of sys.meta_path that does not find the blocked modules: they are absent, as on the bare
    machine (import raises ModuleNotFoundError, importlib.util.find_spec gives None)."""
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [_Bare(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
'''


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_distributions() -> set[str]:
    """BARE and everything they require (extras left out)."""
    todo, seen = list(BARE), set()
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
    return seen | PYTHON_ITSELF


def blocked_modules() -> list[str]:
    """Top-level modules of the installed distributions outside allowed_distributions() (not algan itself)."""
    allowed = allowed_distributions()
    return sorted(module for module, dists in metadata.packages_distributions().items()
                  if module != "algan" and not any(_norm(d) in allowed for d in dists))


def gradient(path: Path, value: int, mode: str = "RGB", size: int = 24) -> None:
    """A small smooth image (compresses to little even at 256 x 256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.add.outer(np.arange(size), np.arange(size)) * 2 + value
    arr = np.clip(ramp if mode == "L" else np.stack([ramp, ramp[::-1], ramp.T], -1), 0, 255).astype(np.uint8)
    Image.fromarray(arr, mode).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def mask(path: Path, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size), np.uint8)
    arr[: size // 2, : size // 2] = 255
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """mvtec/bottle and mtd in their layouts, just big enough for the active reading (last_batch=drop: 16)."""
    root = tmp_path_factory.mktemp("data")
    bottle = root / "mvtec/bottle"
    for i in range(18):
        gradient(bottle / f"train/good/{i:03d}.png", 10 + i)
    for i in range(4):
        gradient(bottle / f"test/good/{i:03d}.png", 12 + i)
        gradient(bottle / f"test/broken_large/{i:03d}.png", 120 + i)
        mask(bottle / f"ground_truth/broken_large/{i:03d}_mask.png")
    (bottle / "license.txt").write_text("licence text\n")
    for kind, n, value in (("MT_Free", 36, 20), ("MT_Blowhole", 4, 150)):
        for i in range(n):
            gradient(root / f"mtd/{kind}/Imgs/exp{i}.jpg", value + i, "L", size=20 + i % 5)
            mask(root / f"mtd/{kind}/Imgs/exp{i}.png", size=20 + i % 5)
    return root


@pytest.fixture(scope="module")
def pack(tiny_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    assert main(["pack", "--for", "paper-gpu", str(out), "--data-root", str(tiny_root)]) == 0
    return out


def test_pack_holds_what_the_runs_read(tiny_root, pack, capsys):
    manifest = check_pack(pack, "paper-gpu")
    assert manifest["image_size"] == 256 and len(manifest["files"]) == 30 + 80 + 1  # + the licence
    assert (pack / "mvtec/bottle/license.txt").read_text() == "licence text\n"
    with Image.open(pack / "mtd/MT_Free/Imgs/exp3.jpg") as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "L", (256, 256))
    for dataset, category in (("mvtec", "bottle"), ("mtd", None)):
        a, b = (load_dataset(dataset, r, category=category, image_size=256, seed=0) for r in (tiny_root, pack))
        for name in ("train", "val", "test"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.paths == y.paths and (x.y == y.y).all() and (x.masks == y.masks).all()
            gap = float((x.x - y.x).abs().max()) * 127.5
            assert gap == 0 if dataset == "mvtec" else gap < 12  # PNG: the same pixels; JPEG: near them
    line, ok = size_report(manifest)
    assert ok and "MiB" in line
    assert not size_report({**manifest, "files": {"a": 41 * 2**20}})[1]


def test_pack_bad_input(tiny_root, pack, tmp_path):
    with pytest.raises(DataError, match="not a data pack"):
        check_pack(tmp_path, "paper-gpu")
    broken = tmp_path / "broken"
    shutil.copytree(pack, broken)
    (broken / "mvtec/bottle/train/good/007.png").unlink()
    with pytest.raises(DataError, match=r"mvtec/bottle/train/good/007.png: missing from the pack"):
        check_pack(broken, "paper-gpu")
    manifest = json.loads((pack / "PACK.json").read_text())
    (broken / "PACK.json").write_text(json.dumps({**manifest, "pack": "other"}))
    with pytest.raises(DataError, match="a pack for 'other', expected one for 'paper-gpu'"):
        check_pack(broken, "paper-gpu")
    assert main(["pack", "--for", "paper-cpu", str(tmp_path / "x"), "--data-root", str(tiny_root)]) == 2


def run_script(pack: Path, out: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/paper_gpu.sh in a Python that cannot import what a bare GPU machine lacks."""
    (tmp_path / "bare").mkdir(exist_ok=True)
    (tmp_path / "bare/sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path / "bare"), "OMP_NUM_THREADS": "1",
           "ALGAN_TEST_BLOCKED": json.dumps(blocked_modules())}
    return subprocess.run(["sh", str(REPO / "benchmarks/paper_gpu.sh"), "--data", str(pack), "--out", str(out),
                           "--dry-run", *args], env=env, capture_output=True, text=True, timeout=600)


def test_dry_run_imports_only_the_bare_machines_packages(pack, tmp_path):
    blocked = blocked_modules()
    assert "tqdm" in blocked and "torch" not in blocked and "sklearn" not in blocked
    probe = run_script(pack, tmp_path / "probe", tmp_path, "--help")  # the blocker is in place ...
    assert probe.returncode == 0, probe.stderr
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "bare"), "ALGAN_TEST_BLOCKED": json.dumps(blocked)}
    tqdm = subprocess.run([sys.executable, "-c", "import tqdm"], env=env, capture_output=True, text=True)
    assert tqdm.returncode == 1 and "No module named 'tqdm'" in tqdm.stderr  # ... and blocks
    done = run_script(pack, tmp_path / "out", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all runs done" in done.stdout and "[8/8]" in done.stdout
    runs = pd.read_csv(tmp_path / "out/paper_gpu_runs.csv")
    assert runs["run"].nunique() == 8 and set(runs["profile"]) == {"smoke"}
    summary = pd.read_csv(tmp_path / "out/paper_gpu_summary.csv")
    assert set(summary["variant"]) == {"knn", "algan active", "algan literal", "neither active"}
    assert (summary["seeds"] == 1).all() and len(summary) == 8
    assert set(runs.loc[runs["variant"] == "algan literal", "reading"]) == {"literal"}
    assert set(runs.loc[runs["variant"] != "knn", "reading"]) <= {"literal", "active"}
    assert (pd.read_csv(tmp_path / "out/paper_gpu_status.csv")["state"] == "done").all()


def test_budget_stops_cleanly_and_the_next_call_finishes(pack, tmp_path):
    first = run_script(pack, tmp_path / "out", tmp_path, "--budget-min", "0.02", "--checkpoint-every", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "paper_gpu: stopped" in first.stdout
    states = pd.read_csv(tmp_path / "out/paper_gpu_status.csv")["state"]
    assert (states != "done").any() and set(states) <= {"done", "checkpointed", "todo"}
    second = run_script(pack, tmp_path / "out", tmp_path)
    assert second.returncode == 0 and "all runs done" in second.stdout, second.stdout + second.stderr
    assert ("cached" in second.stdout) == (states == "done").any()
    assert (pd.read_csv(tmp_path / "out/paper_gpu_status.csv")["state"] == "done").all()


def test_several_runs_at_once_on_one_device(pack, tmp_path):
    done = run_script(pack, tmp_path / "out", tmp_path, "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all runs done" in done.stdout and "[8/8]" in done.stdout
    assert (pd.read_csv(tmp_path / "out/paper_gpu_status.csv")["state"] == "done").all()
    again = run_script(pack, tmp_path / "out", tmp_path, "--jobs", "2")
    assert again.stdout.count("cached") == 8, again.stdout
    stop = run_script(pack, tmp_path / "stop", tmp_path, "--jobs", "2", "--budget-min", "0.02", "--checkpoint-every", "1")
    assert stop.returncode == 0 and "paper_gpu: stopped at the budget" in stop.stdout, stop.stdout + stop.stderr
    bad = run_script(pack, tmp_path / "bad", tmp_path, "--jobs", "0")
    assert bad.returncode == 2 and "--jobs 0" in bad.stderr
