"""RRDBNet, the ESRGAN generator (Wang et al., ECCV-W 2018; Fig. 4 of the SA-loss paper).

The submodule names are BasicSR's (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so BasicSR / Real-ESRGAN checkpoints
load as they are; :func:`convert_esrgan_state_dict` maps the other released layouts onto them
(``RRDBNet.checkpoint_filter``, which :func:`salightning.checkpoints.load_pretrained` calls, with
``RRDBNet.checkpoint_hints`` explaining mismatches).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salightning.checks import check_positive, check_tensor
from salightning.checkpoints import unwrap_state_dict

__all__ = ["ResidualDenseBlock", "RRDB", "RRDBNet", "convert_esrgan_state_dict", "esrgan_keys"]


class ResidualDenseBlock(nn.Module):
    """Residual dense block: five densely connected 3x3 convs and a scaled residual.

    Conv ``k`` sees the block input and the outputs of convs ``1..k-1`` (each ``growth_channels``
    wide); the last conv maps back to ``num_features`` and its output is added to the input
    after multiplication by ``residual_scale``. Input and output: (B, num_features, H, W).

    The convs are initialised with Kaiming-normal weights scaled by 0.1 and zero biases, as in
    ESRGAN: each block then starts close to the identity, which keeps a deep trunk trainable.
    """

    def __init__(self, num_features: int = 64, growth_channels: int = 32, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.num_features = num_features
        self.growth_channels = growth_channels
        self.residual_scale = residual_scale
        self.conv1 = nn.Conv2d(num_features, growth_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_features + growth_channels, growth_channels, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_features + 2 * growth_channels, growth_channels, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_features + 3 * growth_channels, growth_channels, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_features + 4 * growth_channels, num_features, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + self.residual_scale * x5


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock` and a scaled residual.

    Input and output: (B, num_features, H, W).
    """

    def __init__(self, num_features: int = 64, growth_channels: int = 32, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.num_features = num_features
        self.growth_channels = growth_channels
        self.residual_scale = residual_scale
        self.rdb1 = ResidualDenseBlock(num_features, growth_channels, residual_scale)
        self.rdb2 = ResidualDenseBlock(num_features, growth_channels, residual_scale)
        self.rdb3 = ResidualDenseBlock(num_features, growth_channels, residual_scale)

    def forward(self, x: Tensor) -> Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return x + self.residual_scale * out


class RRDBNet(nn.Module):
    """The ESRGAN generator.

    ``conv_first`` -> ``num_blocks`` RRDB blocks -> ``conv_body``, plus a long skip from
    ``conv_first``; then nearest-neighbour upsampling stages, each followed by a 3x3 conv and
    LeakyReLU(0.2) (``conv_up1``, ``conv_up2``); then ``conv_hr`` + LeakyReLU and ``conv_last``.
    The output is linear (no clamp, no activation).

    Scales:

    * ``scale=4``: two x2 stages (ESRGAN; 16,697,987 parameters with the defaults and RGB).
    * ``scale=2``: one x2 stage; ``scale=3``: one x3 stage (the layout of the original ESRGAN
      code base for these scales; no ``conv_up2``).
    * ``pixel_unshuffle=True`` with ``scale=2`` or ``scale=1``: BasicSR / Real-ESRGAN's variant.
      The input is pixel-unshuffled by ``4 // scale`` (so ``conv_first`` takes ``in_channels *
      (4 // scale)**2`` channels) and the x4 trunk runs on it. It is cheaper (the trunk runs at a
      quarter or a sixteenth of the pixels) and is the layout of Real-ESRGAN's x2 checkpoints;
      the input height and width must be divisible by ``4 // scale``.

    Args:
        in_channels: channels of the LR input.
        out_channels: channels of the SR output.
        num_features: width of the trunk (ESRGAN: 64).
        num_blocks: number of RRDB blocks (ESRGAN: 23).
        growth_channels: growth of the dense connections (ESRGAN: 32).
        scale: SR factor: 2, 3 or 4 (1 or 2 with ``pixel_unshuffle``).
        residual_scale: the factor on both residual levels (ESRGAN: 0.2).
        pixel_unshuffle: use BasicSR's pixel-unshuffle front end (see above).

    Shape:
        - Input: (B, in_channels, h, w)
        - Output: (B, out_channels, h * scale, w * scale)

    Attributes:
        scale: the SR factor. num_frames: 1 (single image). input_upsampled: False.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 23,
        growth_channels: int = 32,
        scale: int = 4,
        residual_scale: float = 0.2,
        pixel_unshuffle: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("num_features", num_features), ("num_blocks", num_blocks),
                            ("growth_channels", growth_channels)):
            check_positive(value, name)
        allowed = (1, 2) if pixel_unshuffle else (2, 3, 4)
        if scale not in allowed:
            raise ValueError(
                f"scale must be one of {allowed} when pixel_unshuffle={pixel_unshuffle}, got {scale!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_features = num_features
        self.num_blocks = num_blocks
        self.growth_channels = growth_channels
        self.scale = scale
        self.residual_scale = residual_scale
        self.num_frames = 1
        self.input_upsampled = False
        self.pixel_unshuffle = pixel_unshuffle
        # pixel-unshuffle by f, then the x4 trunk: overall factor 4 / f = scale
        self.unshuffle_factor = 4 // scale if pixel_unshuffle else 1
        if pixel_unshuffle or scale == 4:
            self.upsample_factors: tuple[int, ...] = (2, 2)
        else:
            self.upsample_factors = (scale,)

        self.conv_first = nn.Conv2d(in_channels * self.unshuffle_factor**2, num_features, 3, 1, 1)
        self.body = nn.Sequential(
            *[RRDB(num_features, growth_channels, residual_scale) for _ in range(num_blocks)]
        )
        self.conv_body = nn.Conv2d(num_features, num_features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_features, num_features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_features, num_features, 3, 1, 1) if len(self.upsample_factors) == 2 else None
        self.conv_hr = nn.Conv2d(num_features, num_features, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_features, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, channels=self.in_channels)
        if self.unshuffle_factor > 1:
            f = self.unshuffle_factor
            if not torch.jit.is_tracing() and (x.shape[-2] % f or x.shape[-1] % f):  # an exported graph keeps no Python checks
                raise ValueError(
                    f"x must have a height and width divisible by {f} (pixel_unshuffle=True, "
                    f"scale={self.scale}), got shape {tuple(x.shape)}"
                )
            x = F.pixel_unshuffle(x, f)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=self.upsample_factors[0], mode="nearest")))
        if self.conv_up2 is not None:
            feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


    def checkpoint_filter(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map an unwrapped state dict of any released layout onto this network's keys (called by
        :func:`salightning.checkpoints.load_pretrained`)."""
        return esrgan_keys(state)

    def checkpoint_hints(self, state: Mapping[str, Tensor]) -> list[str]:
        """Explain a state dict that does not fit in terms of the constructor arguments."""
        return _rrdbnet_hints(self, state)


# Keys of the ESRGAN authors' release (xinntao/ESRGAN, RRDBNet_arch.py) -> BasicSR keys.
_ESRGAN_KEY_RULES = (
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv(\d)\."), r"conv_up\1."),
    (re.compile(r"^HRconv\."), "conv_hr."),
)
# The first ESRGAN release ("old_arch"): one nn.Sequential named ``model``.
_OLD_ARCH_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_ARCH_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_OLD_ARCH_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
def _convert_old_arch(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map the first ESRGAN release's ``model.N`` keys: ``model.0`` is conv_first, ``model.1.sub``
    the trunk (its last entry is conv_body); the later convs are, in order, the upsampling convs,
    conv_hr and conv_last (their indices depend on the scale)."""
    top = sorted({int(m.group(1)) for k in state if (m := _OLD_ARCH_TOP.match(k)) and m.group(1) != "0"})
    names = [f"conv_up{i + 1}" for i in range(len(top) - 2)] + ["conv_hr", "conv_last"]
    top_names = {"0": "conv_first", **{str(i): name for i, name in zip(top, names)}}
    out = {}
    for key, value in state.items():
        if m := _OLD_ARCH_RDB.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif m := _OLD_ARCH_TRUNK.match(key):
            out[f"conv_body.{m.group(2)}"] = value
        elif m := _OLD_ARCH_TOP.match(key):
            out[f"{top_names[m.group(1)]}.{m.group(2)}"] = value
        else:
            out[key] = value
    return out


def convert_esrgan_state_dict(state: Mapping[str, object], prefix: str = "generator.") -> dict[str, Tensor]:
    """Turn any released RRDBNet checkpoint into a state dict for :class:`RRDBNet`.

    Wrappers, in this order of preference:

    * BasicSR: ``{"params_ema": ..., "params": ...}``: ``params_ema`` (the EMA weights, the
      ones BasicSR evaluates and releases) is taken when present, else ``params``.
    * Lightning: ``{"state_dict": {"generator.xxx": ...}, ...}``: the keys starting with
      ``prefix`` (the generator's attribute name in the LightningModule), prefix removed; a
      salightning checkpoint's EMA generator (``generator_ema.module.xxx``) when it has one.
    * a plain state dict. ``module.`` (DataParallel / DDP / ``AveragedModel``) and
      ``_orig_mod.`` (``torch.compile``) prefixes, and ``AveragedModel``'s ``n_averaged``
      counter, are removed in all cases.

    Key layouts:

    * BasicSR / Real-ESRGAN (``body.N.rdbK``, ``conv_body``, ``conv_up1``...): unchanged.
    * ESRGAN authors' release (``RRDB_trunk.N.RDB1.conv1``, ``trunk_conv``, ``upconv1/2``,
      ``HRconv``): renamed.
    * The first ESRGAN release ("old arch", ``model.0``, ``model.1.sub.N.RDB1.conv1.0``...):
      renamed.

    Args:
        state: what ``torch.load`` returned.
        prefix: the generator's key prefix in a Lightning checkpoint.

    Returns:
        A flat ``{name: tensor}`` dict with BasicSR key names (tensors are not copied).

    Raises:
        ValueError: when ``state`` holds no recognisable state dict.
    """
    return esrgan_keys(unwrap_state_dict(state, prefix))


def esrgan_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an unwrapped RRDBNet state dict's keys from the ESRGAN authors' layouts (the new and
    the "old arch" releases) to BasicSR's; BasicSR keys are unchanged (tensors are not copied)."""
    out = dict(state)
    if any(k.startswith("model.1.sub.") for k in out):
        return _convert_old_arch(out)
    renamed = {}
    for key, value in out.items():
        for pattern, replacement in _ESRGAN_KEY_RULES:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


def _rrdbnet_hints(model: RRDBNet, state: Mapping[str, Tensor]) -> list[str]:
    """Explain an RRDBNet checkpoint mismatch in terms of the constructor arguments."""
    hints = []
    stages = sum(f"conv_up{i}.weight" in state for i in (1, 2))
    model_stages = len(model.upsample_factors)
    if stages != model_stages and stages > 0:
        kind = "a x4 model (or a pixel-unshuffle x1/x2 one)" if stages == 2 else "a x2 or x3 model"
        hints.append(
            f"scale mismatch: the file has {stages} upsampling stage(s), {kind}, but the model was "
            f"built with scale={model.scale}, pixel_unshuffle={model.pixel_unshuffle} ({model_stages} stage(s))"
        )
    first = state.get("conv_first.weight")
    if first is not None and first.ndim == 4 and first.shape[1] != model.conv_first.in_channels:
        ratio = first.shape[1] / model.in_channels
        if ratio == 4:
            hints.append("scale mismatch: conv_first takes 4x the input channels in the file: a BasicSR "
                         "pixel-unshuffle x2 model; build RRDBNet(scale=2, pixel_unshuffle=True)")
        elif ratio == 16:
            hints.append("scale mismatch: conv_first takes 16x the input channels in the file: a BasicSR "
                         "pixel-unshuffle x1 model; build RRDBNet(scale=1, pixel_unshuffle=True)")
        elif ratio == 1 / model.unshuffle_factor**2 and model.unshuffle_factor > 1:
            hints.append("scale mismatch: the file has no pixel-unshuffle front end; build "
                         "RRDBNet(pixel_unshuffle=False) with the file's scale")
    if first is not None and first.ndim == 4 and first.shape[0] != model.conv_first.out_channels:
        hints.append(f"num_features mismatch: the file has {first.shape[0]}, the model {model.conv_first.out_channels}")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.", k))}
    if blocks and len(blocks) != len(model.body):
        hints.append(f"num_blocks mismatch: the file has {len(blocks)} RRDB blocks, the model {len(model.body)}")
    return hints
