"""`algan data check ROOT`: counts against the official ones, every image fully decoded, odd files listed.
ROOT may also be one category folder in MVTec layout (a user's own data, `--dataset folder`): its layout,
masks and files are checked the same way, its counts against what training needs."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from .coil100 import FILE_RE, N_OBJECTS, N_POSES
from .common import DataError, diagnose, rel_posix, resolve_root, subdirs
from .decode import _WORKERS, progress_bar
from .features import read_npz
from .mtd import MTD_COUNTS
from .mvtec import MASK_SUFFIX, MVTEC_COUNTS
from .splits import MIN_ANOMALOUS, MIN_NORMAL

COLUMNS = ["dataset", "check", "expected", "found", "ok", "detail"]
FEATURES_DIR = "adbench/mvtec_resnet18"
# ADBench MVTec-AD ResNet-18 rows (total, defective): official train + test merged.
ADBENCH_ROWS = {c: (a + b + d, d) for c, (a, b, d) in MVTEC_COUNTS.items()}
_MAX_LISTED = 20  # per (dataset, check) in the text report; the DataFrame keeps every row


def _visible(folder: Path) -> list[Path]:
    """Visible files of a folder (hidden files such as .DS_Store are ignored, as the loaders do)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _decode_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(size, None) after a full decode, or (None, reason)."""
    try:
        with Image.open(path) as im:
            im.load()  # full load: verify() misses truncated pixel data
            return im.size, None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a finding, not a crash
        return None, f"{type(exc).__name__}: {exc}"


class _Checker:
    """Collects rows, and image files to decode at the end in one thread pool."""

    def __init__(self, root: Path):
        self.root = root
        self.rows: list[dict] = []
        self.images: list[tuple[str, Path]] = []
        self.pairs: list[tuple[str, Path, Path]] = []  # (dataset, image, mask): sizes must agree

    def rel(self, path: Path) -> str:
        return rel_posix(path, self.root)

    def count(self, dataset: str, check: str, expected: int | None, found: int, detail: str = "") -> None:
        ok = found == expected if expected is not None else found > 0
        if not ok and not detail:
            detail = (f"found {found}, official count {expected}; restore missing files or remove extra ones"
                      if expected is not None else "empty class folder: expected at least one file")
        self.rows.append(dict(dataset=dataset, check=check, expected=expected, found=found, ok=ok, detail=detail))

    def problem(self, dataset: str, check: str, detail: str) -> None:
        self.rows.append(dict(dataset=dataset, check=check, expected=None, found=None, ok=False, detail=detail))

    def decode_all(self, progress: bool = False) -> None:
        """Fully decode every collected image; corrupt files and image/mask size mismatches become rows."""
        paths = [p for _, p in self.images]
        with ThreadPoolExecutor(_WORKERS) as pool:
            results = dict(zip(paths, progress_bar(pool.map(_decode_size, paths), len(paths), "checking", progress)))
        for dataset, path in self.images:
            if results[path][1] is not None:
                self.problem(dataset, "corrupt", f"{self.rel(path)}: {results[path][1]}")
        for dataset, image, mask in self.pairs:
            a, b = results[image][0], results[mask][0]
            if a is not None and b is not None and a != b:
                self.problem(dataset, "size mismatch", f"{self.rel(mask)} is {b[0]}x{b[1]}, its image {a[0]}x{a[1]}")


def _check_mvtec_category(c: _Checker, cat_dir: Path, own: bool = False) -> None:
    """One mvtec/<category>: layout, counts, masks paired with defect images, odd files. `own`: a user's
    folder in MVTec layout, with no official counts and optional ground_truth/ (as `load_folder` reads it)."""
    ds = cat_dir.name if own else f"mvtec/{cat_dir.name}"
    expected = (None, None, None) if own else MVTEC_COUNTS.get(cat_dir.name)
    if expected is None:
        c.problem(ds, "unexpected", f"{c.rel(cat_dir)}: not one of the 15 MVTec-AD categories; move it out and load it as a 'folder'")
        return
    train, test, gt = cat_dir / "train" / "good", cat_dir / "test", cat_dir / "ground_truth"
    for folder in (train, test) + (() if own else (gt,)):
        if not folder.is_dir():
            c.problem(ds, "missing", f"{c.rel(folder)}/: folder not found")
    if not (train.is_dir() and test.is_dir()):
        return
    for extra in subdirs(cat_dir / "train"):
        if extra.name != "good":
            c.problem(ds, "unexpected", f"{c.rel(extra)}/: train/ holds only good/")
    images: dict[str, list[Path]] = {}
    for folder in [train] + subdirs(test):
        files = _visible(folder)
        for p in files:
            if p.suffix.lower() != ".png":
                c.problem(ds, "unexpected", f"{c.rel(p)}: expected only .png images")
        images[folder.name if folder != train else "train"] = [p for p in files if p.suffix.lower() == ".png"]
    defects = [k for k in images if k not in ("train", "good")]
    c.count(ds, "train/good", expected[0], len(images["train"]))
    c.count(ds, "test/good", expected[1], len(images.get("good", [])))
    c.count(ds, "test/<defect> total", expected[2], sum(len(images[k]) for k in defects))
    for k in defects:
        c.count(ds, f"test/{k}", None, len(images[k]))
    n_good, n_defect = len(images.get("good", [])), sum(len(images[k]) for k in defects)
    if own and (0 < n_good < 2 * MIN_NORMAL or 0 < n_defect < 2 * MIN_ANOMALOUS):  # test/ is halved: val, test
        c.problem(ds, "too few", f"test/: {n_good} good and {n_defect} defect images, expected at least "
                                 f"{2 * MIN_NORMAL} and {2 * MIN_ANOMALOUS} (halved into validation and test); "
                                 "add images")
    for files in images.values():
        c.images += [(ds, p) for p in files]
    if not gt.is_dir():
        return
    for k in defects:
        masks = {p.name: p for p in _visible(gt / k)} if (gt / k).is_dir() else {}
        for p in images[k]:
            mask = masks.pop(f"{p.stem}{MASK_SUFFIX}.png", None)
            if mask is None:
                if not own:  # a user's folder may leave masks out (a blank one is used)
                    c.problem(ds, "missing",
                              f"{c.rel(gt / k / (p.stem + MASK_SUFFIX + '.png'))}: mask of {c.rel(p)} not found")
            else:
                c.images.append((ds, mask))
                c.pairs.append((ds, p, mask))
        for name in sorted(masks):
            c.problem(ds, "orphan mask", f"{c.rel(gt / k / name)}: no image test/{k}/{name.replace(MASK_SUFFIX, '')}")
    for extra in subdirs(gt):
        if extra.name not in defects:
            c.problem(ds, "orphan mask", f"{c.rel(extra)}/: masks for a class that test/ does not have")


def _check_mtd(c: _Checker, mtd_dir: Path) -> None:
    """mtd/: per-type counts, every .jpg paired with its .png mask, odd files."""
    for extra in subdirs(mtd_dir):
        if extra.name not in MTD_COUNTS:
            c.problem("mtd", "unexpected", f"{c.rel(extra)}/: expected only {', '.join(MTD_COUNTS)}")
    for name, expected in MTD_COUNTS.items():
        imgs = mtd_dir / name / "Imgs"
        if not imgs.is_dir():
            c.problem("mtd", "missing", f"{c.rel(imgs)}/: folder not found")
            continue
        files = _visible(imgs)
        jpgs = {p.stem: p for p in files if p.suffix.lower() == ".jpg"}
        pngs = {p.stem: p for p in files if p.suffix.lower() == ".png"}
        for p in files:
            if p.suffix.lower() not in (".jpg", ".png"):
                c.problem("mtd", "unexpected", f"{c.rel(p)}: expected only .jpg images and .png masks")
        c.count("mtd", name, expected, len(jpgs))
        for stem in sorted(set(jpgs) - set(pngs)):
            c.problem("mtd", "missing", f"{c.rel(imgs / (stem + '.png'))}: mask of {c.rel(jpgs[stem])} not found")
        for stem in sorted(set(pngs) - set(jpgs)):
            c.problem("mtd", "orphan mask", f"{c.rel(pngs[stem])}: no image {stem}.jpg")
        c.images += [("mtd", p) for p in jpgs.values()] + [("mtd", p) for p in pngs.values()]
        c.pairs += [("mtd", jpgs[s], pngs[s]) for s in sorted(set(jpgs) & set(pngs))]


def _check_coil(c: _Checker, folder: Path) -> None:
    """coil-100/: exactly obj{1..100}__{0,5,...,355}.png."""
    expected = {(k, a) for k in range(1, N_OBJECTS + 1) for a in range(0, 360, 360 // N_POSES)}
    found = set()
    for p in _visible(folder):
        m = FILE_RE.match(p.name)
        key = (int(m.group(1)), int(m.group(2))) if m else None
        if key not in expected:
            c.problem("coil-100", "unexpected", f"{c.rel(p)}: expected only obj{{1..100}}__{{0,5,...,355}}.png")
            continue
        found.add(key)
        c.images.append(("coil-100", p))
    c.count("coil-100", "images", len(expected), len(found))
    c.count("coil-100", "objects", N_OBJECTS, len({k for k, _ in found}))
    for k, a in sorted(expected - found):
        c.problem("coil-100", "missing", f"coil-100/obj{k}__{a}.png")


def _check_features(c: _Checker, folder: Path) -> None:
    """adbench/mvtec_resnet18/: one valid .npz per category with the published row counts."""
    ds = FEATURES_DIR
    files = {p.stem: p for p in _visible(folder) if p.suffix == ".npz"}
    for p in _visible(folder):
        if p.suffix != ".npz" or p.stem not in ADBENCH_ROWS:
            c.problem(ds, "unexpected", f"{c.rel(p)}: expected only <category>.npz for the 15 MVTec-AD categories")
    for cat, (rows, defective) in ADBENCH_ROWS.items():
        if cat not in files:
            c.problem(ds, "missing", f"{ds}/{cat}.npz")
            continue
        try:
            _, y = read_npz(files[cat])
        except DataError as exc:
            c.problem(ds, "corrupt", str(exc))
            continue
        c.count(ds, f"{cat} rows", rows, len(y))
        c.count(ds, f"{cat} defective", defective, int(y.sum()))


def is_category_folder(folder: Path) -> bool:
    """A user's category folder in MVTec layout (train/good and test/), not a category of an mvtec/ data root
    (that one is checked from its root, whose place the report names)."""
    return (folder / "train" / "good").is_dir() and (folder / "test").is_dir() and folder.parent.name != "mvtec"


def _check_links(c: _Checker, root: Path) -> None:
    """Symbolic links under root that loop (to a folder that holds them) or lead nowhere: one problem each."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            target = path.resolve(strict=False)
            if not target.exists():
                c.problem("(root)", "symlink", f"{c.rel(path)}: a symbolic link to {target}, which does not exist")
            elif target.is_dir() and path.parent.resolve().is_relative_to(target):
                c.problem("(root)", "symlink", f"{c.rel(path)}: a symbolic link to {target}, a folder that holds "
                                               "it (a loop); remove the link")


def check_root(root: str | os.PathLike | None, progress: bool = False) -> tuple[pd.DataFrame, bool]:
    """Check every data set found under root, or root itself when it is one category folder in MVTec layout;
    (one row per check or problem, ok). A missing root is a DataError. `progress`: a bar while decoding
    PROGRESS_MIN files or more."""
    root = resolve_root(root)
    c = _Checker(root)
    seen = []
    if is_category_folder(root):
        seen.append(root.name)
        _check_mvtec_category(c, root, own=True)
    if (root / "mvtec").is_dir():
        seen.append("mvtec")
        cats = subdirs(root / "mvtec")
        if not cats:
            c.problem("mvtec", "missing", "mvtec/: no category folders, expected mvtec/<category>/")
        for cat_dir in cats:
            _check_mvtec_category(c, cat_dir)
    for rel, fn in (("mtd", _check_mtd), ("coil-100", _check_coil), (FEATURES_DIR, _check_features)):
        if (root / rel).is_dir():
            seen.append(rel)
            fn(c, root / rel)
    if not seen:
        hints = [h for h in (diagnose(root, r) for r in ("mvtec", "mtd", "coil-100", FEATURES_DIR)) if h]
        c.problem("(root)", "layout", f"{root}: no mvtec/, mtd/, coil-100/ or {FEATURES_DIR}/ here; "
                  + (hints[0] if hints else "point the root at the folder that holds them"))
    _check_links(c, root)
    c.decode_all(progress)
    df = pd.DataFrame(c.rows, columns=COLUMNS)
    df["expected"] = df["expected"].astype("Int64")
    df["found"] = df["found"].astype("Int64")
    df["ok"] = df["ok"].astype(bool)
    return df, bool(df["ok"].all()) and len(df) > 0


def format_report(df: pd.DataFrame) -> str:
    """Plain-text report: the count table, then problems (at most 20 listed per kind), then a summary line."""
    counts = df[df["expected"].notna() | df["found"].notna()]
    lines = []
    if len(counts):
        table = counts.assign(status=counts["ok"].map({True: "ok", False: "MISMATCH"}))
        table = table[["dataset", "check", "expected", "found", "status"]].copy()
        for col in ("expected", "found"):
            table[col] = [("-" if pd.isna(v) else str(int(v))) for v in table[col]]
        lines.append(table.to_string(index=False))
    problems = df[~df["ok"]]
    if len(problems):
        lines.append("")
        lines.append("Problems:")
        for (dataset, check), group in problems.groupby(["dataset", "check"], sort=False):
            for detail in group["detail"].head(_MAX_LISTED):
                lines.append(f"  [{dataset}] {check}: {detail}")
            if len(group) > _MAX_LISTED:
                lines.append(f"  [{dataset}] {check}: ... and {len(group) - _MAX_LISTED} more")
    n_bad = int((~df["ok"]).sum())
    lines.append("")
    lines.append(f"{len(df)} checks, {n_bad} problems" + ("" if n_bad else ": all data sets OK"))
    return "\n".join(lines)
