"""Peak memory: tiled vs untiled prediction of a large image, and one stage-2 training step at
the paper's batch and patch size per network.

Every measurement runs in a fresh Python process (this script re-run with --child), so one
measurement's peak cannot hide another's, nor can memory freed by one and kept by the
allocator be reused by the next without showing. On a CPU the peak is the process's
resident-set high-water mark (tracemalloc does not see torch's allocations) minus the resident
set just before the measured work (prediction: generator built and image loaded; step: torch
and Lightning imported, nothing built, so the figure includes weights, Adam states,
activations and the VGG). The high-water mark is the kernel's VmHWM, reset on entry through
/proc/self/clear_refs; resource's ru_maxrss is not used because Linux keeps a forked parent's
ru_maxrss across exec, so a child of a big process starts with the parent's peak. On a GPU it
is torch.cuda.max_memory_allocated minus the memory allocated before the same work.

1. Tiled prediction: salightning.predict.tiled_forward on a real photo of --lr-size pixels a
   side (x4 out), untiled (tile 0) and with the CLI's default tiles (256, overlap 32), with an
   RRDBNet of full width (64 features, growth 32) and --blocks RRDB blocks. Under no_grad the
   trunk's activations are freed block by block, so the peak does not depend on the depth, and
   the time ratio mostly reflects the tiles' overlap (the same share of every layer's work):
   fewer blocks than the paper's 23 (--blocks) shorten the run without changing either ratio much.
2. Stage-2 step through SRGANModule and a pl.Trainer (one batch, so Adam's states are
   allocated during the step as they are held in every later one), with the perceptual loss of
   each paper's configuration (random VGG19 weights: same memory as ImageNet's):
     SA-ESRGAN        RRDBNet 23 blocks, VGGStyleDiscriminator 128, relativistic GAN, VGG19
                      conv5_4 L1, SA L1 pixel loss (local variance); batch 16, HR 128 (LR 32)
     SA-VSRResFeatGAN VSRResNet (5 frames, 15 blocks), VSRResFeatGANDiscriminator, vanilla GAN,
                      VGG19 relu5_4 Charbonnier, SA Charbonnier pixel loss (local variance);
                      batch 64, HR 128, 5 bicubic-upsampled input frames at HR size
   Each network is measured at the --*-batches given; when the paper's batch is not among them
   the figure is extrapolated linearly from the two largest (memory grows linearly with the
   batch: activations are per sample, weights and optimizer states are not) and said so.

    python bench/bench_memory.py [--lr-size 512] [--blocks 23] [--esrgan-batches 8 16]
                                 [--vsr-batches 4 8 16] [--threads 1] [--device cpu|cuda]

bench/run.py imports tiled_prediction() and step_memory().
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve()
PAPER_BATCH = {"sa_esrgan": 16, "sa_vsrresfeatgan": 64}
PREDICT_TILE, PREDICT_OVERLAP = 256, 32  # salightning.predict's defaults for images and clips


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Peak memory of the work inside ``with``, above what was in use when it started (MiB).

    CPU: the resident-set high-water mark (VmHWM), reset to the current resident set on entry
    through /proc/self/clear_refs. Not ru_maxrss: Linux carries it over from the forked parent
    across exec, so a child of a big process starts with the parent's peak."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = self.peak = 0.0
        self.reset = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak resident set size to the current one (Linux >= 4.0)
            self.reset = True
        except OSError:
            self.reset = False
        self.base, self.high_water_before = status_mib("VmRSS"), status_mib("VmHWM")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20 - self.base
            return
        after = status_mib("VmHWM")
        # without the reset, an earlier high-water mark the work never exceeded would hide the
        # work's own peak: report it as not measurable (NaN)
        self.peak = after - self.base if self.reset or after > self.high_water_before else float("nan")


def _real_image(size: int) -> torch.Tensor:
    """(1, 3, size, size): a real photo (scikit-image's astronaut, 512x512), MATLAB-resized if needed."""
    from salightning.data import read_image
    from salightning.ops import imresize
    from salightning.data.samples import sample_image_paths

    photo = read_image(sample_image_paths("train")[0])
    if photo.shape[-1] != size or photo.shape[-2] != size:
        photo = imresize(photo, size=(size, size)).clamp(0, 1)
    return photo[None].contiguous()


def child_tiled(lr_size: int, tile: int, overlap: int, blocks: int, device: str) -> dict[str, Any]:
    """Predict one image (tile 0: untiled) and report its peak memory and time."""
    from salightning.models import RRDBNet
    from salightning.predict import tiled_forward

    dev = torch.device(device)
    torch.manual_seed(0)
    generator = RRDBNet(num_features=64, num_blocks=blocks, growth_channels=32, scale=4).eval().to(dev)
    x = _real_image(lr_size).to(dev)
    with PeakMemory(dev) as mem:
        wall, cpu = time.perf_counter(), time.process_time()
        out = tiled_forward(generator, x, tile=tile, overlap=overlap)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"peak_mib": mem.peak, "base_mib": mem.base, "wall_s": wall, "cpu_s": cpu, "out": list(out.shape)}


def _video_batch(batch: int) -> dict[str, Any]:
    """{"lr": (B, 5, 3, 128, 128) bicubic-upsampled LR frames, "hr": (B, 3, 128, 128) centre frames}:
    each sample a 5-frame pan (3 px per frame) across a real photo."""
    from salightning.ops import imresize

    from bench_module import HR_SIZE, SCALE, photo_crops

    pan = 3
    wide, names = photo_crops(batch, HR_SIZE + 4 * pan)
    frames = torch.stack([wide[:, :, : HR_SIZE, t * pan : t * pan + HR_SIZE] for t in range(5)], dim=1)
    lr = imresize(imresize(frames, 1 / SCALE).clamp(0, 1), float(SCALE)).clamp(0, 1)
    return {"lr": lr.contiguous(), "hr": frames[:, 2].contiguous(), "name": names}


def child_step(network: str, batch: int, device: str, tiny: bool = False) -> dict[str, Any]:
    """One stage-2 step of ``network`` at ``batch``; its peak memory (weights, Adam states,
    activations, VGG all included) and time. ``tiny``: one block and 8 features (bench/run.py --smoke)."""
    from bench_module import ADV_WEIGHT, HR_SIZE, photo_batches, quiet_lightning, run_module
    from salightning.edges import LocalVariance
    from salightning.losses import AdversarialLoss, PerceptualLoss, SAPixelLoss
    from salightning.models import RRDBNet, VGGStyleDiscriminator, VSRResFeatGANDiscriminator, VSRResNet
    from salightning.training import SRGANModule

    quiet_lightning()
    dev = torch.device(device)
    torch.manual_seed(0)
    with PeakMemory(dev) as mem:
        if network == "sa_esrgan":
            module = SRGANModule(
                generator=RRDBNet(num_features=8 if tiny else 64, num_blocks=1 if tiny else 23, growth_channels=32, scale=4),
                discriminator=VGGStyleDiscriminator(num_features=8 if tiny else 64, input_size=HR_SIZE),
                adversarial_loss=AdversarialLoss("relativistic"),
                adversarial_weight=ADV_WEIGHT,
                perceptual_loss=PerceptualLoss("conv5_4", distance="l1", weights="random"),
                perceptual_weight=1.0,
                pixel_loss=SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=LocalVariance(5, delta=0.0015)),
            )
            batches = photo_batches(batch, 1)
        elif network == "sa_vsrresfeatgan":
            module = SRGANModule(
                generator=VSRResNet(num_frames=5, frame_features=32, num_features=8 if tiny else 64, num_blocks=1 if tiny else 15, scale=4),
                discriminator=VSRResFeatGANDiscriminator(num_features=8 if tiny else 64),
                adversarial_loss=AdversarialLoss("vanilla"),
                adversarial_weight=0.001,
                perceptual_loss=PerceptualLoss("relu5_4", distance="charbonnier", weights="random"),
                perceptual_weight=0.998,
                pixel_loss=SAPixelLoss(
                    beta1=0.001, beta2=5.0, edge_extractor=LocalVariance(5, delta=0.0015), distance="charbonnier"
                ),
            )
            batches = [_video_batch(batch)]
        else:
            raise ValueError(f"network must be one of {sorted(PAPER_BATCH)}, got {network!r}")
        periods, _ = run_module(module, batches, device=dev)
    wall, cpu = periods[0]
    return {"peak_mib": mem.peak, "base_mib": mem.base, "wall_s": wall, "cpu_s": cpu}


def run_child(task: dict[str, Any], threads: int, timeout: float = 900) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; its result dict."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", json.dumps(task), "--threads", str(threads)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=HERE.parents[1],
    )
    results = [line[len("RESULT ") :] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"measurement {task} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(results[-1])


def tiled_prediction(
    lr_size: int = 512, blocks: int = 6, threads: int = 1, device: str = "cpu",
    tile: int = PREDICT_TILE, overlap: int = PREDICT_OVERLAP,
) -> dict[str, dict[str, Any]]:
    """{"untiled": ..., "tiled": ...}: each a child_tiled result."""
    common = {"kind": "tiled", "lr_size": lr_size, "overlap": overlap, "blocks": blocks, "device": device}
    return {
        "untiled": run_child({**common, "tile": 0}, threads),
        "tiled": run_child({**common, "tile": tile}, threads),
    }


def step_memory(network: str, batches: list[int], threads: int = 1, device: str = "cpu", tiny: bool = False) -> dict[str, Any]:
    """Peak memory of a stage-2 step of ``network`` at each of ``batches``, and at the paper's
    batch (measured, or extrapolated linearly from the two largest batches measured).

    Returns {"per_batch": {batch: child result}, "paper_batch", "peak_mib" (at the paper's
    batch), "extrapolated" (bool), "per_sample_mib" (slope between the two largest batches, or None)}.
    """
    per_batch = {b: run_child({"kind": "step", "network": network, "batch": b, "device": device, "tiny": tiny}, threads) for b in batches}
    paper = PAPER_BATCH[network]
    slope = None
    if len(batches) >= 2:
        b1, b2 = sorted(batches)[-2:]
        slope = (per_batch[b2]["peak_mib"] - per_batch[b1]["peak_mib"]) / (b2 - b1)
    if paper in per_batch:
        peak, extrapolated = per_batch[paper]["peak_mib"], False
    else:
        if slope is None:
            raise ValueError(f"extrapolating to batch {paper} needs two batch sizes, got {batches}")
        top = max(batches)
        peak, extrapolated = per_batch[top]["peak_mib"] + slope * (paper - top), True
    return {"per_batch": per_batch, "paper_batch": paper, "peak_mib": peak, "extrapolated": extrapolated,
            "per_sample_mib": slope}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr-size", type=int, default=512, help="side of the LR image predicted (x4 out)")
    parser.add_argument("--blocks", type=int, default=23, help="RRDB blocks of the prediction generator")
    parser.add_argument("--esrgan-batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--vsr-batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each measuring process")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        task = json.loads(args.child)
        kind = task.pop("kind")
        result = child_tiled(**task) if kind == "tiled" else child_step(**task)
        print("RESULT " + json.dumps(result), flush=True)
        return

    unit = "RSS high-water mark above the start" if args.device == "cpu" else "max_memory_allocated"
    print(f"device {args.device}, torch threads {args.threads}; peak memory = {unit}, one fresh process each")
    tiled = tiled_prediction(args.lr_size, args.blocks, args.threads, args.device)
    for name, r in tiled.items():
        print(f"{name:>8} {args.lr_size}x{args.lr_size} -> {r['out'][-2]}x{r['out'][-1]}: peak {r['peak_mib']:.0f} MiB, "
              f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU")
    print(f"tiled / untiled: peak memory {tiled['tiled']['peak_mib'] / tiled['untiled']['peak_mib']:.3f}, "
          f"CPU time {tiled['tiled']['cpu_s'] / tiled['untiled']['cpu_s']:.3f}")
    for network, batches in (("sa_esrgan", args.esrgan_batches), ("sa_vsrresfeatgan", args.vsr_batches)):
        r = step_memory(network, batches, args.threads, args.device)
        for b, m in r["per_batch"].items():
            print(f"{network} batch {b}: peak {m['peak_mib']:.0f} MiB, step {m['wall_s']:.1f} s wall")
        how = "extrapolated" if r["extrapolated"] else "measured"
        print(f"{network} at the paper's batch {r['paper_batch']}: {r['peak_mib']:.0f} MiB ({how})")


if __name__ == "__main__":
    main()
