"""Compact data packs: only the files a set of runs reads, already at its resolution, in the layouts the
loaders read, so that `ALGAN_DATA=<pack>` trains those runs (`algan pack --for paper-gpu OUT`).

A pack is made with the loaders' own listing (`read_layout`, `read_mtd`) and decoding (`decode_file`), so
each image is what a run at the pack's size would have decoded from the data root: PNG files are
written as PNG (lossless: the same pixels), JPEG files as JPEG at `quality` (MTD, whose originals are
JPEGs, and whose loader reads `.jpg` images with `.png` masks of the same name beside them: lossless
PNG would not fit the size limit), masks as 0/255 PNG. `PACK.json` lists every file, so that
`check_pack` can name a missing one before any run starts.
"""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__, results
from .data.common import DataError, resolve_root
from .data.decode import _WORKERS, decode_file
from .data.mtd import read_mtd
from .data.mvtec import read_layout
from .data.transforms import GRAYSCALE

MANIFEST = "PACK.json"
LIMIT_MIB = 40.0  # the pack and the code together (issue 19: what travels to a bare accelerator machine)
# name -> (image size, [(data set, category)]): what benchmarks/paper_gpu.py runs
PACKS: dict[str, tuple[int, list[tuple[str, str | None]]]] = {
    "paper-gpu": (256, [("mvtec", "bottle"), ("mtd", None)]),
}
LICENCE_FILES = ("license.txt", "readme.txt")  # copied as they are where a data set has them


def pack_files(root: Path, dataset: str, category: str | None) -> list[tuple[str, Path, str, str]]:
    """(relative path, source file, kind "image" / "mask" / "copy", decode mode) of every file a run reads."""
    if dataset == "mvtec":
        cat_dir = root / "mvtec" / category
        train, test = read_layout(cat_dir, root, require_masks=True)
        mode = "L" if category in GRAYSCALE else "auto"
        extra = [(f"mvtec/{category}/{n}", cat_dir / n, "copy", "") for n in LICENCE_FILES if (cat_dir / n).is_file()]
    elif dataset == "mtd":
        train, test, mode, extra = read_mtd(root), [], "L", []
    else:
        raise ValueError(f"pack: data set {dataset!r} is not packed: expected mvtec or mtd")
    out = []
    for r in train + test:
        out.append((r.rel, r.path, "image", mode))
        if r.mask is not None:
            out.append((r.mask.relative_to(root).as_posix(), r.mask, "mask", "L"))
    return out + extra


def _write(src: Path, dst: Path, kind: str, mode: str, size: int, quality: int) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if kind == "copy":
        dst.write_bytes(src.read_bytes())
        return dst.stat().st_size
    arr = decode_file(src, size, mode, kind)                        # uint8 (C, H, W), as a run decodes it
    arr = arr[0] * (255 if kind == "mask" else 1) if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    image = Image.fromarray(np.ascontiguousarray(arr))
    if dst.suffix.lower() in (".jpg", ".jpeg"):
        image.save(dst, format="JPEG", quality=quality)
    else:
        image.save(dst, format="PNG", optimize=True)
    return dst.stat().st_size


def code_bytes() -> int | None:
    """Bytes of the repository's tracked files but results/ and book/ (None without git)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=results.REPO_ROOT, capture_output=True,
                               check=True, timeout=30).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        return None
    paths = [results.REPO_ROOT / n for n in names if n and not n.startswith(("results/", "book/"))]
    return sum(p.stat().st_size for p in paths if p.is_file())


def make_pack(name: str, out: str | Path, data_root=None, quality: int = 90) -> dict:
    """Write pack `name` (PACKS) from the data root into `out`; returns its manifest."""
    if name not in PACKS:
        raise ValueError(f"--for {name!r}: unknown pack, expected one of {sorted(PACKS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality {quality}: expected a JPEG quality in [1, 100]")
    root, out = resolve_root(data_root), Path(out)
    if out.resolve() == root.resolve():
        raise ValueError(f"pack {out}: is the data root itself; give another folder")
    size, sets = PACKS[name]
    files = [f for dataset, category in sets for f in pack_files(root, dataset, category)]
    with ThreadPoolExecutor(_WORKERS) as pool:  # PIL releases the GIL while decoding and encoding
        sizes = list(pool.map(lambda f: _write(f[1], out / f[0], f[2], f[3], size, quality), files))
    manifest = {"pack": name, "image_size": size, "jpeg_quality": quality, "algan": __version__,
                "source": str(root), "data": [list(s) for s in sets],
                "files": {rel: n for (rel, *_), n in zip(files, sizes)}}
    results.write_json(out / MANIFEST, manifest)
    return manifest


def check_pack(root: str | Path, name: str) -> dict:
    """The manifest of the pack at `root`, after checking it is pack `name` and has every file it lists."""
    root = Path(root)
    fix = f"make it with: algan pack --for {name} {root}"
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root}: not a data pack (no {MANIFEST}); {fix}")
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("pack") != name:
        raise DataError(f"{root}: a pack for {manifest.get('pack')!r}, expected one for {name!r}; {fix}")
    for rel in manifest["files"]:
        if not (root / rel).is_file():
            raise DataError(f"{root / rel}: missing from the pack, a file the runs read; {fix}")
    return manifest


def size_report(manifest: dict) -> tuple[str, bool]:
    """'pack 38.1 MiB + code 0.7 MiB = 38.8 MiB (limit 40 MiB)' and whether it is within the limit."""
    mib = lambda n: n / 2**20  # noqa: E731
    pack = sum(manifest["files"].values())
    code = code_bytes()
    if code is None:
        return f"pack {mib(pack):.1f} MiB in {len(manifest['files'])} files (code size unknown: no git)", mib(pack) <= LIMIT_MIB
    total = mib(pack + code)
    return (f"pack {mib(pack):.1f} MiB in {len(manifest['files'])} files + code {mib(code):.1f} MiB = {total:.1f} MiB "
            f"(limit {LIMIT_MIB:g} MiB)", total <= LIMIT_MIB)
