"""8-bit quantisation: the one rounding of [0, 1] images to the 256 levels of an 8-bit file.

Values are clamped to [0, 1], multiplied by 255 and rounded half to even (``torch.round``),
in the input's dtype. An LR image made on the fly this way equals the same image saved as an
8-bit PNG and read back; metrics compare images on these levels, as MATLAB does on ``uint8``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from salightning.checks import check_tensor

__all__ = ["quantize_8bit", "to_uint8", "Quantize8bit"]


def to_uint8(x: Tensor) -> Tensor:
    """Round an image in [0, 1] to 8-bit integers: ``round(clamp(x, 0, 1) * 255)`` as ``uint8``.

    The product and the rounding (half to even) are computed in ``x``'s dtype: convert ``x``
    to float64 first to round like MATLAB's ``im2uint8`` on ``double`` images.

    Args:
        x: floating-point tensor, any shape, values nominally in [0, 1].

    Returns:
        ``uint8`` tensor of the same shape and device, values 0..255.

    Shape:
        - Input: :math:`(*)`
        - Output: :math:`(*)`

    Example:
        >>> to_uint8(torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.7]))
        tensor([  0,   0, 128, 255, 255], dtype=torch.uint8)
    """
    check_tensor(x, "x")
    return x.clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)


def quantize_8bit(x: Tensor) -> Tensor:
    """Round an image in [0, 1] to the nearest of the 256 levels ``k / 255``, keeping its dtype.

    ``quantize_8bit(x)`` equals ``to_uint8(x) / 255`` computed in ``x``'s dtype: what an 8-bit
    file of ``x`` reads back as.

    Args:
        x: floating-point tensor, any shape, values nominally in [0, 1].

    Returns:
        Tensor of ``x``'s shape, dtype and device, values ``k / 255`` for integers ``k`` in 0..255.

    Shape:
        - Input: :math:`(*)`
        - Output: :math:`(*)`

    Example:
        >>> x = torch.tensor([-0.1, 0.1, 0.5, 2.0])
        >>> quantize_8bit(x) * 255
        tensor([  0.,  26., 128., 255.])
    """
    check_tensor(x, "x")
    return x.clamp(0.0, 1.0).mul_(255.0).round_().div_(255.0)


class Quantize8bit(nn.Module):
    """Module form of :func:`quantize_8bit`.

    Shape:
        - Input: :math:`(*)`, floating point.
        - Output: :math:`(*)`, same dtype.

    Example:
        >>> Quantize8bit()(torch.tensor([0.4, 0.9])) * 255
        tensor([102., 230.])
    """

    def forward(self, x: Tensor) -> Tensor:
        return quantize_8bit(x)
