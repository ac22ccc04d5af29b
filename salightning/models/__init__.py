"""Generators and discriminators of the GAN SR models the SA loss is applied to.

Generators have ``scale`` (SR factor), ``num_frames`` (1 = single image, input (B, C, h, w);
> 1 = video, input (B, T, C, H, W)) and ``input_upsampled`` (True when the input frames are
already bicubic-upsampled to HR size). Discriminators map (B, C, H, W) to logits (B, 1), except
:class:`UNetDiscriminatorSN` (Real-ESRGAN), which scores each pixel, (B, 1, H, W); the sigmoid
lives in the adversarial loss.
"""

from salightning.models.discriminators import VGGStyleDiscriminator
from salightning.models.protocol import GeneratorSpec, constructor_config, generator_spec
from salightning.models.rrdbnet import RRDB, RRDBNet, ResidualDenseBlock, convert_esrgan_state_dict
from salightning.models.srresnet import SRGANDiscriminator, SRResNet
from salightning.models.unet_discriminator import UNetDiscriminatorSN
from salightning.models.vsrresnet import VSRResFeatGANDiscriminator, VSRResNet

__all__ = [
    "RRDBNet",
    "RRDB",
    "ResidualDenseBlock",
    "SRResNet",
    "VSRResNet",
    "VGGStyleDiscriminator",
    "SRGANDiscriminator",
    "VSRResFeatGANDiscriminator",
    "UNetDiscriminatorSN",
    "convert_esrgan_state_dict",
    "GeneratorSpec",
    "constructor_config",
    "generator_spec",
]
