"""Run every benchmark, print one line per figure and write them to bench/results.json.

    python bench/run.py [--quick] [--device cpu|cuda] [--threads 1] [--out PATH] [--only PIECE ...]

Each figure is a ratio (or an absolute figure beside one) measured in this run, so it holds on
a noisy shared machine; each line gives the absolute times behind it and the device. The
benchmarks are the scripts beside this one, imported (each also runs on its own, with more
options and tables):

  bench_module.py  stage-2 SA-ESRGAN step (paper-size networks, real-photo crops) through
                   SRGANModule + pl.Trainer vs a bare PyTorch loop; SA losses vs L1; the speed
                   options (channels_last, bf16-mixed, compiled generator) vs the plain path
  bench_flops.py   achieved FLOP/s of RRDBNet forward + backward / the machine's dense-conv FLOP/s
  bench_edges.py   edge extractors' cost per batch of 16, next to OpenCV and to the step
  bench_data.py    samples/s of one data worker vs samples/s one training step consumes
  bench_memory.py  tiled vs untiled prediction (peak memory, time); peak memory of a stage-2
                   step at the paper's batch and patch size (SA-ESRGAN, SA-VSRResFeatGAN),
                   each in a fresh process
  bench_tiling.py  tiled (default tiles) vs untiled time on 512x512 and 427x640 photos, the grid used
  bench_video.py   streaming video predict: peak RSS and frames/s at 10 / 60 / 250 frames
  bench_predict_memory.py  image predict: peak RSS at 1500^2 / 3000^2 / 6000^2 inputs vs the 8-bit output

On a CPU, step-time ratios are ratios of the minimum CPU seconds of this process per batch over
the timed batches (with one torch thread the CPU time is the work done; it barely stretches when
other jobs share the cores, and only upwards, through evicted caches); the ratios of median CPU
and median wall times are printed beside it and written as ``<name>_median_cpu`` and
``<name>_wall``. On a GPU they are ratios of median wall seconds after a synchronize. The batch is reduced on a CPU (a paper-size step
takes ~1 s per image there). CPU results do not predict GPU ones (other kernels, other
bottlenecks): run it again on the GPU you train on.

``--quick`` (CI smoke test, a couple of minutes): tiny sizes and rounds, no compilation, and it
writes bench/results_quick.json unless --out is given, so the committed full-run figures in
bench/results.json are not overwritten by a smoke run.
"""

from __future__ import annotations

import os

import tempfile

# Set before torch is imported. Inductor compiles with as many processes as cores by default:
# keep it to one on a shared machine. An empty cache makes compile_generator_first_batch_s the
# cold compile time a user's first run pays (a warm cache makes it a few seconds).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
_FRESH_INDUCTOR_CACHE = tempfile.TemporaryDirectory(prefix="salightning-bench-inductor-")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", _FRESH_INDUCTOR_CACHE.name)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_* modules, however this is started

import bench_data  # noqa: E402
import bench_degradation  # noqa: E402
import bench_edges  # noqa: E402
import bench_flops  # noqa: E402
import bench_memory  # noqa: E402
import bench_module  # noqa: E402
import bench_predict_memory  # noqa: E402
import bench_tiling  # noqa: E402
import bench_video  # noqa: E402
import report  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: bench_module ratio label -> figure name
RATIO_NAMES = {
    "module / bare": "lightning_vs_bare_step_ratio",
    "SA-LV / L1": "sa_local_variance_vs_l1_step_ratio",
    "SA-Canny / L1": "sa_canny_vs_l1_step_ratio",
    "channels_last / plain": "channels_last_vs_plain_step_ratio",
    "bf16-mixed / fp32": "bf16_vs_fp32_step_ratio",
    "channels_last + bf16 / plain": "channels_last_bf16_mixed_vs_plain_step_ratio",
    "compiled / plain": "compile_vs_eager_step_ratio",
    "GAN step / BasicSR order": "gan_step_vs_basicsr_order_ratio",
    "two D forwards / BasicSR order": "two_d_forwards_vs_basicsr_order_ratio",
    "fused Adam / for-loop Adam": "fused_adam_vs_loop_adam_step_ratio",
}
#: figure name -> (target, "<=" or ">="): the targets of the open issues, judged in the report
TARGETS: dict[str, tuple[float, str]] = {
    "gan_step_vs_basicsr_order_ratio": (0.85, "<="),
    "bf16_vs_fp32_step_ratio": (0.75, "<="),
    "lightning_vs_bare_step_ratio": (1.05, "<="),
    "sa_canny_vs_l1_step_ratio": (1.05, "<="),
    "sa_local_variance_vs_l1_step_ratio": (1.03, "<="),
    "video_predict_rss_60_vs_10": (1.10, "<="),
    "degradation_vs_basicsr_time_ratio": (0.1, "<="),
    "degradation_vs_esrgan_step_ratio": (0.1, "<="),
    "degradation_rest_vs_basicsr_rest_time_ratio": (1.0, "<="),
    "imresize_vs_interpolate_time_ratio": (2.0, "<="),
}


@dataclass
class Sizes:
    """How much of each benchmark to run."""

    module_batch: int = 2
    module_rounds: int = 4
    module_warmup: int = 1
    module_steps: int = 3
    compile_generator: bool = True
    module_networks: bench_module.Networks = bench_module.PAPER
    basicsr_networks: bench_module.Networks = bench_module.BASICSR_COMPARISON
    flops_blocks: int = 23
    tile_grid_crop: int | None = None
    tiny_memory_networks: bool = False
    #: bench_degradation.measure's (batch, size, seeds, repeats, crops)
    degradation: tuple[int, int, int, int, int] = (8, 256, 4, 3, 300)
    flops_batch: int = 2
    flops_repeats: int = 5
    flops_conv_images: int = 4
    edges_batch: int = 16
    edges_repeats: int = 7
    data_samples: int = 60
    data_images: int = 4
    tiled_lr_size: int = 512
    tiled_blocks: int = 23
    tile: int = bench_memory.PREDICT_TILE
    overlap: int = bench_memory.PREDICT_OVERLAP
    esrgan_batches: list[int] = field(default_factory=lambda: [8, 16])
    vsr_batches: list[int] = field(default_factory=lambda: [4, 8, 16])


FULL_CPU = Sizes()
FULL_CUDA = Sizes(
    module_batch=16, module_rounds=3, module_warmup=3, module_steps=10, flops_batch=16, flops_repeats=10,
    flops_conv_images=32, esrgan_batches=[8, 16], vsr_batches=[32, 64],
)
QUICK = Sizes(
    module_batch=1, module_rounds=1, module_warmup=1, module_steps=1, compile_generator=False, flops_batch=1,
    flops_repeats=2, flops_conv_images=1, edges_batch=4, edges_repeats=2, data_samples=8, data_images=1,
    tiled_lr_size=128, tiled_blocks=1, tile=64, overlap=16, esrgan_batches=[1, 2], vsr_batches=[1, 2],
    degradation=(4, 256, 2, 1, 100),
)
#: every benchmark at its smallest (CI: proves each figure is produced and finite, says nothing of speed)
SMOKE = Sizes(
    module_batch=1, module_rounds=1, module_warmup=1, module_steps=1, compile_generator=False, flops_batch=1,
    flops_repeats=1, flops_conv_images=1, edges_batch=2, edges_repeats=1, data_samples=4, data_images=1,
    tiled_lr_size=64, tiled_blocks=1, tile=32, overlap=8, esrgan_batches=[1, 2], vsr_batches=[1, 2],
    module_networks=bench_module.SMOKE, basicsr_networks=bench_module.SMOKE, flops_blocks=1, tile_grid_crop=128,
    tiny_memory_networks=True, degradation=(2, 128, 1, 1, 4),
)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "CPU")
    return f"{model} CPU ({os.cpu_count()} cores)"


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


class Figures:
    """Collects the figures and prints each as it comes."""

    def __init__(self, where: str) -> None:
        self.values: dict[str, float] = {}
        self.details: dict[str, str] = {}
        self.where = where

    def add(self, name: str, value: float, details: str) -> None:
        self.values[name] = float(value)
        self.details[name] = details
        print(f"{name} = {value:.4g}  ({details}; {self.where})", flush=True)


def add_ratios(fig: Figures, m: bench_module.Measurement, device: str, spreads: dict[str, tuple[float, float]]) -> None:
    clock = "min CPU" if device == "cpu" else "median wall"
    for label, r in m.ratios().items():
        a, b, _ = bench_module.PAIRS[label]
        value = r["min_cpu"] if device == "cpu" else r["wall"]
        spread = m.round_ratios(a, b)
        spreads[RATIO_NAMES[label]] = spread
        fig.add(
            RATIO_NAMES[label], value,
            f"{a} / {b}: {clock} {m.steady(a):.3f} / {m.steady(b):.3f} s per batch of {m.batch}, "
            f"{len(m.times[a])} batches each; per-round ratios {spread[0]:.3f}-{spread[1]:.3f}",
        )
        if device == "cpu":
            fig.add(f"{RATIO_NAMES[label]}_median_cpu", r["cpu"],
                    f"median CPU {m.median_cpu(a):.3f} / {m.median_cpu(b):.3f} s")
            fig.add(f"{RATIO_NAMES[label]}_wall", r["wall"], f"median wall {m.median_wall(a):.3f} / {m.median_wall(b):.3f} s")


def module_figures(fig: Figures, sizes: Sizes, threads: int, device: str, spreads: dict[str, tuple[float, float]]) -> float:
    """Step-time ratios; returns the plain module step's seconds per image (CPU s on a CPU)."""
    common = dict(batch=sizes.module_batch, rounds=sizes.module_rounds, warmup=sizes.module_warmup, steps=sizes.module_steps,
                  threads=threads, device=device)
    m = bench_module.measure(**common, options=True, compile_generator=sizes.compile_generator, networks=sizes.module_networks)
    add_ratios(fig, m, device, spreads)
    net = sizes.basicsr_networks
    basicsr = bench_module.measure(**common, networks=net, variants=(bench_module.L1, bench_module.BASICSR, bench_module.L1_LOOP_ADAM))
    add_ratios(fig, basicsr, device, spreads)
    fig.details["gan_step_vs_basicsr_order_ratio"] += (
        f"; RRDBNet {net.g_features} feat {net.g_blocks} blocks x4, VGG-style D {net.d_features} feat {net.hr_size}, "
        "L1 + relativistic GAN, fp32 eager"
    )
    if bench_module.COMPILED in m.first_batches:
        first = m.first_batches[bench_module.COMPILED][0]
        fig.add("compile_generator_first_batch_s", first[0],
                f"wall s of the compiled variant's first batch, compilation from an empty Inductor cache "
                f"included (its later batches: {m.median_wall(bench_module.COMPILED):.2f} s wall)")
    clock = "min CPU" if device == "cpu" else "median wall"
    per_image = m.steady(bench_module.PLAIN) / m.batch
    fig.add("stage2_step_s_per_image", per_image,
            f"{clock} s of the plain SA-LV module step / batch {m.batch} (SA-ESRGAN, RRDBNet "
            f"{sizes.module_networks.g_blocks} blocks, no perceptual loss)")
    return per_image


def flops_figures(fig: Figures, sizes: Sizes, threads: int, device: str, step_per_image: float) -> None:
    r = bench_flops.measure(sizes.flops_batch, sizes.flops_repeats, threads, device, sizes.flops_conv_images, sizes.flops_blocks)
    fig.add(
        "generator_flop_utilization", r["utilization"],
        f"RRDBNet fwd+bwd {r['generator_flops'] / 1e9:.1f} GFLOP in {r['generator_s']:.3f} s "
        f"= {r['generator_flops_per_s'] / 1e9:.1f} GFLOP/s vs best dense conv {r['conv_flops_per_s'] / 1e9:.1f} "
        f"GFLOP/s ({r['conv_best']}), fp32",
    )
    fig.add("generator_gflop_per_s", r["generator_flops_per_s"] / 1e9, f"batch {sizes.flops_batch} x 32x32 LR, fp32")
    fig.add("dense_conv_gflop_per_s", r["conv_flops_per_s"] / 1e9, f"3x3 conv 64->64 fwd+bwd, {r['conv_best']}, fp32")
    g_per_image = r["generator_s"] / sizes.flops_batch
    fig.add("generator_share_of_step_time", g_per_image / step_per_image,
            f"RRDBNet fwd+L1+bwd {g_per_image:.3f} s per image vs the stage-2 module step {step_per_image:.3f} s "
            "per image (the rest: D forward/backward, Adam, losses, Lightning)")


def edges_figures(fig: Figures, sizes: Sizes, device: str, step_per_image: float) -> None:
    dev = torch.device(device)
    x = bench_edges.photo_crops(sizes.edges_batch, 128).to(dev)
    costs = bench_edges.extractor_costs(x, sizes.edges_repeats, dev)
    step = step_per_image * sizes.edges_batch
    for key, name in (("LocalVariance(window 5)", "local_variance"), ("Canny(100, 200)", "canny"),
                      ("SobelMagnitude", "sobel")):
        fig.add(f"{name}_vs_step_time_ratio", costs[key] / step,
                f"{costs[key] * 1e3:.1f} ms per batch of {sizes.edges_batch} x 3x128x128 vs the stage-2 step "
                f"scaled to that batch, {step:.2f} s")
    cv2_time = costs.get("cv2.Canny loop (incl. tensor -> uint8 grey)")
    if cv2_time:
        fig.add("canny_vs_opencv_time_ratio", costs["Canny(100, 200)"] / cv2_time,
                f"salightning Canny {costs['Canny(100, 200)'] * 1e3:.1f} ms vs cv2.Canny loop incl. conversion "
                f"{cv2_time * 1e3:.1f} ms per batch of {sizes.edges_batch}")


def data_figures(fig: Figures, sizes: Sizes, threads: int, device: str, step_per_image: float) -> None:
    r = bench_data.measure(sizes.data_samples, 1, sizes.data_images)  # a DataLoader worker runs one thread
    consumed = 1 / step_per_image
    clock = "CPU" if device == "cpu" else "wall"
    for key, name, what in (("on_the_fly", "data", "on-the-fly x4 crops of 128 from 2040x1356 PNGs"),
                            ("on_the_fly_cached", "data_onthefly_cached", "the same crops with decode_cache=True (memory-mapped decoded images)"),
                            ("paired", "data_paired", "paired crops from 480x480 HR / 120x120 LR PNGs")):
        # on a CPU both sides in CPU seconds (steady under load); on a GPU the step's wall time
        rate = r[f"{key}_cpu"] if device == "cpu" else r[key]
        fig.add(f"{name}_samples_per_s_per_worker", rate,
                f"{what}, one worker, per {'CPU' if device == 'cpu' else 'wall'} second ({r[key]:.1f} per wall s)")
        fig.add(f"{name}_vs_step_consumption_ratio", rate / consumed,
                f"{rate:.1f} samples/s of one worker vs {consumed:.2f} samples/s that stage-2 steps consume "
                f"({clock} time); workers needed to keep up: {math.ceil(consumed / rate)}")
    fig.add("data_onthefly_cached_dataloader_2_workers_samples_per_s", r["on_the_fly_cached_2_workers"],
            "the cached on-the-fly crops through a DataLoader with 2 worker processes, batch 16, per wall second "
            f"(on {os.cpu_count()} cores shared with this run)")
    fig.add("imresize_vs_interpolate_time_ratio", r["down_ratio"],
            f"MATLAB imresize x4 down {r['imresize_down_ms']:.1f} ms vs F.interpolate(antialias) "
            f"{r['interpolate_down_ms']:.1f} ms on 2040x1356; target <= 2")


def tile_grid_figures(fig: Figures, sizes: Sizes, threads: int) -> None:
    for label, r in bench_tiling.measure(repeats=1 if sizes.tile_grid_crop else 2, threads=threads, crop=sizes.tile_grid_crop).items():
        key = label.replace("x", "_")
        fig.add(f"tiled_default_vs_untiled_time_ratio_{key}", r["time_ratio"],
                f"{label} photo, quickstart RRDBNet, tile 256 overlap 32 tile_batch 4: {r['grid']}; "
                f"untiled {r['untiled_s']:.2f} CPU s, tiled {r['tiled_s']:.2f} CPU s")
        fig.add(f"tile_grid_pixel_ratio_{key}", r["pixel_ratio"], f"{label}: {r['grid']}")


def video_figures(fig: Figures, lengths: tuple[int, ...]) -> None:
    results = bench_video.measure(lengths)
    for r in results:
        fig.add(f"video_predict_peak_rss_mib_{r['frames']}_frames", r["peak_rss_mib"],
                f"streaming predict of a {r['frames']}-frame 96x128 H.264 clip (x4, quickstart RRDBNet), fresh process")
        fig.add(f"video_predict_frames_per_s_{r['frames']}_frames", r["frames_per_s"], "PNG frames + H.264 written")
    fig.add("video_predict_peak_rss_longest_vs_shortest_ratio", results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"],
            f"{results[-1]['frames']} vs {results[0]['frames']} frames")
    fig.add("video_predict_rss_60_vs_10", results[1]["peak_rss_mib"] / results[0]["peak_rss_mib"],
            f"peak RSS {results[1]['frames']} vs {results[0]['frames']} frames")


def tiled_figures(fig: Figures, sizes: Sizes, threads: int, device: str) -> None:
    r = bench_memory.tiled_prediction(sizes.tiled_lr_size, sizes.tiled_blocks, threads, device, sizes.tile, sizes.overlap)
    u, t = r["untiled"], r["tiled"]
    clock = "cpu_s" if device == "cpu" else "wall_s"
    what = (f"{sizes.tiled_lr_size}x{sizes.tiled_lr_size} -> {u['out'][-2]}x{u['out'][-1]}, RRDBNet 64 feat "
            f"{sizes.tiled_blocks} blocks, tile {sizes.tile} overlap {sizes.overlap}")
    fig.add("tiled_vs_untiled_peak_memory_ratio", t["peak_mib"] / u["peak_mib"],
            f"{t['peak_mib']:.0f} / {u['peak_mib']:.0f} MiB peak above the pre-prediction footprint, {what}")
    fig.add("tiled_vs_untiled_time_ratio", t[clock] / u[clock],
            f"{t[clock]:.1f} / {u[clock]:.1f} {clock.replace('_s', '')} s (wall {t['wall_s']:.1f} / {u['wall_s']:.1f} s), {what}")
    fig.add("untiled_prediction_peak_memory_mib", u["peak_mib"], what)


def memory_figures(fig: Figures, sizes: Sizes, threads: int, device: str) -> None:
    unit = "RSS high-water mark above torch+Lightning imported" if device == "cpu" else "max_memory_allocated"
    for network, batches, what in (
        ("sa_esrgan", sizes.esrgan_batches, "RRDBNet 23 + VGGStyleD 128 + VGG19 conv5_4, HR 128"),
        ("sa_vsrresfeatgan", sizes.vsr_batches, "VSRResNet 5 frames + VSRResFeatGAN D + VGG19 relu5_4, HR 128"),
    ):
        r = bench_memory.step_memory(network, batches, threads, device, sizes.tiny_memory_networks)
        measured = ", ".join(f"batch {b}: {m['peak_mib']:.0f} MiB ({m['wall_s']:.1f} s step)" for b, m in r["per_batch"].items())
        how = (f"extrapolated linearly from {measured}" if r["extrapolated"] else f"measured; {measured}")
        fig.add(f"{network}_stage2_peak_memory_mib", r["peak_mib"],
                f"one stage-2 step at batch {r['paper_batch']}, {what}, {unit}; {how}")
        fig.add(f"{network}_stage2_peak_memory_extrapolated", float(r["extrapolated"]), "1: extrapolated, 0: measured")
        if r["per_sample_mib"] is not None:
            fig.add(f"{network}_stage2_memory_per_sample_mib", r["per_sample_mib"],
                    f"slope between batches {sorted(batches)[-2:]}")


def image_memory_figures(fig: Figures, quick: bool) -> None:
    for r in bench_predict_memory.measure((256, 512) if quick else (1500, 3000, 6000)):  # the shuffle generator: predict's own memory
        fig.add(f"image_predict_peak_rss_mib_{r['size']}", r["peak_rss_mib"],
                f"predict of a {r['size']}^2 photo mosaic (x4, 1x1 conv + pixel shuffle generator, tile 256), fresh process; "
                f"8-bit output {r['output_mib']:.0f} MiB, RSS before it {r['before_mib']:.0f} MiB")
        fig.add(f"image_predict_rss_growth_vs_output_ratio_{r['size']}", r["growth_vs_output"],
                "(peak RSS - RSS after a warm-up predict) / 8-bit output size (issue 15 target <= 1.5)")


def degradation_figures(fig: Figures, sizes: Sizes, threads: int, smoke: bool) -> None:
    batch, size, seeds, repeats, crops = sizes.degradation
    r = bench_degradation.measure(batch, size, seeds, repeats, crops, 1, threads, smoke)
    what = f"batch {batch} x 3 x {size}^2 real-photo crops, CPU, seeded draws (min of {repeats})"
    fig.add("degradation_vs_basicsr_time_ratio", r["degradation_vs_basicsr_time_ratio"],
            f"RealESRGANDegradation {r['ours_ms_per_crop']:.1f} ms vs BasicSR's pipeline (its numpy kernels, USMSharp, "
            f"filter2D, DiffJPEG) {r['basicsr_ms_per_crop']:.1f} ms per crop, {what}")
    fig.add("degradation_rest_vs_basicsr_rest_time_ratio", r["degradation_rest_vs_basicsr_rest_time_ratio"],
            f"without the USM: {r['ours_rest_ms_per_crop']:.1f} vs {r['basicsr_rest_ms_per_crop']:.1f} ms per crop")
    fig.add("degradation_ms_per_crop", r["ours_ms_per_crop"], what)
    fig.add("degradation_vs_esrgan_step_ratio", r["degradation_vs_esrgan_step_ratio"],
            f"vs a full ESRGAN step {r['esrgan_step_ms_per_crop']:.0f} ms per crop on the same crops")
    fig.add("degradation_lr_psnr_mean_diff_db", r["lr_psnr_mean_diff_db"],
            f"PSNR(LR, bicubic HR) over {r['crops']} crops: ours {r['lr_psnr_mean_ours_db']:.2f} +- {r['lr_psnr_std_ours_db']:.2f} dB, "
            f"BasicSR {r['lr_psnr_mean_basicsr_db']:.2f} +- {r['lr_psnr_std_basicsr_db']:.2f} dB (target |diff| <= 0.5)")
    fig.add("degradation_lr_psnr_std_ratio", r["lr_psnr_std_ratio"], "spread of ours / BasicSR's")


#: The pieces --only can choose, in the order they run.
PIECES = ("module", "flops", "edges", "data", "tiled", "tile_grid", "video", "image_memory", "memory", "degradation")


def commit() -> str:
    """The commit measured, with "+changes" when the working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, timeout=30).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, few rounds, no compilation (a few minutes)")
    mode.add_argument("--smoke", action="store_true",
                      help="CI: every benchmark at its smallest; checks that each figure is produced and finite, nothing about speed")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps a shared CPU steady)")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results.json; with --smoke a temporary file)")
    parser.add_argument("--doc", type=Path, help="the report regenerated from the results (default docs/performance.md; never with --smoke)")
    parser.add_argument("--only", nargs="+", choices=PIECES, default=list(PIECES), help="run only these pieces (figures that need the module step's time use it only when module runs)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    kind = "smoke" if args.smoke else "quick" if args.quick else "full"
    smoke_dir = tempfile.TemporaryDirectory(prefix="salightning-bench-smoke-") if args.smoke and args.out is None else None
    out = args.out or (Path(smoke_dir.name) / "results.json" if smoke_dir else HERE / "results.json")
    doc = None if args.smoke and args.doc is None else args.doc or REPO / "docs" / "performance.md"
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL_CUDA if args.device == "cuda" else FULL_CPU
    torch.set_num_threads(args.threads)

    start, load_start = time.perf_counter(), os.getloadavg()
    where = f"{args.device}: {device_name(args.device)}"
    print(f"salightning benchmarks ({kind}) on {where}; torch {torch.__version__}, "
          f"{args.threads} torch thread(s); load average {loadavg()}", flush=True)
    fig = Figures(args.device)
    spreads: dict[str, tuple[float, float]] = {}
    only = set(args.only)
    if {"flops", "edges", "data"} & only and "module" not in only:
        parser.error("--only flops / edges / data compare with the module step: add module")
    if "module" in only:
        step_per_image = module_figures(fig, sizes, args.threads, args.device, spreads)
    if "flops" in only:
        flops_figures(fig, sizes, args.threads, args.device, step_per_image)
    if "edges" in only:
        edges_figures(fig, sizes, args.device, step_per_image)
    if "data" in only:
        data_figures(fig, sizes, args.threads, args.device, step_per_image)
    if "tiled" in only:
        tiled_figures(fig, sizes, args.threads, args.device)
    if "tile_grid" in only:
        tile_grid_figures(fig, sizes, args.threads)
    if "video" in only:
        video_figures(fig, (2, 4) if args.smoke else (10, 60) if args.quick else (10, 60, 250))
    if "image_memory" in only:
        image_memory_figures(fig, args.quick or args.smoke)
    if "memory" in only:
        memory_figures(fig, sizes, args.threads, args.device)
    if "degradation" in only:
        degradation_figures(fig, sizes, args.threads, args.smoke)

    seconds = time.perf_counter() - start
    meta = {
        "commit": commit(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "kind": kind,
        "device": where, "torch": torch.__version__, "torch_threads": args.threads, "run_seconds": round(seconds, 1),
        "load_average_start": [round(v, 2) for v in load_start], "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "pieces": sorted(only),
    }
    results = {"meta": meta, "figures": fig.values, "details": fig.details, "round_spreads": spreads}
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average at end {loadavg()}; run time {seconds:.0f} s; {len(fig.values)} figures written to {out}")
    bad = sorted(name for name, value in fig.values.items() if not math.isfinite(value))
    if bad:
        raise SystemExit(f"bench/run.py: figures that are not finite: {', '.join(bad)}")
    if doc is not None:
        doc.write_text(report.performance_page(results, TARGETS))
        print(f"{doc} regenerated from {out}")


if __name__ == "__main__":
    main()
