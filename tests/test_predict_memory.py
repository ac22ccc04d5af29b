"""Predict memory bounded by the output's 8-bit size: memory-mapped outputs written as PNG in strips."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_in_group, save_png

from salightning.models import RRDBNet
from salightning.checkpoints import load_pretrained
from salightning.predict import predict_path, write_png
from salightning.tiling import to_uint8

SHIPPED_STAGE1 = Path(__file__).resolve().parents[1] / "salightning" / "assets" / "quickstart_psnr_x4.pth"


def _photo_uint8(photo: torch.Tensor) -> np.ndarray:
    return (photo.permute(1, 2, 0) * 255).round().byte().numpy()


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("strip_bytes", [1, 5000, 1 << 20])
def test_write_png_reads_back_exactly(photos, tmp_path, channels, strip_bytes):
    rgb = _photo_uint8(photos[1][:, 50:151, 70:203])  # 101 x 133: odd sizes
    image = {1: rgb[..., :1], 3: rgb, 4: np.concatenate([rgb, rgb[..., 1:2]], axis=-1)}[channels]
    write_png(np.ascontiguousarray(image), tmp_path / "x.png", strip_bytes=strip_bytes)
    with Image.open(tmp_path / "x.png") as im:
        assert im.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        got = np.asarray(im)
    np.testing.assert_array_equal(got.reshape(image.shape), image)


def test_write_png_refuses_what_png_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W, 1\|2\|3\|4\) uint8 array; got float32 \(4, 4, 3\)"):
        write_png(np.zeros((4, 4, 3), np.float32), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_write_png_round_trips_every_channel_layout(tmp_path, channels, mode):
    image = np.random.default_rng(channels).integers(0, 256, (7, 9, channels), dtype=np.uint8)
    write_png(image, tmp_path / "x.png", strip_bytes=20)
    with Image.open(tmp_path / "x.png") as im:
        assert im.mode == mode
        assert np.array_equal(np.asarray(im).reshape(7, 9, channels), image)


def test_a_memory_mapped_output_equals_the_in_memory_one_and_leaves_no_temp_file(photos, tmp_path):
    generator = load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED_STAGE1).eval()
    save_png(photos[2][:, 100:160, 150:230], tmp_path / "in" / "coffee.png")
    (in_memory,) = predict_path(generator, tmp_path / "in" / "coffee.png", tmp_path / "a", tile=48, overlap=16)
    (mapped,) = predict_path(generator, tmp_path / "in" / "coffee.png", tmp_path / "b", tile=48, overlap=16, memmap_mib=0)
    np.testing.assert_array_equal(np.asarray(Image.open(mapped)), np.asarray(Image.open(in_memory)))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["coffee.png"]  # the backing file is gone


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import torch
    from torch import nn

    from salightning.predict import predict_path

    torch.set_num_threads(1)


    def peak_mib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


    class Shuffle(nn.Module):
        # A x4 generator that costs next to nothing: what is measured is predict's memory.
        scale, num_frames, input_upsampled = 4, 1, False

        def __init__(self):
            super().__init__()
            self.conv, self.shuffle = nn.Conv2d(3, 48, 1), nn.PixelShuffle(4)

        def forward(self, x):
            return self.shuffle(self.conv(x))


    folder = Path(sys.argv[1])
    torch.manual_seed(0)
    generator = Shuffle().eval()
    predict_path(generator, folder / "warm.png", folder / "warm_out")  # the tile working set
    before = peak_mib()
    predict_path(generator, folder / "big.png", folder / "out")
    print(json.dumps({"before": before, "after": peak_mib()}))
    """
)


def test_a_3000x3000_input_at_x4_stays_within_1_5x_its_8bit_output(photos, tmp_path, monkeypatch):
    """Measured, not timed: the child's high-water mark grows by at most 1.5x the 8-bit output
    (a float32 output alone would be 4x, the old path's copies ~9x)."""
    tile = _photo_uint8(photos[0])  # astronaut, 512 x 512
    big = np.tile(tile, (6, 6, 1))[:3000, :3000]
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(big[:600, :600]).save(tmp_path / "warm.png")
    (tmp_path / "child.py").write_text(CHILD)
    result = run_in_group([sys.executable, tmp_path / "child.py", tmp_path], timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    output_mib = 12000 * 12000 * 3 / 2**20
    assert (peaks["after"] - peaks["before"]) <= 1.5 * output_mib, (peaks, output_mib)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # 144 Mpixel is what was asked for
    with Image.open(tmp_path / "out" / "big.png") as im:
        assert im.size == (12000, 12000)
        corner = np.asarray(im.crop((0, 0, 64, 64)))
    # the child's generator, rebuilt from the same seed: a 1x1 conv and a pixel shuffle need no context
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 48, 1)
    with torch.no_grad():
        expected = torch.nn.functional.pixel_shuffle(conv(torch.from_numpy(big[:16, :16]).permute(2, 0, 1)[None].float() / 255), 4)
    np.testing.assert_array_equal(corner, to_uint8(expected[0]).numpy())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.png"]
