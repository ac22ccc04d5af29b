"""SRResNet and the SRGAN discriminator (Ledig et al., CVPR 2017; the SRGAN slides)."""

from __future__ import annotations

from torch import Tensor, nn

from salightning.checks import check_positive, check_tensor

__all__ = ["SRResNet", "SRGANDiscriminator"]


class _ResidualBlockBN(nn.Module):
    """SRGAN's residual block: conv3x3-BN-PReLU-conv3x3-BN plus the input.
    Input and output: (B, num_features, H, W)."""

    def __init__(self, num_features: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_features)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(num_features, num_features, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_features)

    def forward(self, x: Tensor) -> Tensor:
        out = self.prelu(self.bn1(self.conv1(x)))
        return x + self.bn2(self.conv2(out))


class SRResNet(nn.Module):
    """SRGAN's generator.

    9x9 conv + PReLU (``conv_first``); ``num_blocks`` residual blocks (conv-BN-PReLU-conv-BN +
    skip; ``body``); conv3x3-BN (``conv_body``) plus a long skip from ``conv_first``; upsampling
    blocks conv3x3 (``num_features`` -> ``num_features * r**2``) - PixelShuffle(r) - PReLU
    (``upsampler``), with r = 2 repeated for scales 2, 4, 8 and a single r = 3 for scale 3;
    a 9x9 conv to ``out_channels`` (``conv_last``).

    Where the paper is silent: convs followed by BatchNorm have no bias (it would be cancelled);
    PReLUs have one slope per layer (``nn.PReLU()``); the output is linear (the paper maps
    images to [-1, 1]; here images are in [0, 1] and no output activation is imposed).
    Initialisation is PyTorch's default.

    Args:
        in_channels: channels of the LR input.
        out_channels: channels of the SR output.
        num_features: width (SRGAN: 64).
        num_blocks: residual blocks (SRGAN: 16).
        scale: SR factor: 2, 3, 4 or 8.

    Shape:
        - Input: (B, in_channels, h, w)
        - Output: (B, out_channels, h * scale, w * scale)

    Attributes:
        scale: the SR factor. num_frames: 1 (single image). input_upsampled: False.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, num_features: int = 64, num_blocks: int = 16, scale: int = 4
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("num_features", num_features), ("num_blocks", num_blocks)):
            check_positive(value, name)
        if scale not in (2, 3, 4, 8):
            raise ValueError(f"scale must be 2, 3, 4 or 8, got {scale!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_features = num_features
        self.num_blocks = num_blocks
        self.scale = scale
        self.num_frames = 1
        self.input_upsampled = False

        self.conv_first = nn.Sequential(nn.Conv2d(in_channels, num_features, 9, 1, 4), nn.PReLU())
        self.body = nn.Sequential(*[_ResidualBlockBN(num_features) for _ in range(num_blocks)])
        self.conv_body = nn.Sequential(
            nn.Conv2d(num_features, num_features, 3, 1, 1, bias=False), nn.BatchNorm2d(num_features)
        )
        factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        upsampler: list[nn.Module] = []
        for r in factors:
            upsampler += [nn.Conv2d(num_features, num_features * r * r, 3, 1, 1), nn.PixelShuffle(r), nn.PReLU()]
        self.upsampler = nn.Sequential(*upsampler)
        self.conv_last = nn.Conv2d(num_features, out_channels, 9, 1, 4)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, channels=self.in_channels)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        return self.conv_last(self.upsampler(feat))


class SRGANDiscriminator(nn.Module):
    """SRGAN's discriminator.

    Eight 3x3 convs with 64, 64, 128, 128, 256, 256, 512, 512 channels (for ``num_features=64``),
    strides alternating 1, 2; BatchNorm after all but the first; LeakyReLU(0.2) after each;
    then a dense layer of 1024 units, LeakyReLU(0.2) and a dense layer to one logit. The
    sigmoid of the paper is applied by the loss (BCE with logits), not here.

    Size flexibility (not in the paper): the last feature map goes through
    ``AdaptiveAvgPool2d(pool_size)`` before the dense layers. With the paper's 96x96 patches the
    map is 6x6 already, so with ``pool_size=6`` the pooling is the identity and the network is
    the paper's, parameter for parameter; other patch sizes work unchanged.

    Args:
        in_channels: channels of the input image.
        num_features: width of the first convs (SRGAN: 64).
        pool_size: side of the pooled map fed to the dense layer (6 = 96 / 16).

    Shape:
        - Input: (B, in_channels, H, W), any H, W.
        - Output: (B, 1) logits.
    """

    def __init__(self, in_channels: int = 3, num_features: int = 64, pool_size: int = 6) -> None:
        super().__init__()
        check_positive(in_channels, "in_channels")
        check_positive(num_features, "num_features")
        check_positive(pool_size, "pool_size")
        self.in_channels = in_channels
        self.num_features = num_features
        self.pool_size = pool_size
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, num_features, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)
        ]
        channels = num_features
        for i in range(1, 8):
            out = num_features * 2 ** (i // 2)
            stride = 2 if i % 2 else 1
            layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool_size * pool_size, 1024), nn.LeakyReLU(0.2, inplace=True), nn.Linear(1024, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, channels=self.in_channels)
        return self.classifier(self.pool(self.features(x)).flatten(1))
