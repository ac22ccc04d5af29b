r"""Additive Gaussian and Poisson noise of Real-ESRGAN's degradation, one strength per image.

Both take per-image strengths and per-image grey flags ``(B,)``: a grey image gets one noise
field shared by its three channels (noise of the luminance), a colour one an independent field
per channel. Results are clamped to [0, 1].

- Gaussian: :math:`x + \sigma n / 255`, :math:`n \sim \mathcal N(0, 1)`.
- Poisson (shot noise): with :math:`\bar x` the image on 8-bit levels and :math:`L` the number
  of distinct levels it uses rounded up to a power of two, :math:`x + s\,(P(\bar x L)/L - \bar x)`,
  :math:`P` Poisson; the grey field is computed the same way from the BT.601 luminance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from salightning.checks import check_tensor
from salightning.ops import to_uint8

__all__ = ["add_gaussian_noise", "add_poisson_noise"]

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _gray_mask(gray: bool | Tensor, batch: int, device: torch.device) -> bool | Tensor:
    """A Python bool as it is (one noise field computed), else a (B, 1, 1, 1) bool tensor."""
    if isinstance(gray, bool):
        return gray
    return _check_strength(gray, "gray", batch).to(device=device, dtype=torch.bool).view(batch, 1, 1, 1)


def _check_strength(value: Tensor, name: str, batch: int) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != (batch,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a ({batch},) tensor, got {shape}")
    return value


def add_gaussian_noise(x: Tensor, sigma: Tensor, gray: bool | Tensor = False, generator: torch.Generator | None = None) -> Tensor:
    """Add Gaussian noise of standard deviation ``sigma / 255`` to each image.

    Args:
        x: (B, C, H, W) images in [0, 1].
        sigma: (B,) standard deviations in 8-bit levels, >= 0.
        gray: (B,) bool, True for noise shared by the channels; or one bool for the batch
            (only that noise field is drawn).
        generator: draws the noise; on ``x``'s device.

    Returns:
        (B, C, H, W) noisy images clamped to [0, 1].
    """
    check_tensor(x, "x", ndim=4)
    b, c, h, w = x.shape
    sigma = _check_strength(sigma, "sigma", b).to(x.device, x.dtype).view(b, 1, 1, 1)
    gray = _gray_mask(gray, b, x.device)
    draw = lambda channels: torch.randn((b, channels, h, w), generator=generator, device=x.device, dtype=x.dtype)  # noqa: E731
    if isinstance(gray, bool):
        noise = draw(1 if gray else c)
    else:
        noise = torch.where(gray, draw(1), draw(c))
    return (x + noise * sigma / 255.0).clamp(0, 1)


def _levels(x8: Tensor) -> Tensor:
    """Per image: the number of distinct 8-bit levels it uses, rounded up to a power of two, (B,)."""
    b = x8.shape[0]
    used = torch.zeros(b, 256, dtype=torch.bool, device=x8.device)
    used.scatter_(1, x8.reshape(b, -1).long(), True)
    count = used.sum(1).clamp_min(1).to(torch.float64)
    return torch.exp2(torch.ceil(torch.log2(count)))


def _shot_noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    x8 = to_uint8(x)
    rounded = x8.to(x.dtype) / 255.0
    levels = _levels(x8).to(x.dtype).view(-1, 1, 1, 1)
    return torch.poisson(rounded * levels, generator=generator) / levels - rounded


def add_poisson_noise(x: Tensor, scale: Tensor, gray: bool | Tensor = False, generator: torch.Generator | None = None) -> Tensor:
    """Add Poisson (shot) noise scaled by ``scale`` to each RGB image.

    Args:
        x: (B, 3, H, W) images in [0, 1].
        scale: (B,) noise scales, >= 0.
        gray: (B,) bool, True for noise of the luminance shared by the channels; or one bool
            for the batch (only that noise field is drawn).
        generator: draws the noise; on ``x``'s device.

    Returns:
        (B, 3, H, W) noisy images clamped to [0, 1].
    """
    check_tensor(x, "x", ndim=4, channels=3)
    b = x.shape[0]
    scale = _check_strength(scale, "scale", b).to(x.device, x.dtype).view(b, 1, 1, 1)
    gray = _gray_mask(gray, b, x.device)
    weights = torch.tensor(_LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    grey_noise = lambda: _shot_noise((x * weights).sum(1, keepdim=True), generator)  # noqa: E731
    if isinstance(gray, bool):
        noise = grey_noise() if gray else _shot_noise(x, generator)
    else:
        noise = torch.where(gray, grey_noise(), _shot_noise(x, generator))
    return (x + noise * scale).clamp(0, 1)
