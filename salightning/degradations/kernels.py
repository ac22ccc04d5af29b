r"""Blur kernels of Real-ESRGAN's degradation, built in a batch from ``(B,)`` parameter tensors.

Each kernel family is evaluated on the integer grid :math:`x, y \in [-r, r]` (``size = 2r + 1``)
with the rotated covariance :math:`\Sigma = R_\theta \operatorname{diag}(\sigma_x^2, \sigma_y^2)
R_\theta^T` and the quadratic form :math:`q = p^T \Sigma^{-1} p`, then normalised to sum 1:

- Gaussian: :math:`\exp(-q / 2)`
- generalized Gaussian: :math:`\exp(-q^\beta / 2)`
- plateau: :math:`1 / (1 + q^\beta)`

An isotropic kernel is the case ``sigma_y == sigma_x`` (``theta`` then has no effect).
:func:`sinc_kernels` is the circular low-pass (2-D sinc) filter
:math:`\omega_c J_1(\omega_c r) / (2 \pi r)`, with :math:`\omega_c^2 / (4\pi)` at the centre.
Kernels are computed in float64 and returned in the dtype of the first parameter (float32 when
that is not a floating tensor), on its device. :func:`filter2d` applies one kernel per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from salightning.checks import check_odd_window, check_tensor

__all__ = [
    "gaussian_kernels",
    "generalized_gaussian_kernels",
    "plateau_kernels",
    "sinc_kernels",
    "filter2d",
]


def _as_batch(value: Tensor, name: str) -> Tensor:
    if not isinstance(value, Tensor) or value.ndim != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a 1-D tensor (B,), got {shape}")
    return value.to(torch.float64)


def _out_dtype(value: Tensor) -> torch.dtype:
    return value.dtype if value.is_floating_point() else torch.float32


def _quadratic_form(size: int, sigma_x: Tensor, sigma_y: Tensor, theta: Tensor) -> Tensor:
    """:math:`p^T \\Sigma^{-1} p` on the (size, size) grid for each of the B parameter sets."""
    check_odd_window(size, "size")
    sx = _as_batch(sigma_x, "sigma_x")
    sy = _as_batch(sigma_y, "sigma_y")
    th = _as_batch(theta, "theta")
    if not (sx.shape == sy.shape == th.shape):
        raise ValueError(
            f"sigma_x, sigma_y and theta must have the same shape (B,), got "
            f"{tuple(sx.shape)}, {tuple(sy.shape)} and {tuple(th.shape)}"
        )
    if sx.numel() and (sx.min() <= 0 or sy.min() <= 0):
        raise ValueError("sigma_x and sigma_y must be > 0")
    r = size // 2
    ax = torch.arange(-r, r + 1, dtype=torch.float64, device=sx.device)
    x = ax.view(1, 1, size)  # column offset
    y = ax.view(1, size, 1)  # row offset
    c, s = th.cos().view(-1, 1, 1), th.sin().view(-1, 1, 1)
    # coordinates in the kernel's principal axes: R^T p
    u = c * x + s * y
    v = -s * x + c * y
    return (u / sx.view(-1, 1, 1)) ** 2 + (v / sy.view(-1, 1, 1)) ** 2


def _normalised(kernel: Tensor, dtype: torch.dtype) -> Tensor:
    return (kernel / kernel.sum(dim=(-2, -1), keepdim=True)).to(dtype)


def gaussian_kernels(size: int, sigma_x: Tensor, sigma_y: Tensor, theta: Tensor) -> Tensor:
    r"""Anisotropic Gaussian kernels :math:`\exp(-q/2)`, normalised to sum 1.

    Args:
        size: odd kernel side.
        sigma_x: standard deviation along the first principal axis, (B,), > 0.
        sigma_y: standard deviation along the second principal axis, (B,), > 0.
        theta: rotation of the principal axes in radians, (B,).

    Returns:
        (B, size, size) kernels, in ``sigma_x``'s dtype and device.

    Example:
        >>> k = gaussian_kernels(21, torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.5]))
        >>> k.shape, round(float(k.sum()), 6)
        (torch.Size([1, 21, 21]), 1.0)
    """
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalised(torch.exp(-0.5 * q), _out_dtype(sigma_x))


def _check_beta(beta: Tensor, like: Tensor) -> Tensor:
    b = _as_batch(beta, "beta")
    if b.shape != like.shape[:1]:
        raise ValueError(f"beta must have shape {tuple(like.shape[:1])} like sigma_x, got {tuple(b.shape)}")
    if b.numel() and b.min() <= 0:
        raise ValueError("beta must be > 0")
    return b.view(-1, 1, 1)


def generalized_gaussian_kernels(size: int, sigma_x: Tensor, sigma_y: Tensor, theta: Tensor, beta: Tensor) -> Tensor:
    r"""Generalized Gaussian kernels :math:`\exp(-q^\beta/2)`, normalised to sum 1.

    ``beta = 1`` is the Gaussian; ``beta < 1`` heavier tails, ``beta > 1`` a flatter top.

    Args:
        size: odd kernel side.
        sigma_x, sigma_y, theta: as :func:`gaussian_kernels`, each (B,).
        beta: shape exponent, (B,), > 0.

    Returns:
        (B, size, size) kernels, in ``sigma_x``'s dtype and device.
    """
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalised(torch.exp(-0.5 * q.pow(_check_beta(beta, q))), _out_dtype(sigma_x))


def plateau_kernels(size: int, sigma_x: Tensor, sigma_y: Tensor, theta: Tensor, beta: Tensor) -> Tensor:
    r"""Plateau-shaped kernels :math:`1 / (1 + q^\beta)`, normalised to sum 1.

    Args:
        size: odd kernel side.
        sigma_x, sigma_y, theta: as :func:`gaussian_kernels`, each (B,).
        beta: shape exponent, (B,), > 0.

    Returns:
        (B, size, size) kernels, in ``sigma_x``'s dtype and device.
    """
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalised(1.0 / (q.pow(_check_beta(beta, q)) + 1.0), _out_dtype(sigma_x))


def sinc_kernels(size: int, cutoff: Tensor, pad_to: int | None = None) -> Tensor:
    r"""Circular low-pass (2-D sinc) kernels with cut-off frequency ``cutoff`` (radians, pi = Nyquist).

    Args:
        size: odd kernel side.
        cutoff: (B,) cut-off frequencies, > 0.
        pad_to: odd side to zero-pad the kernels to (centred), >= ``size``; None keeps ``size``.

    Returns:
        (B, pad_to or size, pad_to or size) kernels summing to 1, in ``cutoff``'s dtype and device.

    Example:
        >>> sinc_kernels(7, torch.tensor([math.pi / 2]), pad_to=21).shape
        torch.Size([1, 21, 21])
    """
    check_odd_window(size, "size")
    wc = _as_batch(cutoff, "cutoff")
    if wc.numel() and wc.min() <= 0:
        raise ValueError("cutoff must be > 0")
    if pad_to is not None:
        check_odd_window(pad_to, "pad_to")
        if pad_to < size:
            raise ValueError(f"pad_to must be >= size ({size}), got {pad_to}")
    r = size // 2
    ax = torch.arange(-r, r + 1, dtype=torch.float64, device=wc.device)
    radius = torch.sqrt(ax.view(1, size, 1) ** 2 + ax.view(1, 1, size) ** 2)
    wc3 = wc.view(-1, 1, 1)
    safe = radius.clamp_min(1.0)  # the centre is set below; avoid 0/0 there
    kernel = wc3 * torch.special.bessel_j1(wc3 * safe) / (2 * math.pi * safe)
    kernel[:, r, r] = wc**2 / (4 * math.pi)
    kernel = _normalised(kernel, _out_dtype(cutoff))
    if pad_to is not None and pad_to > size:
        p = (pad_to - size) // 2
        kernel = F.pad(kernel, (p, p, p, p))
    return kernel


def filter2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Filter each image with its own kernel (all channels alike), with reflected borders.

    Args:
        x: (B, C, H, W) images.
        kernels: (B, k, k) kernels, ``k`` odd and ``k // 2 < min(H, W)``; or (1, k, k) for one
            kernel shared by the batch.

    Returns:
        (B, C, H, W) filtered images (correlation, as ``cv2.filter2D``), in ``x``'s dtype.
    """
    check_tensor(x, "x", ndim=4)
    b, c, h, w = x.shape
    if kernels.ndim != 3 or kernels.shape[0] not in (1, b) or kernels.shape[-1] != kernels.shape[-2]:
        raise ValueError(f"kernels must have shape ({b}, k, k) or (1, k, k), got {tuple(kernels.shape)}")
    k = kernels.shape[-1]
    check_odd_window(k, "kernel size")
    if k // 2 >= min(h, w):
        raise ValueError(
            f"kernel size {k} is too large for a {h}x{w} image (reflected borders need k // 2 < {min(h, w)}); "
            "use a smaller kernel or a larger image"
        )
    padded = F.pad(x, (k // 2,) * 4, mode="reflect").contiguous()
    weight = kernels.to(x.dtype).unsqueeze(1)
    # the tails of narrow kernels are subnormal in float32, and subnormal weights make CPU convolution ~5x slower
    weight = weight.masked_fill(weight.abs() < torch.finfo(weight.dtype).tiny, 0.0)
    if kernels.shape[0] == 1:
        return F.conv2d(padded.reshape(b * c, 1, *padded.shape[-2:]), weight).view(b, c, h, w)
    weight = weight.repeat_interleave(c, dim=0)  # (B*C, 1, k, k): image i's kernel for its C channels
    return F.conv2d(padded.reshape(1, b * c, *padded.shape[-2:]), weight, groups=b * c).view(b, c, h, w)
