"""Plain (eq. 8, 9) and spatially adaptive (eq. 12, 13) pixel losses."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Self

import torch
from torch import Tensor, nn

from salightning._checks import check_non_negative, check_same_shape, check_tensor
from salightning.edges import EdgeExtractor
from salightning.losses.distances import Distance, _check_broadcast, _float32_if_half, distance_penalty

__all__ = ["PixelLossOutput", "SAPixelLoss"]


class PixelLossOutput(NamedTuple):
    """The terms of :class:`SAPixelLoss`, each a () scalar tensor.

    Attributes:
        total: ``plain + sa``, the loss to minimise (eq. 12/13; eq. 8/9 without edge map).
        plain: ``mean(alpha * rho(sr - hr))``, the plain pixel loss (eq. 8/9).
        sa: ``mean(beta * W * rho(sr - hr)) = beta * sa_unit``; 0 without edge map.
        sa_unit: ``mean(W * rho(sr - hr))``, the SA term for ``beta = 1`` (for calibrating
            beta, e.g. to make ``sa`` a given share of the total); 0 without edge map.
    """

    total: Tensor
    plain: Tensor
    sa: Tensor
    sa_unit: Tensor


def _check_coefficient(value: float | Tensor, name: str) -> float:
    value = float(value)
    return check_non_negative(value, name)


class SAPixelLoss(nn.Module):
    """Spatially adaptive pixel loss: ``distance(hr, sr, alpha * 1 + beta * W(hr))``.

    With ``beta == 0`` or no edge map this is the plain pixel loss (eq. 8 for L1, eq. 9 for
    Charbonnier); otherwise the SA pixel loss (eq. 12 for L1, eq. 13 for Charbonnier), which
    equals :func:`~salightning.losses.weighted_l1` / :func:`~salightning.losses.weighted_charbonnier`
    with ``h = alpha + beta * W``: a mean over all elements, not normalised by ``sum(h)``, so
    ``alpha`` and ``beta`` are the paper's coefficients (SA-ESRGAN: alpha = beta1 = 0.01,
    beta = beta2 = 20, L1; SA-VSRResFeatGAN: alpha = 0.001, beta = 5 (local variance) or 1.5
    (Canny), Charbonnier).

    ``beta`` is a float32 buffer, so a calibrated value is saved in checkpoints; change it with
    :meth:`set_beta`. ``W`` is computed from ``hr`` in float32 without gradient; gradients
    reach ``sr`` only (``hr`` and ``W`` are detached).

    Args:
        alpha: weight of the plain term (>= 0).
        beta: weight of the edge term (>= 0).
        edge_extractor: computes ``W(hr)``, (B, C, H, W) in [0, 1]. When None, ``forward`` uses
            the ``edge_map`` it is given, or none.
        distance: "l1" (eq. 6) or "charbonnier" (eq. 7).
        eps: Charbonnier epsilon (> 0), used as ``sqrt(d^2 + eps^2)``.
    """

    beta: Tensor

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.0,
        edge_extractor: EdgeExtractor | None = None,
        distance: Distance = "l1",
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.alpha = _check_coefficient(alpha, "alpha")
        self.register_buffer("beta", torch.tensor(_check_coefficient(beta, "beta"), dtype=torch.float32))
        self.edge_extractor = edge_extractor
        distance_penalty(distance, eps)  # validates both now rather than at the first batch
        self.distance = distance
        self.eps = float(eps)

    def set_beta(self, value: float | Tensor) -> None:
        """Set the weight of the edge term (>= 0, finite), in place (keeps device and float32)."""
        self.beta.fill_(_check_coefficient(value, "beta"))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        beta = self.beta
        super()._apply(fn, recurse)
        # .half() / .to(bfloat16) would round a calibrated beta: keep the float32 value.
        if self.beta.dtype != torch.float32:
            self.beta = beta.to(self.beta.device)
        return self

    def edge_map(self, hr: Tensor) -> Tensor | None:
        """``W(hr)`` from the edge extractor: (B, C, H, W) float32 in [0, 1], no grad; None without one.

        Args:
            hr: (B, C, H, W) float tensor in [0, 1].
        """
        if self.edge_extractor is None:
            return None
        with torch.no_grad():
            return self.edge_extractor(hr.detach()).float()

    def forward(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None = None) -> PixelLossOutput:
        """Compute the loss terms.

        Args:
            sr: (B, C, H, W) float tensor, the generator's output.
            hr: (B, C, H, W) float tensor, the target.
            edge_map: optional precomputed ``W(hr)``, float, broadcastable to (B, C, H, W)
                (e.g. (B, 1, H, W)); detached. When None, computed by the edge extractor if any.

        Returns:
            :class:`PixelLossOutput` of () scalars (float32 for half-precision inputs).
        """
        check_tensor(sr, "sr", ndim=4)
        check_tensor(hr, "hr", ndim=4)
        check_same_shape(sr, hr, "sr", "hr")
        if edge_map is None:
            edge_map = self.edge_map(hr)
        else:
            check_tensor(edge_map, "edge_map", ndim=4)
            _check_broadcast(edge_map, "edge_map", sr.shape, "sr")
            edge_map = edge_map.detach().float()

        rho = distance_penalty(self.distance, self.eps)(_float32_if_half(sr - hr.detach()))
        plain = self.alpha * rho.mean()
        if edge_map is None:
            zero = plain.new_zeros(())
            return PixelLossOutput(plain, plain, zero, zero)
        sa_unit = (edge_map * rho).mean()
        sa = self.beta * sa_unit
        return PixelLossOutput(plain + sa, plain, sa, sa_unit)

    def extra_repr(self) -> str:
        eps = f", eps={self.eps}" if self.distance == "charbonnier" else ""
        return f"alpha={self.alpha}, beta={float(self.beta):.6g}, distance={self.distance!r}{eps}"
