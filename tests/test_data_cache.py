"""The decoded-image cache (salightning.data.cache): bit-identical items, invalidation, location."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import save_png

from salightning.data.cache import DecodeCache
from salightning.data.image import ImageSRDataModule


@pytest.fixture()
def hr_folder(tmp_path, photos):
    for name, photo in zip(("astronaut", "chelsea", "coffee"), photos[:3]):
        save_png(photo, tmp_path / "hr" / f"{name}.png")
    return tmp_path / "hr"


def _items(folder, decode_cache: bool) -> list[dict]:
    dm = ImageSRDataModule(train_hr=str(folder), scale=4, patch_size=64, batch_size=2, num_workers=0, decode_cache=decode_cache, seed=3)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    return [dataset[(i % len(dataset), 100 + i)] for i in range(12)]


def test_cached_crops_lr_and_augmentations_are_bit_identical(hr_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("SALIGHTNING_CACHE_DIR", str(tmp_path / "cache"))
    plain, first, again = _items(hr_folder, False), _items(hr_folder, True), _items(hr_folder, True)
    for a, b, c in zip(plain, first, again):
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
        assert torch.equal(a["lr"], c["lr"]) and torch.equal(a["hr"], c["hr"])
    entries = list((tmp_path / "cache" / "decoded").rglob("*.npy"))
    assert len(entries) == 3
    assert not [p for p in hr_folder.iterdir() if p.suffix != ".png"]  # nothing written into the data folder


def test_a_changed_source_gets_a_new_entry(hr_folder, tmp_path, photos):
    from PIL import Image

    cache = DecodeCache(lambda p: np.asarray(Image.open(p)), root=tmp_path / "cache")
    path = hr_folder / "chelsea.png"
    before = cache.entry(path)
    np.testing.assert_array_equal(cache(path), np.asarray(Image.open(path)))
    assert isinstance(cache(path), np.memmap)
    save_png(photos[3], path)
    os.utime(path, ns=(1, 1))
    assert cache.entry(path) != before
    np.testing.assert_array_equal(cache(path), np.asarray(Image.open(path)))


def test_the_cache_is_never_inside_the_data_folder(hr_folder):
    from PIL import Image

    cache = DecodeCache(lambda p: np.asarray(Image.open(p)), root=hr_folder / "decoded")
    with pytest.raises(ValueError, match="SALIGHTNING_CACHE_DIR"):
        cache(hr_folder / "chelsea.png")
