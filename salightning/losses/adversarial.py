"""Adversarial losses on discriminator **logits** (the sigmoid lives here, BCE-with-logits).

Kinds (``r`` = logits of real HR images, ``f`` = logits of generated ones, ``BCE(z, t)`` =
``binary_cross_entropy_with_logits`` with target ``t``, mean over the batch):

=============  ==========================================  ====================  ====================
kind           generator                                   discriminator, real   discriminator, fake
=============  ==========================================  ====================  ====================
vanilla        ``BCE(f, 1)`` = E[-log D(G(y))]             ``BCE(r, 1)``         ``BCE(f, 0)``
relativistic   ``(BCE(r - E f, 0) + BCE(f - E r, 1)) / 2`` ``BCE(r - E f, 1)/2`` ``BCE(f - E r, 0)/2``
hinge          ``-E f``                                    ``E relu(1 - r)``     ``E relu(1 + f)``
lsgan          ``E (f - 1)^2``                             ``E (r - 1)^2``       ``E f^2``
=============  ==========================================  ====================  ====================

* vanilla: the min-max problem of eq. 14 with the non-saturating generator loss
  ``E[-log D(G(y))]`` (the poster's L_gen); real + fake is the poster's L_dis.
* relativistic: relativistic average GAN as in ESRGAN's code and BasicSR (``E`` is the batch
  mean, the other network's logits are detached). The factors 1/2 are BasicSR's; ESRGAN's
  coefficient 5e-3 (the paper's alpha = 0.005) was tuned with them.
* lsgan: BasicSR's form (MSE without LSGAN's factor 1/2), targets b = c = 1, a = 0.

Logits are taken in float32 when they come in half precision (autocast): a sigmoid of bf16 logits
loses the small differences the relativistic loss is made of.

Discriminator real and fake terms are separate so the trainer can backpropagate them one at
a time (BasicSR does, which avoids in-place errors with BatchNorm discriminators under DDP);
their sum is the discriminator loss. The other side's logits are always detached here.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salightning.checks import check_tensor
from salightning.losses.distances import float32_if_half

__all__ = [
    "AdversarialKind",
    "AdversarialLoss",
    "gan_discriminator_fake_loss",
    "gan_discriminator_loss",
    "gan_discriminator_real_loss",
    "gan_generator_loss",
]

AdversarialKind = Literal["vanilla", "relativistic", "hinge", "lsgan"]
_KINDS = ("vanilla", "relativistic", "hinge", "lsgan")


def _check_kind(kind: str) -> str:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return kind


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _other(logits: Tensor | None, name: str, kind: str) -> Tensor | None:
    """The other side's logits, checked and detached; required by the relativistic kind."""
    if logits is None:
        if kind == "relativistic":
            raise ValueError(f"{name} is required by the relativistic loss, got None")
        return None
    return float32_if_half(check_tensor(logits, name).detach())


def gan_generator_loss(
    fake_logits: Tensor, real_logits: Tensor | None = None, kind: AdversarialKind = "vanilla"
) -> Tensor:
    """Generator adversarial loss (see the module table).

    Args:
        fake_logits: (B, 1) discriminator logits of generated images (with grad to G).
        real_logits: (B', 1) logits of real images; needed by "relativistic" only (detached here).
        kind: "vanilla" (eq. 14), "relativistic", "hinge" or "lsgan".

    Returns:
        () scalar.
    """
    _check_kind(kind)
    fake_logits = float32_if_half(check_tensor(fake_logits, "fake_logits"))
    real = _other(real_logits, "real_logits", kind)
    if kind == "vanilla":
        return _bce(fake_logits, 1.0)
    if kind == "relativistic":
        return (_bce(real - fake_logits.mean(), 0.0) + _bce(fake_logits - real.mean(), 1.0)) / 2
    if kind == "hinge":
        return -fake_logits.mean()
    return (fake_logits - 1).square().mean()


def gan_discriminator_real_loss(
    real_logits: Tensor, fake_logits: Tensor | None = None, kind: AdversarialKind = "vanilla"
) -> Tensor:
    """Discriminator loss term on real images (see the module table).

    Args:
        real_logits: (B, 1) logits of real images (with grad to D).
        fake_logits: (B', 1) logits of generated images; needed by "relativistic" only (detached here).
        kind: "vanilla", "relativistic", "hinge" or "lsgan".

    Returns:
        () scalar.
    """
    _check_kind(kind)
    real_logits = float32_if_half(check_tensor(real_logits, "real_logits"))
    fake = _other(fake_logits, "fake_logits", kind)
    if kind == "vanilla":
        return _bce(real_logits, 1.0)
    if kind == "relativistic":
        return 0.5 * _bce(real_logits - fake.mean(), 1.0)
    if kind == "hinge":
        return F.relu(1 - real_logits).mean()
    return (real_logits - 1).square().mean()


def gan_discriminator_fake_loss(
    fake_logits: Tensor, real_logits: Tensor | None = None, kind: AdversarialKind = "vanilla"
) -> Tensor:
    """Discriminator loss term on generated images (see the module table).

    Args:
        fake_logits: (B, 1) logits of generated images (computed from ``sr.detach()``, grad to D).
        real_logits: (B', 1) logits of real images; needed by "relativistic" only (detached here).
        kind: "vanilla", "relativistic", "hinge" or "lsgan".

    Returns:
        () scalar.
    """
    _check_kind(kind)
    fake_logits = float32_if_half(check_tensor(fake_logits, "fake_logits"))
    real = _other(real_logits, "real_logits", kind)
    if kind == "vanilla":
        return _bce(fake_logits, 0.0)
    if kind == "relativistic":
        return 0.5 * _bce(fake_logits - real.mean(), 0.0)
    if kind == "hinge":
        return F.relu(1 + fake_logits).mean()
    return fake_logits.square().mean()


def gan_discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: AdversarialKind = "vanilla") -> Tensor:
    """Whole discriminator loss: real term + fake term. () scalar.

    Note that each term sees the *other* side detached, so for the relativistic kind the
    gradient is BasicSR's (each term backpropagated separately), not that of the joint
    expression.
    """
    return gan_discriminator_real_loss(real_logits, fake_logits, kind) + gan_discriminator_fake_loss(
        fake_logits, real_logits, kind
    )


class AdversarialLoss(nn.Module):
    """Module form of the adversarial losses (see the module docstring for the formulas).

    Args:
        kind: "vanilla" (eq. 14, SRGAN / VSRResFeatGAN), "relativistic" (ESRGAN), "hinge", "lsgan".

    ``forward(fake_logits, real_logits=None)`` is :meth:`generator_loss`.
    """

    def __init__(self, kind: AdversarialKind = "vanilla") -> None:
        super().__init__()
        self.kind = _check_kind(kind)

    @property
    def needs_real_logits_for_generator(self) -> bool:
        """True when the generator loss needs the real images' logits (relativistic)."""
        return self.kind == "relativistic"

    def generator_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        """See :func:`gan_generator_loss`. () scalar."""
        return gan_generator_loss(fake_logits, real_logits, self.kind)

    def discriminator_real_loss(self, real_logits: Tensor, fake_logits_detached: Tensor | None = None) -> Tensor:
        """See :func:`gan_discriminator_real_loss`. () scalar."""
        return gan_discriminator_real_loss(real_logits, fake_logits_detached, self.kind)

    def discriminator_fake_loss(self, fake_logits: Tensor, real_logits_detached: Tensor | None = None) -> Tensor:
        """See :func:`gan_discriminator_fake_loss`. () scalar."""
        return gan_discriminator_fake_loss(fake_logits, real_logits_detached, self.kind)

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """See :func:`gan_discriminator_loss`. () scalar."""
        return gan_discriminator_loss(real_logits, fake_logits, self.kind)

    def forward(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return self.generator_loss(fake_logits, real_logits)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
