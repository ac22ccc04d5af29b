"""Crop boxes, degradation (LR from HR), dihedral augmentation and frame windows.

Boxes are ``(top, left, height, width)`` in LR pixels, so that the LR crop and its HR crop
(``scale`` times larger) stay aligned. LR images are made from HR ones with MATLAB-compatible
bicubic (:func:`~salightning.ops.imresize`) and rounded to 8-bit levels
(:func:`~salightning.ops.quantize_8bit`), as the LR files of SR benchmarks were.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from salightning.ops import imresize, quantize_8bit

__all__ = [
    "LR_MARGIN",
    "to_lr_levels",
    "context_box",
    "centre_box",
    "random_box",
    "crop_to_scale",
    "degrade_crop",
    "benchmark_lr",
    "dihedral",
    "reflect_index",
]

Box = tuple[int, int, int, int]

#: LR pixels of real context kept around a crop before shrinking it, so that the crop equals the
#: same region of the whole shrunk image (the stretched kernel reaches about 2*scale HR pixels,
#: i.e. 2 LR pixels, beyond an LR pixel's centre; 3 leaves room for MATLAB's rounding of taps).
LR_MARGIN = 3


def to_lr_levels(lr: Tensor, quantize: bool = True) -> Tensor:
    """Clamp an LR image to [0, 1] and, with ``quantize``, round it to 8-bit levels (like an LR PNG).

    Shape:
        - Input: :math:`(*)`
        - Output: :math:`(*)`
    """
    return quantize_8bit(lr) if quantize else lr.clamp(0.0, 1.0)


def context_box(lr_h: int, lr_w: int, box: Box) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), in LR pixels, of ``box`` widened by :data:`LR_MARGIN` and cut
    to an ``lr_h`` x ``lr_w`` image: the region the bicubic kernel reads to make the crop."""
    top, left, height, width = box
    return (
        max(0, top - LR_MARGIN),
        max(0, left - LR_MARGIN),
        min(lr_h, top + height + LR_MARGIN),
        min(lr_w, left + width + LR_MARGIN),
    )


def centre_box(lr_h: int, lr_w: int, size: int | None) -> Box:
    """The centred square crop of ``size`` LR pixels (cut to the image), or the whole image for None.

    Example:
        >>> centre_box(10, 20, 4), centre_box(10, 20, None)
        ((3, 8, 4, 4), (0, 0, 10, 20))
    """
    if size is None or (size >= lr_h and size >= lr_w):
        return 0, 0, lr_h, lr_w
    h, w = min(size, lr_h), min(size, lr_w)
    return (lr_h - h) // 2, (lr_w - w) // 2, h, w


def random_box(rng: np.random.Generator, lr_h: int, lr_w: int, size: int) -> Box:
    """A uniformly random ``size`` x ``size`` crop of an ``lr_h`` x ``lr_w`` image (top drawn first)."""
    return int(rng.integers(0, lr_h - size + 1)), int(rng.integers(0, lr_w - size + 1)), size, size


def crop_to_scale(x: Tensor, scale: int) -> Tensor:
    """Cut the bottom rows and right columns that do not fill a whole LR pixel ("mod-crop").

    Shape:
        - Input: :math:`(*, C, H, W)`
        - Output: :math:`(*, C, s \\lfloor H / s \\rfloor, s \\lfloor W / s \\rfloor)` for ``scale`` :math:`s`.

    Example:
        >>> crop_to_scale(torch.zeros(3, 10, 13), 4).shape
        torch.Size([3, 8, 12])
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    return x[..., : x.shape[-2] // scale * scale, : x.shape[-1] // scale * scale]


def degrade_crop(
    hr: Tensor,
    scale: int,
    box: Box | None = None,
    quantize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Cut an LR/HR pair out of an HR image, making the LR with MATLAB bicubic (:func:`~salightning.ops.imresize`).

    The LR crop equals the same region of ``imresize(hr, 1 / scale)``: the crop is shrunk with
    a margin of real pixels around it, so the image border is treated only where the crop
    touches it. Rows and columns beyond the last multiple of ``scale`` are never used.

    Args:
        hr: (..., C, H, W) in [0, 1].
        scale: integer SR factor.
        box: (top, left, height, width) of the crop in LR pixels; None for the whole image.
        quantize: round the LR to 8-bit levels, like a benchmark LR PNG.

    Returns:
        ``(lr, hr_crop)``: (..., C, height, width) clamped to [0, 1], and
        (..., C, height * scale, width * scale).
    """
    lr_h, lr_w = hr.shape[-2] // scale, hr.shape[-1] // scale
    top, left, height, width = box if box is not None else (0, 0, lr_h, lr_w)
    t0, l0, t1, l1 = context_box(lr_h, lr_w, (top, left, height, width))
    region = hr[..., t0 * scale : t1 * scale, l0 * scale : l1 * scale]
    lr = imresize(region, 1.0 / scale)[..., top - t0 : top - t0 + height, left - l0 : left - l0 + width]
    hr_crop = hr[..., top * scale : (top + height) * scale, left * scale : (left + width) * scale]
    return to_lr_levels(lr, quantize), hr_crop


def benchmark_lr(hr: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """The benchmark protocol (Set5, Set14, DIV2K's bicubic LR): HR cropped to a multiple of
    ``scale``, shrunk ×1/scale with MATLAB bicubic, clamped and rounded to 8 bits.

    Args:
        hr: (..., C, H, W) in [0, 1], H and W at least ``scale``.
        scale: integer SR factor.

    Returns:
        ``(lr, hr_cropped)``: (..., C, H // scale, W // scale) on 8-bit levels and the HR cut
        to (..., C, H // scale * scale, W // scale * scale).

    Shape:
        - Input: :math:`(*, C, H, W)`
        - Output: :math:`(*, C, \\lfloor H / s \\rfloor, \\lfloor W / s \\rfloor)` and the cropped HR.

    Example:
        >>> lr, hr = benchmark_lr(torch.rand(3, 30, 41), 4)
        >>> lr.shape, hr.shape, torch.equal(lr, (lr * 255).round() / 255)
        (torch.Size([3, 7, 10]), torch.Size([3, 28, 40]), True)
    """
    hr = crop_to_scale(hr, scale)
    if hr.shape[-2] < scale or hr.shape[-1] < scale:
        raise ValueError(f"hr must be at least scale={scale} pixels high and wide, got shape {tuple(hr.shape)}")
    return degrade_crop(hr, scale, quantize=True)


def dihedral(x: Tensor, k: int) -> Tensor:
    """One of the 8 symmetries of the square: rotation by ``k % 4`` quarter turns, then a
    horizontal flip if ``k >= 4``.

    Args:
        x: (..., C, H, W).
        k: 0..7 (0 is the identity).

    Returns:
        (..., C, H, W), or (..., C, W, H) for odd rotations.

    Example:
        >>> dihedral(torch.tensor([[[1, 2], [3, 4]]]), 5)
        tensor([[[4, 2],
                 [3, 1]]])
    """
    if not 0 <= k < 8:
        raise ValueError(f"k must be in 0..7, got {k!r}")
    x = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def reflect_index(index: int, length: int) -> int:
    """Mirror a frame index into ``0..length-1`` without repeating the edge (-1 -> 1, length -> length-2).

    Example:
        >>> [reflect_index(i, 4) for i in range(-2, 6)]
        [2, 1, 0, 1, 2, 3, 2, 1]
    """
    if length == 1:
        return 0
    period = 2 * (length - 1)
    index %= period
    return period - index if index >= length else index
