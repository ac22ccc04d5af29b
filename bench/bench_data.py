"""Data pipeline throughput of one worker, and MATLAB-compatible resize vs torch's.

Measures, in one run on this machine:
  (a) samples/s of on-the-fly x4 crops (HR 128, LR by MATLAB bicubic) from DIV2K-sized PNGs
      (2040x1356, made by tiling real scikit-image photos, so PNG decoding costs what real
      photos cost);
  (b) samples/s of paired crops from 480x480 HR / 120x120 LR sub-images (BasicSR's layout);
  (c) the time of ``imresize`` (x4 down) on one DIV2K-sized image divided by that of
      ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``, and the same for x4 up.
Targets (issue 4): (b) >= 20 samples/s; (c) ratio <= 2.

Run: python bench/bench_data.py [--samples 60] [--threads 1] [--images 4]
(bench/run.py imports measure().)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from salightning.data import ImageSRDataModule, read_image
from salightning.ops import imresize
from salightning.data.io import decode_image
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


def samples_per_second(dm: ImageSRDataModule, samples: int) -> tuple[float, float]:
    """Samples per second of wall time and per CPU second of this process, reading the training
    dataset in this process (what one DataLoader worker does); the CPU figure is the steadier
    one on a shared machine."""
    dm.setup("fit")
    dataset = dm.datasets["train"]
    keys = list(dm.train_dataloader().sampler)[:samples]
    dataset[keys[0]]  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for key in keys:
        dataset[key]
    return len(keys) / (time.perf_counter() - wall), len(keys) / (time.process_time() - cpu)


def loader_samples_per_second(dm: ImageSRDataModule) -> float:
    """Samples per wall second of a whole epoch of ``dm``'s training DataLoader (its workers
    started, the first batch waited for, before the clock starts)."""
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    first = next(batches)
    count, start = 0, time.perf_counter()
    for batch in batches:
        count += len(batch["hr"])
    seconds = time.perf_counter() - start
    del first
    return count / seconds


def best_time(fn: Callable[[], object], repeats: int = 7) -> float:
    """Minimum wall time of ``fn`` in seconds over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(samples: int = 60, threads: int = 1, images: int = 4) -> dict[str, float]:
    """All figures of this benchmark, measured in this process with ``threads`` torch threads.

    ``images``: DIV2K-sized PNGs made for (a) (each gives 8 sub-images of 480x480 for (b)).
    Keys: ``on_the_fly`` (a), ``on_the_fly_cached`` (a, HR images read from the decoded-image
    cache), ``on_the_fly_cached_2_workers`` (the cached crops through a DataLoader with 2 worker
    processes, batch 16, samples per wall second), ``paired`` (b), ``on_the_fly_480`` (samples/s of wall time), the
    same with ``_cpu`` (samples per CPU second of this process: steadier on a shared CPU), ``decode_ms``
    (Pillow decoding of one 2040x1356 PNG), ``imresize_down_ms``, ``interpolate_down_ms``,
    ``down_ratio`` (c), ``imresize_up_ms``, ``interpolate_up_ms``, ``up_ratio``.
    """
    torch.set_num_threads(threads)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "div2k").mkdir()
        sources = make_div2k_like(tmp / "div2k", images)
        make_subimages(sources, tmp / "sub_hr", tmp / "sub_lr")
        common = {
            "val_hr": str(tmp / "sub_hr"), "patch_size": 128, "scale": 4, "batch_size": 16, "num_workers": 0,
            "seed": 0, "samples_per_epoch": max(16, samples + 1),
        }
        cases = {
            "on_the_fly": {"train_hr": str(tmp / "div2k")},
            "paired": {"train_hr": str(tmp / "sub_hr"), "train_lr": str(tmp / "sub_lr")},
            "on_the_fly_480": {"train_hr": str(tmp / "sub_hr")},
        }
        for name, case in cases.items():
            out[name], out[f"{name}_cpu"] = samples_per_second(ImageSRDataModule(**case, **common), samples)
        # the decoded-image cache, in steady state (a first pass decodes each image into it)
        previous = os.environ.get("SALIGHTNING_CACHE_DIR")
        os.environ["SALIGHTNING_CACHE_DIR"] = str(tmp / "cache")
        try:
            cached = ImageSRDataModule(train_hr=str(tmp / "div2k"), decode_cache=True, **common)
            samples_per_second(cached, samples)
            out["on_the_fly_cached"], out["on_the_fly_cached_cpu"] = samples_per_second(cached, samples)
            loader_case = {**common, "num_workers": 2, "samples_per_epoch": max(64, 2 * samples)}
            out["on_the_fly_cached_2_workers"] = loader_samples_per_second(ImageSRDataModule(train_hr=str(tmp / "div2k"), decode_cache=True, **loader_case))
        finally:
            if previous is None:
                del os.environ["SALIGHTNING_CACHE_DIR"]
            else:
                os.environ["SALIGHTNING_CACHE_DIR"] = previous
        out["decode_ms"] = best_time(lambda: decode_image(sources[0]), repeats=3) * 1e3
        image = read_image(sources[0])[None]

    out["imresize_down_ms"] = best_time(lambda: imresize(image, 0.25)) * 1e3
    out["interpolate_down_ms"] = best_time(
        lambda: F.interpolate(image, size=(DIV2K_SIZE[0] // 4, DIV2K_SIZE[1] // 4), mode="bicubic", antialias=True)
    ) * 1e3
    out["down_ratio"] = out["imresize_down_ms"] / out["interpolate_down_ms"]
    small = image[..., : DIV2K_SIZE[0] // 4, : DIV2K_SIZE[1] // 4].contiguous()
    out["imresize_up_ms"] = best_time(lambda: imresize(small, 4.0)) * 1e3
    out["interpolate_up_ms"] = best_time(
        lambda: F.interpolate(small, scale_factor=4, mode="bicubic", antialias=True)
    ) * 1e3
    out["up_ratio"] = out["imresize_up_ms"] / out["interpolate_up_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="samples timed per case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    parser.add_argument("--images", type=int, default=4, help="DIV2K-sized PNGs to make")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    r = measure(args.samples, args.threads, args.images)
    print("samples/s of wall time (per CPU second)")
    print(f"(a) on-the-fly x4 crops from 2040x1356 PNGs : {r['on_the_fly']:7.1f} ({r['on_the_fly_cpu']:.1f})")
    print(f"    the same from the decode cache, 1 worker: {r['on_the_fly_cached']:7.1f} ({r['on_the_fly_cached_cpu']:.1f})")
    print(f"    the same, cached, DataLoader 2 workers  : {r['on_the_fly_cached_2_workers']:7.1f} (per wall s)")
    print(f"(b) paired crops from 480x480 sub-images    : {r['paired']:7.1f} ({r['paired_cpu']:.1f})  (target >= 20)")
    print(f"    on-the-fly x4 crops from 480x480 HR      : {r['on_the_fly_480']:7.1f} ({r['on_the_fly_480_cpu']:.1f})")
    print(f"    Pillow decoding one 2040x1356 PNG        : {r['decode_ms']:7.1f} ms (bounds (a))")
    print(f"(c) x4 down of one 2040x1356 image: imresize {r['imresize_down_ms']:.1f} ms, interpolate(antialias) "
          f"{r['interpolate_down_ms']:.1f} ms, ratio {r['down_ratio']:.2f} (target <= 2)")
    print(f"    x4 up to 2040x1356: imresize {r['imresize_up_ms']:.1f} ms, interpolate(antialias) "
          f"{r['interpolate_up_ms']:.1f} ms, ratio {r['up_ratio']:.2f}")


if __name__ == "__main__":
    main()
