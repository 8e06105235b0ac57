"""CutPaste (Li, Sohn, Yoon & Pfister, CVPR 2021, arXiv:2104.04015) as an image detector.

A CNN pretrained on ImageNet is fine-tuned to tell normal training images from CutPaste images
(a rectangular patch cut from the image, colour-jittered and pasted elsewhere on it) and, in the
3-way variant, from CutPaste-scar images (a thin long patch, rotated). The classifier is the
pooled CNN embedding, an MLP projection head and a linear layer. After training, a Gaussian
density estimator (GDE) is fitted to the L2-normalised pooled embeddings of the normal training
images; an image's score is its Mahalanobis distance to that Gaussian (Ledoit-Wolf shrinkage,
as the PyTorch reimplementation Runinho/pytorch-cutpaste does; the distance, not its square).

`fit(X, X_val=None, y_val=None)` and `decision_function(X) -> (N,)` (higher = more anomalous) take
float images (N, C, H, W) in [-1, 1] as every image detector here; grey images (C = 1) are
repeated to RGB; images are resized to the setting's `image_size` inside.

The augmentations are also used by the robustness page (`algan.runs.robustness`: `algan.data.transforms.cutpaste`
is `cutpaste` here, with that page's own area and aspect ranges as the defaults).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import _uniform, cutpaste, cutpaste_boxes, jitter_patch  # noqa: F401 (the augmentations)

# ---- the paper's settings, in one place --------------------------------------------------------------
# Sources: [CP] Li et al. 2021 (arXiv:2104.04015), Sec. 3.1 (the two augmentations), Sec. 4 / Appendix A
# (implementation details); [PT] the PyTorch reimplementation Runinho/pytorch-cutpaste (cutpaste.py,
# run_training.py, density.py), which follows [CP] and fills in what it leaves open. Not checked against a
# copy of [CP] in this project (none is stored): the numbers are as this module's author knows the paper.
PAPER = {
    "area": (0.02, 0.15),      # [CP] App. A; [PT] CutPasteNormal(area_ratio=[0.02, 0.15]): patch area / image area
    "aspect": (0.3, 3.3),      # [CP] App. A: w/h in (0.3, 1) U (1, 3.3); [PT] samples log-uniformly over (0.3, 1/0.3)
    "jitter": 0.1,             # [PT] ColorJitter(brightness=contrast=saturation=hue=0.1) of the patch; [CP]: jitter
    "scar_width": (2, 16),     # [CP] Sec. 3.1 / App. A; [PT] CutPasteScar(width=[2, 16]): px at 256 x 256
    "scar_length": (10, 25),   # [CP] / [PT] CutPasteScar(height=[10, 25]): px at 256 x 256
    "scar_rotation": (-45.0, 45.0),  # [CP] / [PT] CutPasteScar(rotation=[-45, 45]): degrees
    "image_size": 256,         # [CP] Sec. 4: images resized to 256 x 256; [PT] --size 256
    "backbone": "resnet18",    # [CP] Sec. 4: ImageNet-pretrained ResNet-18 (here only where its weights are on disk)
    "head": (512,) * 8 + (128,),  # [PT] head_layers: 8 x (Linear 512, BN, ReLU), then 128; [CP]: "MLP projection head"
    "lr": 0.03,                # [CP] Sec. 4 / [PT]: SGD, learning rate 0.03
    "momentum": 0.9,           # [CP] / [PT]: SGD momentum 0.9
    "weight_decay": 3e-5,      # [PT] weight_decay 0.00003
    "schedule": "cosine",      # [CP] / [PT]: cosine decay of the learning rate
    "steps": 256,              # [CP] trains 256 epochs; [PT] reads them as 256 steps of one batch (its --epochs 256)
    "batch_size": 64,          # [PT] --batch_size 64 normal images per step, each also cut-pasted (and scarred)
    "freeze_steps": 20,        # [PT] --freeze_resnet 20: only the head trains for the first 20 steps
    "variant": "3way",         # [CP] Table 1: the 3-way classifier (normal / CutPaste / scar) is the best on MVTec-AD
}
CLASSES = {"binary": 2, "3way": 3}  # normal, CutPaste (, CutPaste-scar)

# Per profile. `paper` is PAPER, with EfficientNet-Lite0 when ResNet-18's weights are not in the torch hub
# cache. `cpu` (a few minutes per run on 2 busy cores): 64 px, the stem and the first 4 of Lite0's 9 stages
# frozen, 128 steps of 32, freeze_steps scaled with the steps. `smoke` (seconds): 32 px, a 2-layer head.
SETTINGS = {
    "paper": dict(PAPER, frozen_stages=0),
    "cpu": dict(PAPER, backbone="efficientnet_lite0", image_size=64, steps=128, batch_size=32, freeze_steps=10,
                frozen_stages=4),
    "smoke": dict(PAPER, backbone="efficientnet_lite0", image_size=32, steps=16, batch_size=16, freeze_steps=0,
                  frozen_stages=4, head=(128, 64)),
}
RESNET18_FILE = "resnet18-f37072fd.pth"  # = torchvision ResNet18_Weights.IMAGENET1K_V1; never downloaded here


# ---- augmentations ------------------------------------------------------------------------------------
def scar_params(n: int, gen: torch.Generator, scale: float = 1.0, width=PAPER["scar_width"],
                length=PAPER["scar_length"], rotation=PAPER["scar_rotation"]) -> list[tuple[int, int, float]]:
    """n (width, length, angle): integer sizes uniform in the ranges (pixels at 256 x 256) times `scale`
    (image size / 256, at least 1 px), angle in degrees uniform in `rotation`."""
    out = []
    for _ in range(n):
        w = int(torch.randint(width[0], width[1] + 1, (1,), generator=gen))
        ln = int(torch.randint(length[0], length[1] + 1, (1,), generator=gen))
        out.append((max(1, round(w * scale)), max(1, round(ln * scale)), _uniform(gen, *rotation)))
    return out


def scar(images: torch.Tensor, gen: torch.Generator, jitter: float = PAPER["jitter"], hue: float = PAPER["jitter"],
         size_ref: int = PAPER["image_size"], return_masks: bool = False):
    """CutPaste-scar of images in [-1, 1] (N, C, H, W): a thin patch (width x length, PAPER's sizes scaled by
    H / `size_ref`) cut at a random place, colour-jittered, rotated by its angle and pasted at a random place.
    With `return_masks`, also the (N, H, W) boolean masks of the pasted pixels."""
    from torchvision.transforms.functional import InterpolationMode, rotate

    n, _, height, width = images.shape
    out, masks = images.clone(), torch.zeros(n, height, width, dtype=torch.bool)
    for i, (w, ln, angle) in enumerate(scar_params(n, gen, height / size_ref)):
        w, ln = min(w, width), min(ln, height)
        y0 = int(torch.randint(0, height - ln + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, width - w + 1, (1,), generator=gen))
        patch = jitter_patch((images[i, :, y0:y0 + ln, x0:x0 + w] + 1) / 2, gen, jitter, hue)
        both = torch.cat([patch, torch.ones(1, ln, w)])  # the mask rotates with the patch
        both = rotate(both, angle, interpolation=InterpolationMode.NEAREST, expand=True, fill=0.0)
        both = both[:, :height, :width]
        ph, pw = both.shape[-2:]
        y1 = int(torch.randint(0, height - ph + 1, (1,), generator=gen))
        x1 = int(torch.randint(0, width - pw + 1, (1,), generator=gen))
        m = both[-1] > 0.5
        region = out[i, :, y1:y1 + ph, x1:x1 + pw]
        out[i, :, y1:y1 + ph, x1:x1 + pw] = torch.where(m, both[:-1] * 2 - 1, region)
        masks[i, y1:y1 + ph, x1:x1 + pw] = m
    return (out, masks) if return_masks else out


def augmented_batch(x: torch.Tensor, gen: torch.Generator, variant: str = "3way", s: Optional[dict] = None):
    """(images, labels): x (label 0), its CutPaste images (1) and, for '3way', its scar images (2), at the
    setting `s`'s (default PAPER) augmentation parameters."""
    s = s or PAPER
    parts = [x, cutpaste(x, gen, s["jitter"], area=s["area"], aspect=s["aspect"], hue=s["jitter"])]
    if variant == "3way":
        parts.append(scar(x, gen, s["jitter"], s["jitter"], size_ref=PAPER["image_size"]))
    labels = torch.arange(len(parts)).repeat_interleave(len(x))
    return torch.cat(parts), labels


# ---- backbone -----------------------------------------------------------------------------------------
def resnet18_weights() -> Path:
    """ImageNet ResNet-18 weights in the torch hub cache; a BackboneError naming the file otherwise."""
    from ..extract import BackboneError

    path = Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE
    if not path.is_file():
        raise BackboneError(f"{path}: ImageNet weights of 'resnet18' not found; download "
                            f"https://download.pytorch.org/models/{RESNET18_FILE} on a machine with internet and "
                            f"copy it to that path, or use backbone 'efficientnet_lite0'")
    return path


def default_backbone(profile: str) -> str:
    """The setting's backbone; at `paper`, EfficientNet-Lite0 where ResNet-18's weights are absent."""
    name = settings(profile)["backbone"]
    if name == "resnet18" and not (Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE).is_file():
        return "efficientnet_lite0"
    return name


def trainable_backbone(name: str):
    """A fresh, trainable copy of backbone `name` (an algan.extract.Backbone: stages + input normalisation)."""
    from .. import extract

    if name != "resnet18":
        return copy.deepcopy(extract.load_backbone(name)).train()  # never the process-wide cached one
    import torchvision

    path = resnet18_weights()
    m = torchvision.models.resnet18(weights=None)
    m.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    spec = extract.Spec("torchvision", "resnet18", extract._IMAGENET_MEAN, extract._IMAGENET_STD)
    stages = [nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool), m.layer1, m.layer2, m.layer3, m.layer4]
    return extract.Backbone("resnet18", stages, (2, 3), spec, {"file": path.name, "bytes": path.stat().st_size}).train()


class CutPasteNet(nn.Module):
    """Backbone stages -> global average pool (the embedding) -> MLP head -> linear classifier."""

    def __init__(self, backbone: nn.Module, head=PAPER["head"], n_classes: int = 3, frozen_stages: int = 0):
        super().__init__()
        self.backbone, self.frozen_stages = backbone, frozen_stages
        was_training = backbone.training
        backbone.eval()  # a probe batch must not move the pretrained batch-norm statistics
        with torch.no_grad():
            self.dim = int(self.embed(torch.zeros(1, 3, 32, 32)).shape[1])
        backbone.train(was_training)
        layers, last = [], self.dim
        for width in head:
            layers += [nn.Linear(last, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            last = width
        self.head, self.out = nn.Sequential(*layers), nn.Linear(last, n_classes)
        for stage in self.backbone.stages[:frozen_stages]:
            stage.requires_grad_(False)

    def embed(self, x: torch.Tensor, frozen: Optional[int] = None) -> torch.Tensor:
        """Pooled embedding of images in [-1, 1]; the first `frozen` stages run without gradients."""
        frozen = self.frozen_stages if frozen is None else frozen
        x = self.backbone._norm(x)
        for i, stage in enumerate(self.backbone.stages):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= frozen):
                x = stage(x)
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor, frozen: Optional[int] = None) -> torch.Tensor:
        return self.out(self.head(self.embed(x, frozen)))

    def train_mode(self, frozen: int) -> None:
        """Train mode, except the batch-norm statistics of the frozen stages (kept as pretrained)."""
        self.train()
        for stage in self.backbone.stages[:frozen]:
            stage.eval()


# ---- the detector -------------------------------------------------------------------------------------
def settings(profile: str) -> dict:
    if profile not in SETTINGS:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(SETTINGS)}")
    return SETTINGS[profile]


class CutPaste:
    """CutPaste (Li et al., CVPR 2021): a self-supervised classifier on CutPaste images, then a Gaussian on
    its embeddings of the normal training images; score = Mahalanobis distance (higher = more anomalous).

    `profile` picks a setting of SETTINGS (`paper`, `cpu`, `smoke`); keyword overrides replace its entries
    (e.g. `steps=8`, `variant="binary"`). The attribute `history` holds per step the loss and the training
    accuracy of the classifier on that step's batch."""

    def __init__(self, profile: str = "cpu", *, seed: int = 0, device: str = "cpu", **overrides):
        s = dict(settings(profile))
        unknown = sorted(set(overrides) - set(s))
        if unknown:
            raise ValueError(f"unknown CutPaste setting(s) {unknown}: expected some of {sorted(s)}")
        s.update(overrides)
        if "backbone" not in overrides:
            s["backbone"] = default_backbone(profile)
        if s["variant"] not in CLASSES:
            raise ValueError(f"variant={s['variant']!r}: expected one of {list(CLASSES)}")
        if s["steps"] < 0 or s["batch_size"] < 2 or s["image_size"] < 16:
            raise ValueError(f"steps={s['steps']}, batch_size={s['batch_size']}, image_size={s['image_size']}: "
                             "expected >= 0, >= 2, >= 16")
        self.profile, self.settings, self.seed, self.device = profile, s, seed, torch.device(device)
        self.net_, self.shape_, self.history = None, None, []

    # ---- input ----
    def _images(self, X, name: str, fit: bool = False) -> torch.Tensor:
        from ..detector import as_tensor

        if not fit and self.net_ is None:
            raise ValueError("CutPaste is not fitted: call fit() first")
        x = as_tensor(X, name, images=True)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{name} has shape {tuple(x.shape)}: expected images (N, 1 or 3, H, W) in [-1, 1]")
        if fit:
            if len(x) < 2:
                raise ValueError(f"{name} has shape {tuple(x.shape)}: expected at least 2 training images")
            self.shape_ = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != self.shape_:
            raise ValueError(f"{name} has shape {tuple(x.shape)}: expected (N, {', '.join(map(str, self.shape_))}) "
                             "as in fit")
        size = self.settings["image_size"]
        x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(-1, 1).contiguous()

    # ---- training ----
    def fit(self, X, X_val=None, y_val=None) -> "CutPaste":
        """Train the classifier on X (normal images) and their CutPaste images, then fit the Gaussian to the
        normal training embeddings. X_val / y_val only add `val_auroc_` (no model selection: CutPaste has none)."""
        s = self.settings
        x = self._images(X, "X", fit=True)
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val: expected both or neither")
        n_classes = CLASSES[s["variant"]]
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's RNG untouched
            torch.manual_seed(self.seed)
            net = CutPasteNet(trainable_backbone(s["backbone"]), s["head"], n_classes, s["frozen_stages"])
        net.to(self.device)
        gen = torch.Generator().manual_seed(self.seed)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, s["steps"]))
        n_stages = len(net.backbone.stages)
        order, pos, self.history = torch.randperm(len(x), generator=gen), 0, []
        for step in range(1, s["steps"] + 1):
            idx = []
            while len(idx) < min(s["batch_size"], len(x)):  # epochs of a seeded permutation, no image twice a batch
                if pos == len(order):
                    order, pos = torch.randperm(len(x), generator=gen), 0
                idx.append(int(order[pos]))
                pos += 1
            batch, labels = augmented_batch(x[idx], gen, s["variant"], s)
            frozen = n_stages if step <= s["freeze_steps"] else s["frozen_stages"]
            net.train_mode(frozen)
            t0 = time.perf_counter()
            logits = net(batch.to(self.device), frozen)
            loss = F.cross_entropy(logits, labels.to(self.device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"CutPaste loss is {loss.item()} at step {step}: lower the learning rate")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            self.history.append({"step": step, "loss": loss.item(), "frozen_stages": frozen,
                                 "train_accuracy": (logits.argmax(1).cpu() == labels).float().mean().item(),
                                 "seconds": time.perf_counter() - t0})
        net.eval()
        self.net_ = net
        self.embedding_dim_ = net.dim
        from .feature_baselines import MahalanobisAD

        self.density_ = MahalanobisAD().fit(self._embeddings(x))  # Ledoit-Wolf covariance, distance not squared
        self.val_auroc_ = None
        if y_val is not None:
            from sklearn.metrics import roc_auc_score

            y_val = np.asarray(y_val)
            if y_val.shape != (len(X_val),) or len(np.unique(y_val)) != 2:
                raise ValueError(f"y_val has shape {y_val.shape}: expected ({len(X_val)},) holding both labels 0 and 1")
            self.val_auroc_ = float(roc_auc_score(y_val, self.decision_function(X_val)))
        return self

    # ---- scoring ----
    @torch.inference_mode()
    def _embeddings(self, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
        """L2-normalised pooled embeddings (eval mode, batched), as the GDE of [PT] reads them."""
        self.net_.eval()
        out = [F.normalize(self.net_.embed(x[i:i + batch_size].to(self.device), 0), dim=1).double().cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy()

    def embed(self, X) -> np.ndarray:
        """The (N, D) L2-normalised embeddings the Gaussian is fitted to."""
        return self._embeddings(self._images(X, "X"))

    @torch.inference_mode()
    def logits(self, X) -> np.ndarray:
        """The classifier's (N, classes) logits: class 0 normal, 1 CutPaste, 2 scar."""
        x = self._images(X, "X")
        self.net_.eval()
        return torch.cat([self.net_(x[i:i + 128].to(self.device), 0).cpu() for i in range(0, len(x), 128)]).numpy()

    def decision_function(self, X) -> np.ndarray:
        """Mahalanobis distance of each image's embedding to the Gaussian of the normal training embeddings."""
        embeddings = self.embed(X)  # checks the input (and that fit ran) first
        return self.density_.decision_function(embeddings)
