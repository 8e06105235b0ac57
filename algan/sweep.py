"""Sweeps: a grid of runs, expanded to run-cache entries and run where they are not done yet.

A grid is a dict whose values are scalars or lists (the Cartesian product), or a list of such dicts
(their union, de-duplicated): `method` (an image method of `algan.runs.image.METHODS`, or `feature:<name>`
for `algan.runs.feature.METHODS`, `tabular:<name>` for `algan.runs.tabular.METHODS`), `dataset` (mvtec, mtd,
coil100; adbench for feature methods; classical for tabular methods: the data root's adbench/classical/),
`category` (MVTec-AD / ADBench / classical: names or "all" = every category or set under the data root),
`seed`, `profile`, and dotted config keys (`train.sigma`, `model.image_size`, ...). Each point is one
run of the run cache named by the same arguments as the tables' runs, so a sweep fills the cache the
book's pages read.

A run is claimed with a lock file beside its folder (`<hash>.lock`, host + pid), so sweeps started
together never run the same hash; a lock of a dead process on this host is stale and taken over. A
run that raises leaves `failed.json` (error, traceback, time, host) in its folder and the sweep goes on,
also when failed.json cannot be written (a full disk): the sweep then reports the failure, and says so
at the end. A run that was killed (or stopped by SIGTERM / SIGINT) continues from the training state in
its folder (`algan.resume`), not from epoch 1. The runs folder is checked (writable, room for a run)
before any run starts, and the local pool's workers end with the sweep's process, even on kill -9.
"""
from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
import typing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd

from . import results
from .runs import feature as feature_runs, image as image_runs, tabular as tabular_runs
from .config import PROFILES, READINGS, ModelConfig, TrainConfig, profile as make_profile, reading_overrides
from .data import DataError, MVTEC_CATEGORIES, resolve_root
from .data.common import require_dir

FEATURE_PREFIX = "feature:"
TABULAR_PREFIX = tabular_runs.PREFIX
IMAGE_DATASETS = ("mvtec", "mtd", "coil100")
FEATURE_SOURCES = ("adbench",) + feature_runs.IMAGE_SOURCES
WITH_CATEGORIES = ("mvtec", "adbench", tabular_runs.DATASET)
RUN_KEYS = ("method", "dataset", "category", "seed", "profile", "reading")
REQUIRED_KEYS = ("method", "dataset", "seed", "profile")
METHODS = (tuple(image_runs.METHODS) + tuple(FEATURE_PREFIX + m for m in feature_runs.METHODS)
           + tuple(TABULAR_PREFIX + m for m in tabular_runs.METHODS))
# Methods set up by algan.config; the others (kNN, the feature baselines, PyOD's) take no config keys.
CONFIG_METHODS = frozenset({"algan", "ganomaly", "skip_ganomaly", "alocc", FEATURE_PREFIX + "algan",
                            TABULAR_PREFIX + "algan"})
CONFIG_TYPES = {f"{section}.{name}": kind for section, cls in (("model", ModelConfig), ("train", TrainConfig))
                for name, kind in typing.get_type_hints(cls).items()}
STATES = ("done", "running", "failed", "todo")
FAILED = "failed.json"
EXECUTORS = ("local", "serial", "submitit")


# ---- grids ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run: `kwargs` for `run_image` / `run_feature` and the run cache's `args` (they name its folder)."""

    kind: str    # "image", "feature" or "tabular"
    kwargs: dict
    args: dict

    def __hash__(self) -> int:
        return hash(self.hash)

    @property
    def hash(self) -> str:
        return results.config_hash(self.args)

    @property
    def method(self) -> str:
        prefix = {"image": "", "feature": FEATURE_PREFIX, "tabular": TABULAR_PREFIX}[self.kind]
        return prefix + self.kwargs["method"]

    @property
    def label(self) -> str:
        k = self.kwargs
        data = k.get("dataset", k.get("source")) + (f"/{k['category']}" if k["category"] else "")
        sets = "".join(f" {key}={value}" for key, value in k["overrides"].items())
        return f"{self.method} {data} {k['profile']} seed {k['seed']}{sets}"

    def folder(self, runs_dir=None) -> Path:
        return results.run_dir(self.args, runs_dir)

    def run(self, data_root=None, runs_dir=None) -> dict[str, Any]:
        fn = {"image": image_runs.run_image, "feature": feature_runs.run_feature,
              "tabular": tabular_runs.run_tabular}[self.kind]
        return fn(**self.kwargs, data_root=data_root, runs_dir=runs_dir)


def expand_grid(grid, data_root=None) -> list[RunSpec]:
    """The runs of a grid (a dict) or of a list of grids (their union), in order, without duplicates.

    An override equal to the profile's own value is dropped (the run is the profile's default run),
    and config keys are dropped for methods without a config (kNN, the feature baselines).
    """
    grids = list(grid) if isinstance(grid, (list, tuple)) else [grid]
    if not grids:
        raise ValueError("empty list of grids: expected one or more grids (dicts of lists)")
    specs: dict[str, RunSpec] = {}
    for i, one in enumerate(grids):
        try:
            for spec in _expand_one(one, data_root):
                specs.setdefault(spec.hash, spec)
        except ValueError as err:
            if len(grids) == 1:
                raise
            raise type(err)(f"grid {i + 1}: {err}") from None
    return list(specs.values())


def _expand_one(grid, data_root) -> Iterator[RunSpec]:
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"empty grid {grid!r}: expected a dict with keys {list(REQUIRED_KEYS)}, optionally "
                         "category and config keys such as train.sigma")
    for key in grid:
        if key not in RUN_KEYS and key not in CONFIG_TYPES:
            raise ValueError(f"unknown grid key {key!r}: expected one of {list(RUN_KEYS)} or a config key "
                             "model.<name> / train.<name> of algan.config (e.g. train.sigma)")
    for key in REQUIRED_KEYS:
        if key not in grid:
            raise ValueError(f"grid key {key!r} missing: expected a value or a list of values")
    tabular_sets = None
    if tabular_runs.DATASET in _values("dataset", grid["dataset"]) and "category" in grid:
        try:
            tabular_sets = tabular_runs.tabular_sets(data_root)
        except DataError:
            tabular_sets = []
    axes = {key: _values(key, value, tabular_sets) for key, value in grid.items()}
    datasets = axes["dataset"]
    if "category" in axes and not any(d in WITH_CATEGORIES for d in datasets):
        raise ValueError(f"grid key 'category': data sets {datasets} have no categories (only {list(WITH_CATEGORIES)})")
    categories = {d: _categories(d, axes.get("category"), data_root) for d in datasets}
    config_keys = [k for k in axes if k in CONFIG_TYPES]
    for method, dataset in itertools.product(axes["method"], datasets):
        kind = method_kind(method)
        for category in categories[dataset]:
            for profile, reading, *values, seed in itertools.product(
                    axes["profile"], axes.get("reading", ["literal"]), *(axes[k] for k in config_keys), axes["seed"]):
                # a reading is a set of config keys; keys the grid names win over it
                overrides = {**reading_overrides(reading, "image" if kind == "image" else "feature",
                                                 baseline=method in image_runs.GAN_BASELINES),
                             **dict(zip(config_keys, values))}
                yield make_spec(method, dataset, category, profile, seed, overrides)


def method_kind(method: str) -> str:
    """"image", "feature" or "tabular", by the method's prefix."""
    return "feature" if method.startswith(FEATURE_PREFIX) else "tabular" if method.startswith(TABULAR_PREFIX) \
        else "image"


def _values(key: str, value, tabular_sets=None) -> list:
    """A grid value as a list, each element checked: one-line errors that name the key. Categories may also
    be the tabular sets under the data root (`tabular_sets`) when the grid names that data set."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"grid key {key!r}: empty list, expected one or more values")
    for v in values:
        if key in CONFIG_TYPES:
            kind = CONFIG_TYPES[key]
            ok = isinstance(v, (int, float) if kind is float else kind) and (kind is bool or not isinstance(v, bool))
            expected = kind.__name__
        else:
            known = {"method": METHODS, "dataset": IMAGE_DATASETS + ("adbench", tabular_runs.DATASET),
                     "profile": tuple(PROFILES), "reading": tuple(READINGS),
                     "category": MVTEC_CATEGORIES + tuple(tabular_sets or ()) + ("all",)}.get(key)
            ok = (isinstance(v, int) and not isinstance(v, bool)) if key == "seed" else v in known
            expected = "an integer" if key == "seed" else f"one of {list(known)}"
        if not ok:
            raise ValueError(f"grid key {key!r}: {v!r} ({type(v).__name__}), expected {expected}")
    return values


def _categories(dataset: str, given: Optional[list], data_root) -> list[Optional[str]]:
    if dataset not in WITH_CATEGORIES:
        return [None]
    if given is None:
        raise ValueError(f"grid key 'category' missing: data set {dataset!r} needs category names or 'all'")
    if dataset == tabular_runs.DATASET:
        present = tabular_runs.tabular_sets(data_root)
        unknown = [c for c in given if c != "all" and c not in present]
        if unknown:
            raise ValueError(f"grid key 'category': {unknown} are not tabular sets under the data root "
                             f"({tabular_runs.folder_of(data_root)}); expected some of {present} or 'all'")
        return present if "all" in given else list(given)
    if "all" not in given:
        return list(given)
    return (image_runs.categories_present(dataset, data_root) if dataset == "mvtec"
            else feature_runs.adbench_categories(data_root))


def make_spec(method: str, dataset: str, category: Optional[str], profile: str, seed: int,
              overrides: dict) -> RunSpec:
    """One checked run; a bad config value raises the config's one-line error."""
    kind = method_kind(method)
    if kind == "image" and dataset not in IMAGE_DATASETS:
        raise ValueError(f"dataset {dataset!r} with method {method!r}: image methods take one of "
                         f"{list(IMAGE_DATASETS)}; use feature:<method> for {dataset}")
    if (kind == "tabular") != (dataset == tabular_runs.DATASET):
        raise ValueError(f"dataset {dataset!r} with method {method!r}: tabular methods (tabular:<name>) take "
                         f"dataset {tabular_runs.DATASET!r}, and it takes only them")
    config_kind = "image" if kind == "image" else "feature"
    if method in CONFIG_METHODS:
        make_profile(profile, kind=config_kind, **overrides)  # checks the values
        base = make_profile(profile, kind=config_kind).to_dict()
        overrides = {k: v for k, v in overrides.items() if base[k.split(".")[0]][k.split(".")[1]] != v}
    else:
        overrides = {}
    if kind == "image":
        kwargs = dict(method=method, dataset=dataset, category=category, profile=profile, seed=seed,
                      overrides=overrides)
        return RunSpec("image", kwargs, image_runs.image_run_args(method, dataset, category, profile, seed, overrides))
    if kind == "tabular":
        name = method[len(TABULAR_PREFIX):]
        kwargs = dict(method=name, dataset=dataset, category=category, profile=profile, seed=seed, overrides=overrides)
        return RunSpec("tabular", kwargs, tabular_runs.tabular_run_args(name, category, profile, seed, overrides))
    name = method[len(FEATURE_PREFIX):]
    kwargs = dict(method=name, source=dataset, category=category, profile=profile, seed=seed, overrides=overrides)
    return RunSpec("feature", kwargs, feature_runs.feature_run_args(name, dataset, category, profile, seed, None,
                                                                    overrides))


def check_data(specs: list[RunSpec], data_root=None) -> Path:
    """The data root, after checking that each data set / category of the runs is there (folders only)."""
    root = resolve_root(data_root).absolute()
    fix = "point the data root (--data-root or $ALGAN_DATA) at the folder holding mvtec/, mtd/, coil-100/, adbench/"
    for dataset, category in dict.fromkeys((s.kwargs.get("dataset", s.kwargs.get("source")), s.kwargs["category"])
                                           for s in specs):
        if dataset == tabular_runs.DATASET:  # small files: each is read and split here, before any run starts
            path = root / tabular_runs.TABULAR_DIR / f"{category}.npz"
            if not path.is_file():
                raise DataError(f"{path}: file not found, expected a tabular set (X, y); {fix}")
            tabular_runs.load_tabular(category, 0, "cpu", data_root=root)
            continue
        if dataset == "adbench":
            path = root / feature_runs.ADBENCH_DIR / f"{category}.npz"
            if not path.is_file():
                raise DataError(f"{path}: file not found, expected ADBench's MVTec-AD ResNet-18 features; {fix}")
            continue
        rel = {"mvtec": f"mvtec/{category}", "mtd": "mtd", "coil100": "coil-100"}[dataset]
        require_dir(root, rel, f"the {dataset} data set" + (f" (category {category})" if category else ""), fix)
    return root


def check_runs_dir(specs: list[RunSpec], runs_dir: Path) -> None:
    """The runs folder can be written and has room for the largest run of the sweep (one run at a time
    needs its training state; a finished run keeps less)."""
    from .detector import run_disk_bytes

    configs = {json.dumps([s.kwargs["profile"], "image" if s.kind == "image" else "feature", s.kwargs["overrides"]],
                          sort_keys=True)
               for s in specs if s.method in CONFIG_METHODS}
    need = max((run_disk_bytes(make_profile(p, kind=k, **o)) for p, k, o in map(json.loads, configs)),
               default=64 * 2**20)
    results.check_output_dir(runs_dir, need, "--runs-dir")


def load_grid(path) -> Any:
    """A grid file: JSON, or YAML when PyYAML is installed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: grid file not found, expected a .json, .yaml or .yml file")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the grid as JSON") from None
        try:
            return yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({_one_line(err)})") from None
    if path.suffix.lower() != ".json":
        raise ValueError(f"{path}: expected a .json, .yaml or .yml grid file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


# ---- locks and failures ---------------------------------------------------------------------
def lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _holder(path: Path) -> Optional[dict]:
    """The lock's holder {host, pid, ...}; {} when unreadable (being written); None when there is no lock."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def _alive(holder: dict, path: Path) -> bool:
    """Held by a live process: a dead pid on this host is stale; another host's lock counts as live."""
    if not holder:  # just created and not yet written, or its writer died in between: stale after a minute
        try:
            return time.time() - path.stat().st_mtime < 60
        except FileNotFoundError:
            return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(folder: Path) -> bool:
    """Claim a run: create `<hash>.lock` (O_CREAT | O_EXCL) holding host and pid. False when a live
    process holds it; a stale lock is moved aside and the claim retried."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and _alive(holder, path):
                return False
            if holder is not None:
                aside = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.stale")
                try:
                    os.rename(path, aside)
                except FileNotFoundError:
                    continue  # another process moved it first
                if _holder(aside) != holder:  # a fresh lock replaced the stale one meanwhile: put it back
                    try:
                        os.link(aside, path)
                    except FileExistsError:
                        pass
                aside.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                       "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}, f)
        return True
    return False


def release_lock(folder: Path) -> None:
    path = lock_path(folder)
    holder = _holder(path)
    if holder and holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def run_state(folder: Path) -> str:
    """done (`done` marker) / running (lock of a live process) / failed (`failed.json`) / todo."""
    if results.is_done(folder):
        return "done"
    holder = _holder(lock_path(folder))
    if holder is not None and _alive(holder, lock_path(folder)):
        return "running"
    return "failed" if (folder / FAILED).is_file() else "todo"


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


UNRECORDED = "failed.json not written"  # ends the line of a failure that could not be recorded


def record_failure(folder: Path, err: BaseException) -> str:
    """Write `failed.json` (error type, message, traceback, time, host) atomically; return its line. When
    that cannot be written either (a full disk, a read-only folder) the line says so, and the sweep
    goes on: the failure is reported only by the sweep, and the run, without `done`, is redone later."""
    line = _one_line(f"{type(err).__name__}: {err}")
    try:
        results.write_json(folder / FAILED, {
            "error": type(err).__name__, "message": str(err),
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
            "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(), "pid": os.getpid()})
    except OSError as write_err:
        return f"{line} ({UNRECORDED}: {write_err.strerror or type(write_err).__name__})"
    return line


def failure_line(folder: Path) -> str:
    try:
        info = json.loads((folder / FAILED).read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    return _one_line(f"{info.get('error')}: {info.get('message')}")


def run_one(spec: RunSpec, data_root=None, runs_dir=None) -> dict[str, str]:
    """Run one spec under its lock (in whichever process or job the executor uses).

    Returns {hash, label, state, error}: state "done" (ran now), "cached" (done meanwhile), "running"
    (another process holds the lock) or "failed" (written to failed.json).
    """
    folder = spec.folder(runs_dir)
    out = {"hash": spec.hash, "label": spec.label, "error": ""}
    try:
        claimed = acquire_lock(folder)
    except OSError as err:  # the runs folder cannot take the lock file (full, read-only): the next run may
        return {**out, "state": "failed", "error": _one_line(f"{type(err).__name__}: the run could not be claimed "
                                                             f"({err.strerror or err}); {UNRECORDED}")}
    if not claimed:
        return {**out, "state": "running"}
    try:
        if results.is_done(folder):
            return {**out, "state": "cached"}
        (folder / FAILED).unlink(missing_ok=True)  # a retry: the old failure no longer holds
        try:
            spec.run(data_root=data_root, runs_dir=runs_dir)
        except Exception as err:  # noqa: BLE001 - any run's failure is recorded; the sweep goes on
            return {**out, "state": "failed", "error": record_failure(folder, err)}
        return {**out, "state": "done"}
    finally:
        release_lock(folder)


# ---- executors: each yields run_one's outcomes as runs finish ----------------------------------
def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _lost(spec: RunSpec, runs_dir: Path, err: BaseException) -> dict[str, str]:
    """A run whose process or job died without reporting (killed, out of memory): record it here."""
    return {"hash": spec.hash, "label": spec.label, "state": "failed",
            "error": record_failure(spec.folder(runs_dir), err)}


def _serial(todo, data_root, runs_dir, workers) -> Iterator[dict]:
    for spec in todo:
        yield run_one(spec, data_root, runs_dir)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """End this process when process `parent` ends, however it ends (kill -9 included): on Linux the kernel
    sends SIGKILL (prctl PR_SET_PDEATHSIG), elsewhere a thread polls the parent every second. A pool
    worker's run then continues from its training state on the next sweep, as after any kill."""
    if sys.platform.startswith("linux"):
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
            if os.getppid() != parent:  # the parent died before the call above
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="algan-parent-watch", daemon=True).start()


def _init_worker(parent: int, one_thread: bool) -> None:
    die_with_parent(parent)
    if one_thread:  # for the data loading and scoring around the runs (runs are pinned: results.run_threads)
        import torch
        torch.set_num_threads(1)


def _local(todo, data_root, runs_dir, workers) -> Iterator[dict]:
    """A process pool (spawned: torch and fork do not mix), one torch thread per worker when several;
    the workers end with this process, even when it is killed (`die_with_parent`)."""
    workers = min(workers or usable_cores(), len(todo))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(os.getpid(), workers > 1)) as pool:
        futures = {pool.submit(run_one, spec, data_root, runs_dir): spec for spec in todo}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as err:  # noqa: BLE001 - the worker died (BrokenProcessPool)
                yield _lost(futures[future], runs_dir, err)


def _submitit(todo, data_root, runs_dir, workers, folder=None, cluster=None, **parameters) -> Iterator[dict]:
    """One job array through submitit (SLURM on a cluster, cluster="local" for a local run); `parameters`
    go to `AutoExecutor.update_parameters` (timeout_min, slurm_partition, gpus_per_node, ...)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder or runs_dir / ".submitit", cluster=cluster)
    parameters = {"timeout_min": 24 * 60, "name": "algan-sweep", **parameters}
    if workers:
        parameters.setdefault("slurm_array_parallelism", workers)
    try:
        executor.update_parameters(**parameters)
    except (NameError, AssertionError, TypeError) as err:
        raise ValueError(f"submitit options {sorted(parameters)}: {_one_line(err)}") from None
    jobs = executor.map_array(run_one, todo, [data_root] * len(todo), [runs_dir] * len(todo))
    spec_of = {id(job): spec for job, spec in zip(jobs, todo)}
    poll = 1 if executor.cluster in ("local", "debug") else 10
    for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
        try:
            yield job.result()
        except Exception as err:  # noqa: BLE001 - the job died (timeout, node failure, cancelled)
            yield _lost(spec_of[id(job)], runs_dir, err)


_RUNNERS = {"serial": _serial, "local": _local, "submitit": _submitit}


# ---- sweep and status -----------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep did: `cached` runs were done before it, `finished` ran now, `running` were held by
    another process and left to it; `failures` holds {hash, label, error} of each failed run."""

    total: int
    cached: int = 0
    finished: int = 0
    running: int = 0
    failures: list[dict] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.cached + self.finished

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def unrecorded(self) -> int:
        """Failures that could not be written to their run's folder (reported here only)."""
        return sum(UNRECORDED in failure["error"] for failure in self.failures)

    def __str__(self) -> str:
        unrecorded = f" ({self.unrecorded} not recorded on disk: {UNRECORDED})" if self.unrecorded else ""
        return (f"done {self.done} ({self.finished} run now) / running {self.running} / failed {self.failed}"
                f"{unrecorded} of {self.total} runs")


def check_clean(runs_dir: Path, allow_dirty: bool = False) -> None:
    """Runs for the book's own cache (the repository's results/runs) come from committed code only: a
    run's provenance must name the code that made it. Other run folders (a user's, the tests') take any."""
    book_cache = (results.REPO_ROOT / "results" / "runs").resolve()
    if allow_dirty or Path(runs_dir).resolve() != book_cache:
        return
    commit = results.git_commit()
    if commit.endswith("+dirty"):
        raise ValueError(f"{book_cache}: the library (algan/) has uncommitted changes ({commit}); commit them "
                         "first so that these runs name their code, or pass allow_dirty=True (--allow-dirty)")


def sweep(grid, *, executor: str = "local", workers: Optional[int] = None, data_root=None, runs_dir=None,
          progress: bool = True, retry_failed: bool = True, allow_dirty: bool = False,
          **executor_options) -> SweepResult:
    """Run every run of `grid` that is not done yet; failed runs are retried unless `retry_failed=False`.

    executor: "local" (a process pool, `workers` default: the usable cores), "serial" (this process),
    "submitit" (`executor_options` go to `submitit.AutoExecutor`: folder=, cluster=, slurm_partition=,
    timeout_min=, ...). Bad input raises a one-line ValueError before any run starts, and so does a tree
    with uncommitted changes under algan/ when the runs go to the book's cache (`check_clean`). The local pool
    spawns its workers, so a script that calls this needs the `if __name__ == "__main__":` guard.
    """
    from tqdm import tqdm

    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: expected one of {list(EXECUTORS)}")
    if executor_options and executor != "submitit":
        raise ValueError(f"executor options {sorted(executor_options)}: only executor='submitit' takes options")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers={workers!r}: expected a positive integer")
    specs = expand_grid(grid, data_root=data_root)
    root = check_data(specs, data_root)
    runs_dir = Path(runs_dir or results.default_runs_dir()).absolute()
    check_clean(runs_dir, allow_dirty)
    check_runs_dir(specs, runs_dir)
    result = SweepResult(total=len(specs))
    todo = []
    for spec in specs:
        state = run_state(spec.folder(runs_dir))
        if state == "done":
            result.cached += 1
        elif state == "running":
            result.running += 1
        elif state == "failed" and not retry_failed:
            result.failures.append({"hash": spec.hash, "label": spec.label,
                                    "error": failure_line(spec.folder(runs_dir))})
        else:
            todo.append(spec)
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="sweep", unit="run", disable=not progress)
    if todo:
        for outcome in _RUNNERS[executor](todo, root, runs_dir, workers, **executor_options):
            state = outcome.pop("state")
            if state == "failed":
                result.failures.append(outcome)
            elif state == "done":
                result.finished += 1
            elif state == "cached":  # finished by another sweep after this one looked
                result.cached += 1
            else:
                result.running += 1
            bar.update()
            bar.set_postfix(failed=result.failed, refresh=False)
    bar.close()
    return result


@dataclass
class SweepStatus:
    """One row per run of a grid (run hash, label, state, error) and the counts per state."""

    table: pd.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        return {state: int((self.table["state"] == state).sum()) for state in STATES}

    def __str__(self) -> str:
        return " / ".join(f"{state} {n}" for state, n in self.counts.items())


def sweep_status(grid, *, data_root=None, runs_dir=None) -> SweepStatus:
    """Where each run of `grid` stands: done / running (a live process holds its lock) / failed / todo."""
    rows = []
    for spec in expand_grid(grid, data_root=data_root):
        folder = spec.folder(runs_dir)
        state = run_state(folder)
        rows.append({"run": spec.hash, "label": spec.label, "state": state,
                     "error": failure_line(folder) if state == "failed" else ""})
    return SweepStatus(pd.DataFrame(rows, columns=["run", "label", "state", "error"]))
