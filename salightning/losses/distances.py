"""Weighted distances between two (multi-channel) images or feature maps (section III-B).

The paper writes its distances as sums over all elements (eq. 4-7). Here they are **means**
over all elements of ``h * rho(u - v)``, *not* divided by ``sum(h)``:

    weighted_l1(u, v, h)          = mean(h * |u - v|)                       (eq. 6)
    weighted_charbonnier(u, v, h) = mean(h * sqrt((u - v)^2 + eps^2))       (eq. 7)

Why a mean and not a normalised weighted mean: with ``h = beta1 * 1`` the mean equals
BasicSR's ``L1Loss(loss_weight=beta1)``, which is what ESRGAN / VSRResFeatGAN (and hence the
paper's coefficients alpha = 0.005, beta1 = 0.01, beta2 = 20, ...) were tuned with; with
``h = beta1 + beta2 * W`` the SA part keeps its scale, so ``beta2`` keeps its meaning.
Dividing by ``sum(h)`` (BasicSR's ``weight=`` argument) would cancel the scale of ``h``.
A sum would make the coefficients depend on the batch and patch size.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from salightning.checks import check_broadcast, check_non_negative, check_positive, check_tensor

__all__ = [
    "Distance",
    "WeightedCharbonnier",
    "WeightedL1",
    "charbonnier_penalty",
    "distance_penalty",
    "l1_penalty",
    "weighted_charbonnier",
    "weighted_distance",
    "weighted_l1",
]

#: Names of the distances of eq. 6 ("l1") and eq. 7 ("charbonnier").
Distance = Literal["l1", "charbonnier", "mse"]


def l1_penalty(diff: Tensor) -> Tensor:
    """Element-wise ``|d|``, the penalty of eq. 4 / 6. Shape preserved."""
    return diff.abs()


def charbonnier_penalty(diff: Tensor, eps: float = 1e-3) -> Tensor:
    """Element-wise ``sqrt(d^2 + eps^2)``, the penalty of eq. 5 / 7. Shape preserved.

    ``eps`` is the paper's epsilon itself (default 1e-3, as in the paper), *not* its square:
    BasicSR's ``eps=1e-12`` sits inside the square root, i.e. epsilon = 1e-6 in this convention.
    """
    return torch.sqrt(diff * diff + eps * eps)


def squared_penalty(diff: Tensor) -> Tensor:
    """Element-wise ``d^2`` (SRGAN's MSE content loss; not one of the SA paper's distances). Shape preserved."""
    return diff * diff


def distance_penalty(distance: str, eps: float = 1e-3) -> Callable[[Tensor], Tensor]:
    """The element-wise penalty ``rho`` of ``distance`` ("l1", "charbonnier" or "mse"); ``eps`` must be > 0."""
    check_positive(eps, "eps")
    if distance == "l1":
        return l1_penalty
    if distance == "charbonnier":
        return partial(charbonnier_penalty, eps=eps)
    if distance == "mse":
        return squared_penalty
    raise ValueError(f"distance must be 'l1', 'charbonnier' or 'mse', got {distance!r}")


def float32_if_half(x: Tensor) -> Tensor:
    """``x`` in float32 when it is float16 / bfloat16, else unchanged (the losses' working precision)."""
    # Half-precision squares underflow (eps^2 = 1e-6 is subnormal in float16): compute in float32.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_weight(h: Tensor | float, target_shape: torch.Size) -> Tensor | float:
    if isinstance(h, bool) or not isinstance(h, (Tensor, int, float)):
        raise ValueError(f"h must be a tensor or a number, got {type(h).__name__}")
    if not isinstance(h, Tensor):
        return float(check_non_negative(float(h), "h"))
    check_tensor(h, "h")
    check_broadcast(h, "h", target_shape, "u")
    return h


def _difference(u: Tensor, v: Tensor) -> Tensor:
    check_tensor(u, "u")
    check_tensor(v, "v")
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {tuple(u.shape)} and {tuple(v.shape)}")
    return float32_if_half(u - v)


def weighted_distance(
    u: Tensor, v: Tensor, h: Tensor | float = 1.0, distance: Distance = "l1", eps: float = 1e-3
) -> Tensor:
    """``mean(h * rho(u - v))`` with ``rho`` the penalty of ``distance`` (eq. 6 or eq. 7).

    Args:
        u: (*) float tensor.
        v: (*) float tensor, same shape as ``u``.
        h: weights, a non-negative number or a float tensor broadcastable to ``u``'s shape
            (e.g. (B, 1, H, W) for a map shared by the channels). Not normalised by ``sum(h)``.
        distance: "l1" (eq. 6) or "charbonnier" (eq. 7).
        eps: Charbonnier epsilon (> 0), used as ``sqrt(d^2 + eps^2)``.

    Returns:
        () scalar, float32 for half-precision inputs.
    """
    rho = distance_penalty(distance, eps)
    diff = _difference(u, v)
    h = _check_weight(h, u.shape)
    return (h * rho(diff)).mean()


def weighted_l1(u: Tensor, v: Tensor, h: Tensor | float = 1.0) -> Tensor:
    """Weighted L1 distance, eq. 6: ``mean(h * |u - v|)`` over all elements of ``u``.

    Args:
        u: (*) float tensor.
        v: (*) float tensor, same shape as ``u``.
        h: non-negative number or float tensor broadcastable to ``u``'s shape.

    Returns:
        () scalar. With ``h = beta`` it equals ``beta * F.l1_loss(u, v)``.
    """
    return weighted_distance(u, v, h, "l1")


def weighted_charbonnier(u: Tensor, v: Tensor, h: Tensor | float = 1.0, eps: float = 1e-3) -> Tensor:
    """Weighted Charbonnier distance, eq. 7: ``mean(h * sqrt((u - v)^2 + eps^2))``.

    Args:
        u: (*) float tensor.
        v: (*) float tensor, same shape as ``u``.
        h: non-negative number or float tensor broadcastable to ``u``'s shape.
        eps: epsilon itself (> 0, default 1e-3 as in the paper), not epsilon squared.

    Returns:
        () scalar. Note that it is ``eps * mean(h)``, not 0, when ``u == v``.
    """
    return weighted_distance(u, v, h, "charbonnier", eps)


class WeightedL1(nn.Module):
    """Module form of :func:`weighted_l1` (eq. 6). ``forward(u, v, h=1.0)`` -> () scalar."""

    def forward(self, u: Tensor, v: Tensor, h: Tensor | float = 1.0) -> Tensor:
        return weighted_l1(u, v, h)


class WeightedCharbonnier(nn.Module):
    """Module form of :func:`weighted_charbonnier` (eq. 7). ``forward(u, v, h=1.0)`` -> () scalar.

    Args:
        eps: Charbonnier epsilon (> 0), used as ``sqrt(d^2 + eps^2)``.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = float(check_positive(eps, "eps"))

    def forward(self, u: Tensor, v: Tensor, h: Tensor | float = 1.0) -> Tensor:
        return weighted_charbonnier(u, v, h, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
