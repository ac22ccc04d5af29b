"""Reference: Real-ESRGAN's x4plus degradation driven through BasicSR 1.4.2's own functions.

A test-only and bench-only reference (``pip install --no-deps basicsr==1.4.2``): the per-sample
kernels are drawn as Real-ESRGAN's dataset draws them (numpy, ``random_mixed_kernels``,
``circular_lowpass_kernel``), and the batch is degraded as its model's ``feed_data`` does
(``USMSharp``, ``filter2D``, ``F.interpolate``, the ``*_pt`` noise functions, ``DiffJPEG``),
without the crop and the pair pool. Written here from the x4plus options; BasicSR itself is
never a dependency of salightning.

``import_basicsr()`` makes BasicSR importable with a current torchvision (it imports the
removed ``torchvision.transforms.functional_tensor``).
"""

from __future__ import annotations

import math
import random
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

X4PLUS = {
    "kernel_list": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob": 0.1, "blur_sigma": [0.2, 3], "betag_range": [0.5, 4], "betap_range": [1, 2],
    "sinc_prob2": 0.1, "blur_sigma2": [0.2, 1.5], "betag_range2": [0.5, 4], "betap_range2": [1, 2],
    "final_sinc_prob": 0.8,
    "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5,
    "noise_range": [1, 30], "poisson_scale_range": [0.05, 3], "gray_noise_prob": 0.4, "jpeg_range": [30, 95],
    "second_blur_prob": 0.8, "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.3, 1.2],
    "gaussian_noise_prob2": 0.5, "noise_range2": [1, 25], "poisson_scale_range2": [0.05, 2.5],
    "gray_noise_prob2": 0.4, "jpeg_range2": [30, 95], "scale": 4,
}  # fmt: skip


def import_basicsr() -> types.SimpleNamespace:
    """BasicSR's degradation functions, ``filter2D``, ``USMSharp`` and ``DiffJPEG``."""
    if "torchvision.transforms.functional_tensor" not in sys.modules:
        import torchvision.transforms.functional as tvf

        shim = types.ModuleType("torchvision.transforms.functional_tensor")
        shim.rgb_to_grayscale = tvf.rgb_to_grayscale
        sys.modules["torchvision.transforms.functional_tensor"] = shim
    from basicsr.data import degradations
    from basicsr.utils import DiffJPEG, USMSharp
    from basicsr.utils.img_process_util import filter2D

    return types.SimpleNamespace(degradations=degradations, filter2D=filter2D, USMSharp=USMSharp, DiffJPEG=DiffJPEG)


def _kernel(bsr, opt: dict, suffix: str) -> np.ndarray:
    d = bsr.degradations
    size = random.choice([2 * v + 1 for v in range(3, 11)])
    if np.random.uniform() < opt["sinc_prob" + suffix]:
        cutoff = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
        kernel = d.circular_lowpass_kernel(cutoff, size, pad_to=False)
    else:
        kernel = d.random_mixed_kernels(
            opt["kernel_list"], opt["kernel_prob"], size, opt["blur_sigma" + suffix], opt["blur_sigma" + suffix],
            [-math.pi, math.pi], opt["betag_range" + suffix], opt["betap_range" + suffix], noise_range=None,
        )
    pad = (21 - size) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def sample_kernels(bsr, batch: int, opt: dict = X4PLUS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kernel1, kernel2, sinc_kernel), each (batch, 21, 21), as the dataset makes them per sample."""
    k1, k2, sincs = [], [], []
    for _ in range(batch):
        k1.append(_kernel(bsr, opt, ""))
        k2.append(_kernel(bsr, opt, "2"))
        if np.random.uniform() < opt["final_sinc_prob"]:
            size = random.choice([2 * v + 1 for v in range(3, 11)])
            sinc = bsr.degradations.circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=21)
        else:
            sinc = np.zeros((21, 21))
            sinc[10, 10] = 1
        sincs.append(sinc)
    return tuple(torch.from_numpy(np.stack(k)).float() for k in (k1, k2, sincs))


class BasicSRDegradation:
    """Real-ESRGAN's ``feed_data`` on a batch, with BasicSR's modules built once."""

    def __init__(self, opt: dict = X4PLUS, usm_twice: bool = False) -> None:
        self.bsr = import_basicsr()
        self.opt = opt
        self.usm = self.bsr.USMSharp()
        self.jpeger = self.bsr.DiffJPEG(differentiable=False)
        # Real-ESRGAN sharpens the GT again after its pair pool; usm_twice counts that cost
        self.usm_twice = usm_twice

    def __call__(self, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        opt, filter2D = self.opt, self.bsr.filter2D
        kernel1, kernel2, sinc_kernel = sample_kernels(self.bsr, gt.shape[0], opt)
        gt_usm = self.usm(gt)
        h, w = gt.shape[2:4]
        out = filter2D(gt_usm, kernel1)
        out = self._resize(out, opt["resize_prob"], opt["resize_range"])
        out = self._noise(out, "")
        # DiffJPEG returns a non-contiguous tensor, which filter2D's view() rejects on current torch
        out = self.jpeger(out.clamp(0, 1), quality=out.new_zeros(out.size(0)).uniform_(*opt["jpeg_range"])).contiguous()
        if np.random.uniform() < opt["second_blur_prob"]:
            out = filter2D(out, kernel2)
        updown = random.choices(["up", "down", "keep"], opt["resize_prob2"])[0]
        scale = {"up": lambda: np.random.uniform(1, opt["resize_range2"][1]),
                 "down": lambda: np.random.uniform(opt["resize_range2"][0], 1), "keep": lambda: 1}[updown]()
        mode = random.choice(["area", "bilinear", "bicubic"])
        out = F.interpolate(out, size=(int(h / opt["scale"] * scale), int(w / opt["scale"] * scale)), mode=mode)
        out = self._noise(out, "2")
        lr_size = (h // opt["scale"], w // opt["scale"])
        quality = out.new_zeros(out.size(0)).uniform_(*opt["jpeg_range2"])
        if np.random.uniform() < 0.5:
            out = F.interpolate(out, size=lr_size, mode=random.choice(["area", "bilinear", "bicubic"]))
            out = filter2D(out, sinc_kernel)
            out = self.jpeger(out.clamp(0, 1), quality=quality)
        else:
            out = self.jpeger(out.clamp(0, 1), quality=quality).contiguous()
            out = F.interpolate(out, size=lr_size, mode=random.choice(["area", "bilinear", "bicubic"]))
            out = filter2D(out, sinc_kernel)
        lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
        if self.usm_twice:
            gt_usm = self.usm(gt)
        return lq, gt_usm

    def _resize(self, x: torch.Tensor, probs, bounds) -> torch.Tensor:
        updown = random.choices(["up", "down", "keep"], probs)[0]
        scale = {"up": lambda: np.random.uniform(1, bounds[1]), "down": lambda: np.random.uniform(bounds[0], 1),
                 "keep": lambda: 1}[updown]()
        return F.interpolate(x, scale_factor=scale, mode=random.choice(["area", "bilinear", "bicubic"]))

    def _noise(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        opt, d = self.opt, self.bsr.degradations
        gray = opt["gray_noise_prob" + suffix]
        if np.random.uniform() < opt["gaussian_noise_prob" + suffix]:
            return d.random_add_gaussian_noise_pt(x, sigma_range=opt["noise_range" + suffix], clip=True, rounds=False, gray_prob=gray)
        return d.random_add_poisson_noise_pt(x, scale_range=opt["poisson_scale_range" + suffix], gray_prob=gray, clip=True, rounds=False)
