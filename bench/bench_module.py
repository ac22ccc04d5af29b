"""Cost of training through SRGANModule, of the SA pixel loss, and of the module's speed options,
in one stage-2 step.

Stage 2 of the paper-size SA-ESRGAN: RRDBNet (23 RRDB blocks, 64 features, growth 32, x4),
VGGStyleDiscriminator (128x128), SAPixelLoss(beta1=0.01, beta2=20, LocalVariance), relativistic
AdversarialLoss with weight 0.005; Adam (lr 1e-4, betas 0.9/0.99) for both networks. The
perceptual loss is OFF by default (no ImageNet VGG weights exist here); ``--perceptual`` adds
PerceptualLoss(weights="random") (VGG19 conv5_4, weight 1) to every variant, which costs what
the ImageNet one costs.

Variants, each one G step then one D step per batch (D's real and fake terms backpropagated
separately), on real-photo crops (scikit-image's "train" sample photos, HR 128x128, LR by MATLAB
bicubic x4 down to 32x32):

  bare     a plain PyTorch loop doing the same updates as the module: edge map once per batch;
           G step with D frozen (requires_grad toggled as Lightning's toggle_optimizer does),
           pixel + relativistic G loss (D on sr, D on hr without grad), backward, Adam, zero_grad;
           D step with G frozen, real term backward, fake term (D on sr.detach()) backward, Adam.
  module   the same through SRGANModule driven by a real pl.Trainer (manual optimisation,
           logger/checkpointing/progress bar/model summary off), SA loss with LocalVariance
  L1       the module with the plain L1 loss (beta2 0, no edge extractor)
  Canny    the module with SAPixelLoss(beta2=20, Canny(100, 200))
  with --options (each the SA-LV module with one switch, on its own copy of the networks and
  losses, since the switches change them in place):
  channels_last   SRGANModule(channels_last=True)
  bf16-mixed      pl.Trainer(precision="bf16-mixed") (edge maps stay fp32)
  channels_last + bf16-mixed   both
  compiled        SRGANModule(compile=True) (torch.compile of G and the perceptual network in place;
                  --no-compile leaves it out: the first CPU batch compiles for about a minute)

bare, module, L1 and Canny share the same G, D and loss objects. Runs alternate: each round runs
every variant once (in a rotated order) for --warmup + --steps batches with fresh optimizers (as
a new fit does) and discards the first --warmup batches. A module batch is timed from one
on_train_batch_start to the next (the last to on_train_epoch_end), so Lightning's bookkeeping
after on_train_batch_end (logged metrics, progress counters) is included; a bare batch from one
step start to the next, batch fetch included. Each batch gets a wall time (time.perf_counter,
after a CUDA synchronize on a GPU) and the process's CPU time (time.process_time): on a CPU
shared with other jobs the wall time of a one-thread run stretches with their load, its CPU
time much less (it still grows when their work evicts this process's caches: the minimum CPU
time is the steadiest estimate of the work itself), so on a CPU the CPU figures are the steadier
ones (on a GPU only the wall times mean anything). The table gives, per variant over rounds x
steps batches, the median and minimum wall time, the median and minimum CPU time and (module)
the median wall time between on_train_batch_start and on_train_batch_end alone; then the ratios
module/bare (target <= 1.05), SA-LV/L1 (<= 1.03) and SA-Canny/L1 (<= 1.10), and each option /
plain, the targets judged on median wall, median CPU and minimum CPU time.

Threads: the default is 1. With 2 threads on 2 cores that other jobs also use, OpenMP's
barriers wait on descheduled threads and single steps were seen to take 10-100x their normal
time; use --threads 2 (or more) only on an otherwise idle machine.

    python bench/bench_module.py [--batch 2] [--rounds 4] [--warmup 1] [--steps 2]
                                 [--threads 1] [--perceptual] [--options] [--no-compile]
                                 [--device cpu|cuda] [--show-times]

The defaults (4 rounds x 3 batches x 4 variants = 48 batches of 2 images) take about 2 minutes
on an idle 2-core CPU (a step costs ~1 s of CPU per image with one thread) and 4-5 minutes
when the machine is loaded; --options adds 4 variants and about a minute of compilation.
bench/run.py runs this benchmark with its own sizes (importing measure()).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from salightning.data import read_image
from salightning.ops import imresize
from salightning.data.samples import sample_image_paths
from salightning.edges import Canny, LocalVariance
from salightning.losses import AdversarialLoss, PerceptualLoss, SAPixelLoss
from salightning.models import RRDBNet, VGGStyleDiscriminator
from salightning.training import SRGANModule

HR_SIZE = 128
SCALE = 4
ADV_WEIGHT = 0.005
BARE = "bare (SA-LV)"
PLAIN = "module (SA-LV)"
L1 = "module (L1)"
CANNY = "module (SA-Canny)"
CHANNELS_LAST = "module (SA-LV) channels_last"
BF16 = "module (SA-LV) bf16-mixed"
CHANNELS_LAST_BF16 = "module (SA-LV) channels_last + bf16-mixed"
COMPILED = "module (SA-LV) compiled"
BASICSR = "BasicSR order (L1)"
L1_LOOP_ADAM = "module (L1) for-loop Adam"
#: ratio label -> (numerator variant, denominator variant, target or None)
PAIRS: dict[str, tuple[str, str, float | None]] = {
    "module / bare": (PLAIN, BARE, 1.05),
    "SA-LV / L1": (PLAIN, L1, 1.03),
    "SA-Canny / L1": (CANNY, L1, 1.10),
    "channels_last / plain": (CHANNELS_LAST, PLAIN, None),
    "bf16-mixed / fp32": (BF16, PLAIN, None),
    "channels_last + bf16 / plain": (CHANNELS_LAST_BF16, PLAIN, None),
    "compiled / plain": (COMPILED, PLAIN, None),
    "GAN step / BasicSR order": (L1, BASICSR, 0.85),
    "two D forwards / BasicSR order": (L1_LOOP_ADAM, BASICSR, None),
    "fused Adam / for-loop Adam": (L1, L1_LOOP_ADAM, None),
}


@dataclass(frozen=True)
class Networks:
    """The sizes of the networks and crops a measurement runs."""

    g_features: int = 64
    g_blocks: int = 23
    g_growth: int = 32
    d_features: int = 64
    hr_size: int = HR_SIZE


PAPER = Networks()
#: issue 22's comparison with BasicSR's order: RRDBNet nf32 nb6 x4, VGG-style D 128
BASICSR_COMPARISON = Networks(g_features=32, g_blocks=6)
#: the smallest networks, for bench/run.py --smoke
SMOKE = Networks(g_features=8, g_blocks=1, g_growth=4, d_features=8, hr_size=32)
#: every variant measure() knows, in the order it runs them
ALL_VARIANTS = (BARE, PLAIN, L1, CANNY, BASICSR, L1_LOOP_ADAM, CHANNELS_LAST, BF16, CHANNELS_LAST_BF16, COMPILED)
Times = list[tuple[float, float]]


def quiet_lightning() -> None:
    """Silence Lightning's per-fit warnings and info lines (a benchmark fits dozens of times)."""
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def photo_crops(count: int, size: int = HR_SIZE) -> tuple[torch.Tensor, list[str]]:
    """``count`` distinct real-photo crops (count, 3, size, size) in [0, 1] and their names."""
    photos = [read_image(p) for p in sample_image_paths("train")]
    crops, names = [], []
    for i in range(count):
        photo = photos[i % len(photos)]
        k = i // len(photos)
        _, h, w = photo.shape
        top = min((h - size) // 2 + k * size // 2, h - size)
        left = min((w - size) // 2 + k * size // 3, w - size)
        crops.append(photo[:, top : top + size, left : left + size])
        names.append(f"photo{i % len(photos)}_{k}")
    return torch.stack(crops).contiguous(), names


def photo_batches(batch: int, count: int, size: int = HR_SIZE) -> list[dict[str, Any]]:
    """``count`` batches of ``batch`` distinct real-photo crops: {"lr": (B,3,size/4,size/4), "hr": (B,3,size,size), "name"}."""
    hr, names = photo_crops(batch * count, size)
    lr = imresize(hr, 1 / SCALE).clamp(0, 1)
    return [
        {"lr": lr[j : j + batch], "hr": hr[j : j + batch], "name": names[j : j + batch]}
        for j in range(0, batch * count, batch)
    ]


def adam(params: Any) -> torch.optim.Optimizer:
    """BasicSR's stage-2 optimizer: Adam, lr 1e-4, betas (0.9, 0.99), torch's default (for-loop on a CPU)."""
    return torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.99))


def fused_adam(params: Any) -> torch.optim.Optimizer:
    """The module's default optimizer: the same Adam, fused."""
    return torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.99), fused=True)


def clock(device: torch.device | str = "cpu") -> tuple[float, float]:
    """(wall, CPU) seconds, after the GPU's queued work has finished. The process's CPU time is
    less sensitive to other jobs' load than wall time (meaningless on a GPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def spans(marks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, CPU) durations between consecutive marks."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


class BatchTimer(pl.Callback):
    """Per-batch (wall, CPU) times: on_train_batch_start to the next one (the last to
    on_train_epoch_end), and on_train_batch_start to on_train_batch_end (the hook-bracketed part)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = device
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []
        self.epoch_end = (0.0, 0.0)

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(clock(self.device))

    def on_train_batch_end(self, *args: Any) -> None:
        self.ends.append(clock(self.device))

    def on_train_epoch_end(self, *args: Any) -> None:
        self.epoch_end = clock(self.device)

    def periods(self) -> Times:
        return spans(self.starts + [self.epoch_end])

    def inside(self) -> Times:
        return [spans([s, e])[0] for s, e in zip(self.starts, self.ends)]


def make_trainer(device: torch.device | str = "cpu", precision: str = "32-true", callbacks: list | None = None) -> pl.Trainer:
    """A one-epoch Trainer with logging, checkpointing, progress bar and summary off."""
    return pl.Trainer(
        accelerator="gpu" if torch.device(device).type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
    )


def run_module(
    module: SRGANModule, batches: list[dict[str, Any]], precision: str = "32-true", device: torch.device | str = "cpu"
) -> tuple[Times, Times]:
    """Fit ``module`` for one epoch over ``batches``; (periods, hook-bracketed times) per batch."""
    timer = BatchTimer(device)
    trainer = make_trainer(device, precision, [timer])
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return timer.periods(), timer.inside()


def _timed(batches: list[dict[str, Any]], device: torch.device | str, step: Callable[[torch.Tensor, torch.Tensor], None]) -> Times:
    """(wall, CPU) time of ``step(lr, hr)`` per batch, fetch and host-to-device copy included."""
    marks = [clock(device)]
    for batch in DataLoader(batches, batch_size=None):
        step(batch["lr"].to(device), batch["hr"].to(device))
        marks.append(clock(device))
    return spans(marks)


def _content_loss(pixel_loss: SAPixelLoss, perceptual_loss: nn.Module | None, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    loss = pixel_loss(sr, hr, edge_map=pixel_loss.edge_map(hr))
    return loss if perceptual_loss is None else loss + perceptual_loss(sr, hr)


def run_loop(
    order: str,
    generator: nn.Module,
    discriminator: nn.Module,
    pixel_loss: SAPixelLoss,
    adversarial_loss: AdversarialLoss,
    perceptual_loss: nn.Module | None,
    batches: list[dict[str, Any]],
    device: torch.device | str = "cpu",
) -> Times:
    """A stage-2 update in a plain loop; the (wall, CPU) time of each batch.

    ``order`` "bare": the module's update (two D forwards, one graph, each backward into its own
    network, fused Adam). "basicsr": the order of BasicSR 1.4.2's ``ESRGANModel.optimize_parameters``,
    G step with D frozen (D on HR without grad, D on SR), then the D step (D on SR detached, D on
    HR, real half backward, D on SR again, fake half backward): five D forwards, for-loop Adam.
    """
    for net in (generator, discriminator, pixel_loss, adversarial_loss, perceptual_loss):
        if net is not None:
            net.to(device).train()
    make = fused_adam if order == "bare" else adam
    opt_g, opt_d = make(generator.parameters()), make(discriminator.parameters())

    def bare(lr: torch.Tensor, hr: torch.Tensor) -> None:
        sr = generator(lr)
        real_logits, fake_logits = discriminator(hr), discriminator(sr)
        loss_g = _content_loss(pixel_loss, perceptual_loss, sr, hr)
        loss_g = loss_g + ADV_WEIGHT * adversarial_loss.generator_loss(fake_logits, real_logits.detach())
        loss_d = adversarial_loss.discriminator_real_loss(real_logits, fake_logits.detach())
        loss_d = loss_d + adversarial_loss.discriminator_fake_loss(fake_logits, real_logits.detach())
        loss_g.backward(inputs=list(generator.parameters()), retain_graph=True)
        loss_d.backward(inputs=list(discriminator.parameters()))
        bool(torch.isfinite(torch.stack([loss_g.detach(), loss_d.detach()])).all())  # the module's one host sync
        for opt in (opt_g, opt_d):
            opt.step()
            opt.zero_grad(set_to_none=True)

    def basicsr(lr: torch.Tensor, hr: torch.Tensor) -> None:
        discriminator.requires_grad_(False)
        sr = generator(lr)
        real_logits = discriminator(hr).detach()
        loss_g = _content_loss(pixel_loss, perceptual_loss, sr, hr)
        (loss_g + ADV_WEIGHT * adversarial_loss.generator_loss(discriminator(sr), real_logits)).backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        discriminator.requires_grad_(True)
        fake_logits = discriminator(sr).detach()
        real_logits = discriminator(hr)
        adversarial_loss.discriminator_real_loss(real_logits, fake_logits).backward()
        fake_logits = discriminator(sr.detach())
        adversarial_loss.discriminator_fake_loss(fake_logits, real_logits.detach()).backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)

    return _timed(batches, device, bare if order == "bare" else basicsr)


@dataclass
class Measurement:
    """Per-variant batch times of one :func:`measure` run (warm-up batches dropped)."""

    times: dict[str, Times]
    inside: dict[str, Times]
    batch: int
    device: str
    threads: int
    perceptual: bool
    timed_loop_s: float
    first_batches: dict[str, Times] = field(default_factory=dict)  # each variant's first batch per round
    steps: int = 1  # timed batches per variant per round

    def median_wall(self, name: str) -> float:
        return statistics.median(w for w, _ in self.times[name])

    def min_wall(self, name: str) -> float:
        return min(w for w, _ in self.times[name])

    def median_cpu(self, name: str) -> float:
        return statistics.median(c for _, c in self.times[name])

    def min_cpu(self, name: str) -> float:
        return min(c for _, c in self.times[name])

    def steady(self, name: str) -> float:
        """The steadiest step time: the minimum CPU seconds on a CPU (other jobs on the same cores
        only ever add to a batch's CPU time, through evicted caches), median wall seconds on a GPU."""
        return self.min_cpu(name) if self.device == "cpu" else self.median_wall(name)

    def round_ratios(self, a: str, b: str) -> tuple[float, float]:
        """(lowest, highest) over rounds of the ratio a / b of that round's steady times (minimum
        CPU on a CPU, median wall on a GPU): the spread the interleaved rounds show."""
        column = 1 if self.device == "cpu" else 0
        pick = min if self.device == "cpu" else statistics.median

        def per_round(name: str) -> list[float]:
            t = [x[column] for x in self.times[name]]
            return [pick(t[k : k + self.steps]) for k in range(0, len(t), self.steps)]

        ratios = [x / y for x, y in zip(per_round(a), per_round(b))]
        return min(ratios), max(ratios)

    def ratios(self) -> dict[str, dict[str, float | None]]:
        """label -> ratios for the pairs measured: of median wall times ("wall"), of minimum wall
        times ("min_wall"), of median and minimum CPU times ("cpu", "min_cpu"), and the "target"."""
        out = {}
        for label, (a, b, target) in PAIRS.items():
            if a in self.times and b in self.times:
                out[label] = {
                    "wall": self.median_wall(a) / self.median_wall(b),
                    "min_wall": self.min_wall(a) / self.min_wall(b),
                    "cpu": self.median_cpu(a) / self.median_cpu(b),
                    "min_cpu": self.min_cpu(a) / self.min_cpu(b),
                    "target": target,
                }
        return out


def measure(
    batch: int = 2,
    rounds: int = 4,
    warmup: int = 1,
    steps: int = 2,
    threads: int = 1,
    perceptual: bool = False,
    options: bool = False,
    compile_generator: bool = True,
    device: str = "cpu",
    show_times: bool = False,
    log: Callable[[str], None] = print,
    networks: Networks = PAPER,
    variants: tuple[str, ...] | None = None,
) -> Measurement:
    """Time every variant (see the module docstring), alternating them round by round; ``variants``
    chooses some (default: the four plain ones, and the speed options with ``options``)."""
    torch.manual_seed(0)
    quiet_lightning()
    dev = torch.device(device)
    generator = RRDBNet(num_features=networks.g_features, num_blocks=networks.g_blocks, growth_channels=networks.g_growth, scale=SCALE)
    discriminator = VGGStyleDiscriminator(num_features=networks.d_features, input_size=networks.hr_size)
    adversarial_loss = AdversarialLoss("relativistic")
    perceptual_loss = PerceptualLoss("conv5_4", weights="random") if perceptual else None
    pixel_losses = {
        "SA-LV": SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=LocalVariance()),
        "L1": SAPixelLoss(beta1=0.01, beta2=0.0),
        "SA-Canny": SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=Canny(100.0, 200.0)),
    }

    def module(pixel: str, own_copy: bool = False, **switches: Any) -> SRGANModule:
        # channels_last and compile_generator change the networks and losses in place: such a
        # variant gets its own copies (same initial weights) so the plain path stays plain.
        parts = (generator, discriminator, pixel_losses[pixel], adversarial_loss, perceptual_loss)
        g, d, pix, adv, perc = copy.deepcopy(parts) if own_copy else parts
        return SRGANModule(
            generator=g,
            discriminator=d,
            pixel_loss=pix,
            adversarial_loss=adv,
            adversarial_weight=ADV_WEIGHT,
            perceptual_loss=perc,
            **switches,
        )

    if variants is None:
        variants = (BARE, PLAIN, L1, CANNY) + ((CHANNELS_LAST, BF16, CHANNELS_LAST_BF16) if options else ())
        variants += (COMPILED,) if options and compile_generator else ()
    unknown = set(variants) - set(ALL_VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {ALL_VARIANTS}")
    # variant name -> (a module, or the plain loop that runs it, and the Trainer precision); built
    # lazily so that a variant left out costs nothing
    makers: dict[str, Callable[[], tuple[SRGANModule | Callable[..., Times], str]]] = {
        BARE: lambda: (partial(run_loop, "bare"), "32-true"),
        BASICSR: lambda: (partial(run_loop, "basicsr"), "32-true"),
        PLAIN: lambda: (module("SA-LV"), "32-true"),
        L1: lambda: (module("L1"), "32-true"),
        L1_LOOP_ADAM: lambda: (module("L1", optimizer_g=adam, optimizer_d=adam), "32-true"),
        CANNY: lambda: (module("SA-Canny"), "32-true"),
        CHANNELS_LAST: lambda: (module("SA-LV", own_copy=True, channels_last=True), "32-true"),
        BF16: lambda: (module("SA-LV"), "bf16-mixed"),
        CHANNELS_LAST_BF16: lambda: (module("SA-LV", own_copy=True, channels_last=True), "bf16-mixed"),
        COMPILED: lambda: (module("SA-LV", own_copy=True, compile=True), "32-true"),
    }
    plans = {name: makers[name]() for name in ALL_VARIANTS if name in variants}
    #: the pixel loss each plain loop runs
    loop_pixel = {BARE: "SA-LV", BASICSR: "L1"}
    batches = photo_batches(batch, warmup + steps, networks.hr_size)

    times: dict[str, Times] = {name: [] for name in plans}
    inside: dict[str, Times] = {}
    first: dict[str, Times] = {name: [] for name in plans}
    names = list(plans)
    start = time.perf_counter()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            torch.set_num_threads(threads)  # whatever the previous run left
            mod, precision = plans[name]
            if not isinstance(mod, SRGANModule):
                measured = mod(generator, discriminator, pixel_losses[loop_pixel[name]], adversarial_loss, perceptual_loss, batches, dev)
            else:
                measured, hooked = run_module(mod, batches, precision, dev)
                inside.setdefault(name, []).extend(hooked[warmup:])
            if show_times:
                shown = " ".join(f"{w:.2f}/{c:.2f}" for w, c in measured)
                log(f"round {r} {name}: wall/CPU s {shown} (first {warmup} warm-up)")
            times[name].extend(measured[warmup:])
            first[name].append(measured[0])
    return Measurement(
        times=times,
        inside=inside,
        batch=batch,
        device=dev.type,
        threads=threads,
        perceptual=perceptual,
        timed_loop_s=time.perf_counter() - start,
        first_batches=first,
        steps=steps,
    )


def report(m: Measurement, log: Callable[[str], None] = print) -> None:
    """Print the per-variant table and the ratios with their targets."""
    names = list(m.times)
    width = max(map(len, names))
    log(
        f"\n{'variant':<{width}}  {'n':>2}  {'median wall s':>13}  {'min wall s':>10}  "
        f"{'median CPU s':>12}  {'min CPU s':>9}  {'median wall in hooks':>20}"
    )
    for name in names:
        hooked = f"{statistics.median(w for w, _ in m.inside[name]):20.3f}" if name in m.inside else f"{'-':>20}"
        log(
            f"{name:<{width}}  {len(m.times[name]):>2}  {m.median_wall(name):13.3f}  {m.min_wall(name):10.3f}  "
            f"{m.median_cpu(name):12.3f}  {m.min_cpu(name):9.3f}  {hooked}"
        )
    log(
        f"\n{'ratio':<28}  {'median wall':>11}  {'min wall':>8}  {'median CPU':>10}  {'min CPU':>7}  "
        f"{'target':>7}  verdict"
    )
    for label, r in m.ratios().items():
        target = r["target"]
        if target is None:
            verdict, shown = "(speed option: < 1 is faster)", "-"
        else:
            verdict = " / ".join(
                f"{what} {'meets' if r[key] <= target else 'MISSES'}"
                for what, key in (("median wall", "wall"), ("median CPU", "cpu"), ("min CPU", "min_cpu"))
            )
            shown = f"<= {target:.2f}"
        log(
            f"{label:<28}  {r['wall']:11.3f}  {r['min_wall']:8.3f}  {r['cpu']:10.3f}  {r['min_cpu']:7.3f}  "
            f"{shown:>7}  {verdict}"
        )


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
    parser.add_argument(
        "--options", action="store_true", help="add the channels_last, bf16-mixed, both, and compiled-G variants"
    )
    parser.add_argument("--no-compile", action="store_true", help="with --options, leave out the compiled-G variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--show-times", action="store_true", help="print every batch's time as it is measured")
    args = parser.parse_args()

    print(
        "stage-2 SA-ESRGAN step: RRDBNet 23 blocks / 64 feat, VGGStyleDiscriminator 128, "
        f"relativistic GAN x{ADV_WEIGHT}, pixel beta1 0.01 beta2 20"
    )
    percep = "PerceptualLoss(conv5_4, weights=random)" if args.perceptual else "off (--perceptual adds it)"
    print(f"perceptual loss: {percep}")
    print(
        f"batch {args.batch} x LR {HR_SIZE // SCALE}x{HR_SIZE // SCALE} -> HR {HR_SIZE}x{HR_SIZE} (real photos), "
        f"device {args.device}, torch threads {args.threads}, {args.rounds} rounds x ({args.warmup} warm-up + "
        f"{args.steps} timed) batches per variant"
    )
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    m = measure(
        batch=args.batch,
        rounds=args.rounds,
        warmup=args.warmup,
        steps=args.steps,
        threads=args.threads,
        perceptual=args.perceptual,
        options=args.options,
        compile_generator=not args.no_compile,
        device=args.device,
        show_times=args.show_times,
        log=lambda line: print(line, flush=True),
    )
    report(m)
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; timed loop {m.timed_loop_s:.0f} s")


if __name__ == "__main__":
    main()
