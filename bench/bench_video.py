"""Streaming video prediction: peak RSS and frames/s at 10 / 60 / 250 frames.

Each length runs ``salightning.predict.predict_path`` (PNG frames + H.264) in a fresh Python
process on an H.264 clip of a camera panning over a real photo (``--height`` x ``--width`` LR
frames), with the shipped quickstart RRDBNet (x4). Peak RSS is the process's VmHWM at the end;
frames/s is frames over the wall time of predict_path. Constant memory means the peak does not
grow with the number of frames.

    python bench/bench_video.py [--frames 10 60 250] [--height 96] [--width 128]

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


def _child(frames: int, height: int, width: int) -> None:
    import torch

    from salightning.data.io import read_image
    from salightning.data.samples import skimage_data_dir
    from salightning.data.io import write_video
    from salightning.models import RRDBNet
    from salightning.checkpoints import load_pretrained
    from salightning.predict import predict_path

    torch.set_num_threads(1)
    photo = read_image(skimage_data_dir() / "coffee.png")  # 400x600
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = [
            (photo[:, (t % 100) : (t % 100) + height, (2 * t) % 200 : (2 * t) % 200 + width].permute(1, 2, 0) * 255).round().byte().numpy()
            for t in range(frames)
        ]
        import numpy as np

        write_video(np.stack(clip), tmp / "clip.mp4")
        del clip
        generator = load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED).eval()
        start = time.perf_counter()
        predict_path(generator, tmp / "clip.mp4", tmp / "out", tile=256, overlap=32)
        seconds = time.perf_counter() - start
    print(json.dumps({"frames": frames, "peak_rss_mib": status_mib("VmHWM"), "frames_per_s": frames / seconds}))


def measure(frames: tuple[int, ...] = (10, 60, 250), height: int = 96, width: int = 128, timeout: float = 1800) -> list[dict]:
    """One dict per length: ``frames``, ``peak_rss_mib``, ``frames_per_s``."""
    results = []
    for n in frames:
        run = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--height", str(height), "--width", str(width)],
            capture_output=True, text=True, timeout=timeout, check=True,
        )
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 60, 250])
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.height, args.width)
        return
    for r in measure(tuple(args.frames), args.height, args.width):
        print(f"{r['frames']} frames: peak RSS {r['peak_rss_mib']:.0f} MiB, {r['frames_per_s']:.2f} frames/s")


if __name__ == "__main__":
    main()
