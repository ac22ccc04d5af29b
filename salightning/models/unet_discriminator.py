"""Real-ESRGAN's U-Net discriminator with spectral normalization.

Unlike the other discriminators of :mod:`salightning.models` it scores every pixel: it returns
logits (B, 1, H, W), the realness of each pixel's neighbourhood (Real-ESRGAN, section 3.3), for
the adversarial loss to average. Layer names are BasicSR's (``conv0`` ... ``conv9``) and its
spectral norm is ``torch.nn.utils.spectral_norm`` (``weight_orig``, ``weight_u``, ``weight_v``
in the state dict), so released Real-ESRGAN ``net_d`` weights load with ``load_state_dict``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from salightning.checks import check_at_least, check_tensor

__all__ = ["UNetDiscriminatorSN"]


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator: three stride-2 4x4 downsampling convs, three bilinear x2 upsampling
    stages with 3x3 convs (added to the matching encoder features with ``skip_connection``), two
    more 3x3 convs and a 3x3 conv to one channel. Every conv but the first and last has spectral
    norm and no bias; each is followed by LeakyReLU(0.2).

    Args:
        in_channels: channels of the input image.
        num_features: width of the first stage; the encoder has 2x, 4x and 8x that.
        skip_connection: add encoder features to the decoder's (U-Net skips).

    Shape:
        - Input: (B, in_channels, H, W), H and W multiples of 8.
        - Output: (B, 1, H, W) logits.

    Example:
        >>> d = UNetDiscriminatorSN(3, num_features=8)
        >>> d(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, in_channels: int = 3, num_features: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        self.in_channels = check_at_least(in_channels, "in_channels", 1)
        f = check_at_least(num_features, "num_features", 1)
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, channels=self.in_channels)
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"UNetDiscriminatorSN needs H and W divisible by 8, got {tuple(x.shape[-2:])}")
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)
