"""Image predict memory: peak RSS for large inputs against the 8-bit output's size (issue 15).

Each size runs ``salightning.predict.predict_path`` (tile 256, overlap 32) in a fresh Python
process on a PNG mosaic of a real photo (astronaut, tiled to ``size x size``), x4. The child first
predicts a 600x600 crop (the model's tile working set), then the full input; the figures are its
peak RSS (VmHWM) before and after, and the growth over the 8-bit output size (target <= 1.5).

Generators: ``quickstart`` (the shipped RRDBNet, 32 features / 2 blocks: ~40 CPU s per 500^2 on
one thread, so only small sizes are practical on a CPU) and ``shuffle`` (a 1x1 convolution and a
pixel shuffle, x4: what is measured is then predict's own memory, nearly free of model time).

    python bench/bench_predict_memory.py [--sizes 1500 3000 6000] [--generator shuffle|quickstart]

bench/run.py imports measure().
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_memory import status_mib

SHIPPED = Path(__file__).resolve().parents[1] / "salightning" / "assets" / "quickstart_psnr_x4.pth"


def _child(size: int, generator_name: str, device: str) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

    from salightning.data.samples import skimage_data_dir
    from salightning.models import RRDBNet
    from salightning.checkpoints import load_pretrained
    from salightning.predict import predict_path

    class Shuffle(nn.Module):
        scale, num_frames, input_upsampled = 4, 1, False

        def __init__(self) -> None:
            super().__init__()
            self.conv, self.shuffle = nn.Conv2d(3, 48, 1), nn.PixelShuffle(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shuffle(self.conv(x))

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if generator_name == "quickstart":
        generator = load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED)
    else:
        generator = Shuffle()
    generator = generator.eval().to(device)
    photo = np.asarray(Image.open(skimage_data_dir() / "astronaut.png").convert("RGB"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mosaic = np.tile(photo, (size // photo.shape[0] + 1, size // photo.shape[1] + 1, 1))[:size, :size]
        Image.fromarray(mosaic).save(tmp / "big.png")
        Image.fromarray(mosaic[:600, :600]).save(tmp / "warm.png")
        del mosaic
        predict_path(generator, tmp / "warm.png", tmp / "warm_out")
        before = status_mib("VmHWM")
        start = time.perf_counter()
        predict_path(generator, tmp / "big.png", tmp / "out")
        seconds = time.perf_counter() - start
        after = status_mib("VmHWM")
    output_mib = (4 * size) ** 2 * 3 / 2**20
    print(json.dumps({
        "size": size, "generator": generator_name, "before_mib": before, "peak_rss_mib": after, "output_mib": output_mib,
        "growth_vs_output": (after - before) / output_mib, "seconds": seconds,
    }))


def measure(sizes: tuple[int, ...] = (1500, 3000, 6000), generator: str = "shuffle", device: str = "cpu", timeout: float = 3600) -> list[dict]:
    """One dict per size: ``size``, ``before_mib``, ``peak_rss_mib``, ``output_mib``, ``growth_vs_output``, ``seconds``."""
    results = []
    for size in sizes:
        run = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--generator", generator, "--device", device],
            capture_output=True, text=True, timeout=timeout, check=True,
        )
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 3000, 6000])
    parser.add_argument("--generator", choices=["shuffle", "quickstart"], default="shuffle")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.generator, args.device)
        return
    for r in measure(tuple(args.sizes), args.generator, args.device):
        print(f"{r['size']}^2 ({r['generator']}): peak RSS {r['peak_rss_mib']:.0f} MiB (after warm-up {r['before_mib']:.0f}), "
              f"8-bit output {r['output_mib']:.0f} MiB, growth / output {r['growth_vs_output']:.2f}, {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
