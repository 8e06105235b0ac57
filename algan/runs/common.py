"""What every run of the runs floor shares: the profiles' seeds and the default device."""
from __future__ import annotations

from typing import Iterable, Optional

import torch

from ..config import PROFILES


SEEDS = {"smoke": (0,), "cpu": (0, 1, 2), "paper": tuple(range(10))}  # paper: 10 seeds (Sec. IV-C)


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(PROFILES)}")
    return profile


def default_seeds(profile: str, seeds: Optional[Iterable[int]] = None) -> tuple[int, ...]:
    return tuple(int(s) for s in (seeds if seeds is not None else SEEDS[check_profile(profile)]))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
