"""Cost and statistics of RealESRGANDegradation next to Real-ESRGAN's pipeline in BasicSR 1.4.2.

On the same batch of real-photo 256x256 crops, with Real-ESRGAN's x4plus options:

- ms per crop of ``RealESRGANDegradation`` (USM included) and of BasicSR's pipeline driven as
  Real-ESRGAN's ``feed_data`` drives it (bench/basicsr_pipeline.py: numpy kernels per sample,
  ``USMSharp``, ``filter2D``, the ``*_pt`` noises, ``DiffJPEG``; one USM, not the second one
  Real-ESRGAN runs after its pair pool), their ratio ``degradation_vs_basicsr_time_ratio``
  (target <= 0.1), and the same without the USM on both sides (``..._rest_...``, target <= 1);
- ours as a fraction of one full ESRGAN step on that batch (RRDBNet 23 blocks x4 and
  UNetDiscriminatorSN: G forward, L1 + GAN loss, backward, Adam; D on real and fake, backward,
  Adam; no perceptual loss: no VGG weights here), ``degradation_vs_esrgan_step_ratio``
  (target <= 0.1); the step runs on ``--gen-batch`` crops and is scaled linearly;
- PSNR of the LR against the bicubic (MATLAB imresize) x4 downscale of the HR over ``--crops``
  random crops, mean and standard deviation, ours and BasicSR's (``lr_psnr_mean_diff_db``,
  target |.| <= 0.5; ``lr_psnr_std_ratio``, similar spread).

Times are process CPU seconds (one torch thread: the work done, steady on a shared CPU). Each
pipeline's cost depends on its draws (a batch resized up costs more than one resized down), so
each is timed on ``--seeds`` seeded draws, each run ``--repeats`` times with the same seed (the
same work) keeping the minimum, and the minima are averaged; one warm-up run first. Needs
``pip install --no-deps basicsr==1.4.2``.

    python bench/bench_degradation.py [--batch 8] [--size 256] [--seeds 4] [--repeats 3]
                                      [--crops 300] [--gen-batch 1] [--threads 1] [--smoke]

``measure(...)`` returns the figures as a dict (for bench/run.py).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from basicsr_pipeline import BasicSRDegradation  # noqa: E402
from bench_edges import PHOTO_FILES, cpu_time, photo_crops  # noqa: E402

from salightning.degradations import RealESRGANDegradation, usm_sharpen  # noqa: E402
from salightning.models import RRDBNet, UNetDiscriminatorSN  # noqa: E402
from salightning.ops import imresize  # noqa: E402


def seeded_cpu_time(fn: Callable[[int], object], seeds: int, repeats: int) -> float:
    """Mean over ``seeds`` of the minimum CPU seconds of ``fn(seed)`` over ``repeats`` runs."""
    return statistics.fmean(cpu_time(lambda: fn(seed), repeats) for seed in range(seeds))


def _seed_globals(seed: int) -> None:
    """BasicSR draws from Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_photo_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) crops at random places of the bundled photos (cycled), in [0, 1]."""
    import imageio.v3 as iio
    import skimage

    photos = []
    for name in PHOTO_FILES:
        arr = np.asarray(iio.imread(Path(skimage.data_dir) / name))
        arr = np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr[..., :3]
        photos.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0)
    g = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(n):
        p = photos[i % len(photos)]
        top = int(torch.randint(p.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(p.shape[2] - size + 1, (1,), generator=g))
        crops.append(p[:, top : top + size, left : left + size])
    return torch.stack(crops)


def esrgan_step_time(hr: torch.Tensor, lr: torch.Tensor, smoke: bool) -> float:
    """CPU seconds of one G + D step of Real-ESRGAN's networks on (lr, hr)."""
    g = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=4) if smoke else RRDBNet(num_features=64, num_blocks=23, growth_channels=32, scale=4)
    d = UNetDiscriminatorSN(3, 8 if smoke else 64)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step() -> None:
        for p in d.parameters():
            p.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        sr = g(lr)
        fake_logits = d(sr)
        loss_g = F.l1_loss(sr, hr) + 0.1 * F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        loss_g.backward()
        opt_g.step()
        for p in d.parameters():
            p.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        real, fake = d(hr), d(sr.detach())
        loss_d = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        loss_d.backward()
        opt_d.step()

    return cpu_time(step, 1)


def _lr_psnr(lr: torch.Tensor, hr: torch.Tensor) -> list[float]:
    bicubic = imresize(hr, 0.25).clamp(0, 1)
    mse = ((lr - bicubic) ** 2).mean((1, 2, 3))
    return (-10 * torch.log10(mse)).tolist()


def measure(batch: int = 8, size: int = 256, seeds: int = 4, repeats: int = 3, crops: int = 300, gen_batch: int = 1, threads: int = 1, smoke: bool = False) -> dict[str, float]:
    """All figures of this benchmark (see the module docstring), measured in this process."""
    torch.set_num_threads(threads)
    hr = photo_crops(batch, size)
    ours = RealESRGANDegradation(scale=4, seed=0)
    reference = BasicSRDegradation()
    out: dict[str, float] = {"batch": batch, "size": size}
    out["ours_ms_per_crop"] = seeded_cpu_time(lambda seed: ours(hr, generator=torch.Generator().manual_seed(seed)), seeds, repeats) / batch * 1e3
    out["basicsr_ms_per_crop"] = seeded_cpu_time(lambda seed: (_seed_globals(seed), reference(hr)), seeds, repeats) / batch * 1e3
    out["degradation_vs_basicsr_time_ratio"] = out["ours_ms_per_crop"] / out["basicsr_ms_per_crop"]
    out["ours_usm_ms_per_crop"] = cpu_time(lambda: usm_sharpen(hr), repeats) / batch * 1e3
    out["basicsr_usm_ms_per_crop"] = cpu_time(lambda: reference.usm(hr), repeats) / batch * 1e3
    out["ours_rest_ms_per_crop"] = out["ours_ms_per_crop"] - out["ours_usm_ms_per_crop"]
    out["basicsr_rest_ms_per_crop"] = out["basicsr_ms_per_crop"] - out["basicsr_usm_ms_per_crop"]
    out["degradation_rest_vs_basicsr_rest_time_ratio"] = out["ours_rest_ms_per_crop"] / out["basicsr_rest_ms_per_crop"]

    step_hr = hr[:gen_batch]
    step = esrgan_step_time(step_hr, ours(step_hr).lr, smoke) * batch / gen_batch
    out["esrgan_step_ms_per_crop"] = step / batch * 1e3
    out["degradation_vs_esrgan_step_ratio"] = out["ours_ms_per_crop"] / out["esrgan_step_ms_per_crop"]

    # one crop per call: the per-batch draws (resize factors; for BasicSR also the noise type,
    # the interpolations and the final order) would otherwise make the crops of a batch alike
    _seed_globals(1)
    ours_psnr, ref_psnr = [], []
    stats = RealESRGANDegradation(scale=4, seed=1)
    for crop in random_photo_crops(crops, size, seed=1).split(1):
        ours_psnr += _lr_psnr(stats(crop).lr, crop)
        ref_psnr += _lr_psnr(reference(crop)[0], crop)
    out["crops"] = len(ours_psnr)
    out["lr_psnr_mean_ours_db"] = statistics.fmean(ours_psnr)
    out["lr_psnr_mean_basicsr_db"] = statistics.fmean(ref_psnr)
    out["lr_psnr_std_ours_db"] = statistics.stdev(ours_psnr)
    out["lr_psnr_std_basicsr_db"] = statistics.stdev(ref_psnr)
    out["lr_psnr_mean_diff_db"] = out["lr_psnr_mean_ours_db"] - out["lr_psnr_mean_basicsr_db"]
    out["lr_psnr_std_ratio"] = out["lr_psnr_std_ours_db"] / out["lr_psnr_std_basicsr_db"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="HR crop side (multiple of 4, >= 74)")
    parser.add_argument("--seeds", type=int, default=4, help="seeded draws timed per pipeline")
    parser.add_argument("--repeats", type=int, default=3, help="runs per seed (the minimum is kept)")
    parser.add_argument("--crops", type=int, default=300, help="crops for the LR statistics")
    parser.add_argument("--gen-batch", type=int, default=1, help="crops in the timed ESRGAN step (scaled to --batch)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and networks: checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.size, args.seeds, args.repeats, args.crops = 2, 128, 1, 1, 4
    r = measure(args.batch, args.size, args.seeds, args.repeats, args.crops, args.gen_batch, args.threads, args.smoke)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch} x 3 x {args.size}^2 real-photo crops, CPU ms per crop")
    print(f"RealESRGANDegradation : {r['ours_ms_per_crop']:8.2f}  (USM {r['ours_usm_ms_per_crop']:.2f}, rest {r['ours_rest_ms_per_crop']:.2f})")
    print(f"BasicSR pipeline      : {r['basicsr_ms_per_crop']:8.2f}  (USM {r['basicsr_usm_ms_per_crop']:.2f}, rest {r['basicsr_rest_ms_per_crop']:.2f})")
    print(f"degradation_vs_basicsr_time_ratio = {r['degradation_vs_basicsr_time_ratio']:.3f} (target <= 0.1); "
          f"rest only {r['degradation_rest_vs_basicsr_rest_time_ratio']:.3f} (target <= 1)")
    print(f"ESRGAN step {r['esrgan_step_ms_per_crop']:.0f} ms per crop; degradation_vs_esrgan_step_ratio = "
          f"{r['degradation_vs_esrgan_step_ratio']:.4f} (target <= 0.1)")
    print(f"PSNR(LR, bicubic HR) over {r['crops']} crops: ours {r['lr_psnr_mean_ours_db']:.2f} +- {r['lr_psnr_std_ours_db']:.2f} dB, "
          f"BasicSR {r['lr_psnr_mean_basicsr_db']:.2f} +- {r['lr_psnr_std_basicsr_db']:.2f} dB; "
          f"mean diff {r['lr_psnr_mean_diff_db']:+.2f} dB (target |.| <= 0.5), std ratio {r['lr_psnr_std_ratio']:.2f}")


if __name__ == "__main__":
    main()
