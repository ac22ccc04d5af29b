"""Tiled vs untiled prediction time at the CLI's default tiles (256, overlap 32, tile_batch 4) on
real photos of 512x512 (astronaut) and 427x640 (rocket), with the grid salightning.tiling uses.

The generator is the shipped quickstart RRDBNet (32 features, 2 blocks, x4); time is CPU
seconds of this process (steady on a shared machine), the best of ``repeats`` runs.

    python bench/bench_tiling.py [--repeats 2] [--threads 1]

bench/run.py imports measure().
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench_edges import cpu_time

from salightning.data.io import read_image
from salightning.data.samples import skimage_data_dir
from salightning.models import RRDBNet
from salightning.checkpoints import load_pretrained
from salightning.tiling import tile_grid, tiled_forward_uint8

SHIPPED = Path(__file__).resolve().parents[1] / "salightning" / "assets" / "quickstart_psnr_x4.pth"
PHOTOS = {"512x512": "astronaut.png", "427x640": "rocket.jpg"}


def measure(
    repeats: int = 2, threads: int = 1, tile: int = 256, overlap: int = 32, tile_batch: int = 4, crop: int | None = None
) -> dict[str, dict]:
    """Per photo (its top-left ``crop`` x ``crop`` when given): ``grid`` (str), ``pixel_ratio``,
    ``untiled_s``, ``tiled_s``, ``time_ratio``."""
    torch.set_num_threads(threads)
    generator = load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED).eval()
    out = {}
    for label, name in PHOTOS.items():
        x = read_image(skimage_data_dir() / name)[None]
        x = x if crop is None else x[..., :crop, :crop]
        grid = tile_grid(x.shape[-2], x.shape[-1], tile, overlap)
        untiled = cpu_time(lambda: tiled_forward_uint8(generator, x, 0, 0), repeats)
        tiled = cpu_time(lambda: tiled_forward_uint8(generator, x, tile, overlap, tile_batch), repeats)
        out[label] = {"grid": str(grid), "pixel_ratio": grid.pixel_ratio, "untiled_s": untiled, "tiled_s": tiled, "time_ratio": tiled / untiled}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for label, r in measure(args.repeats, args.threads).items():
        print(f"{label}: {r['grid']}; untiled {r['untiled_s']:.2f} s, tiled {r['tiled_s']:.2f} s, ratio {r['time_ratio']:.3f}")


if __name__ == "__main__":
    main()
