"""Total-variation regulariser of SRGAN (slides: "Regularization Loss").

    l_TV = 1 / (r^2 W H) * sum_{x, y} || grad G(I_LR)_{x,y} ||

with ``||.||`` the **Euclidean (L2) norm** of the 2-D gradient at each pixel (isotropic TV),
taken per channel; the gradient is the forward difference with Neumann boundary (the
difference past the last row / column is 0), so every one of the ``rW * rH`` pixels has a
term and the normalisation is the slides' mean. Channels and batch are averaged too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salightning.checks import check_tensor
from salightning.losses.distances import float32_if_half

__all__ = ["TotalVariationLoss", "total_variation"]


def total_variation(x: Tensor) -> Tensor:
    """Isotropic total variation, mean over all pixels: ``mean(sqrt(dx^2 + dy^2))``.

    ``dx[..., i, j] = x[..., i, j+1] - x[..., i, j]`` (0 in the last column), ``dy`` likewise
    down the rows. The gradient of the norm at a zero difference is taken as 0 (a
    subgradient), not NaN.

    Args:
        x: (B, C, H, W) float tensor, e.g. the generator's output.

    Returns:
        () scalar (float32 for half-precision inputs).
    """
    x = float32_if_half(check_tensor(x, "x", ndim=4))
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    # vector_norm's backward is 0 where the norm is 0 (sqrt's would be NaN).
    return torch.linalg.vector_norm(torch.stack((dx, dy)), ord=2, dim=0).mean()


class TotalVariationLoss(nn.Module):
    """Module form of :func:`total_variation`. ``forward(x)``: (B, C, H, W) -> () scalar."""

    def forward(self, x: Tensor) -> Tensor:
        return total_variation(x)
