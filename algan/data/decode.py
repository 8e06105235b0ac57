"""Image decoding with an in-process cache: each file is decoded once per (file, size, mode) per process."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .common import DataError

# Modes PIL stores with one channel; "auto" decoding keeps these as 1 channel and makes the rest RGB.
SINGLE_CHANNEL_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
# Cached arrays are uint8 (C, H, W): 4x smaller than float, converted per load. They are numpy, not torch:
# this torch build copies uint8 tensors ~50x slower than np.stack does.
_CACHE: dict[tuple, np.ndarray] = {}
_LOCK = threading.Lock()
# PIL releases the GIL while decoding and resizing, so threads scale to the cores.
_WORKERS = max(1, min(8, os.cpu_count() or 1))
PROGRESS_MIN = 300  # files: from this many a command that asks for it shows a progress bar (on stderr)


def progress_bar(items, total: int, desc: str, show: bool):
    """`items` wrapped in a tqdm bar when `show` and there are at least PROGRESS_MIN of them."""
    if not show or total < PROGRESS_MIN:
        return items
    from tqdm import tqdm
    return tqdm(items, total=total, desc=desc, unit="file")


def clear_cache() -> None:
    """Forget every decoded file (tests; or to free memory)."""
    with _LOCK:
        _CACHE.clear()


def cache_size() -> int:
    """Number of decoded files held in memory."""
    return len(_CACHE)


def _key(path: Path, size: int | None, mode: str, kind: str) -> tuple:
    """Cache key; mtime and byte size make an edited or replaced file decode again."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing, expected an image here; restore the file or fix the path") from None
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size, size, mode, kind)


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit grayscale scaled to 8 bits (PIL's own conversion would clip at 255 instead)."""
    if im.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    if im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return im


def decode_file(path: Path, size: int | None, mode: str = "auto", kind: str = "image") -> np.ndarray:
    """Fully decode one file to uint8 (C, H, W), resized to size x size (bilinear; masks: nearest, 0/1)."""
    try:
        with Image.open(path) as im:
            im.load()  # full decode: a truncated file fails here, which Image.verify() would not catch
            im = _to_8bit(ImageOps.exif_transpose(im))  # users' camera JPEGs may carry a rotation tag
            if kind == "mask":
                im, resample = im.convert("L"), Image.Resampling.NEAREST
            else:
                target = mode if mode != "auto" else ("L" if im.mode in SINGLE_CHANNEL_MODES else "RGB")
                im, resample = (im if im.mode == target else im.convert(target)), Image.Resampling.BILINEAR
            if size is not None and im.size != (size, size):
                # Pillow's bilinear resize widens its kernel when shrinking, i.e. it antialiases.
                im = im.resize((size, size), resample)
            arr = np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing, expected an image here; restore the file or fix the path") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path}: cannot decode image ({type(exc).__name__}: {exc}); expected a readable PNG/JPEG image; "
            f"replace it with a good copy or delete it"
        ) from exc
    if kind == "mask":
        arr = (arr > 0).astype(np.uint8)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


class Decoder:
    """Decodes through the process cache; new entries wait in `pending` until commit(), so a failed load caches nothing."""

    def __init__(self) -> None:
        self.pending: dict[tuple, np.ndarray] = {}

    def decode(self, paths: Sequence[Path], size: int | None, mode: str = "auto", kind: str = "image",
               progress: bool = False) -> list[np.ndarray]:
        """uint8 (C, H, W) arrays for `paths`, in order; the first bad file (in list order) raises DataError.
        With `progress`, a bar shows the decoding of PROGRESS_MIN files or more."""
        keys = [_key(Path(p), size, mode, kind) for p in paths]
        out: list[np.ndarray | None] = []
        todo = []
        for i, key in enumerate(keys):
            hit = _CACHE.get(key)
            if hit is None:
                hit = self.pending.get(key)
            if hit is None:
                todo.append(i)
            out.append(hit)
        if todo:
            work = lambda i: decode_file(Path(paths[i]), size, mode, kind)  # noqa: E731
            if len(todo) < 16 or _WORKERS == 1:
                results = [work(i) for i in progress_bar(todo, len(todo), "decoding", progress)]
            else:
                with ThreadPoolExecutor(_WORKERS) as pool:  # map re-raises the first failure in list order
                    results = list(progress_bar(pool.map(work, todo), len(todo), "decoding", progress))
            for i, t in zip(todo, results):
                out[i] = t
                self.pending[keys[i]] = t
        return out  # type: ignore[return-value]

    def commit(self) -> None:
        """Keep this load's decoded files for later loads."""
        with _LOCK:
            _CACHE.update(self.pending)
        self.pending = {}


# uint8 -> [-1, 1] (the generator's tanh range) as a table: one pass, ~3x faster than .float().div_().sub_(),
# and bit-identical to x / 127.5 - 1 in float32.
_UNIT = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
_CHUNK = 64  # images per np.stack + lookup, so the uint8 staging block stays in cache


def _expand(a: np.ndarray, channels: int) -> np.ndarray:
    """A 1-channel image repeated to `channels` (grayscale in an RGB set), without copying."""
    return a if a.shape[0] == channels else np.broadcast_to(a, (channels, *a.shape[1:]))


def stack(images: Sequence[np.ndarray], channels: int, size: int) -> torch.Tensor:
    """uint8 (C, H, W) arrays -> uint8 tensor (N, channels, size, size) (masks)."""
    if not len(images):
        return torch.empty((0, channels, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack([_expand(a, channels) for a in images]))


def stack_unit(images: Sequence[np.ndarray], channels: int, size: int) -> torch.Tensor:
    """uint8 (C, H, W) arrays -> float32 tensor (N, channels, size, size) in [-1, 1]."""
    out = np.empty((len(images), channels, size, size), dtype=np.float32)
    for i in range(0, len(images), _CHUNK):
        block = np.stack([_expand(a, channels) for a in images[i:i + _CHUNK]])
        np.take(_UNIT, block, out=out[i:i + _CHUNK])
    return torch.from_numpy(out)


def load_images(paths: Sequence[str | os.PathLike], image_size: int, grayscale: bool,
                progress: bool = False) -> torch.Tensor:
    """Decode a user's files for scoring: float32 (N, C, H, W) in [-1, 1], C = 1 if grayscale else 3 (with
    `progress`, a bar for PROGRESS_MIN files or more)."""
    if not paths:
        raise DataError("no image paths given: expected at least one image file; pass the files to score")
    files = [Path(p) for p in paths]
    for p in files:
        if not p.is_file():
            raise DataError(f"{p}: image file not found, expected an existing PNG/JPEG file; check the path")
    decoder = Decoder()
    images = decoder.decode(files, image_size, "L" if grayscale else "RGB", progress=progress)
    decoder.commit()
    return stack_unit(images, 1 if grayscale else 3, image_size)
