"""Tiled inference (salightning.tiling): the cheapest grid, batched tiles, 8-bit output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHIPPED_STAGE1, save_png

from salightning.metrics import psnr
from salightning.models import RRDBNet
from salightning.checkpoints import load_pretrained
from salightning.predict import predict_path
from salightning.tiling import owned_ranges, tile_grid, tiled_forward, tiled_forward_uint8, to_uint8

@pytest.fixture(scope="module")
def trained_tiny() -> RRDBNet:
    return load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED_STAGE1).eval()


@pytest.mark.parametrize("size", [(427, 640), (512, 512)])
def test_default_grid_processes_at_most_1_25x_the_pixels(size):
    grid = tile_grid(*size, tile=256, overlap=32)
    assert grid.tile_h * grid.tile_w <= 256 * 256
    assert grid.pixel_ratio <= 1.25, str(grid)


@pytest.mark.parametrize("tile, overlap", [(256, 32), (64, 16), (40, 32), (48, 0)])
@pytest.mark.parametrize("size", [(427, 640), (512, 512), (97, 131), (1500, 1500), (33, 1000), (10, 5000), (5000, 7), (1, 1)])
def test_grid_covers_with_equal_tiles_and_enough_overlap(size, tile, overlap):
    grid = tile_grid(*size, tile=tile, overlap=overlap)
    assert grid.tile_h * grid.tile_w <= tile * tile or grid.num_tiles == 1
    for starts, size_, length in ((grid.tops, grid.tile_h, grid.height), (grid.lefts, grid.tile_w, grid.width)):
        assert starts[0] == 0 and starts[-1] + size_ == length
        assert all(b - a <= size_ - overlap for a, b in zip(starts, starts[1:]))
        owned = owned_ranges(starts, size_, length)
        assert owned[0][0] == 0 and owned[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(owned, owned[1:]))
        # every kept pixel is at least overlap / 2 from a cut of its own tile
        for start, (lo, hi) in zip(starts, owned):
            assert start <= lo and hi <= start + size_
            assert lo == 0 or lo - start >= overlap // 2
            assert hi == length or start + size_ - hi >= overlap // 2


@pytest.mark.slow
def test_uint8_tiled_output_matches_untiled_on_a_real_photo(trained_tiny, photos):
    x = photos[3][None]  # rocket, 427x640
    assert x.shape[-2:] == (427, 640)
    with torch.no_grad():
        full = to_uint8(trained_tiny(x)[0]).numpy()
    tiled = tiled_forward_uint8(trained_tiny, x, tile=256, overlap=32, tile_batch=4)
    assert tiled.dtype == np.uint8 and tiled.shape == full.shape == (1708, 2560, 3)
    as_float = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 for a in (tiled, full)]
    assert float(psnr(*as_float)) >= 50.0


def test_tile_batch_does_not_change_the_output(trained_tiny, photos):
    x = photos[1][:, 100:197, 150:281][None]
    one = tiled_forward(trained_tiny, x, tile=48, overlap=16, tile_batch=1)
    many = tiled_forward(trained_tiny, x, tile=48, overlap=16, tile_batch=5)
    assert tile_grid(97, 131, 48, 16).num_tiles > 5
    torch.testing.assert_close(one, many, atol=1e-5, rtol=0)
    written = tiled_forward_uint8(trained_tiny, x, tile=48, overlap=16, tile_batch=3)
    np.testing.assert_array_equal(np.abs(written.astype(int) - to_uint8(many[0]).numpy().astype(int)) <= 1, True)


def test_predict_writes_the_uint8_tiles_as_png(trained_tiny, photos, tmp_path):
    save_png(photos[1][:, 100:197, 150:281], tmp_path / "in" / "cat.png")
    (written,) = predict_path(trained_tiny, tmp_path / "in" / "cat.png", tmp_path / "out", tile=48, overlap=16)
    expected = tiled_forward_uint8(trained_tiny, photos[1][:, 100:197, 150:281][None], tile=48, overlap=16)
    got = np.asarray(Image.open(written))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tile": 32, "overlap": 32}, "--tile must be larger than --tile_overlap; got --tile=32, --tile_overlap=32"),
        ({"tile": 16, "overlap": 32}, "--tile=16, --tile_overlap=32"),
        ({"tile": 256, "overlap": 31}, "--tile_overlap must be even"),
        ({"tile": -1, "overlap": 0}, "--tile must be >= 0"),
        ({"tile": 256, "overlap": 32, "tile_batch": 0}, "--tile_batch must be >= 1; got --tile_batch=0"),
    ],
)
def test_bad_tiling_options_fail_before_any_work(trained_tiny, photos, tmp_path, kwargs, match):
    save_png(photos[1][:, :40, :40], tmp_path / "in" / "cat.png")
    with pytest.raises(ValueError, match=match):
        predict_path(trained_tiny, tmp_path / "in" / "cat.png", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
