"""Shared fixtures: real photos (scikit-image's bundled images), never noise."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

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
    from pathlib import Path

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
    from pathlib import Path

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
