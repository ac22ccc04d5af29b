"""Cost of the edge extractors, next to cv2.Canny and to one generator training step.

Measures, on a batch of real-photo crops (default 16x3x128x128), the median time (after warm-up)
of LocalVariance (window 5), Canny (100/200), SobelMagnitude, and of cv2.Canny looping over the
batch on its 8-bit luminance; then one training step (forward + L1 loss + backward + Adam step)
of the paper-size RRDBNet (23 RRDB blocks, 64 features, growth 32, x4) on the matching LR batch,
and prints each extractor's cost as a fraction of that step. The step is slow on a CPU, so by
default it runs on a smaller batch (--gen-batch) and is scaled linearly to --batch (printed).

    python bench/bench_edges.py [--batch 16] [--size 128] [--repeats 7] [--gen-batch 2]
                                [--gen-repeats 3] [--threads 1] [--device cpu|cuda]

bench/run.py imports photo_crops() and extractor_costs().
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salightning.edges import Canny, LocalVariance, SobelMagnitude  # noqa: E402

# photos bundled in scikit-image's wheel (read from its data folder: nothing downloads)
PHOTO_FILES = [
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
    "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png",
]


def photo_crops(batch: int, size: int) -> torch.Tensor:
    """(batch, 3, size, size) crops in [0, 1], cycling through the photos on a fixed grid."""
    import imageio.v3 as iio
    import skimage

    photos = []
    for name in PHOTO_FILES:
        arr = np.asarray(iio.imread(Path(skimage.data_dir) / name))
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        photos.append(torch.from_numpy(arr[..., :3].copy()).permute(2, 0, 1).float() / 255.0)
    crops = []
    for i in range(batch):
        p = photos[i % len(photos)]
        k = i // len(photos)
        _, h, w = p.shape
        top = min((h - size) // 2 + k * size // 2, h - size)
        left = min((w - size) // 2 + k * size // 3, w - size)
        crops.append(p[:, top : top + size, left : left + size])
    return torch.stack(crops).contiguous()


def cpu_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum process CPU seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the model's convolutions for input ``x`` (one forward)."""
    total = 0

    def hook(module: nn.Conv2d, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


class StandIn(nn.Module):
    """Plain 3x3 conv stack with RRDBNet's x4 tail, sized to the paper RRDBNet's MACs."""

    # MACs per LR pixel of RRDBNet(23 blocks, 64 features, growth 32, x4), from its layers:
    # 23 RRDB x 3 RDB x 9 * (64+96+128+160)*32 + 192*64 in the trunk, plus head and tail
    RRDBNET_MACS_PER_LR_PIXEL = (
        9 * (3 * 64 + 23 * 3 * (448 * 32 + 192 * 64) + 64 * 64)  # conv_first, trunk, conv_body
        + 9 * 64 * 64 * (4 + 16 + 16)  # conv_up1 (x2 pixels), conv_up2 and conv_hr (x4)
        + 9 * 64 * 3 * 16  # conv_last
    )

    def __init__(self) -> None:
        super().__init__()
        tail = 9 * 64 * 64 * (4 + 16 + 16) + 9 * 64 * 3 * 16 + 9 * 3 * 64
        n_body = round((self.RRDBNET_MACS_PER_LR_PIXEL - tail) / (9 * 64 * 64))
        self.head = nn.Conv2d(3, 64, 3, 1, 1)
        self.body = nn.Sequential(
            *[nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1), nn.LeakyReLU(0.2)) for _ in range(n_body)]
        )
        self.up1 = nn.Conv2d(64, 64, 3, 1, 1)
        self.up2 = nn.Conv2d(64, 64, 3, 1, 1)
        self.hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.last = nn.Conv2d(64, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        feat = feat + self.body(feat)
        feat = F.leaky_relu(self.up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.hr(feat), 0.2))


def generator_step_time(hr: torch.Tensor, args: argparse.Namespace, device: torch.device) -> tuple[float, str]:
    """Median time of one G step (forward, L1, backward, Adam) on ``hr``'s LR, and what was run."""
    try:
        from salightning.models.rrdbnet import RRDBNet

        model: nn.Module = RRDBNet(num_features=64, num_blocks=23, growth_channels=32, scale=4)
        name = "salightning RRDBNet(64 feat, 23 blocks, growth 32, x4)"
    except ImportError as error:
        model = StandIn()
        name = f"stand-in conv stack with the paper RRDBNet's MACs (RRDBNet unavailable: {error})"
    model = model.to(device)
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    macs = count_macs(model, lr[:1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(model(lr), hr).backward()
        optimizer.step()

    seconds = median_time(step, args.gen_repeats, 1, device)
    name += f", {macs / 1e9:.2f} GMAC forward per {lr.shape[-2]}x{lr.shape[-1]} LR image"
    return seconds, name


def extractor_costs(x: torch.Tensor, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per batch ``x`` (B,3,H,W) of each extractor, and of a cv2.Canny loop over
    the batch (with and without the tensor -> 8-bit grey conversion) when OpenCV is installed."""
    extractors = {
        "LocalVariance(window 5)": LocalVariance(window_size=5),
        "Canny(100, 200)": Canny(100.0, 200.0),
        "SobelMagnitude": SobelMagnitude(),
    }
    costs = {name: median_time(lambda e=e: e(x), repeats, 1, device) for name, e in extractors.items()}
    try:
        import cv2
    except ImportError:
        return costs

    def cv2_canny_from_tensor() -> None:
        # what a training loop would pay: device tensor -> 8-bit luminance -> cv2.Canny per image
        rgb8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for img in rgb8:
            cv2.Canny(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 100, 200)

    grey8 = [
        cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        for img in (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    ]
    costs["cv2.Canny loop (incl. tensor -> uint8 grey)"] = median_time(cv2_canny_from_tensor, repeats, 1, device)
    costs["cv2.Canny loop (Canny calls only)"] = median_time(
        lambda: [cv2.Canny(g, 100, 200) for g in grey8], repeats, 1, device
    )
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="images in the edge-extractor batch")
    parser.add_argument("--size", type=int, default=128, help="HR crop size (multiple of 4)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per extractor")
    parser.add_argument("--gen-batch", type=int, default=2, help="batch of the timed G step (scaled to --batch)")
    parser.add_argument("--gen-repeats", type=int, default=3, help="timed G steps")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default; 1 keeps a shared CPU steady)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    x = photo_crops(args.batch, args.size).to(device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {tuple(x.shape)} of real-photo crops")
    print(f"median of {args.repeats} runs after 1 warm-up\n")

    costs = extractor_costs(x, args.repeats, device)
    if not any(name.startswith("cv2") for name in costs):
        print("cv2 not installed: no OpenCV comparison")

    gen_batch = min(args.gen_batch, args.batch)
    step, what = generator_step_time(x[:gen_batch], args, device)
    step_full = step * args.batch / gen_batch
    print(f"G step: {what}")
    print(
        f"G step (forward + L1 + backward + Adam) on {gen_batch} images: {step:.2f} s"
        + (f"; scaled linearly to {args.batch} images: {step_full:.2f} s" if gen_batch != args.batch else "")
        + "\n"
    )

    width = max(map(len, costs))
    print(f"{'extractor':<{width}}  {'ms / batch':>10}  {'fraction of G step':>18}")
    for name, seconds in costs.items():
        print(f"{name:<{width}}  {seconds * 1e3:10.2f}  {seconds / step_full:18.5f}")
    canny_ms, cv2_ms = costs["Canny(100, 200)"], costs.get("cv2.Canny loop (Canny calls only)")
    if cv2_ms:
        print(f"\nCanny (torch) / cv2.Canny calls: {canny_ms / cv2_ms:.1f}x")


if __name__ == "__main__":
    main()
