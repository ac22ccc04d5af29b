"""The generator objective of the SA-loss paper (eq. 16, 18, 20, 22) and the discriminator's input.

    ESRGAN (eq. 16 / 18):        L_G = alpha * L_GAN + L_percep + L_pixel
    VSRResFeatGAN (eq. 20 / 22): L_G = alpha1 * L_GAN + alpha2 * L_percep + L_pixel

``L_pixel`` is the (SA) pixel loss of eq. 8/9 or 12/13 with its own coefficients beta1
(plain) and beta2 (SA); SRGAN's total-variation regulariser is an optional extra term.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from salightning.checks import check_non_negative
from salightning.losses import AdversarialLoss, SAPixelLoss, total_variation

__all__ = ["GeneratorObjective", "ImageTooSmallError", "discriminator_input"]

#: beta1 below this is the paper's GAN-stage regime, tuned beside a dominant perceptual term.
PAPER_SMALL_BETA1 = 0.1


class ImageTooSmallError(ValueError):
    """An image smaller than a fixed-size discriminator's input."""


def discriminator_input(discriminator: nn.Module, x: Tensor) -> Tensor:
    """``x`` centre-cropped to a fixed-size discriminator's ``input_size`` (ESRGAN's 128x128),
    so that whole validation images can be scored; unchanged for any other discriminator.

    Args:
        discriminator: a module, optionally with ``input_size`` (int) and ``adaptive_pool`` (bool).
        x: (B, C, H, W) images.

    Returns:
        (B, C, input_size, input_size), or ``x``.

    Raises:
        ValueError: ``x`` is smaller than ``input_size``.
    """
    size = getattr(discriminator, "input_size", None)
    if size is None or getattr(discriminator, "adaptive_pool", False):
        return x
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h < size or w < size:
        raise ImageTooSmallError(
            f"the discriminator takes {size}x{size} inputs but the images are {h}x{w}; "
            "use larger images or a discriminator with adaptive_pool: true"
        )
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


class GeneratorObjective(nn.Module):
    """The generator loss of eq. 16/18 (ESRGAN) and eq. 20/22 (VSRResFeatGAN).

    ``adversarial_weight * L_GAN + perceptual_weight * L_percep + tv_weight * TV + L_pixel``;
    the GAN term is present when a discriminator is given to :meth:`forward`.

    Args:
        pixel_loss: the (SA) pixel loss, eq. 8/9 or 12/13 (default: plain L1 with beta1 = 1).
        adversarial_loss: the GAN loss (default: vanilla, eq. 14).
        adversarial_weight: alpha of eq. 16/18 (ESRGAN 0.005) or alpha1 of eq. 20/22 (0.001).
        perceptual_loss: eq. 15 (or the SA / DCT perceptual loss); None for none.
        perceptual_weight: 1 in eq. 16/18, alpha2 = 0.998 in eq. 20/22.
        tv_weight: weight of the total-variation regulariser (SRGAN); 0 disables it.

    Shape:
        - sr, hr: (B, C, H, W)
        - edge_map: broadcastable to (B, C, H, W), or None
        - Output: () total and a dict of () terms

    Example:
        >>> objective = GeneratorObjective(SAPixelLoss(beta1=1.0))
        >>> hr = torch.rand(1, 3, 16, 16)
        >>> total, terms = objective(hr.flip(-1), hr)
        >>> sorted(terms)
        ['pixel', 'pixel_plain', 'pixel_sa', 'pixel_sa_unit', 'sa_share']
    """

    def __init__(
        self,
        pixel_loss: SAPixelLoss | None = None,
        adversarial_loss: AdversarialLoss | None = None,
        adversarial_weight: float = 0.005,
        perceptual_loss: nn.Module | None = None,
        perceptual_weight: float = 1.0,
        tv_weight: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("adversarial_weight", adversarial_weight), ("perceptual_weight", perceptual_weight), ("tv_weight", tv_weight)):
            check_non_negative(value, f"model.{name}")
        self.pixel_loss = pixel_loss if pixel_loss is not None else SAPixelLoss(beta1=1.0)
        self.adversarial_loss = adversarial_loss if adversarial_loss is not None else AdversarialLoss("vanilla")
        self.perceptual_loss = perceptual_loss
        self.adversarial_weight = adversarial_weight
        self.perceptual_weight = perceptual_weight
        self.tv_weight = tv_weight

    def balance_warning(self, gan: bool) -> str | None:
        """A warning when a GAN stage has the paper's small beta1 but no perceptual term: the
        coefficients were tuned beside a dominant perceptual term, so the pixel loss (and its SA
        part) now dominates. None when the balance is the paper's."""
        perceptual = self.perceptual_loss is not None and self.perceptual_weight > 0
        if not gan or self.adversarial_weight == 0 or perceptual or self.pixel_loss.beta1 >= PAPER_SMALL_BETA1:
            return None
        return (
            f"salightning: this GAN stage has the paper's small beta1 = {self.pixel_loss.beta1:g} but no perceptual term: "
            "its coefficients were tuned beside a dominant perceptual loss, so that balance is gone (the pixel loss "
            "dominates). Without ImageNet VGG weights, use the DCT perceptual loss: configs/sa_esrgan_lv_dct.yaml "
            "(image) or configs/sa_vsrresfeatgan_lv_dct.yaml (video)."
        )

    def forward(
        self,
        sr: Tensor,
        hr: Tensor,
        edge_map: Tensor | None = None,
        discriminator: nn.Module | None = None,
        *,
        logits: tuple[Tensor, Tensor | None] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The total generator loss and its named terms.

        Args:
            sr: (B, C, H, W) generator output.
            hr: (B, C, H, W) target.
            edge_map: ``W(hr)`` for the SA terms (None: the pixel loss computes it if it can).
            discriminator: D of the GAN stage, run here on ``sr`` (and on ``hr`` for the
                relativistic loss); None: no GAN term unless ``logits`` are given.
            logits: ``(fake_logits, real_logits)`` of D on ``sr`` (with its graph) and on ``hr``
                (detached here), already computed by the caller, who reuses them for D's own
                loss (the training step); instead of ``discriminator``.

        Returns:
            ``(total, terms)``: ``terms`` holds ``pixel`` (eq. 12/13), its detached parts
            ``pixel_plain``, ``pixel_sa`` (beta2 * mean(W * rho)) and ``pixel_sa_unit``
            (mean(W * rho)), ``perceptual``, ``tv`` and ``adversarial`` when present,
            ``d_fake_logit_g`` (D's detached logits on ``sr``) and ``sa_share`` (pixel_sa / total).
        """
        if edge_map is None:
            edge_map = self.pixel_loss.edge_map(hr)
        parts = self.pixel_loss.parts(sr, hr, edge_map=edge_map)
        terms: dict[str, Tensor] = {"pixel": parts.total}
        terms.update(pixel_plain=parts.plain.detach(), pixel_sa=parts.sa.detach(), pixel_sa_unit=parts.sa_unit.detach())
        total = terms["pixel"]
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            if getattr(self.perceptual_loss, "uses_edge_map", False):
                terms["perceptual"] = self.perceptual_loss(sr, hr, edge_map=edge_map)
            else:
                terms["perceptual"] = self.perceptual_loss(sr, hr)
            total = total + self.perceptual_weight * terms["perceptual"]
        if self.tv_weight > 0:
            terms["tv"] = total_variation(sr)
            total = total + self.tv_weight * terms["tv"]
        if logits is None and discriminator is not None:
            real_logits = None
            if self.adversarial_loss.kind == "relativistic":
                with torch.no_grad():
                    real_logits = discriminator(discriminator_input(discriminator, hr))
            logits = (discriminator(discriminator_input(discriminator, sr)), real_logits)
        if logits is not None:
            fake_logits, real_logits = logits
            terms["adversarial"] = self.adversarial_loss.generator_loss(fake_logits, real_logits)
            terms["d_fake_logit_g"] = fake_logits.detach()
            total = total + self.adversarial_weight * terms["adversarial"]
        terms["sa_share"] = terms["pixel_sa"] / total.detach().abs().clamp_min(1e-12)
        return total, terms
