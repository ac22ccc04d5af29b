"""DCT-domain perceptual loss (Arezoomand, Cheraaqee, Mansouri, "Perceptually-Optimized Loss
Function for Image Super-Resolution", slides 2021: "DCT — expressive, fast").

The slides only say that the error is measured in the DCT domain; the choices made here:

* Transform: JPEG's 8x8 block DCT-II, orthonormal (so Parseval holds and a pixel error has
  the same energy in both domains). Images whose sides are not multiples of 8 are padded by
  replicating the last row / column.
* Colour: by default the luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (full-range BT.601, the
  Y of JPEG, ``kornia.color.rgb_to_y``), since the eye resolves detail mostly in luminance;
  "ycbcr" uses JPEG's Y, Cb, Cr; "rgb" treats each channel alike.
* Frequency weighting: the inverse of JPEG's quantisation tables (ITU-T T.81, Annex K,
  tables K.1 for luminance, K.2 for chrominance), which encode how visible an error is at each
  frequency: low frequencies (small quantisation steps) count more, the highest ones least
  (weights 2-3.3 near DC, about 0.3 at the highest frequencies). The luminance weights are
  scaled to mean 1; the chrominance weights get the same scale, so they stay smaller, as in
  JPEG.
* Distance: weighted L1 (eq. 6) or Charbonnier (eq. 7) of the coefficients, mean over all
  coefficients (same reduction as every other loss here).
"""

from __future__ import annotations

import math
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salightning.checks import check_same_shape, check_tensor
from salightning.losses.distances import Distance, float32_if_half, distance_penalty, weighted_distance

__all__ = [
    "JPEG_CHROMINANCE_QUANTIZATION",
    "JPEG_LUMINANCE_QUANTIZATION",
    "DCTPerceptualLoss",
    "block_dct",
    "dct_matrix",
    "dct_perceptual_loss",
    "jpeg_frequency_weights",
]

DCTColor = Literal["y", "ycbcr", "rgb"]

#: ITU-T T.81 Annex K, table K.1 (luminance), rows = vertical frequency.
JPEG_LUMINANCE_QUANTIZATION = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
#: ITU-T T.81 Annex K, table K.2 (chrominance).
JPEG_CHROMINANCE_QUANTIZATION = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)
BLOCK = 8


def dct_matrix(n: int = BLOCK, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Orthonormal DCT-II matrix ``D`` (n, n): ``D[k, i] = c_k cos(pi (2i + 1) k / (2n))``,
    ``c_0 = sqrt(1/n)``, ``c_k = sqrt(2/n)``; ``D @ D.T = I``, and ``D @ x`` is the DCT of ``x``."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def block_dct(x: Tensor, block_size: int = BLOCK) -> Tensor:
    """2-D DCT-II (orthonormal) of each non-overlapping ``block_size`` square block.

    Args:
        x: (B, C, H, W) float, H and W multiples of ``block_size``.

    Returns:
        (B, C, H / block_size, W / block_size, block_size, block_size): coefficient
        ``[..., u, v]`` of each block, u the vertical and v the horizontal frequency.
    """
    check_tensor(x, "x", ndim=4)
    b, c, h, w = x.shape
    if h % block_size or w % block_size:
        raise ValueError(f"x must have sides that are multiples of {block_size}, got shape {tuple(x.shape)}")
    d = dct_matrix(block_size, x.dtype, x.device)
    blocks = x.reshape(b, c, h // block_size, block_size, w // block_size, block_size).transpose(3, 4)
    return d @ blocks @ d.T


def jpeg_frequency_weights(
    color: DCTColor = "y", dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """Perceptual weights per DCT frequency: inverse JPEG quantisation steps (see the module docstring).

    Returns:
        (C, 1, 1, 8, 8) weights, C = 1 for "y" and "rgb" (luminance table, shared by the
        channels), 3 for "ycbcr" (luminance, chrominance, chrominance); the luminance table
        has mean 1. Broadcasts against :func:`block_dct`'s output.
    """
    _check_color(color)
    luma = 1.0 / torch.tensor(JPEG_LUMINANCE_QUANTIZATION, dtype=torch.float64)
    scale = luma.mean()
    tables = [luma / scale]
    if color == "ycbcr":
        chroma = 1.0 / torch.tensor(JPEG_CHROMINANCE_QUANTIZATION, dtype=torch.float64)
        tables += [chroma / scale] * 2
    return torch.stack(tables).view(len(tables), 1, 1, BLOCK, BLOCK).to(dtype=dtype, device=device)


def _check_color(color: str) -> None:
    if color not in ("y", "ycbcr", "rgb"):
        raise ValueError(f"color must be 'y', 'ycbcr' or 'rgb', got {color!r}")


def _to_color(x: Tensor, color: str, name: str) -> Tensor:
    channels = {"y": (1, 3), "ycbcr": 3, "rgb": None}[color]
    check_tensor(x, name, ndim=4, channels=channels)
    if color == "y" and x.shape[1] == 3:
        return kornia.color.rgb_to_y(x)
    if color == "ycbcr":
        return kornia.color.rgb_to_ycbcr(x)
    return x


def _pad_to_blocks(x: Tensor) -> Tensor:
    pad_h, pad_w = -x.shape[-2] % BLOCK, -x.shape[-1] % BLOCK
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def dct_perceptual_loss(
    sr: Tensor,
    hr: Tensor,
    color: DCTColor = "y",
    distance: Distance = "l1",
    eps: float = 1e-3,
    frequency_weights: Tensor | None = None,
) -> Tensor:
    """DCT-domain perceptual loss: ``mean(w_f * rho(DCT8(sr) - DCT8(hr)))`` (module docstring).

    Args:
        sr: (B, C, H, W) float in [0, 1]; C = 3 (RGB) or 1 (already luminance) for "y",
            3 for "ycbcr", any for "rgb".
        hr: same shape as ``sr``.
        color: "y" (default), "ycbcr" or "rgb".
        distance: "l1" (eq. 6) or "charbonnier" (eq. 7).
        eps: Charbonnier epsilon (> 0), used as ``sqrt(d^2 + eps^2)``.
        frequency_weights: weights broadcastable to (B, C', H/8, W/8, 8, 8) (C' = channels after
            the colour conversion); default :func:`jpeg_frequency_weights` of ``color``.

    Returns:
        () scalar, 0 for L1 when ``sr == hr``.
    """
    _check_color(color)
    distance_penalty(distance, eps)
    check_tensor(sr, "sr", ndim=4)
    check_tensor(hr, "hr", ndim=4)
    check_same_shape(sr, hr, "sr", "hr")
    sr_c = _pad_to_blocks(_to_color(sr, color, "sr"))
    with torch.no_grad():
        hr_c = _pad_to_blocks(_to_color(hr.detach(), color, "hr"))
    if frequency_weights is None:
        frequency_weights = jpeg_frequency_weights(color, device=sr.device)
    coeffs_sr = block_dct(float32_if_half(sr_c))
    coeffs_hr = block_dct(hr_c.to(coeffs_sr.dtype))
    return weighted_distance(coeffs_sr, coeffs_hr, frequency_weights.to(coeffs_sr.dtype), distance, eps)


class DCTPerceptualLoss(nn.Module):
    """Module form of :func:`dct_perceptual_loss`; the JPEG weights are a non-persistent buffer.

    Args:
        color: "y" (default), "ycbcr" or "rgb".
        distance: "l1" or "charbonnier".
        eps: Charbonnier epsilon (> 0), used as ``sqrt(d^2 + eps^2)``.

    Shape:
        forward(sr, hr): (B, C, H, W) each -> () scalar.
    """

    frequency_weights: Tensor

    def __init__(self, color: DCTColor = "y", distance: Distance = "l1", eps: float = 1e-3) -> None:
        super().__init__()
        _check_color(color)
        distance_penalty(distance, eps)
        self.color, self.distance, self.eps = color, distance, float(eps)
        self.register_buffer("frequency_weights", jpeg_frequency_weights(color), persistent=False)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return dct_perceptual_loss(sr, hr, self.color, self.distance, self.eps, self.frequency_weights)

    def extra_repr(self) -> str:
        return f"color={self.color!r}, distance={self.distance!r}, eps={self.eps}"
