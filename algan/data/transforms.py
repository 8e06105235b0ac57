"""Pre-processing of Section IV-B-5: the per-category augmentation table, batch augmentation, extra channels."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..device import to_device

# The one per-category augmentation table (paper, Section IV-B-5, ALGAN-image).
# Ops: "hflip" (width flip), "vflip" (height flip), "rotate" (uniform angle in [-180, 180) degrees).
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    # MVTec-AD textures: vertical and horizontal flips; wood horizontal only.
    "carpet": ("hflip", "vflip"),
    "grid": ("hflip", "vflip"),
    "leather": ("hflip", "vflip"),
    "tile": ("hflip", "vflip"),
    "wood": ("hflip",),
    # MVTec-AD objects.
    "bottle": ("hflip", "vflip", "rotate"),
    "hazelnut": ("hflip", "vflip", "rotate"),
    "toothbrush": ("hflip",),
    "transistor": ("hflip",),
    "zipper": ("hflip",),
    "metal_nut": ("rotate",),
    "screw": ("rotate",),
    "cable": (),
    "capsule": (),
    "pill": (),
    # MTD and COIL-100: horizontal flip.
    "mtd": ("hflip",),
    "coil100": ("hflip",),
    # A user's own folder whose category is not an MVTec-AD name.
    "folder": ("hflip",),
}
# Categories converted to one grayscale channel (paper: "Toothbrush was converted into grayscale").
GRAYSCALE = frozenset({"toothbrush"})
OPS = ("hflip", "vflip", "rotate")


def add_extra_channels(x: torch.Tensor) -> torch.Tensor:
    """ALGAN-image input: the image plus its channel-axis max and channel-axis mean."""
    return torch.cat([x, x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)


FILLS = {"black": "zeros", "reflection": "reflection", "border": "border"}  # train.rotate_fill -> grid_sample


def rotate(x: torch.Tensor, degrees: torch.Tensor, fill: str = "black") -> torch.Tensor:
    """Rotate each (B, C, H, W) image by its angle, counter-clockwise as displayed (bilinear). The corners
    it uncovers become -1 (`fill="black"`), the mirrored image ("reflection") or its edge pixels ("border")."""
    if fill not in FILLS:
        raise ValueError(f"rotation fill {fill!r}: expected one of {tuple(FILLS)} (train.rotate_fill)")
    rad = degrees.to(device=x.device, dtype=torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Shift to [0, 2] so grid_sample's zero padding means black (-1) after shifting back.
    return F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode=FILLS[fill], align_corners=False) - 1.0


def augment(x: torch.Tensor, ops: Sequence[str], generator: torch.Generator, fill: str = "black") -> torch.Tensor:
    """Random per-sample augmentation of a batch; each op draws B uniforms from the CPU generator, in table order."""
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation op(s) {unknown}; expected ops among {OPS}")
    if not ops or x.shape[0] == 0:
        return x
    b = x.shape[0]
    # All draws come from the CPU generator, so the result depends only on its state, not on x's device;
    # they reach the device without a host sync.
    draws = [torch.rand(b, generator=generator) for _ in ops]
    for op, u in zip(ops, draws):
        u = to_device(u, x.device)
        if op == "hflip":
            x = torch.where((u < 0.5).view(b, 1, 1, 1), x.flip(-1), x)
        elif op == "vflip":
            x = torch.where((u < 0.5).view(b, 1, 1, 1), x.flip(-2), x)
        else:
            x = rotate(x, u * 360.0 - 180.0, fill)
    return x


# ---- CutPaste-style anomalies (Li et al. 2021): the robustness page, and train.select="proxy" for images ----
def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(1, generator=gen).item()


def cutpaste_boxes(n: int, height: int, width: int, gen: torch.Generator, area=(0.2, 0.3), aspect=(1 / 3, 3.0)):
    """n (h, w, y_from, x_from, y_to, x_to): a patch of `area` share of the image (uniform), aspect ratio
    w / h log-uniform in `aspect`, cut at one random place and pasted at another (CutPaste, Li et al. 2021).
    The defaults are the robustness page's (ALGAN Sec. V-G); CutPaste's own are in algan.models.cutpaste.PAPER."""
    boxes = []
    for _ in range(n):
        share = _uniform(gen, *area)
        ratio = math.exp(_uniform(gen, math.log(aspect[0]), math.log(aspect[1])))
        h = min(height, max(1, round(math.sqrt(share * height * width / ratio))))
        w = min(width, max(1, round(share * height * width / h)))
        ys = torch.randint(0, height - h + 1, (2,), generator=gen).tolist()
        xs = torch.randint(0, width - w + 1, (2,), generator=gen).tolist()
        boxes.append((h, w, ys[0], xs[0], ys[1], xs[1]))
    return boxes


def jitter_patch(patch: torch.Tensor, gen: torch.Generator, jitter: float, hue: float = 0.0) -> torch.Tensor:
    """A patch in [0, 1] (C, h, w) with brightness, contrast and (colour only) saturation each scaled by a
    factor in 1 +- `jitter`, and (colour only, when `hue` > 0) its hue shifted by up to +-`hue` turns."""
    b, c, s = (1 + jitter * (2 * torch.rand(3, generator=gen) - 1)).tolist()
    patch = patch * b
    patch = (patch - patch.mean()) * c + patch.mean()
    if patch.shape[0] == 3:
        grey = patch.mean(0, keepdim=True)
        patch = (patch - grey) * s + grey
    if hue > 0:
        shift = hue * (2 * torch.rand(1, generator=gen).item() - 1)
        if patch.shape[0] == 3:
            from torchvision.transforms.functional import adjust_hue
            patch = adjust_hue(patch.clamp(0, 1), shift)
    return patch.clamp(0, 1)


def cutpaste(images: torch.Tensor, gen: torch.Generator, jitter: float = 0.1, *, area=(0.2, 0.3),
             aspect=(1 / 3, 3.0), hue: float = 0.0) -> torch.Tensor:
    """CutPaste anomalies of images in [-1, 1] (N, C, H, W): per image a patch of `area` share (uniform), aspect
    ratio in `aspect` (log-uniform), colour-jittered (`jitter_patch`), pasted back at a random place of the same
    image. The defaults are the robustness page's (20-30 %, 3:1 to 1:3, no hue); CutPaste's own, with
    P = algan.models.cutpaste.PAPER: `cutpaste(x, gen, P["jitter"], area=P["area"], aspect=P["aspect"],
    hue=P["jitter"])`."""
    out = images.clone()
    for i, (h, w, y0, x0, y1, x1) in enumerate(cutpaste_boxes(len(images), *images.shape[-2:], gen, area, aspect)):
        patch = jitter_patch((images[i, :, y0:y0 + h, x0:x0 + w] + 1) / 2, gen, jitter, hue)
        out[i, :, y1:y1 + h, x1:x1 + w] = patch * 2 - 1
    return out
