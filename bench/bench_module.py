"""Cost of training through SRGANModule, and of the SA pixel loss, in one stage-2 step.

Stage 2 of the paper-size SA-ESRGAN: RRDBNet (23 RRDB blocks, 64 features, growth 32, x4),
VGGStyleDiscriminator (128x128), SAPixelLoss(alpha=0.01, beta=20, LocalVariance), relativistic
AdversarialLoss with weight 0.005; Adam (lr 1e-4, betas 0.9/0.99) for both networks. The
perceptual loss is OFF by default (no ImageNet VGG weights exist here); ``--perceptual`` adds
PerceptualLoss(weights="random") (VGG19 conv5_4, weight 1) to every variant, which costs what
the ImageNet one costs.

Four variants, each one G step then one D step per batch (D's real and fake terms backpropagated
separately), on real-photo crops (scikit-image's "train" sample photos, HR 128x128, LR by MATLAB
bicubic x4 down to 32x32):

  bare     a plain PyTorch loop doing the same updates as the module: edge map once per batch;
           G step with D frozen (requires_grad toggled as Lightning's toggle_optimizer does),
           pixel + relativistic G loss (D on sr, D on hr without grad), backward, Adam, zero_grad;
           D step with G frozen, real term backward, fake term (D on sr.detach()) backward, Adam.
  module   the same through SRGANModule driven by a real pl.Trainer (manual optimisation,
           logger/checkpointing/progress bar/model summary off), SA loss with LocalVariance
  L1       the module with the plain L1 loss (beta 0, no edge extractor)
  Canny    the module with SAPixelLoss(beta=20, Canny(100, 200))

All variants share the same G, D and loss objects. Runs alternate: each round runs every
variant once (in a rotated order) for --warmup + --steps batches with fresh optimizers (as a new
fit does) and discards the first --warmup batches. A module batch is timed from one
on_train_batch_start to the next (the last to on_train_epoch_end), so Lightning's bookkeeping
after on_train_batch_end (logged metrics, progress counters) is included; a bare batch from one
step start to the next, batch fetch included. Each batch gets a wall time (time.perf_counter)
and the process's CPU time (time.process_time): on a CPU shared with other jobs the wall time
of a one-thread run stretches with their load, its CPU time much less, so the CPU figures are
the steadier estimate of the work done. The table gives, per variant over rounds x steps
batches, the median and minimum wall time, the median CPU time and (module) the median wall
time between on_train_batch_start and on_train_batch_end alone; then the ratios module/bare
(target <= 1.05), SA-LV/L1 (<= 1.03) and SA-Canny/L1 (<= 1.10), each judged on median wall
time and on median CPU time.

Threads: the default is 1. With 2 threads on 2 cores that other jobs also use, OpenMP's
barriers wait on descheduled threads and single steps were seen to take 10-100x their normal
time; use --threads 2 (or more) only on an otherwise idle machine.

    python bench/bench_module.py [--batch 2] [--rounds 4] [--warmup 1] [--steps 2]
                                 [--threads 1] [--perceptual] [--show-times]

The defaults (4 rounds x 3 batches x 4 variants = 48 batches of 2 images) take about 2 minutes
on an idle 2-core CPU (a step costs ~1.1 s of CPU per image with one thread) and 4-5 minutes
when the machine is loaded.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from salightning.data import imresize, read_image
from salightning.data.samples import sample_image_paths
from salightning.edges import Canny, LocalVariance
from salightning.losses import AdversarialLoss, PerceptualLoss, SAPixelLoss
from salightning.models import RRDBNet, VGGStyleDiscriminator
from salightning.module import SRGANModule

HR_SIZE = 128
SCALE = 4
ADV_WEIGHT = 0.005
TARGETS = {"module / bare": 1.05, "SA-LV / L1": 1.03, "SA-Canny / L1": 1.10}


def photo_batches(batch: int, count: int) -> list[dict[str, Any]]:
    """``count`` batches of ``batch`` distinct real-photo crops: {"lr": (B,3,32,32), "hr": (B,3,128,128), "name"}."""
    photos = [read_image(p) for p in sample_image_paths("train")]
    crops, names = [], []
    for i in range(batch * count):
        photo = photos[i % len(photos)]
        k = i // len(photos)
        _, h, w = photo.shape
        top = min((h - HR_SIZE) // 2 + k * HR_SIZE // 2, h - HR_SIZE)
        left = min((w - HR_SIZE) // 2 + k * HR_SIZE // 3, w - HR_SIZE)
        crops.append(photo[:, top : top + HR_SIZE, left : left + HR_SIZE])
        names.append(f"photo{i % len(photos)}_{k}")
    hr = torch.stack(crops).contiguous()
    lr = imresize(hr, 1 / SCALE).clamp(0, 1)
    return [
        {"lr": lr[j : j + batch], "hr": hr[j : j + batch], "name": names[j : j + batch]}
        for j in range(0, batch * count, batch)
    ]


def adam(params: Any) -> torch.optim.Optimizer:
    # the module's default optimizer (ESRGAN / BasicSR stage 2)
    return torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.99))


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds: the process's CPU time is less sensitive to other load than wall time."""
    return time.perf_counter(), time.process_time()


def spans(marks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, CPU) durations between consecutive marks."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


class BatchTimer(pl.Callback):
    """Per-batch (wall, CPU) times: on_train_batch_start to the next one (the last to
    on_train_epoch_end), and on_train_batch_start to on_train_batch_end (the hook-bracketed part)."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []
        self.epoch_end = (0.0, 0.0)

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(clock())

    def on_train_batch_end(self, *args: Any) -> None:
        self.ends.append(clock())

    def on_train_epoch_end(self, *args: Any) -> None:
        self.epoch_end = clock()

    def periods(self) -> list[tuple[float, float]]:
        return spans(self.starts + [self.epoch_end])

    def inside(self) -> list[tuple[float, float]]:
        return [spans([s, e])[0] for s, e in zip(self.starts, self.ends)]


def run_module(
    module: SRGANModule, batches: list[dict[str, Any]]
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Fit ``module`` for one epoch over ``batches``; (periods, hook-bracketed times) per batch."""
    timer = BatchTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return timer.periods(), timer.inside()


def run_bare(
    generator: nn.Module,
    discriminator: nn.Module,
    pixel_loss: SAPixelLoss,
    adversarial_loss: AdversarialLoss,
    perceptual_loss: nn.Module | None,
    batches: list[dict[str, Any]],
) -> list[tuple[float, float]]:
    """The module's stage-2 updates in a plain loop; the (wall, CPU) time of each batch (fetch included)."""
    generator.train()
    discriminator.train()
    opt_g, opt_d = adam(generator.parameters()), adam(discriminator.parameters())
    marks = [clock()]
    for batch in DataLoader(batches, batch_size=None):
        lr, hr = batch["lr"], batch["hr"]
        edge_map = pixel_loss.edge_map(hr)

        # G step; Lightning's toggle_optimizer(opt_g) freezes every parameter not in opt_g
        discriminator.requires_grad_(False)
        sr = generator(lr)
        loss_g = pixel_loss(sr, hr, edge_map=edge_map).total
        if perceptual_loss is not None:
            loss_g = loss_g + perceptual_loss(sr, hr)
        fake_logits = discriminator(sr)
        with torch.no_grad():
            real_logits = discriminator(hr)
        loss_g = loss_g + ADV_WEIGHT * adversarial_loss.generator_loss(fake_logits, real_logits)
        loss_g.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        discriminator.requires_grad_(True)

        # D step, real and fake terms backpropagated separately
        generator.requires_grad_(False)
        real_logits = discriminator(hr)
        adversarial_loss.discriminator_real_loss(real_logits, fake_logits.detach()).backward()
        fake_logits = discriminator(sr.detach())
        adversarial_loss.discriminator_fake_loss(fake_logits, real_logits.detach()).backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        generator.requires_grad_(True)

        marks.append(clock())
    return spans(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="images per batch (the paper: 16)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; each runs every variant once")
    parser.add_argument("--warmup", type=int, default=1, help="discarded batches per variant per round")
    parser.add_argument("--steps", type=int, default=2, help="timed batches per variant per round")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: see the note on shared CPUs above)"
    )
    parser.add_argument(
        "--perceptual",
        action="store_true",
        help="add PerceptualLoss(weights='random') (VGG19 conv5_4) to every variant (default: off)",
    )
    parser.add_argument("--show-times", action="store_true", help="print every batch's time as it is measured")
    args = parser.parse_args()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    generator = RRDBNet(num_features=64, num_blocks=23, growth_channels=32, scale=SCALE)
    discriminator = VGGStyleDiscriminator(input_size=HR_SIZE)
    adversarial_loss = AdversarialLoss("relativistic")
    perceptual_loss = PerceptualLoss("conv5_4", weights="random") if args.perceptual else None
    pixel_losses = {
        "SA-LV": SAPixelLoss(alpha=0.01, beta=20.0, edge_extractor=LocalVariance()),
        "L1": SAPixelLoss(alpha=0.01, beta=0.0),
        "SA-Canny": SAPixelLoss(alpha=0.01, beta=20.0, edge_extractor=Canny(100.0, 200.0)),
    }
    modules = {
        name: SRGANModule(
            generator=generator,
            discriminator=discriminator,
            pixel_loss=loss,
            adversarial_loss=adversarial_loss,
            adversarial_weight=ADV_WEIGHT,
            perceptual_loss=perceptual_loss,
        )
        for name, loss in pixel_losses.items()
    }
    batches = photo_batches(args.batch, args.warmup + args.steps)

    Times = list[tuple[float, float]]
    variants: dict[str, Callable[[], Times]] = {
        "bare (SA-LV)": lambda: run_bare(
            generator, discriminator, pixel_losses["SA-LV"], adversarial_loss, perceptual_loss, batches
        ),
    }
    inside: dict[str, Times] = {}

    def module_variant(name: str) -> Callable[[], Times]:
        def run() -> Times:
            periods, hooked = run_module(modules[name], batches)
            inside.setdefault(f"module ({name})", []).extend(hooked[args.warmup :])
            return periods

        return run

    for name in pixel_losses:
        variants[f"module ({name})"] = module_variant(name)

    n_params_g = sum(p.numel() for p in generator.parameters())
    print(
        f"stage-2 SA-ESRGAN step: RRDBNet 23 blocks / 64 feat ({n_params_g:,} params), VGGStyleDiscriminator 128, "
        f"relativistic GAN x{ADV_WEIGHT}, pixel alpha 0.01 beta 20"
    )
    percep = "PerceptualLoss(conv5_4, weights=random)" if args.perceptual else "off (--perceptual adds it)"
    print(f"perceptual loss: {percep}")
    print(
        f"batch {args.batch} x LR {HR_SIZE // SCALE}x{HR_SIZE // SCALE} -> HR {HR_SIZE}x{HR_SIZE} (real photos), "
        f"torch threads {args.threads}, {args.rounds} rounds x ({args.warmup} warm-up + {args.steps} timed) "
        "batches per variant"
    )
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")

    times: dict[str, Times] = {name: [] for name in variants}
    names = list(variants)
    wall = time.perf_counter()
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            torch.set_num_threads(args.threads)  # whatever the previous run left
            measured = variants[name]()
            if args.show_times:
                shown = " ".join(f"{w:.2f}/{c:.2f}" for w, c in measured)
                print(f"round {r} {name}: wall/CPU s {shown} (first {args.warmup} warm-up)", flush=True)
            times[name].extend(measured[args.warmup :])
    wall = time.perf_counter() - wall

    med = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    low = {name: min(w for w, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    width = max(map(len, names))
    print(
        f"\n{'variant':<{width}}  {'n':>2}  {'median wall s':>13}  {'min wall s':>10}  "
        f"{'median CPU s':>12}  {'median wall in hooks':>20}"
    )
    for name in names:
        hooked = f"{statistics.median(w for w, _ in inside[name]):20.3f}" if name in inside else f"{'-':>20}"
        print(
            f"{name:<{width}}  {len(times[name]):>2}  {med[name]:13.3f}  {low[name]:10.3f}  {cpu[name]:12.3f}  {hooked}"
        )

    pairs = {
        "module / bare": ("module (SA-LV)", "bare (SA-LV)"),
        "SA-LV / L1": ("module (SA-LV)", "module (L1)"),
        "SA-Canny / L1": ("module (SA-Canny)", "module (L1)"),
    }
    print(f"\n{'ratio':<14}  {'median wall':>11}  {'min wall':>8}  {'median CPU':>10}  {'target':>7}  verdict")
    for label, (a, b) in pairs.items():
        target = TARGETS[label]
        ratio, ratio_cpu = med[a] / med[b], cpu[a] / cpu[b]
        verdict = " / ".join(
            f"{what} {'meets' if r <= target else 'MISSES'}" for what, r in (("wall", ratio), ("CPU", ratio_cpu))
        )
        print(
            f"{label:<14}  {ratio:11.3f}  {low[a] / low[b]:8.3f}  {ratio_cpu:10.3f}  "
            f"{'<= ' + format(target, '.2f'):>7}  {verdict}"
        )
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; timed loop {wall:.0f} s")

if __name__ == "__main__":
    main()
