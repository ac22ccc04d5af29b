"""VSRResNet and the VSRResFeatGAN discriminator (Lucas et al., IEEE TIP 2019; Fig. 6 and 7 of
the SA-loss paper)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from salightning.checks import check_positive, check_tensor

__all__ = ["VSRResNet", "VSRResFeatGANDiscriminator"]


class _ResidualBlockReLU(nn.Module):
    """VSRResNet's residual block: two 3x3 convs, each followed by a ReLU, plus the input
    (Fig. 6 caption of the SA-loss paper: the ReLU comes before the addition, unlike EDSR).
    Input and output: (B, num_features, H, W)."""

    def __init__(self, num_features: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_features, num_features, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.conv2(self.relu(self.conv1(x))))
        return x + out


class VSRResNet(nn.Module):
    """The VSRResFeatGAN generator: video SR from bicubic-upsampled frames, no motion compensation.

    The ``num_frames`` input frames (t-2 .. t+2 for 5) each go through their own 3x3 conv
    (``conv_frames[i]``, separate weights per frame) and ReLU; the results are concatenated along
    the channels and fused by two 3x3 convs with ReLU (``fusion``); then ``num_blocks`` residual
    blocks (conv-ReLU-conv-ReLU + skip; ``body``) and a final 3x3 conv (``conv_last``) give the
    SR frame at time t: 1 + 2 + 2 * 15 + 1 = 34 convolutions deep, the depth reported for VSRResNet.

    Where the papers are silent (choices of this implementation): 3x3 kernels everywhere;
    ``frame_features=32`` channels per frame conv (160 after concatenation for 5 frames);
    ``num_features=64`` in the fusion convs and residual blocks; a ReLU after each per-frame and
    fusion conv; biases on all convs; PyTorch's default initialisation. There is no global
    residual (the centre frame is not added to the output): neither the SA-loss paper's Fig. 6
    nor the descriptions of VSRResNet we could find mention one, so the network predicts the
    frame itself, not a correction of its bicubic version.

    The network does not change the spatial size; ``scale`` only records the SR factor the
    input frames were upsampled by (the data's factor), for code that needs it.

    Args:
        in_channels: channels of each frame (and of the output).
        num_frames: frames in the input window (the paper: 5).
        frame_features: channels of each per-frame conv.
        num_features: width of the fusion convs and residual blocks.
        num_blocks: residual blocks (the paper: 15).
        scale: the SR factor of the data (2, 3, 4 in the poster).

    Shape:
        - Input: (B, num_frames, in_channels, H, W): bicubic-upsampled frames at HR size,
          centre frame at index ``num_frames // 2``.
        - Output: (B, in_channels, H, W): the SR centre frame.

    Attributes:
        scale: the SR factor. num_frames: frames per input window. input_upsampled: True.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_frames: int = 5,
        frame_features: int = 32,
        num_features: int = 64,
        num_blocks: int = 15,
        scale: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_frames", num_frames),
                            ("frame_features", frame_features), ("num_features", num_features),
                            ("num_blocks", num_blocks), ("scale", scale)):
            check_positive(value, name)
        self.in_channels = in_channels
        self.num_frames = num_frames
        self.frame_features = frame_features
        self.num_features = num_features
        self.num_blocks = num_blocks
        self.scale = scale
        self.input_upsampled = True

        self.conv_frames = nn.ModuleList(
            [nn.Conv2d(in_channels, frame_features, 3, 1, 1) for _ in range(num_frames)]
        )
        self.fusion = nn.Sequential(
            nn.Conv2d(num_frames * frame_features, num_features, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_features, num_features, 3, 1, 1),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(*[_ResidualBlockReLU(num_features) for _ in range(num_blocks)])
        self.conv_last = nn.Conv2d(num_features, in_channels, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=5, channels=self.in_channels)
        if not torch.jit.is_tracing() and x.shape[1] != self.num_frames:  # an exported graph keeps no Python checks
            raise ValueError(
                f"x must have num_frames={self.num_frames} frames in dimension 1 of (B, T, C, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        feats = [self.relu(conv(x[:, i])) for i, conv in enumerate(self.conv_frames)]
        feat = self.fusion(torch.cat(feats, dim=1))
        return self.conv_last(self.body(feat))


class VSRResFeatGANDiscriminator(nn.Module):
    """The VSRResFeatGAN discriminator: groups of conv / BatchNorm / LeakyReLU, then one fully
    connected layer (Fig. 7 of the SA-loss paper).

    Where the papers are silent (choices of this implementation): ``num_groups=3`` groups (the
    count given in surveys of the paper), each a 4x4 stride-2 conv (halving the size exactly)
    without bias, BatchNorm and LeakyReLU(0.2), with ``num_features * 2**i`` channels (64, 128,
    256); an ``AdaptiveAvgPool2d(pool_size)`` before the fully connected layer, so any patch
    size works (with 32x32 patches and ``pool_size=4`` the pooling is the identity). The
    sigmoid of Fig. 7 is applied by the loss (BCE with logits), not here.

    Args:
        in_channels: channels of the input frame.
        num_features: channels of the first group.
        num_groups: conv / BN / LeakyReLU groups.
        pool_size: side of the pooled map fed to the fully connected layer.

    Shape:
        - Input: (B, in_channels, H, W) with H, W >= ``2**num_groups``.
        - Output: (B, 1) logits.
    """

    def __init__(self, in_channels: int = 3, num_features: int = 64, num_groups: int = 3, pool_size: int = 4) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_features", num_features),
                            ("num_groups", num_groups), ("pool_size", pool_size)):
            check_positive(value, name)
        self.in_channels = in_channels
        self.num_features = num_features
        self.num_groups = num_groups
        self.pool_size = pool_size
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(num_groups):
            out = num_features * 2**i
            layers += [nn.Conv2d(channels, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Linear(channels * pool_size * pool_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, channels=self.in_channels)
        smallest = 2**self.num_groups
        if x.shape[-2] < smallest or x.shape[-1] < smallest:
            raise ValueError(
                f"x must be at least {smallest}x{smallest} (num_groups={self.num_groups} stride-2 "
                f"convs), got shape {tuple(x.shape)}"
            )
        return self.classifier(self.pool(self.features(x)).flatten(1))
