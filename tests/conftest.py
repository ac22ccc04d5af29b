"""Shared fixtures: real photos (scikit-image's bundled images), never noise."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(1)

PHOTO_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "color"]


def load_photo(name: str) -> torch.Tensor:
    """A bundled scikit-image photo as a (3, H, W) float tensor in [0, 1]."""
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return torch.from_numpy(arr[..., :3].copy()).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="session")
def photos() -> list[torch.Tensor]:
    """Real photos, (3, H, W) in [0, 1], of varying sizes."""
    return [load_photo(n) for n in PHOTO_NAMES]


@pytest.fixture(scope="session")
def photo_batch(photos) -> torch.Tensor:
    """A (4, 3, 128, 128) batch of centre crops of real photos."""
    crops = []
    for p in photos[:4]:
        _, h, w = p.shape
        top, left = (h - 128) // 2, (w - 128) // 2
        crops.append(p[:, top : top + 128, left : left + 128])
    return torch.stack(crops)
