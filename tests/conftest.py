"""Shared fixtures: real photos (scikit-image's bundled images), never noise."""

from __future__ import annotations

import copy
import hashlib
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("WANDB_MODE", "disabled")
# pytest-xdist runs 2 workers on 2 cores: one thread each, inherited by CLI subprocesses too
# (oversubscribed OpenMP threads made GAN steps up to 8x slower here).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

PHOTO_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "ihc"]
_FILES = {"rocket": "rocket.jpg", "hubble_deep_field": "hubble_deep_field.jpg", "retina": "retina.jpg"}


def load_photo(name: str) -> torch.Tensor:
    """A photo bundled in scikit-image's wheel as a (3, H, W) float tensor in [0, 1] (read from
    its data folder directly: some ``skimage.data`` functions would download)."""
    import imageio.v3 as iio
    import skimage

    arr = np.asarray(iio.imread(Path(skimage.data_dir) / _FILES.get(name, f"{name}.png")))
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return torch.from_numpy(arr[..., :3].copy()).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="session")
def photos() -> list[torch.Tensor]:
    """Real photos, (3, H, W) in [0, 1], of varying sizes."""
    return [load_photo(n) for n in PHOTO_NAMES]


@pytest.fixture(scope="session")
def photo_batch(photos) -> torch.Tensor:
    """A (4, 3, 128, 128) batch of centre crops of real photos."""
    crops = []
    for p in photos[:4]:
        _, h, w = p.shape
        top, left = (h - 128) // 2, (w - 128) // 2
        crops.append(p[:, top : top + 128, left : left + 128])
    return torch.stack(crops)


class PhotoPatches(torch.utils.data.Dataset):
    """Deterministic HR crops of real photos with their x``scale`` bicubic LR (for module tests)."""

    def __init__(self, photos: list[torch.Tensor], n: int = 16, hr_size: int = 32, scale: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            p = photos[i % len(photos)]
            top = int(torch.randint(0, p.shape[1] - hr_size + 1, (1,), generator=g))
            left = int(torch.randint(0, p.shape[2] - hr_size + 1, (1,), generator=g))
            hr = p[:, top : top + hr_size, left : left + hr_size].contiguous()
            lr = torch.nn.functional.interpolate(hr[None], scale_factor=1 / scale, mode="bicubic", antialias=True)[0].clamp(0, 1)
            self.items.append({"lr": lr, "hr": hr, "name": f"photo{i}"})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@pytest.fixture()
def patch_loaders(photos):
    """(train, val) DataLoaders of 32x32 HR / 8x8 LR real-photo patches."""
    from torch.utils.data import DataLoader

    train = DataLoader(PhotoPatches(photos, n=16, seed=0), batch_size=4, shuffle=False)
    val = DataLoader(PhotoPatches(photos, n=4, seed=1), batch_size=4)
    return train, val


def save_png(image: torch.Tensor, path) -> None:
    """(3, H, W) in [0, 1] -> 8-bit PNG (parent folders created)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(path)


def run_main(argv: list, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``salightning <argv>`` run in this process."""
    from salightning.cli import main

    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_in_group(cmd: list, timeout: float, **kwargs) -> "subprocess.CompletedProcess":
    """``subprocess.run`` in a session of its own: at the timeout the whole process group (DDP
    ranks, data workers) is killed and the test fails with the last lines of output."""
    import os
    import signal
    import subprocess

    import pytest

    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    process = subprocess.Popen([str(c) for c in cmd], start_new_session=True, **kwargs)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=60)
        pytest.fail(f"{' '.join(map(str, cmd[:3]))} ... timed out after {timeout} s:\n{str(out or '')[-3000:]}\n{str(err or '')[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# --------------------------------------------------------------------------------------------
# Helpers shared by several test modules
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
SHIPPED_STAGE1 = REPO / "salightning" / "assets" / "quickstart_psnr_x4.pth"
TINY_GENERATOR = {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": 4}


def tiny_generator() -> "RRDBNet":
    from salightning.models import RRDBNet

    return RRDBNet(**TINY_GENERATOR)


def tiny_discriminator() -> "VGGStyleDiscriminator":
    from salightning.models import VGGStyleDiscriminator

    return VGGStyleDiscriminator(num_features=8, input_size=32)


def make_module(stage: int = 2, **kwargs) -> "SRGANModule":
    """A tiny SRGANModule (stage 1: G only; stage 2: G and D) seeded with 0; ``kwargs`` override."""
    import pytorch_lightning as pl

    from salightning.edges import LocalVariance
    from salightning.losses import AdversarialLoss, SAPixelLoss
    from salightning.training import SRGANModule

    pl.seed_everything(0)
    defaults = dict(
        generator=tiny_generator(),
        pixel_loss=SAPixelLoss(beta1=1.0, beta2=5.0, edge_extractor=LocalVariance()),
        optimizer_g=partial(torch.optim.Adam, lr=2e-3),
        optimizer_d=partial(torch.optim.Adam, lr=2e-3),
    )
    if stage == 2:
        defaults.update(discriminator=tiny_discriminator(), adversarial_loss=AdversarialLoss("relativistic"), adversarial_weight=0.005)
    defaults.update(kwargs)
    return SRGANModule(**defaults)


def make_trainer(tmp_path, **kwargs) -> "pl.Trainer":
    """A quiet one-epoch CPU Trainer writing nothing outside ``tmp_path``; ``kwargs`` override."""
    import pytorch_lightning as pl

    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def make_project(root: Path, photos: list[torch.Tensor]) -> Path:
    """A user's folder: ``train/`` (4 real 96x96 photo crops), ``val/`` (one 64x64 crop)."""
    for i, photo in enumerate(photos[:4]):
        save_png(photo[:, 100:196, 100:196], root / "train" / f"photo{i}.png")
    save_png(photos[4][:, 100:164, 100:164], root / "val" / "val0.png")
    return root


def tiny_config(root: Path, max_epochs: int = 3, num_workers: int = 0) -> dict[str, Any]:
    """A stage-2 SA-GAN (tiny RRDBNet, 32x32 VGG-style D, auto-beta, EMA, an LR milestone) on the
    photos of :func:`make_project`; 4 batches per epoch; everything it writes goes to ``root/run``.

    Counted in batches: beta2 is calibrated over batches 1-6, then held at the share (running
    means, saved in checkpoints), and the LR halves after batch 5, so a checkpoint at the end of
    epoch 0 (batch 4) holds a half-done calibration and the first LR.
    """
    run = root / "run"
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": max_epochs,
            "deterministic": True,
            "default_root_dir": str(run),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "limit_val_batches": 1,
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(run), "name": ""}},
            "callbacks": [
                {
                    "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(run / "checkpoints"), "save_last": True, "every_n_epochs": 1},
                }
            ],
        },
        "model": {
            "generator": {"class_path": "salightning.models.RRDBNet", "init_args": dict(TINY_GENERATOR)},
            "discriminator": {"class_path": "salightning.models.VGGStyleDiscriminator", "init_args": {"num_features": 8, "input_size": 32}},
            "adversarial_loss": {"class_path": "salightning.losses.AdversarialLoss", "init_args": {"kind": "relativistic"}},
            "pixel_loss": {
                "class_path": "salightning.losses.SAPixelLoss",
                "init_args": {"beta1": 1.0, "beta2": 0.0, "edge_extractor": {"class_path": "salightning.edges.LocalVariance"}},
            },
            "sa_target_share": 0.15,
            "sa_beta_mode": "hold",
            "sa_calibration_batches": 6,
            "sa_hold_batches": 4,
            "lr_milestones": [5],
            "ema_decay": 0.9,
            "optimizer_g": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.002}},
            "optimizer_d": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.002}},
        },
        "data": {
            "class_path": "salightning.data.ImageSRDataModule",
            "init_args": {
                "train_hr": str(root / "train"),
                "val_hr": str(root / "val"),
                "test_hr": str(root / "val"),
                "scale": 4,
                "patch_size": 32,
                "batch_size": 2,
                "samples_per_epoch": 8,
                "num_workers": num_workers,
                "eval_patch_size": 32,
            },
        },
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tree_digest(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (by path): equal before and after means nothing was
    modified, created or deleted there."""
    digests = {}
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def fit_style_checkpoint(generator: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """What ``salightning fit`` writes, reduced to what the loaders read."""
    import pytorch_lightning as pl

    return {
        "epoch": 0,
        "global_step": 2,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": {f"generator.{k}": v.clone() for k, v in generator.state_dict().items()},
        "generator_config": {"class_path": "salightning.models.RRDBNet", "init_args": dict(TINY_GENERATOR)},
        "hyper_parameters": {"generator": {"class_path": "salightning.models.RRDBNet", "init_args": dict(TINY_GENERATOR)}},
        **extra,
    }


def pan_frames(photo: torch.Tensor, count: int, height: int, width: int) -> torch.Tensor:
    """(count, 3, height, width): a camera panning over a real photo by a few pixels per frame."""
    return torch.stack([photo[:, 60 + 2 * t : 60 + 2 * t + height, 90 + 3 * t : 90 + 3 * t + width] for t in range(count)])


def make_checkpoint(path: Path, generator: torch.nn.Module, class_path: str, init_args: dict, ema_shift: float = 0.01) -> Path:
    """A checkpoint laid out as Lightning + LightningCLI write it for SRGANModule: the generator's
    config in ``hyper_parameters``, weights under ``generator.`` and (EMA) ``generator_ema.module.``."""
    state = {f"generator.{k}": v.clone() for k, v in generator.state_dict().items()}
    ema = copy.deepcopy(generator)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(ema_shift)
    state.update({f"generator_ema.module.{k}": v.clone() for k, v in ema.state_dict().items()})
    state["generator_ema.n_averaged"] = torch.tensor(3)
    torch.save(
        {
            "epoch": 0,
            "global_step": 3,
            "pytorch-lightning_version": "2.6.6",
            "state_dict": state,
            "generator_config": {"class_path": class_path, "init_args": init_args},
            "hyper_parameters": {
                "generator": {"class_path": class_path, "init_args": init_args},
                "ema_decay": 0.99,
                "_instantiator": "lightning.pytorch.cli.instantiate_module",
            },
        },
        path,
    )
    return path


def assert_one_message(code: int, err: str, *names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.count("error:") == 1, err
    for name in names:
        assert name in err, (name, err)
