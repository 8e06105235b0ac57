"""Atomic writes, provenance, and the run cache.

A run's folder is named by a hash of its sorted arguments (DomainBed style). It holds
`config.json` (arguments + provenance), `metrics.json`, any other files the run writes, and a
`done` marker written last: a folder without `done` is an interrupted run and is redone (from its
training state, `algan.resume`, where it left one); a folder with it is never redone.

A run's hash determines its result: every run of the cache trains with the same number of torch
(intra-op) threads, `run_threads()` (1 unless `ALGAN_RUN_THREADS` says otherwise), whatever the calling
process or executor set, because CPU kernels split their reductions by thread and so round differently.
The count is in the run's provenance, not in its hash. A user's own `ALGAN().fit(...)` is not pinned.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from . import resume

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(os.environ.get("ALGAN_RESULTS", REPO_ROOT / "results"))  # the pages' CSVs (algan.pages)
RUN_THREADS_ENV = "ALGAN_RUN_THREADS"
_UMASK = os.umask(0)
os.umask(_UMASK)


# ---- atomic writes -----------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """`data` as JSON; NaN and infinities are written as null (json.dumps would write NaN: not JSON)."""
    write_text(path, json.dumps(_finite(data), indent=2, sort_keys=True, default=_json_default,
                                allow_nan=False) + "\n")


def write_csv(path: str | Path, frame, float_format: str | None = None) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)


SPLITS = "_splits"  # beside the run folders: each split's file lists, once per split hash


def write_splits(folder: Path, info: dict[str, Any], files: dict[str, list]) -> None:
    """A run's `splits.json`: `info` (sizes, seed, the split hash) in the run folder, and the file lists
    once per split hash in `<runs dir>/_splits/<hash>.json` (many runs share a split: ~25 KB each)."""
    store = folder.parent / SPLITS / f"{info['split_hash']}.json"
    if not store.exists():
        write_json(store, files)
    write_json(folder / "splits.json", {**info, "files": f"../{SPLITS}/{store.name}"})


def split_files(folder: Path) -> dict[str, list]:
    """A run's file lists per split, stored in its splits.json (older runs) or referenced from it."""
    files = json.loads((Path(folder) / "splits.json").read_text())["files"]
    return files if isinstance(files, dict) else json.loads((Path(folder) / files).read_text())


# ---- a run's scores ------------------------------------------------------------------------
SCORES, OLD_SCORES = "scores.npz", "scores.csv"  # the compact form; the CSV of runs made before it
# A run keeps the scores of its test rows only: its other rows (validation) keep split and label, their scores
# are NaN. No page reads a validation score back (the run's metrics hold its validation AUROC), and validation
# scores were half of a run folder's bytes. Runs made before this keep theirs.
SCORED_SPLITS = ("test",)
HISTORY, OLD_HISTORY = "history.csv.gz", "history.csv"  # per epoch, gzip'd; the plain CSV of older runs
LISTED = ("path", "id")  # columns that repeat the split's file list: rebuilt from the split store, not kept


def write_history(folder: str | Path, history: pd.DataFrame) -> None:
    """A run's per-epoch history as `history.csv.gz` (6 significant digits, as the plain CSV had; a fixed gzip
    time, so the same history gives the same bytes): about a third of the plain CSV's bytes."""
    text = history.to_csv(index=False, float_format="%.6g").encode()
    with atomic_path(Path(folder) / HISTORY) as tmp, open(tmp, "wb") as f, \
            gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:  # no name, no time
        gz.write(text)


def history_path(folder: str | Path) -> Path:
    """The file of a run's history: its history.csv.gz, or the history.csv of a run made before that form."""
    new, old = Path(folder) / HISTORY, Path(folder) / OLD_HISTORY
    return old if old.is_file() and not new.is_file() else new


def read_history(folder: str | Path) -> pd.DataFrame:
    """A run's per-epoch history (`write_history`, or an older run's history.csv)."""
    return pd.read_csv(history_path(folder))


def write_scores(folder: str | Path, frame: pd.DataFrame, scored_splits: tuple | None = None) -> None:
    """A run's scores as `scores.npz`, every value exact in a fraction of the CSV's bytes: numbers in the
    narrowest type that holds them exactly (a float64 column of float32 values as float32; floats as byte
    planes, which compress), text as codes, and a `path` / `id` column that repeats the split's file lists
    (rows in their order, `split_files`) not kept; each column read back in its own dtype (`read_scores`).
    With `scored_splits` (the runs pass SCORED_SPLITS) rows of other splits keep everything but their `score`,
    which is NaN."""
    folder = Path(folder)
    if scored_splits is not None and "score" in frame:
        frame = frame.assign(score=frame["score"].where(frame["split"].isin(scored_splits)))
    listed = _listed_rows(folder, frame["split"]) if "split" in frame and (folder / "splits.json").is_file() else None
    arrays, columns = {}, []
    for name, column in frame.items():
        columns.append([name, str(column.dtype)])
        values = column.to_numpy()
        if name in LISTED and listed is not None and values.tolist() == listed:
            continue
        if column.dtype.kind in "iub":
            bounds = values.min(initial=0), values.max(initial=0)
            arrays[name] = values.astype(np.result_type(*map(np.min_scalar_type, bounds)))
        elif column.dtype.kind == "f":
            if values.dtype == np.float64 and np.array_equal(values.astype(np.float32), values, equal_nan=True):
                values = values.astype(np.float32)
            # byte planes: a score's sign and exponent bytes repeat over the rows and compress apart from its mantissa
            arrays[f"{name}.bytes"] = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"))
                                                           .view(np.uint8).reshape(-1, values.itemsize).T)
        elif all(isinstance(v, str) for v in values):
            codes, text = pd.factorize(column)
            arrays[f"{name}.codes"] = codes.astype(np.min_scalar_type(len(text)))
            arrays[f"{name}.text"] = np.array(text, dtype=str)
        else:
            raise ValueError(f"{folder / SCORES}: column {name!r} ({column.dtype}) holds neither numbers nor only "
                             "strings; expected numbers, or text without missing values")
    arrays["meta"] = np.array(json.dumps({"rows": len(frame), "columns": columns}))
    with atomic_path(folder / SCORES) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            # ZipInfo's fixed date, not the time of writing: the same scores give the same bytes
            zf.writestr(zipfile.ZipInfo(f"{name}.npy"), buffer.getvalue(), zipfile.ZIP_DEFLATED, 9)


def read_scores(folder: str | Path) -> pd.DataFrame:
    """A run's scores (`write_scores`; an older run's scores.csv as pandas reads it), one row per scored item."""
    path = scores_path(folder)
    if path.name == OLD_SCORES:
        return pd.read_csv(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = {name: z[name] for name in z.files}
        meta = json.loads(str(stored["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a run's scores ({err}); expected the file algan.results.write_scores "
                         "writes: rerun the run or restore the file") from None
    columns = {}
    for name, dtype in meta["columns"]:
        if name in stored:
            columns[name] = stored[name]
        elif f"{name}.bytes" in stored:
            planes = stored[f"{name}.bytes"]  # (itemsize, rows)
            columns[name] = np.ascontiguousarray(planes.T).view(f"<f{len(planes)}").ravel()
        elif f"{name}.codes" in stored:
            columns[name] = stored[f"{name}.text"][stored[f"{name}.codes"]]
    for name, _ in meta["columns"]:
        if name not in columns:  # a column of the split's file list (write_scores kept none of it)
            columns[name] = _listed_rows(Path(folder), pd.Series(columns["split"]))
            if columns[name] is None:
                raise ValueError(f"{path}: its {name!r} column is the split's file lists, but the split store of "
                                 f"{Path(folder) / 'splits.json'} does not match its rows; expected the run's split")
    return pd.DataFrame({name: pd.Series(columns[name]).astype(dtype) for name, dtype in meta["columns"]},
                        index=pd.RangeIndex(meta["rows"]))


def scores_path(folder: str | Path) -> Path:
    """The file of a run's scores: its scores.npz, or the scores.csv of a run made before that form."""
    new, old = Path(folder) / SCORES, Path(folder) / OLD_SCORES
    return old if old.is_file() and not new.is_file() else new


def _listed_rows(folder: Path, split: pd.Series) -> list | None:
    """Each row's entry of the split's file list, for rows in blocks of one split each, in the list's order
    (e.g. val then test, or val, test, val, test for two checkpoints); None where the rows are not so."""
    files, rows, split = split_files(folder), [], split.reset_index(drop=True)
    for _, block in split.groupby(split.ne(split.shift()).cumsum(), sort=False):
        listed = files.get(block.iloc[0]) if isinstance(block.iloc[0], str) else None
        if listed is None or len(listed) != len(block):
            return None
        rows += listed
    return rows


def torch_save(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def atomic_folder(path: str | Path):
    """Yield a temporary folder to write a run's files into; if the block succeeds, a `done` marker is
    written last and the files become `path`'s. When `path` is absent the temporary folder is made beside
    it and renamed to it at once; into an existing folder, `path/done` is removed first, then the files are
    moved in one by one (each move atomic) and `done` last. A failure leaves `path` as it was (nothing, when
    it was not there) and removes the temporary folder; a killed process leaves only that hidden folder
    (`.<name>.*.partial`, or `.partial.*` inside `path`), never a `path` that looks done."""
    path = Path(path)
    exists = path.is_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path if exists else path.parent,
                                prefix=".partial." if exists else f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
        write_text(tmp / "done", datetime.now(timezone.utc).isoformat(timespec="seconds") + "\n")
        if not exists:
            os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders
            os.rename(tmp, path)
        else:
            (path / "done").unlink(missing_ok=True)  # an earlier output's: not done until every file is in
            for file in sorted(tmp.iterdir(), key=lambda f: f.name == "done"):
                os.replace(file, path / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(path: str | Path, need_bytes: int = 0, what: str = "--out") -> None:
    """Before any work: `path` (a folder, made later if absent) can be written and its file system has
    `need_bytes` free. Writing is tested by creating and removing a probe file (file modes alone do not
    tell: root ignores them). A ValueError of one line naming `what` and the folder otherwise."""
    path = Path(path)
    base = path
    while not base.exists() and base != base.parent:
        base = base.parent  # the nearest folder that is there: the output is made inside it
    if not base.is_dir():
        raise ValueError(f"{what} {path}: {base} is a file, expected a folder (or a path to make one at)")
    probe = base / f".algan-probe-{os.getpid()}"
    try:
        write_text(probe, "")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{what} {path}: cannot write in {base} ({err.strerror or type(err).__name__}); "
                         "choose a folder you can write") from None
    free = shutil.disk_usage(base).free
    if free < need_bytes:
        raise ValueError(f"{what} {path}: {free / 2**20:.0f} MiB free on the disk of {base}, expected at least "
                         f"{need_bytes / 2**20:.0f} MiB for the run; free some space or choose another folder")


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, inf) as None, for JSON."""
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist") and not isinstance(obj, (int, bool)):  # numpy / torch scalars and arrays
        return _finite(obj.tolist())
    return obj


def _json_default(obj: Any):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---- provenance --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The commit of the code this process runs, with '+dirty' when the library's files differed
    from it. Read once per process (at its first run), not per run: later commits do not change
    the code already imported."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "algan"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """A hash of the library's source (algan/**/*.py) as this process read it, once, at its first run:
    it names the code that made a run even where the commit is '+dirty', and a training checkpoint of
    other code is refused (algan.resume), while commits of results or pages change nothing."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: str | torch.device = "cpu") -> dict[str, Any]:
    import numpy, sklearn  # noqa: E401 - versions only
    return {
        "commit": git_commit(),
        "code": code_version(),
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---- run cache ---------------------------------------------------------------------------
def run_threads() -> int:
    """The torch threads of every run of the cache: $ALGAN_RUN_THREADS, default 1 (the count the cached
    runs of results/runs were made with; another count gives other scores under the same hash)."""
    text = os.environ.get(RUN_THREADS_ENV, "1")
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{RUN_THREADS_ENV}={text!r}: expected a positive whole number of torch threads per run")
    return int(text)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to `n` in the block (None: left as it is), restored after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def config_hash(args: dict[str, Any]) -> str:
    text = json.dumps(args, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_runs_dir() -> Path:
    return Path(os.environ.get("ALGAN_RUNS", REPO_ROOT / "results" / "runs"))


def run_dir(args: dict[str, Any], runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / config_hash(args)


def is_done(folder: Path) -> bool:
    return (folder / "done").exists()


def load_run(folder: Path) -> dict[str, Any]:
    return {"config": json.loads((folder / "config.json").read_text()),
            "metrics": json.loads((folder / "metrics.json").read_text()),
            "folder": folder}


def _same_settings(stored: dict[str, Any], resolved: dict[str, Any]) -> bool:
    """Stored settings equal the current ones, allowing settings added since the run was cached
    when they are at the value the run used (`config.ADDED_SETTINGS`)."""
    from .config import ADDED_SETTINGS

    current = json.loads(json.dumps(resolved, default=_json_default))
    for (section, name), value in ADDED_SETTINGS.items():
        if name not in stored.get(section, {}) and current.get(section, {}).get(name) == value:
            del current[section][name]
    return stored == current


def cached_run(args: dict[str, Any], fn: Callable[[Path], dict[str, Any]], runs_dir: str | Path | None = None,
               device: str | torch.device = "cpu", resolved: dict[str, Any] | None = None,
               checkpoint_every: int | None = None, pin_threads: bool = True) -> dict[str, Any]:
    """Run `fn(folder) -> metrics` once per `args`; later calls read the stored result.

    `config.json` gets the arguments, the fully `resolved` settings and provenance; `metrics.json`
    and `done` are written last. An interrupted run (no `done`) is cleared and redone, and so is a
    finished one whose stored resolved settings differ from `resolved` (a default changed since).
    With `checkpoint_every` (for an `fn` that trains one model), the training loop writes its state
    to the folder's `resume.TRAINING_STATE` that often (in epochs; 0: on SIGTERM / SIGINT only); an
    interrupted run keeps that file and continues from it, and a finished run deletes it.
    `fn` runs with `run_threads()` torch threads, the caller's count restored after (`pin_threads=False`:
    the caller's count, for a task that measures the machine as it is, `timing`); config.json's
    provenance records the count (`torch_threads`, and in `device` on a CPU).
    """
    threads = run_threads() if pin_threads else None  # a bad $ALGAN_RUN_THREADS stops here, before any work
    folder = run_dir(args, runs_dir)
    if is_done(folder):
        run = load_run(folder)
        stored = run["config"].get("resolved")
        if resolved is None or stored is None or _same_settings(stored, resolved):
            return run
    state = folder / resume.TRAINING_STATE
    keep = checkpoint_every is not None and not is_done(folder)  # an interrupted run's training state
    for path in folder.iterdir() if folder.exists() else ():
        if not (keep and path == state):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    with torch_threads(threads):
        meta = {"args": args, "hash": folder.name, "resolved": resolved, **provenance(device)}
        write_json(folder / "config.json", meta)
        start = time.perf_counter()
        if checkpoint_every is None:
            metrics = fn(folder)
        else:
            with resume.checkpointing(state, {"args": args, "resolved": resolved, "code": code_version()},
                                      checkpoint_every, save=torch_save):
                metrics = fn(folder)
            state.unlink(missing_ok=True)  # the run is complete: its training state is of no more use
    meta["wall_seconds"] = round(time.perf_counter() - start, 3)
    meta["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(folder / "config.json", meta)
    write_json(folder / "metrics.json", metrics)
    write_text(folder / "done", meta["finished_utc"] + "\n")
    return load_run(folder)
