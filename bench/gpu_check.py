"""The first-GPU check of issue 15: every figure that needs a GPU, in one run, one line each,
all written to one JSON file. Installs nothing. bench/gpu_check.sh starts it.

    python bench/gpu_check.py [--device cuda|cpu] [--out PATH]

On ``cuda`` (budget: 8 minutes on one GPU): ``bench/run.py --device cuda --quick``; a paper-size
SA-ESRGAN stage-2 batch (RRDBNet 23 blocks / 64 features, VGG-style D 128, SA-LV pixel loss,
batch 16) timed in fp32, bf16-mixed and bf16-mixed + channels_last; ``salightning predict
--precision bf16`` (and 32) on a large image and on a clip; the quickstart through DDP on one GPU
(NCCL). On ``cpu`` the same pieces in CI size (a tiny RRDBNet at batch 1, small inputs, gloo,
``bench/run.py --quick --only tiled``), to prove the script runs before a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHIPPED = REPO / "salightning" / "assets" / "quickstart_psnr_x4.pth"
QUICKSTART_GENERATOR = ["--generator", "salightning.models.RRDBNet", "--generator_init_args", "{num_features: 32, num_blocks: 2, growth_channels: 16, scale: 4}"]
SCRIPT = Path(sys.executable).with_name("salightning")


class Figures:
    """Prints one line per figure and keeps them for the JSON file."""

    def __init__(self, device: str) -> None:
        self.values: dict[str, float | str] = {}
        self.device = device

    def add(self, name: str, value: float | str, details: str) -> None:
        self.values[name] = value if isinstance(value, str) else float(value)
        shown = value if isinstance(value, str) else f"{value:.4g}"
        print(f"{name} = {shown}  ({details}; {self.device})", flush=True)


def command(args: list, timeout: float, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:4]))} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result, time.perf_counter() - start


def run_quick(fig: Figures, device: str, tmp: Path) -> None:
    out = tmp / "run_quick.json"
    only = [] if device == "cuda" else ["--only", "tiled"]
    _, seconds = command([sys.executable, HERE / "run.py", "--device", device, "--quick", "--out", out, *only], timeout=300)
    for name, value in json.loads(out.read_text())["figures"].items():
        fig.add(f"run_quick.{name}", value, "bench/run.py --quick" + (" --only tiled" if only else ""))
    fig.add("run_quick_seconds", seconds, "wall s of bench/run.py --quick")


def stage2_step(fig: Figures, device: str, tmp: Path) -> None:
    """Median wall s per stage-2 batch in fp32, bf16-mixed, bf16-mixed + channels_last."""
    sys.path.insert(0, str(HERE))
    import bench_module
    from salightning.edges import LocalVariance
    from salightning.losses import AdversarialLoss, SAPixelLoss
    from salightning.models import RRDBNet, VGGStyleDiscriminator
    from salightning.training import SRGANModule

    bench_module.quiet_lightning()
    paper = device == "cuda"
    batch, steps = (16, 8) if paper else (1, 2)
    size = "RRDBNet 23 blocks / 64 feat" if paper else "RRDBNet 1 block / 8 feat (CI size)"
    batches = bench_module.photo_batches(batch, 2 + steps)
    results = {}
    variants = [("fp32", "32-true", {}), ("bf16_mixed", "bf16-mixed", {}), ("bf16_mixed_channels_last", "bf16-mixed", {"channels_last": True})]
    if paper:  # TF32 and compilation only where they mean something (compiling on a CPU takes minutes)
        variants += [("tf32", "32-true", {}), ("compiled_bf16_mixed", "bf16-mixed", {"compile": True})]
    for name, precision, options in variants:
        torch.manual_seed(0)
        generator = RRDBNet(num_features=64, num_blocks=23, growth_channels=32, scale=4) if paper else RRDBNet(num_features=8, num_blocks=1, growth_channels=8, scale=4)
        module = SRGANModule(
            generator=generator, discriminator=VGGStyleDiscriminator(input_size=128, num_features=64 if paper else 8),
            pixel_loss=SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=LocalVariance()),
            adversarial_loss=AdversarialLoss("relativistic"), adversarial_weight=0.005, **options,
        )
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
        try:
            periods, _ = bench_module.run_module(module, batches, precision, device)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        results[name] = statistics.median(w for w, _ in periods[2:])
        fig.add(f"stage2_{name}_s_per_batch", results[name], f"median wall s of {steps} SA-ESRGAN stage-2 batches of {batch} (HR 128), {size}, after 2 warm-up")
    for name in results:
        if name != "fp32":
            fig.add(f"stage2_{name}_vs_fp32_ratio", results[name] / results["fp32"], f"{name} / fp32 step time")
    if "compiled_bf16_mixed" in results:
        fig.add("stage2_compile_vs_eager_bf16_mixed_ratio", results["compiled_bf16_mixed"] / results["bf16_mixed"],
                "compiled G and perceptual network / eager, both bf16-mixed (compilation in the warm-up batches)")


def predict_figures(fig: Figures, device: str, tmp: Path) -> None:
    import numpy as np
    from PIL import Image

    from salightning.data.samples import skimage_data_dir
    from salightning.data.io import write_video

    photo = np.asarray(Image.open(skimage_data_dir() / "astronaut.png").convert("RGB"))
    size, frames, (fh, fw) = (2048, 60, (270, 480)) if device == "cuda" else (96, 4, (48, 64))
    (tmp / "image").mkdir()
    Image.fromarray(np.tile(photo, (size // 512 + 1, size // 512 + 1, 1))[:size, :size]).save(tmp / "image" / "large.png")
    clip = [np.ascontiguousarray(photo[t : t + fh, 2 * t : 2 * t + fw]) for t in range(frames)]
    (tmp / "clip").mkdir()
    write_video(np.stack(clip), tmp / "clip" / "pan.mp4")
    base = ["predict", "--ckpt_path", SHIPPED, *QUICKSTART_GENERATOR, "--device", device]
    times = {}
    for precision in ("32", "bf16"):
        times[precision] = predict_seconds([*base, "--precision", precision, "--input", tmp / "image" / "large.png", "--output", tmp / f"image_{precision}"], device)
        fig.add(f"predict_large_image_{precision}_s", times[precision], f"salightning predict --precision {precision} of a {size}^2 photo mosaic (x4 -> {4 * size}^2), checkpoint load included")
    fig.add("predict_large_image_bf16_vs_32_ratio", times["bf16"] / times["32"], "wall time ratio")
    seconds = predict_seconds([*base, "--precision", "bf16", "--input", tmp / "clip" / "pan.mp4", "--output", tmp / "clip_out"], device)
    fig.add("predict_clip_bf16_frames_per_s", frames / seconds, f"salightning predict --precision bf16 of a {frames}-frame {fh}x{fw} clip (x4, PNG + video), checkpoint load included")


def predict_seconds(argv: list, device: str) -> float:
    """Wall s of ``salightning <argv>`` run in this process (after a CUDA synchronize)."""
    from salightning.cli import main as salightning

    start = time.perf_counter()
    salightning([str(a) for a in argv])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ddp_quickstart(fig: Figures, device: str, tmp: Path) -> None:
    accelerator = "gpu" if device == "cuda" else "cpu"
    steps = 40 if device == "cuda" else 2
    args = [
        SCRIPT, "fit", "--config", REPO / "configs" / "quickstart.yaml", "--model.pretrained_generator", SHIPPED,
        "--trainer.accelerator", accelerator, "--trainer.devices", "1", "--trainer.strategy", "ddp_find_unused_parameters_true",
        "--model.max_batches", str(steps), "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", tmp / "runs",
        "--model.sa_calibration_batches", "1",
    ]
    result, seconds = command(args, timeout=300, cwd=tmp, env={**os.environ, "WANDB_MODE": "disabled"})
    log = result.stdout + result.stderr
    backend = re.search(r"distributed_backend=(\w+)", log)
    fig.add("ddp_quickstart_backend", backend.group(1) if backend else "unknown", "the process group's backend, from Lightning's log")
    fig.add("ddp_quickstart_s", seconds, f"salightning fit quickstart, DDP on 1 {accelerator}, {steps} steps, process start included")


#: The pieces, in the order they run.
def degradation(fig: Figures, device: str, tmp: Path) -> None:
    """Median wall ms per crop of RealESRGANDegradation on the device (batch 16 x 256^2 on cuda)."""
    sys.path.insert(0, str(HERE))
    import bench_module
    from salightning.degradations import RealESRGANDegradation

    batch, size, runs = (16, 256, 10) if device == "cuda" else (2, 128, 2)
    hr = bench_module.photo_crops(batch, size)[0].to(device)
    pipeline = RealESRGANDegradation(scale=4, seed=0).to(device)
    times = []
    for _ in range(runs + 2):
        start = bench_module.clock(device)[0]
        pipeline(hr)
        times.append(bench_module.clock(device)[0] - start)
    ms = statistics.median(times[2:]) / batch * 1e3
    fig.add("degradation_ms_per_crop", ms, f"median wall ms per {size}^2 crop of RealESRGANDegradation (x4), batch {batch}, after 2 warm-up")


PIECES = {"run_quick": run_quick, "stage2": stage2_step, "predict": predict_figures, "ddp": ddp_quickstart, "degradation": degradation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, default=HERE / "gpu_check.json")
    parser.add_argument("--skip", nargs="+", choices=list(PIECES), default=[], help="leave out these pieces")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu for the CI-sized form)")
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    fig = Figures(f"{args.device}: {name}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="salightning-gpu-check-") as tmp:
        tmp = Path(tmp)
        for name, piece in PIECES.items():
            if name in args.skip:
                print(f"{name}: skipped (--skip)", flush=True)
                continue
            piece(fig, args.device, tmp)
            args.out.write_text(json.dumps(fig.values, indent=1) + "\n")  # what is done survives a later failure
    fig.add("gpu_check_seconds", time.perf_counter() - start, "wall s of the whole check")
    args.out.write_text(json.dumps(fig.values, indent=1) + "\n")
    print(f"{len(fig.values)} figures written to {args.out}")


if __name__ == "__main__":
    main()
