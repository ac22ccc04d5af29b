"""How close the generator's training pass comes to the machine's dense-convolution speed.

Achieved FLOP/s of the paper-size RRDBNet's forward + L1 loss + backward (23 blocks, 64
features, growth 32, x4; LR 32x32 real-photo crops) divided by the FLOP/s the same machine
reaches on a large dense 3x3 convolution of 64 channels, forward + backward (grad of input and
weight), in the same dtype with the same threads: the best of a few sizes, (N, 64, S, S) with
N*S*S fixed, so the reference is the best this machine's convolution kernels do on the
generator's kind of layer, not a datasheet peak. FLOPs are counted by
torch.utils.flop_counter.FlopCounterMode (convolutions and matrix products; element-wise work
such as LeakyReLU, the residual additions and the concatenations is not counted, which is why
a utilisation below 1 is expected even with perfect convolutions).

Each timing is the median over --repeats, measured round-robin (generator, each conv size,
generator, ...) so load from other jobs hits all alike; on a CPU the process's CPU time is used
(steadier on a shared machine), on a GPU the wall time after a synchronize.

    python bench/bench_flops.py [--batch 2] [--repeats 5] [--threads 1] [--device cpu|cuda]

bench/run.py imports measure().
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from salightning.ops import imresize
from salightning.models import RRDBNet

from bench_module import SCALE, photo_crops

#: (batch, size) of the reference conv for a given number of images of 128x128 pixels
CONV_SHAPES = ((1, 2.0), (4, 1.0), (16, 0.5))


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (convolutions and matrix products, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Time of one call: CPU seconds of this process on a CPU, wall seconds on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(
    batch: int = 2, repeats: int = 5, threads: int = 1, device: str = "cpu", images: int = 4, blocks: int = 23
) -> dict[str, float | str]:
    """Generator and reference-conv FLOPs, seconds and FLOP/s, and their ratio.

    ``images``: the reference conv's work, in 128x128 images of 64 channels (split over
    CONV_SHAPES). Keys: ``generator_flops``, ``generator_s``, ``generator_flops_per_s``,
    ``conv_flops_per_s`` (the best shape), ``conv_best`` (its name), ``utilization``, and
    ``rate <conv name>`` for every shape.
    """
    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    generator = RRDBNet(num_features=64, num_blocks=blocks, growth_channels=32, scale=SCALE).to(dev)
    hr, _ = photo_crops(batch)
    hr = hr.to(dev)
    lr = imresize(hr, 1 / SCALE).clamp(0, 1)

    def generator_pass() -> None:
        F.l1_loss(generator(lr), hr).backward()
        generator.zero_grad(set_to_none=True)

    weight = torch.randn(64, 64, 3, 3, device=dev, requires_grad=True)
    convs: dict[str, Callable[[], None]] = {}
    for n, side in CONV_SHAPES:
        size = int(128 * side * (images / 4) ** 0.5)
        # random activations: the speed of a dense conv does not depend on the values
        x = torch.randn(n, 64, size, size, device=dev, requires_grad=True)

        def conv_pass(x: torch.Tensor = x) -> None:
            F.conv2d(x, weight, padding=1).sum().backward()
            x.grad = weight.grad = None

        convs[f"conv {n}x64x{size}x{size}"] = conv_pass

    passes = {"generator": generator_pass, **convs}
    flops = {name: count_flops(fn) for name, fn in passes.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(repeats):
        for name, fn in passes.items():
            times[name].append(seconds(fn, dev))
    rate = {name: flops[name] / statistics.median(times[name]) for name in passes}
    best = max(convs, key=rate.__getitem__)
    return {
        "generator_flops": float(flops["generator"]),
        "generator_s": statistics.median(times["generator"]),
        "generator_flops_per_s": rate["generator"],
        "conv_flops_per_s": rate[best],
        "conv_best": best,
        "utilization": rate["generator"] / rate[best],
        **{f"rate {name}": rate[name] for name in convs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="LR 32x32 images per generator pass")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    r = measure(args.batch, args.repeats, args.threads, args.device)
    clock = "CPU" if args.device == "cpu" else "wall"
    print(f"device {args.device}, torch threads {args.threads}, fp32, median {clock} time of {args.repeats}")
    print(
        f"RRDBNet forward + L1 + backward, batch {args.batch}: {r['generator_flops'] / 1e9:.1f} GFLOP in "
        f"{r['generator_s']:.3f} s = {r['generator_flops_per_s'] / 1e9:.1f} GFLOP/s"
    )
    for key, value in r.items():
        if key.startswith("rate conv"):
            print(f"{key[5:]:<24} forward + backward: {value / 1e9:.1f} GFLOP/s")
    print(f"utilisation (generator / best conv, {r['conv_best']}): {r['utilization']:.3f}")


if __name__ == "__main__":
    main()
