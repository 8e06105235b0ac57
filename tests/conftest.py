"""Shared fixtures. Real data comes from ALGAN_DATA (../shared/data in development and CI)."""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root. Missing data is a failure, never a skip: CI must exercise real data."""
    root = os.environ.get("ALGAN_DATA")
    if not root:
        default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
        if default.is_dir():
            return default
        pytest.fail("ALGAN_DATA is not set and ../shared/data does not exist; point ALGAN_DATA at the data root")
    path = Path(root)
    if not path.is_dir():
        pytest.fail(f"ALGAN_DATA={root} is not a directory")
    return path
