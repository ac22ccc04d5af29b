"""Data pipeline throughput of one worker, and MATLAB-compatible resize vs torch's.

Measures, in one run on this machine:
  (a) samples/s of on-the-fly x4 crops (HR 128, LR by MATLAB bicubic) from DIV2K-sized PNGs
      (2040x1356, made by tiling real scikit-image photos, so PNG decoding costs what real
      photos cost);
  (b) samples/s of paired crops from 480x480 HR / 120x120 LR sub-images (BasicSR's layout);
  (c) the time of ``imresize`` (x4 down) on one DIV2K-sized image divided by that of
      ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``, and the same for x4 up.
Targets (issue 4): (b) >= 20 samples/s; (c) ratio <= 2.

Run: python bench/bench_data.py [--samples 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from salightning.data import ImageSRDataModule, imresize, read_image
from salightning.data.image import _decode
from salightning.data.samples import SAMPLE_IMAGES, skimage_data_dir

DIV2K_SIZE = (1356, 2040)  # (height, width)


def _save(x: torch.Tensor, path: Path) -> None:
    Image.fromarray((x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(path)


def make_div2k_like(folder: Path, count: int) -> list[Path]:
    """``count`` 2040x1356 PNGs, each a 2x3 mosaic of real photos at (close to) native resolution."""
    photos = [read_image(skimage_data_dir() / name) for name in SAMPLE_IMAGES["train"] + SAMPLE_IMAGES["test"]]
    cell_h, cell_w = DIV2K_SIZE[0] // 2, DIV2K_SIZE[1] // 3
    paths = []
    for n in range(count):
        canvas = torch.zeros(3, *DIV2K_SIZE)
        for cell in range(6):
            photo = photos[(n * 6 + cell) % len(photos)]
            grow = max(cell_h / photo.shape[1], cell_w / photo.shape[2], 1.0)
            if grow > 1:
                photo = imresize(photo, grow).clamp(0, 1)
            r, c = divmod(cell, 3)
            canvas[:, r * cell_h : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w] = photo[:, :cell_h, :cell_w]
        paths.append(folder / f"{n + 1:04d}.png")
        _save(canvas, paths[-1])
    return paths


def make_subimages(sources: list[Path], hr_dir: Path, lr_dir: Path, size: int = 480, scale: int = 4) -> None:
    """BasicSR-style 480x480 HR sub-images and their x4 LR (MATLAB bicubic), paired by name."""
    hr_dir.mkdir()
    lr_dir.mkdir()
    for path in sources:
        image = read_image(path)
        for i, top in enumerate(range(0, image.shape[1] - size + 1, size)):
            for j, left in enumerate(range(0, image.shape[2] - size + 1, size)):
                crop = image[:, top : top + size, left : left + size]
                name = f"{path.stem}_s{i}{j}"
                _save(crop, hr_dir / f"{name}.png")
                _save(imresize(crop, 1 / scale), lr_dir / f"{name}x{scale}.png")


def samples_per_second(dm: ImageSRDataModule, samples: int) -> float:
    """Samples/s of the training dataset read in this process (what one DataLoader worker does)."""
    dm.setup("fit")
    dataset = dm.datasets["train"]
    keys = list(dm.train_dataloader().sampler)[:samples]
    dataset[keys[0]]  # warm-up
    start = time.perf_counter()
    for key in keys:
        dataset[key]
    return len(keys) / (time.perf_counter() - start)


def best_time(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="samples timed per case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "div2k").mkdir()
        sources = make_div2k_like(tmp / "div2k", 4)
        make_subimages(sources, tmp / "sub_hr", tmp / "sub_lr")
        common = dict(
            val_hr=str(tmp / "sub_hr"), patch_size=128, scale=4, batch_size=16, num_workers=0, seed=0,
            samples_per_epoch=max(16, args.samples + 1),
        )

        rate_a = samples_per_second(ImageSRDataModule(train_hr=str(tmp / "div2k"), **common), args.samples)
        print(f"(a) on-the-fly x4 crops from 2040x1356 PNGs : {rate_a:7.1f} samples/s")
        rate_b = samples_per_second(
            ImageSRDataModule(train_hr=str(tmp / "sub_hr"), train_lr=str(tmp / "sub_lr"), **common), args.samples
        )
        print(f"(b) paired crops from 480x480 sub-images    : {rate_b:7.1f} samples/s  (target >= 20)")
        rate_b2 = samples_per_second(ImageSRDataModule(train_hr=str(tmp / "sub_hr"), **common), args.samples)
        print(f"    on-the-fly x4 crops from 480x480 HR      : {rate_b2:7.1f} samples/s")
        decode = best_time(lambda: _decode(sources[0]), repeats=3)
        print(f"    Pillow decoding one 2040x1356 PNG        : {decode * 1e3:7.1f} ms (bounds (a))")
        image = read_image(sources[0])[None]

    ours = best_time(lambda: imresize(image, 0.25))
    torch_aa = best_time(
        lambda: F.interpolate(image, size=(DIV2K_SIZE[0] // 4, DIV2K_SIZE[1] // 4), mode="bicubic", antialias=True)
    )
    print(f"(c) x4 down of one 2040x1356 image: imresize {ours * 1e3:.1f} ms, interpolate(antialias) "
          f"{torch_aa * 1e3:.1f} ms, ratio {ours / torch_aa:.2f} (target <= 2)")
    small = image[..., : DIV2K_SIZE[0] // 4, : DIV2K_SIZE[1] // 4].contiguous()
    ours_up = best_time(lambda: imresize(small, 4.0))
    torch_up = best_time(lambda: F.interpolate(small, scale_factor=4, mode="bicubic", antialias=True))
    print(f"    x4 up to 2040x1356: imresize {ours_up * 1e3:.1f} ms, interpolate(antialias) "
          f"{torch_up * 1e3:.1f} ms, ratio {ours_up / torch_up:.2f}")


if __name__ == "__main__":
    main()
