r"""Unsharp masking (USM) of the HR target, as Real-ESRGAN sharpens its ground truth.

With :math:`G` a Gaussian blur of side ``radius`` (made odd) and OpenCV's default sigma for that
side (:math:`0.3 ((k - 1)/2 - 1) + 0.8`, 8 for 51), reflected borders:

.. math::

    r = x - G x, \quad m = G\,[\,255 |r| > t\,], \quad
    \mathrm{usm}(x) = m \cdot \operatorname{clip}(x + w r, 0, 1) + (1 - m) \cdot x

The blur is separable and applied as two 1-D passes (BasicSR's ``USMSharp`` runs the same
Gaussian as one dense 51x51 convolution, 25x the work), each as banded matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salightning.checks import check_at_least, check_non_negative, check_tensor

__all__ = ["usm_sharpen", "USMSharpen", "gaussian_kernel1d"]

# up to this side one banded matrix per pass (its zeros cost less than a second BLAS call); above it,
# overlapping windows of this many outputs each, so the work stays linear in the side
_FULL_BAND_MAX = 512


def gaussian_kernel1d(size: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """The 1-D Gaussian of ``cv2.getGaussianKernel(size, 0)``: odd ``size``, sigma from the size.

    Returns:
        (size,) kernel summing to 1 (computed in float64, returned in ``dtype``).
    """
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    ax = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    k = torch.exp(-(ax**2) / (2 * sigma**2))
    return (k / k.sum()).to(dtype)


def _band(n: int, kernel: Tensor) -> Tensor:
    """(n + k - 1, n) matrix whose column j holds ``kernel`` from row j: ``x @ band`` correlates."""
    k = kernel.numel()
    cols = torch.arange(n, device=kernel.device).view(1, -1)
    band = torch.zeros(n + k - 1, n, dtype=kernel.dtype, device=kernel.device)
    band[cols + torch.arange(k, device=kernel.device).view(-1, 1), cols] = kernel.view(-1, 1)
    return band


def _blur_last_dim(x: Tensor, kernel: Tensor) -> Tensor:
    """Correlate the last dim of already-padded ``x`` (..., n + k - 1) with ``kernel`` (k,)."""
    k = kernel.numel()
    n = x.shape[-1] - k + 1
    if n <= _FULL_BAND_MAX:
        return x @ _band(n, kernel).to(x.device)
    total = -(-n // _FULL_BAND_MAX) * _FULL_BAND_MAX
    windows = F.pad(x, (0, total - n)).unfold(-1, _FULL_BAND_MAX + k - 1, _FULL_BAND_MAX)
    return (windows @ _band(_FULL_BAND_MAX, kernel).to(x.device)).flatten(-2)[..., :n]


def _reflected_band(n: int, kernel: Tensor) -> Tensor:
    """(n, n) matrix with ``x @ m`` = reflect-pad the last dim of ``x`` (n) by k // 2 and
    correlate with ``kernel``: the band with its padded rows folded onto the rows they copy."""
    r = kernel.numel() // 2
    p = torch.arange(-r, n + r, device=kernel.device).abs()
    source = torch.where(p > n - 1, 2 * (n - 1) - p, p)
    return torch.zeros(n, n, dtype=kernel.dtype, device=kernel.device).index_add_(0, source, _band(n, kernel))


def _gaussian_blur(x: Tensor, kernel: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    if max(h, w) <= _FULL_BAND_MAX:
        # no padded copy: the reflection is in the matrices
        return _reflected_band(h, kernel).to(x.device).T @ (x @ _reflected_band(w, kernel).to(x.device))
    r = kernel.numel() // 2
    rows = _blur_last_dim(F.pad(x, (r, r, r, r), mode="reflect"), kernel)  # (B, C, H + 2r, W)
    return _blur_last_dim(rows.transpose(-1, -2), kernel).transpose(-1, -2).contiguous()


def usm_sharpen(x: Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> Tensor:
    """Unsharp-mask ``x``: BasicSR's ``USMSharp()(x, weight, threshold)`` computed separably.

    Args:
        x: (B, C, H, W) images in [0, 1], ``H, W > radius // 2`` (reflected borders).
        weight: amount of the residual added back.
        radius: side of the Gaussian blur; an even value is made odd (+1), as BasicSR does.
        threshold: residuals at most this many 8-bit levels are left unsharpened (softly).

    Returns:
        (B, C, H, W) sharpened images, in ``x``'s dtype, in [0, 1] where ``x`` is.

    Example:
        >>> usm_sharpen(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 3, 64, 64])
    """
    check_tensor(x, "x", ndim=4)
    check_at_least(radius, "radius", 1)
    check_non_negative(weight, "weight")
    check_non_negative(threshold, "threshold")
    size = radius + 1 if radius % 2 == 0 else radius
    h, w = x.shape[-2:]
    if size // 2 >= min(h, w):
        raise ValueError(f"usm_sharpen needs images larger than {size // 2} pixels per side for radius {radius}, got {h}x{w}")
    # the matrices are built on the CPU (index_add_ accumulates in a fixed order there, so the
    # result is the same on every run) and copied to x's device
    kernel = gaussian_kernel1d(size, x.dtype)
    residual = x - _gaussian_blur(x, kernel)
    mask = (residual.abs() * 255 > threshold).to(x.dtype)
    soft_mask = _gaussian_blur(mask, kernel)
    sharp = (x + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * x


class USMSharpen(nn.Module):
    """Module form of :func:`usm_sharpen`.

    Shape:
        - Input: (B, C, H, W) in [0, 1].
        - Output: (B, C, H, W).
    """

    def __init__(self, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> None:
        super().__init__()
        self.weight = check_non_negative(weight, "weight")
        self.radius = check_at_least(radius, "radius", 1)
        self.threshold = check_non_negative(threshold, "threshold")

    def forward(self, x: Tensor) -> Tensor:
        return usm_sharpen(x, self.weight, self.radius, self.threshold)
