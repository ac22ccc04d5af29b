"""Losses: weighted distances (eq. 6, 7), plain / SA pixel losses (eq. 8, 9, 12, 13),
VGG perceptual (eq. 15) and SA perceptual (poster) losses, adversarial losses (eq. 14,
relativistic, hinge, LS), total variation (SRGAN) and a DCT-domain perceptual loss.

Reduction everywhere: the mean over all elements of ``h * rho(u - v)`` (see
:mod:`salightning.losses.distances` for why).
"""

from salightning.losses.adversarial import (
    AdversarialKind,
    AdversarialLoss,
    gan_discriminator_fake_loss,
    gan_discriminator_loss,
    gan_discriminator_real_loss,
    gan_generator_loss,
)
from salightning.losses.dct import (
    JPEG_CHROMINANCE_QUANTIZATION,
    JPEG_LUMINANCE_QUANTIZATION,
    DCTPerceptualLoss,
    block_dct,
    dct_matrix,
    dct_perceptual_loss,
    jpeg_frequency_weights,
)
from salightning.losses.distances import (
    Distance,
    WeightedCharbonnier,
    WeightedL1,
    charbonnier_penalty,
    distance_penalty,
    l1_penalty,
    weighted_charbonnier,
    weighted_distance,
    weighted_l1,
)
from salightning.losses.perceptual import PerceptualLoss, SAPerceptualLoss, VGGFeatureExtractor, vgg19_layer_names
from salightning.losses.pixel import PixelLossParts, SAPixelLoss
from salightning.losses.regularizers import TotalVariationLoss, total_variation

__all__ = [
    "JPEG_CHROMINANCE_QUANTIZATION",
    "JPEG_LUMINANCE_QUANTIZATION",
    "AdversarialKind",
    "AdversarialLoss",
    "DCTPerceptualLoss",
    "Distance",
    "PerceptualLoss",
    "PixelLossParts",
    "SAPerceptualLoss",
    "SAPixelLoss",
    "TotalVariationLoss",
    "VGGFeatureExtractor",
    "WeightedCharbonnier",
    "WeightedL1",
    "block_dct",
    "charbonnier_penalty",
    "dct_matrix",
    "dct_perceptual_loss",
    "distance_penalty",
    "gan_discriminator_fake_loss",
    "gan_discriminator_loss",
    "gan_discriminator_real_loss",
    "gan_generator_loss",
    "jpeg_frequency_weights",
    "l1_penalty",
    "total_variation",
    "vgg19_layer_names",
    "weighted_charbonnier",
    "weighted_distance",
    "weighted_l1",
]
