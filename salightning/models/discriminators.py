"""The ESRGAN discriminator (VGG style; Fig. 5 of the SA-loss paper).

Like every discriminator of :mod:`salightning.models` it returns logits (B, 1): the sigmoid of
the paper's figure is applied by the loss (``salightning.losses.AdversarialLoss``, BCE with
logits), which is numerically safer and lets the relativistic loss use raw scores.
"""

from __future__ import annotations

from torch import Tensor, nn

from salightning.checks import check_positive, check_tensor

__all__ = ["VGGStyleDiscriminator"]


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's VGG-style discriminator.

    Stages of two convs: a 3x3 stride-1 conv and a 4x4 stride-2 conv, each followed by
    BatchNorm (except the very first conv) and LeakyReLU(0.2). Stage ``i`` has
    ``num_features * min(2**i, 8)`` channels. There are ``log2(input_size) - 2`` stages, so the
    last feature map is 4x4: five stages for 128x128 (ESRGAN), six for 256x256 (BasicSR's
    option). Then ``linear1`` (``num_features * 8 * 4 * 4`` -> 100), LeakyReLU(0.2) and
    ``linear2`` (100 -> 1). Submodule names are BasicSR's (``conv0_0``, ``bn0_1``...,
    ``linear1``), so BasicSR ``net_d`` checkpoints load.

    The linear head needs the 4x4 map, hence the fixed input size. With ``adaptive_pool=True``
    an ``AdaptiveAvgPool2d(4)`` is put before the head and any input of at least
    ``2**num_stages`` pixels a side (32 for ``input_size=128``) is accepted; ``input_size`` then
    only sets the depth. At exactly ``input_size`` the pooling is the identity, so the weights
    are interchangeable between the two modes.

    Args:
        in_channels: channels of the input image.
        num_features: width of the first stage (ESRGAN: 64).
        input_size: the training patch size: a power of two >= 32 (ESRGAN: 128).
        adaptive_pool: accept other input sizes (see above).

    Shape:
        - Input: (B, in_channels, input_size, input_size); any (B, in_channels, H, W) with
          H, W >= ``2**num_stages`` when ``adaptive_pool``.
        - Output: (B, 1) logits (no sigmoid).
    """

    def __init__(
        self, in_channels: int = 3, num_features: int = 64, input_size: int = 128, adaptive_pool: bool = False
    ) -> None:
        super().__init__()
        check_positive(in_channels, "in_channels")
        check_positive(num_features, "num_features")
        if not isinstance(input_size, int) or input_size < 32 or input_size & (input_size - 1):
            raise ValueError(f"input_size must be a power of two >= 32, got {input_size!r}")
        self.in_channels = in_channels
        self.num_features = num_features
        self.input_size = input_size
        self.adaptive_pool = adaptive_pool
        self.num_stages = input_size.bit_length() - 3  # log2(input_size) - 2: down to 4x4

        self.conv0_0 = nn.Conv2d(in_channels, num_features, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(num_features, num_features, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(num_features)
        channels = num_features
        for i in range(1, self.num_stages):
            out = num_features * min(2**i, 8)
            setattr(self, f"conv{i}_0", nn.Conv2d(channels, out, 3, 1, 1, bias=False))
            setattr(self, f"bn{i}_0", nn.BatchNorm2d(out))
            setattr(self, f"conv{i}_1", nn.Conv2d(out, out, 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(out))
            channels = out
        self.pool = nn.AdaptiveAvgPool2d(4) if adaptive_pool else nn.Identity()
        self.linear1 = nn.Linear(channels * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, channels=self.in_channels)
        h, w = x.shape[-2:]
        if self.adaptive_pool:
            smallest = 2**self.num_stages
            if h < smallest or w < smallest:
                raise ValueError(
                    f"x must be at least {smallest}x{smallest} for input_size={self.input_size} "
                    f"({self.num_stages} stride-2 stages), got shape {tuple(x.shape)}"
                )
        elif h != self.input_size or w != self.input_size:
            raise ValueError(
                f"x must be {self.input_size}x{self.input_size} (input_size={self.input_size}), got shape "
                f"{tuple(x.shape)}; set input_size to the patch size, or adaptive_pool=True for any size"
            )
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for i in range(1, self.num_stages):
            feat = self.lrelu(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)))
        feat = self.pool(feat).flatten(1)
        return self.linear2(self.lrelu(self.linear1(feat)))
