"""Plain (eq. 8, 9) and spatially adaptive (eq. 12, 13) pixel losses."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, Self

import torch
from torch import Tensor, nn

from salightning.checks import check_broadcast, check_non_negative, check_same_shape, check_tensor
from salightning.edges import EdgeExtractor
from salightning.losses.distances import Distance, distance_penalty, float32_if_half, weighted_distance

__all__ = ["PixelLossParts", "SAPixelLoss"]


class PixelLossParts(NamedTuple):
    """The terms of :class:`SAPixelLoss` (see :meth:`SAPixelLoss.parts`), each a () scalar tensor.

    Attributes:
        total: ``plain + sa``, the value of the loss (eq. 12/13; eq. 8/9 without edge map).
        plain: ``mean(beta1 * rho(sr - hr))``, the plain pixel loss (eq. 8/9).
        sa: ``mean(beta2 * W * rho(sr - hr)) = beta2 * sa_unit``; 0 without edge map.
        sa_unit: ``mean(W * rho(sr - hr))``, the SA term for ``beta2 = 1`` (for calibrating
            beta2, e.g. to make ``sa`` a given share of the generator loss); 0 without edge map.
    """

    total: Tensor
    plain: Tensor
    sa: Tensor
    sa_unit: Tensor


def _check_coefficient(value: float | Tensor, name: str) -> float:
    value = float(value)
    return check_non_negative(value, name)


def _deprecated_name(new: str, old: str, new_value: float | None, old_value: float | None, default: float) -> tuple[float, str]:
    """The coefficient given under its new or its deprecated name, and the name it came under."""
    if old_value is None:
        return (default if new_value is None else new_value), new
    if new_value is not None:
        raise ValueError(f"SAPixelLoss: give {new} or its deprecated name {old}, not both ({new}={new_value!r}, {old}={old_value!r})")
    warnings.warn(f"SAPixelLoss({old}=...) is deprecated: the paper's eq. 16-23 call it {new}; use {new}={old_value!r}", DeprecationWarning, stacklevel=3)
    return old_value, old


class SAPixelLoss(nn.Module):
    """Spatially adaptive pixel loss: ``weighted_distance(sr, hr, beta1 * 1 + beta2 * W(hr))``.

    With ``beta2 == 0`` or no edge map this is the plain pixel loss (eq. 8 for L1, eq. 9 for
    Charbonnier); otherwise the SA pixel loss (eq. 12 for L1, eq. 13 for Charbonnier), i.e.
    eq. 6 / 7 (:func:`~salightning.losses.weighted_distance`) with ``H = beta1 * 1 + beta2 * W``:
    a mean over all elements, not normalised by ``sum(H)``, so ``beta1`` and ``beta2`` are the
    paper's coefficients of eq. 16-23 (SA-ESRGAN: beta1 = 0.01, beta2 = 20, L1; SA-VSRResFeatGAN:
    beta1 = 0.001, beta2 = 5 (local variance) or 1.5 (Canny), Charbonnier).

    ``beta2`` is a float32 buffer, so a calibrated value is saved in checkpoints; change it with
    :meth:`set_beta2`. ``W`` is computed from ``hr`` in float32 without gradient; gradients
    reach ``sr`` only (``hr`` and ``W`` are detached). :meth:`parts` gives the plain and SA
    parts separately (for logging and for calibrating ``beta2``).

    Args:
        beta1: weight of the plain term (>= 0; None: 1).
        beta2: weight of the edge term (>= 0; None: 0).
        edge_extractor: computes ``W(hr)``, (B, C, H, W) in [0, 1]. When None, ``forward`` uses
            the ``edge_map`` it is given, or none.
        distance: "l1" (eq. 6) or "charbonnier" (eq. 7).
        eps: Charbonnier epsilon (> 0), used as ``sqrt(d^2 + eps^2)``.
        alpha: deprecated name of ``beta1`` (eq. 12's name; eq. 16-23 use alpha for the GAN weight).
        beta: deprecated name of ``beta2``.

    Shape:
        - sr: (B, C, H, W)
        - hr: (B, C, H, W)
        - edge_map: broadcastable to (B, C, H, W), e.g. (B, 1, H, W)
        - Output: () scalar

    Example:
        >>> from salightning.edges import LocalVariance
        >>> loss = SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=LocalVariance())
        >>> hr = torch.rand(2, 3, 32, 32)
        >>> loss(hr.flip(-1), hr).shape
        torch.Size([])
    """

    beta2: Tensor

    def __init__(
        self,
        beta1: float | None = None,
        beta2: float | None = None,
        edge_extractor: EdgeExtractor | None = None,
        distance: Distance = "l1",
        eps: float = 1e-3,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> None:
        super().__init__()
        beta1, beta1_name = _deprecated_name("beta1", "alpha", beta1, alpha, 1.0)
        beta2, beta2_name = _deprecated_name("beta2", "beta", beta2, beta, 0.0)
        self.beta1 = _check_coefficient(beta1, beta1_name)
        self.register_buffer("beta2", torch.tensor(_check_coefficient(beta2, beta2_name), dtype=torch.float32))
        self.edge_extractor = edge_extractor
        distance_penalty(distance, eps)  # validates both now rather than at the first batch
        self.distance = distance
        self.eps = float(eps)

    @property
    def alpha(self) -> float:
        """Deprecated name of :attr:`beta1`."""
        warnings.warn("SAPixelLoss.alpha is deprecated: use beta1", DeprecationWarning, stacklevel=2)
        return self.beta1

    @property
    def beta(self) -> Tensor:
        """Deprecated name of :attr:`beta2`."""
        warnings.warn("SAPixelLoss.beta is deprecated: use beta2", DeprecationWarning, stacklevel=2)
        return self.beta2

    def set_beta2(self, value: float | Tensor) -> None:
        """Set the weight of the edge term (>= 0, finite), in place (keeps device and float32)."""
        self.beta2.fill_(_check_coefficient(value, "beta2"))

    def set_beta(self, value: float | Tensor) -> None:
        """Deprecated name of :meth:`set_beta2`."""
        warnings.warn("SAPixelLoss.set_beta is deprecated: use set_beta2", DeprecationWarning, stacklevel=2)
        self.beta2.fill_(_check_coefficient(value, "beta"))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        beta2 = self.beta2
        super()._apply(fn, recurse)
        # .half() / .to(bfloat16) would round a calibrated beta2: keep the float32 value.
        if self.beta2.dtype != torch.float32:
            self.beta2 = beta2.to(self.beta2.device)
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints written before the rename call the buffer "beta".
        if prefix + "beta" in state_dict and prefix + "beta2" not in state_dict:
            state_dict[prefix + "beta2"] = state_dict.pop(prefix + "beta")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def edge_map(self, hr: Tensor) -> Tensor | None:
        """``W(hr)`` from the edge extractor: (B, C, H, W) float32 in [0, 1], no grad; None without one.

        Args:
            hr: (B, C, H, W) float tensor in [0, 1].
        """
        if self.edge_extractor is None:
            return None
        with torch.no_grad():
            return self.edge_extractor(hr.detach()).float()

    def _inputs(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None) -> tuple[Tensor, Tensor | None]:
        check_tensor(sr, "sr", ndim=4)
        check_tensor(hr, "hr", ndim=4)
        check_same_shape(sr, hr, "sr", "hr")
        if edge_map is None:
            return hr.detach(), self.edge_map(hr)
        check_tensor(edge_map, "edge_map", ndim=4)
        check_broadcast(edge_map, "edge_map", sr.shape, "sr")
        return hr.detach(), edge_map.detach().float()

    def forward(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None = None) -> Tensor:
        """The loss, eq. 12/13 (eq. 8/9 without edge map).

        Args:
            sr: (B, C, H, W) float tensor, the generator's output.
            hr: (B, C, H, W) float tensor, the target.
            edge_map: optional precomputed ``W(hr)``, float, broadcastable to (B, C, H, W)
                (e.g. (B, 1, H, W)); detached. When None, computed by the edge extractor if any.

        Returns:
            () scalar (float32 for half-precision inputs).
        """
        hr, edge_map = self._inputs(sr, hr, edge_map)
        h = self.beta1 if edge_map is None else self.beta1 + self.beta2 * edge_map
        return weighted_distance(sr, hr, h, self.distance, self.eps)

    def parts(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None = None) -> PixelLossParts:
        """The loss and its plain and SA parts from one penalty pass (for training, logging and
        calibrating ``beta2``); gradients flow through every part.

        Args: as :meth:`forward`.

        Returns:
            :class:`PixelLossParts` of () scalars; ``total`` equals :meth:`forward` up to rounding.
        """
        hr, edge_map = self._inputs(sr, hr, edge_map)
        rho = distance_penalty(self.distance, self.eps)(float32_if_half(sr - hr))
        plain = self.beta1 * rho.mean()
        if edge_map is None:
            zero = plain.new_zeros(())
            return PixelLossParts(plain, plain, zero, zero)
        sa_unit = (edge_map * rho).mean()
        sa = self.beta2 * sa_unit
        return PixelLossParts(plain + sa, plain, sa, sa_unit)

    def extra_repr(self) -> str:
        eps = f", eps={self.eps}" if self.distance == "charbonnier" else ""
        return f"beta1={self.beta1}, beta2={float(self.beta2):.6g}, distance={self.distance!r}{eps}"
