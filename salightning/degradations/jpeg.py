r"""JPEG compression (encode and decode) of a batch, each image at its own quality.

A batched model of baseline libjpeg with its defaults (what Pillow and OpenCV write): JFIF
YCbCr rounded to 8-bit samples, 4:2:0 chroma by 2x2 averaging, 8x8 orthonormal DCT, the
standard (Annex K) quantization tables scaled by IJG's quality formula (integer quality,
tables clipped to 1..255), decode with samples rounded and clipped after the inverse DCT,
triangle ("fancy") chroma upsampling and 8-bit output. Edges are padded to whole 16x16 MCUs by
repeating the last row and column, as libjpeg does. It is not differentiable (hard rounding);
on real photos it is 40-48 dB from libjpeg at the same quality (``tests/test_degradations.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salightning.checks import check_tensor
from salightning.ops import quantize_8bit

__all__ = ["jpeg", "JPEGCompression", "quality_tables"]

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance)
_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32  # fmt: skip

# JFIF RGB -> YCbCr (offset 128 on the chroma) and its inverse
_RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168735892, -0.331264108, 0.5), (0.5, -0.418687589, -0.081312411))
_YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136286, -0.714136286), (1.0, 1.772, 0.0))


def _check_quality(quality: Tensor | float, batch: int, device: torch.device) -> Tensor:
    q = torch.as_tensor(quality, dtype=torch.float64)  # checked where it is (a CPU tensor: no device sync)
    if q.ndim == 0:
        q = q.expand(batch)
    if q.shape != (batch,):
        raise ValueError(f"quality must be a number or a ({batch},) tensor, got shape {tuple(q.shape)}")
    if q.numel() and not bool(((q >= 1) & (q <= 100)).all()):
        raise ValueError(f"quality must be in [1, 100], got values in [{float(q.min()):g}, {float(q.max()):g}]")
    return q.to(device)


def quality_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """IJG's quantization tables for each quality (rounded to an integer, as encoders take it).

    Args:
        quality: (B,) qualities in [1, 100].

    Returns:
        Luminance and chrominance tables, each (B, 64) float64 in row-major (not zigzag) order.
    """
    q = quality.to(torch.float64).round()
    scale = torch.where(q < 50, torch.floor(5000 / q), 200 - 2 * q).view(-1, 1)
    tables = []
    for base in (_LUMA, _CHROMA):
        t = torch.tensor(base, dtype=torch.float64, device=q.device).view(1, 64)
        tables.append(torch.floor((t * scale + 50) / 100).clamp(1, 255))
    return tables[0], tables[1]


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    """(64, 64) orthonormal 2-D DCT-II on row-major 8x8 blocks: ``vec(D X D^T) = K vec(X)``."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n.view(1, 8) + 1) * n.view(8, 1) * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return torch.kron(d, d).to(dtype=dtype, device=device)


def _to_blocks(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // 8, w // 8, 64)


def _from_blocks(x: Tensor) -> Tensor:
    b, c, nh, nw, _ = x.shape
    return x.view(b, c, nh, nw, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, c, nh * 8, nw * 8)


def _code(samples: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """Level-shift, DCT, quantize, dequantize, inverse DCT, round and clip 8-bit samples (B, C, H, W)."""
    coef = _to_blocks(samples - 128.0) @ dct.T
    table = table.view(table.shape[0], 1, 1, 1, 64)
    coef = torch.round(coef / table) * table
    return _from_blocks(coef @ dct).add_(128.0).round_().clamp_(0.0, 255.0)


def jpeg(x: Tensor, quality: Tensor | float) -> Tensor:
    """Compress each image of ``x`` as an 8-bit 4:2:0 baseline JPEG at its quality and decode it.

    Args:
        x: (B, 3, H, W) RGB images in [0, 1] (clamped; any H, W >= 1).
        quality: (B,) qualities in [1, 100], or one number for the batch; rounded to integers.

    Returns:
        (B, 3, H, W) decoded images on the 8-bit levels ``k / 255``, in ``x``'s dtype and device.

    Example:
        >>> jpeg(torch.rand(2, 3, 20, 36), torch.tensor([30.0, 90.0])).shape
        torch.Size([2, 3, 20, 36])
    """
    check_tensor(x, "x", ndim=4, channels=3)
    b, _, h, w = x.shape
    q = _check_quality(quality, b, x.device)
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    luma_table, chroma_table = (t.to(dtype) for t in quality_tables(q))
    img = F.pad(x.to(dtype).clamp(0, 1) * 255.0, (0, -w % 16, 0, -h % 16), mode="replicate")
    to_ycc = torch.tensor(_RGB_TO_YCC, dtype=dtype, device=x.device)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, img)
    ycc[:, 1:] += 128.0
    ycc = ycc.round_().clamp_(0.0, 255.0)
    chroma = F.avg_pool2d(ycc[:, 1:], 2).round_()
    dct = _dct_matrix(dtype, x.device)
    luma = _code(ycc[:, :1], luma_table, dct)[..., :h, :w]
    chroma = _code(chroma, chroma_table, dct)[..., : (h + 1) // 2, : (w + 1) // 2]
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
    from_ycc = torch.tensor(_YCC_TO_RGB, dtype=dtype, device=x.device)
    rgb = torch.einsum("ij,bjhw->bihw", from_ycc, torch.cat([luma, chroma - 128.0], dim=1))
    return quantize_8bit(rgb / 255.0).to(x.dtype)


class JPEGCompression(nn.Module):
    """Module form of :func:`jpeg`: ``JPEGCompression()(x, quality)``.

    Shape:
        - Input: (B, 3, H, W) in [0, 1]; quality (B,) or a number.
        - Output: (B, 3, H, W) on the 8-bit levels.
    """

    def forward(self, x: Tensor, quality: Tensor | float) -> Tensor:
        return jpeg(x, quality)
