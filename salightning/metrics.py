"""Image-quality metrics computed the way SR papers report them (section V of the SA-loss paper).

Conventions (the numbers of Tables I–IV depend on every one of them):

* **8-bit first.** PSNR, SSIM and the edge metrics round both images to 8 bits before
  anything else: ``round(clamp(x, 0, 1) * 255)`` in float64, round half to even
  (:func:`salightning.ops.quantize_8bit`, as ``numpy.round``; MATLAB's ``im2uint8`` rounds
  halves away from zero, which only differs on exact ``.5`` values). This is what evaluating
  saved PNGs gives.
* **Border crop.** ``crop_border`` pixels are removed on each side (papers use the SR scale).
* **Y or RGB.** ``y_channel=True`` evaluates the MATLAB ``rgb2ycbcr`` BT.601 studio-range luma
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (R, G, B in [0, 1], Y on the 0..255 scale),
  computed from the 8-bit RGB values and *not* rounded again (as MATLAB on ``double`` input
  and BasicSR do). This is not Kornia's full-range Y. ``y_channel=False`` uses all channels.
* **One value per image.** Every function returns an ``(N,)`` tensor; a dataset score is the
  mean of the per-image values (``SRMetrics`` aggregates it exactly under DDP),
  not the PSNR of the pooled error.
* **SSIM** (Wang et al. 2004, as in the original MATLAB ``ssim_index`` and BasicSR): 11×11
  Gaussian window with σ = 1.5 on the 0..255 scale, only the *valid* region (no padding),
  ``C1 = (0.01·255)²``, ``C2 = (0.03·255)²``; for RGB the mean of the per-channel SSIM.
* **PSNR** ``= 10·log10(255² / MSE)``; identical images give ``inf``.

LPIPS (Zhang et al. 2018) wraps the ``lpips`` package without letting it download anything
and without its network ever entering a checkpoint.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from salightning.checks import check_non_negative, check_same_shape, check_tensor
from salightning.checkpoints import load_state_dict_file
from salightning.ops import quantize_8bit
from salightning.weights import MissingWeightsError, resolve_weights

__all__ = [
    "rgb_to_y",
    "psnr",
    "ssim",
    "edge_psnr",
    "flat_psnr",
    "ms_ssim",
    "ms_ssim_scales",
    "vif",
    "VIF_MIN_SIZE",
    "LPIPS",
    "LPIPS_BACKBONES",
    "lpips_metric",
    "SRMetrics",
]

#: MATLAB ``rgb2ycbcr`` (ITU-R BT.601, studio range) luma row: RGB in [0, 1] -> Y in 0..255.
_Y_OFFSET = 16.0
_Y_WEIGHTS = (65.481, 128.553, 24.966)

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2
#: MS-SSIM's scale weights (Wang, Simoncelli & Bovik 2003), finest scale first.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: VIF needs this many pixels per side (torchmetrics' 4-scale Gaussian pyramid).
VIF_MIN_SIZE = 41


# ---------------------------------------------------------------------------------- helpers
def rgb_to_y(x: Tensor) -> Tensor:
    """MATLAB ``rgb2ycbcr`` luma (BT.601 studio range) of RGB images, on the [0, 1] scale.

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` with R, G, B in [0, 1], so the result
    lies in [16/255, 235/255]; multiply by 255 for MATLAB's 0..255 ``double`` values. Not rounded.
    Computed in ``x``'s dtype.

    Args:
        x: ``(*, 3, H, W)`` RGB images in [0, 1].

    Returns:
        ``(*, 1, H, W)`` luma.
    """
    check_tensor(x, "x", ndim=(3, 4, 5), channels=3)
    w = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (_Y_OFFSET + (x * w).sum(dim=-3, keepdim=True)) / 255.0


def _to_8bit(x: Tensor) -> Tensor:
    """``x`` in [0, 1] -> float64 integers in 0..255 (clamped, rounded half to even; NaN stays NaN).

    ``k / 255 * 255`` is exactly ``k`` in float64 for every level, so the 8-bit rounding is the
    library's one (:func:`~salightning.ops.quantize_8bit`) without a trip through ``uint8``."""
    return quantize_8bit(x.detach().to(torch.float64)).mul_(255.0)


def _check_pair(sr: Tensor, hr: Tensor, crop_border: int, y_channel: bool, min_size: int) -> None:
    channels = 3 if y_channel else (1, 3)
    check_tensor(sr, "sr", ndim=4, channels=channels, value_range=(0.0, 1.0))
    check_tensor(hr, "hr", ndim=4, channels=channels, value_range=(0.0, 1.0))
    check_same_shape(sr, hr, "sr", "hr")
    if not isinstance(crop_border, int) or isinstance(crop_border, bool):
        raise ValueError(f"crop_border must be an int, got {crop_border!r}")
    check_non_negative(crop_border, "crop_border")
    if not isinstance(y_channel, bool):
        raise ValueError(f"y_channel must be a bool, got {y_channel!r}")
    h, w = sr.shape[-2:]
    if min(h, w) - 2 * crop_border < min_size:
        raise ValueError(
            f"crop_border={crop_border} leaves {h - 2 * crop_border}x{w - 2 * crop_border} pixels of a {h}x{w} "
            f"image; this metric needs at least {min_size}x{min_size}"
        )


def _crop(x: Tensor, crop_border: int) -> Tensor:
    return x[..., crop_border : x.shape[-2] - crop_border, crop_border : x.shape[-1] - crop_border] if crop_border else x


def _prepare(sr: Tensor, hr: Tensor, crop_border: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    """8-bit rounded, cropped, optionally Y: two float64 ``(N, C', H', W')`` on the 0..255 scale."""
    out = []
    for x in (sr, hr):
        q = _crop(_to_8bit(x), crop_border)
        out.append(rgb_to_y(q / 255.0) * 255.0 if y_channel else q)
    return out[0], out[1]


def _psnr_from_mse(mse: Tensor) -> Tensor:
    # 255² / 0 = inf, so identical images give +inf rather than an error.
    return 10.0 * torch.log10(255.0**2 / mse)


# ------------------------------------------------------------------------------ PSNR / SSIM
def psnr(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Peak signal-to-noise ratio per image, as SR papers report it (see the module docstring).

    ``PSNR = 10·log10(255² / MSE)``, MSE over the cropped 8-bit images (all channels, or Y).

    Args:
        sr: ``(N, C, H, W)`` super-resolved images in [0, 1] (values outside are clamped);
            ``C = 3``, or ``C = 1`` (grey) when ``y_channel=False``.
        hr: ``(N, C, H, W)`` ground truth in [0, 1].
        crop_border: pixels removed on each side before measuring (usually the SR scale).
        y_channel: measure on the MATLAB BT.601 Y channel instead of all channels.

    Returns:
        ``(N,)`` float64 PSNR in dB (``inf`` for identical images).
    """
    _check_pair(sr, hr, crop_border, y_channel, min_size=1)
    s, h = _prepare(sr, hr, crop_border, y_channel)
    return _psnr_from_mse((s - h).square().mean(dim=(1, 2, 3)))


def _gaussian_window_1d(dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian (size 11, σ 1.5); SSIM's 2-D window is its outer product."""
    r = torch.arange(_SSIM_WINDOW, dtype=dtype, device=device) - (_SSIM_WINDOW - 1) / 2
    g = torch.exp(-(r**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Depthwise 2-D filtering of ``(N, C, H, W)`` with the separable window ``g ⊗ g``, valid region."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Structural similarity per image, as SR papers report it (see the module docstring).

    ``SSIM = mean over the valid region of ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2))``
    with local statistics from the 11×11 Gaussian window (σ 1.5) on the 0..255 scale; for
    several channels, the mean of the per-channel SSIM.

    Args:
        sr: ``(N, C, H, W)`` super-resolved images in [0, 1]; ``C = 3``, or 1 when ``y_channel=False``.
        hr: ``(N, C, H, W)`` ground truth in [0, 1].
        crop_border: pixels removed on each side; at least 11×11 pixels must remain.
        y_channel: measure on the MATLAB BT.601 Y channel instead of all channels.

    Returns:
        ``(N,)`` float64 SSIM.
    """
    _check_pair(sr, hr, crop_border, y_channel, min_size=_SSIM_WINDOW)
    s, h = _prepare(sr, hr, crop_border, y_channel)
    c = s.shape[1]
    g = _gaussian_window_1d(s.dtype, s.device)
    # One grouped convolution for the five local moments.
    moments = _filter_valid(torch.cat([s, h, s * s, h * h, s * h], dim=1), g)
    mu_s, mu_h, ss, hh, sh = moments.split(c, dim=1)
    var_s = ss - mu_s**2
    var_h = hh - mu_h**2
    cov = sh - mu_s * mu_h
    ssim_map = ((2 * mu_s * mu_h + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
        (mu_s**2 + mu_h**2 + _SSIM_C1) * (var_s + var_h + _SSIM_C2)
    )
    # Channels have the same number of pixels, so the mean of per-channel means is the overall mean.
    return ssim_map.mean(dim=(1, 2, 3))


def ms_ssim_scales(height: int, width: int) -> int:
    """How many of MS-SSIM's 5 scales fit a ``height`` x ``width`` image (at least 1).

    torchmetrics needs ``side // (n - 1)² > 10`` and ``side >= 2ⁿ`` for ``n`` scales: 5 scales
    from 176 pixels, 4 from 99, 3 from 44, 2 from 11."""
    for n in range(len(_MS_SSIM_WEIGHTS), 1, -1):
        if all(side // (n - 1) ** 2 > _SSIM_WINDOW - 1 and side >= 2**n for side in (height, width)):
            return n
    return 1


def ms_ssim(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Multi-scale SSIM per image (torchmetrics' implementation on the images of :func:`psnr`).

    The 8-bit, cropped (optionally Y) images on the 0..255 scale go to
    ``torchmetrics.functional.image.multiscale_structural_similarity_index_measure`` (11×11
    Gaussian window, σ 1.5). Images too small for the standard 5 scales (under 176 pixels a
    side after the crop) use the first :func:`ms_ssim_scales` scales with their weights
    renormalised, so values are comparable between images of one size, not with 5-scale
    MS-SSIM reported elsewhere.

    Args:
        sr: ``(N, C, H, W)`` super-resolved images in [0, 1]; ``C = 3``, or 1 when ``y_channel=False``.
        hr: ``(N, C, H, W)`` ground truth in [0, 1].
        crop_border: pixels removed on each side; at least 11×11 pixels must remain.
        y_channel: measure on the MATLAB BT.601 Y channel instead of all channels.

    Returns:
        ``(N,)`` float64 MS-SSIM in [0, 1] (higher is better).
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    _check_pair(sr, hr, crop_border, y_channel, min_size=_SSIM_WINDOW)
    s, h = _prepare(sr, hr, crop_border, y_channel)
    n = ms_ssim_scales(*s.shape[-2:])
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:n], dtype=torch.float64)
    betas = tuple((weights / weights.sum()).tolist())
    return multiscale_structural_similarity_index_measure(s, h, data_range=255.0, betas=betas, reduction="none")


def vif(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Visual information fidelity (pixel domain, Sheikh & Bovik 2006) per image.

    torchmetrics' ``visual_information_fidelity`` (noise variance σ²ₙ = 2 on the 0..255 scale)
    on the 8-bit, cropped (optionally Y) images of :func:`psnr`; for several channels, the mean
    of the per-channel values.

    Args:
        sr: ``(N, C, H, W)`` super-resolved images in [0, 1]; ``C = 3``, or 1 when ``y_channel=False``.
        hr: ``(N, C, H, W)`` ground truth in [0, 1].
        crop_border: pixels removed on each side; at least 41×41 pixels must remain.
        y_channel: measure on the MATLAB BT.601 Y channel instead of all channels.

    Returns:
        ``(N,)`` float64 VIF (1 for identical images, higher is better).
    """
    from torchmetrics.functional.image import visual_information_fidelity

    _check_pair(sr, hr, crop_border, y_channel, min_size=VIF_MIN_SIZE)
    s, h = _prepare(sr, hr, crop_border, y_channel)
    # one image at a time: torchmetrics < 1.9 has no reduction="none" (its mean over one image's channels is the same)
    return torch.stack([visual_information_fidelity(s[i : i + 1], h[i : i + 1]) for i in range(s.shape[0])])


# --------------------------------------------------------------------------- edge metrics
def _weighted_psnr(sr: Tensor, hr: Tensor, weight: Tensor, crop_border: int, y_channel: bool) -> Tensor:
    s, h = _prepare(sr, hr, crop_border, y_channel)
    w = _crop(weight.detach().to(torch.float64).clamp(0.0, 1.0), crop_border)
    if y_channel and w.shape[1] != 1:
        w = w.mean(dim=1, keepdim=True)
    w = w.expand_as(s)
    mse = (w * (s - h).square()).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))
    return _psnr_from_mse(mse)


def _check_edge_map(edge_map: Tensor, sr: Tensor) -> None:
    check_tensor(edge_map, "edge_map", ndim=4, channels=(1, sr.shape[1]), value_range=(0.0, 1.0), range_tolerance=1e-4)
    if edge_map.shape[0] != sr.shape[0] or edge_map.shape[-2:] != sr.shape[-2:]:
        raise ValueError(
            f"edge_map must have shape (N, 1 or C, H, W) matching sr {tuple(sr.shape)}, got {tuple(edge_map.shape)}"
        )


def edge_psnr(sr: Tensor, hr: Tensor, edge_map: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """PSNR of the error on the edges of the ground truth, per image (beyond the paper).

    With ``W = edge_map`` (an edge map of ``hr`` such as ``W(hr)`` of the SA loss) and the
    8-bit, cropped images of :func:`psnr`::

        MSE_edge = Σ W·(sr − hr)² / Σ W        (sums over channels and pixels of one image)
        edge_PSNR = 10·log10(255² / MSE_edge)

    With ``W = 1`` everywhere it equals :func:`psnr`. A 1-channel ``W`` applies to every
    channel; with ``y_channel=True`` a per-channel ``W`` is averaged over its channels first.
    An image whose ``W`` sums to 0 (no edges) gives ``nan``.

    Args:
        sr: ``(N, C, H, W)`` super-resolved images in [0, 1].
        hr: ``(N, C, H, W)`` ground truth in [0, 1].
        edge_map: ``(N, 1 or C, H, W)`` weights in [0, 1], computed from ``hr`` (uncropped).
        crop_border: pixels removed on each side (from the images and from ``edge_map``).
        y_channel: measure on the MATLAB BT.601 Y channel.

    Returns:
        ``(N,)`` float64 PSNR in dB.
    """
    _check_pair(sr, hr, crop_border, y_channel, min_size=1)
    _check_edge_map(edge_map, sr)
    return _weighted_psnr(sr, hr, edge_map, crop_border, y_channel)


def flat_psnr(sr: Tensor, hr: Tensor, edge_map: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """PSNR of the error away from the edges of the ground truth: :func:`edge_psnr` with ``1 − W``.

    ``MSE_flat = Σ (1 − W)·(sr − hr)² / Σ (1 − W)``, ``flat_PSNR = 10·log10(255² / MSE_flat)``;
    with ``W = 0`` everywhere it equals :func:`psnr`; ``nan`` where ``W = 1`` everywhere.

    Args and shapes: as :func:`edge_psnr`. Returns ``(N,)`` float64 PSNR in dB.
    """
    _check_pair(sr, hr, crop_border, y_channel, min_size=1)
    _check_edge_map(edge_map, sr)
    return _weighted_psnr(sr, hr, 1.0 - edge_map.clamp(0.0, 1.0), crop_border, y_channel)


# ---------------------------------------------------------------------------------- LPIPS
#: torchvision backbone (a key of ``salightning.weights.TORCHVISION_FILES``) of each LPIPS trunk.
LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def _lpips_linear_file(net: str) -> Path:
    """The calibrated linear heads (v0.1) shipped inside the ``lpips`` wheel."""
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"


class LPIPS(nn.Module):
    """LPIPS distance (Zhang et al. 2018, v0.1) between images in [0, 1]; lower is better.

    Wraps ``lpips.LPIPS`` without any download: by default that class calls
    ``torchvision.models.<trunk>(pretrained=True)``, which fetches the ImageNet backbone from
    the internet. Here it is built with ``pnet_rand=True, pretrained=False`` (nothing loaded),
    then the trunk receives the torchvision ImageNet weights found by
    :func:`salightning.weights.resolve_weights` (torchvision's cache or ``backbone_weights``),
    and the linear heads the calibrated v0.1 file shipped inside the ``lpips`` package (or
    ``linear_weights``). Both loads are strict: a file with other keys or shapes is an error.

    The network is kept outside the module's child registry, so it never appears in a parent's
    ``state_dict()`` / ``parameters()`` (no metric weights in training checkpoints, nothing for
    DDP to synchronise). ``.to(device)`` / ``.cuda()`` still move it; dtype conversions
    (``.half()``, Lightning's ``"16-true"``) are ignored: the metric always runs in float32 with
    autocast disabled so that its values do not depend on the training precision. It is frozen
    and always in eval mode; gradients still flow to the inputs.

    Args:
        net: trunk, ``"alex"`` (the usual choice for SR papers), ``"vgg"`` or ``"squeeze"``.
        backbone_weights: a torchvision ImageNet state-dict file for the trunk (``alexnet``,
            ``vgg16`` or ``squeezenet1_1``); ``None`` looks in torchvision's cache.
        linear_weights: a state-dict file with the linear heads (``lin0.model.1.weight`` ...);
            ``None`` uses the file shipped with ``lpips``.

    Raises:
        MissingWeightsError: when the backbone (or linear) weights cannot be found.

    Shape:
        forward(sr, hr): ``(N, 3, H, W)`` and ``(N, 3, H, W)`` in [0, 1] -> ``(N,)`` float32.
    """

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        backbone_weights: str | None = None,
        linear_weights: str | None = None,
    ) -> None:
        super().__init__()
        if net not in LPIPS_BACKBONES:
            raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
        self.net_type = net
        arch = LPIPS_BACKBONES[net]
        # Resolve both files before building anything, so a missing file fails fast.
        backbone_path = resolve_weights(arch, backbone_weights, option="backbone_weights")
        if linear_weights is None:
            linear_path = _lpips_linear_file(net)
            if not linear_path.is_file():
                raise MissingWeightsError(
                    f"the LPIPS linear heads {linear_path} are missing from the installed lpips package; "
                    f"reinstall lpips or name the file with the linear_weights option"
                )
        else:
            linear_path = Path(linear_weights).expanduser()
            if not linear_path.is_file():
                raise MissingWeightsError(f"linear_weights={linear_weights!r}: no such file")

        import lpips

        with warnings.catch_warnings():
            # lpips still passes torchvision's deprecated `pretrained=` flag (False here: no download).
            warnings.filterwarnings("ignore", message=r".*(pretrained|weight enum).*", category=UserWarning)
            model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        _load_lpips_trunk(model.net, load_state_dict_file(backbone_path), backbone_path, arch)
        _load_lpips_heads(model, load_state_dict_file(linear_path), linear_path)
        model.eval().requires_grad_(False)
        # Outside the child registry: invisible to state_dict()/parameters()/train().
        object.__setattr__(self, "_lpips", model)

    @property
    def network(self) -> nn.Module:
        """The wrapped ``lpips.LPIPS`` network (not a registered child)."""
        return self._lpips

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> LPIPS:
        super()._apply(fn, recurse)
        # Follow device moves only; a probe tells where `fn` sends tensors (as torchmetrics does).
        device = fn(torch.zeros((), device=next(self._lpips.parameters()).device)).device
        self._lpips.to(device=device)
        return self

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        """LPIPS distance per image: ``(N, 3, H, W)`` x2 in [0, 1] -> ``(N,)`` float32."""
        check_tensor(sr, "sr", ndim=4, channels=3, value_range=(0.0, 1.0))
        check_tensor(hr, "hr", ndim=4, channels=3, value_range=(0.0, 1.0))
        check_same_shape(sr, hr, "sr", "hr")
        with torch.autocast(device_type=sr.device.type, enabled=False):
            # lpips expects [-1, 1] and GAN outputs overshoot: clamp.
            a = (sr.float() * 2.0 - 1.0).clamp(-1.0, 1.0)
            b = (hr.float() * 2.0 - 1.0).clamp(-1.0, 1.0)
            return self._lpips(a, b).flatten()

    def extra_repr(self) -> str:
        return f"net={self.net_type!r}"


def _load_lpips_trunk(trunk: nn.Module, state: dict[str, Tensor], path: Path, arch: str) -> None:
    """Load torchvision ``features.<i>.*`` weights into lpips' ``slice<k>.<i>.*`` modules."""
    own = trunk.state_dict()
    # lpips keeps torchvision's layer indices inside its slices: slice2.3.weight <- features.3.weight.
    source = {name: "features." + name.split(".", 1)[1] for name in own}
    missing = [src for src in source.values() if src not in state]
    if missing:
        raise ValueError(
            f"backbone weights {str(path)!r} are not a torchvision {arch} state dict "
            f"(missing {missing[:3]}{' ...' if len(missing) > 3 else ''})"
        )
    try:
        trunk.load_state_dict({name: state[src] for name, src in source.items()}, strict=True)
    except RuntimeError as err:
        raise ValueError(f"backbone weights {str(path)!r} do not fit the {arch} trunk: {err}") from err


def _load_lpips_heads(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Load the linear heads ``lin<k>.model.1.weight`` (``lins.<k>`` are aliases of the same modules)."""
    expected = {k for k in model.state_dict() if re.match(r"lin\d+\.", k)}
    if set(state) != expected:
        raise ValueError(
            f"linear_weights {str(path)!r} must hold exactly the keys {sorted(expected)}, got {sorted(state)}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"linear_weights {str(path)!r} do not fit the LPIPS heads: {err}") from err


def lpips_metric(net: Literal["alex", "vgg", "squeeze"] | None, backbone_weights: str | os.PathLike | None) -> tuple[LPIPS | None, str]:
    """The :class:`LPIPS` metric, or None, with a one-line note saying which (and why not).

    Missing weights are not an error: the note names the file that was looked for."""
    if net is None:
        return None, "LPIPS: not computed (disabled)"
    try:
        module = LPIPS(net, backbone_weights=None if backbone_weights is None else str(backbone_weights))
    except MissingWeightsError as err:
        reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        return None, f"LPIPS: not computed (weights missing: {reason})"
    source = "the ImageNet weights from torchvision's cache" if backbone_weights is None else str(backbone_weights)
    return module, f"LPIPS ({net}, v0.1, lower is better) on the whole RGB images, backbone {source}."


# --------------------------------------------------------------------------- aggregation
def _sum_count(values: Tensor, keep_mask: Tensor | None, ignore_nan: bool) -> tuple[Tensor, Tensor]:
    """Sum and count of the kept per-image values (float64, int64)."""
    check_tensor(values, "values", ndim=1)
    keep = torch.ones_like(values, dtype=torch.bool)
    if keep_mask is not None:
        if not isinstance(keep_mask, Tensor) or keep_mask.dtype != torch.bool or keep_mask.shape != values.shape:
            raise ValueError(
                f"keep_mask must be a bool tensor of shape {tuple(values.shape)}, got "
                f"{getattr(keep_mask, 'dtype', type(keep_mask).__name__)} {tuple(getattr(keep_mask, 'shape', ()))}"
            )
        keep = keep & keep_mask.to(values.device)
    if ignore_nan:
        keep = keep & ~torch.isnan(values)
    v = values.detach().to(torch.float64)[keep]
    return v.sum(), keep.sum()


class SRMetrics(Metric):
    """The paper's evaluation in one metric: mean per-image PSNR, SSIM, optionally LPIPS and the
    edge metrics, over a validation/test set.

    Exact under DDP (float64 sums and int64 counts reduced with ``sum``), with the same caveat as
    any sum/count mean: ``DistributedSampler``'s padded repeats must be kept out, by an
    unrepeated sampler or by ``keep_mask``.

    Every metric sees the images as saved 8-bit PNGs would give them: PSNR, SSIM and the edge
    metrics as in :func:`psnr` etc.; LPIPS on the full (uncropped) 8-bit-rounded RGB images.

    Args:
        crop_border: pixels removed on each side for PSNR/SSIM/edge metrics (usually the scale).
        y_channel: PSNR/SSIM/edge metrics on the MATLAB BT.601 Y channel (what most papers report).
        lpips: an :class:`LPIPS` module, or ``None`` to skip LPIPS (e.g. no backbone weights).

    Shape:
        update(sr, hr, edge_map=None, keep_mask=None): ``(N, C, H, W)`` images in [0, 1],
            optional ``(N, 1 or C, H, W)`` edge map of ``hr`` (the edge metrics are skipped
            without it), optional ``(N,)`` bool mask.
        compute(): dict name -> float64 scalar, for the metrics that received at least one value:
            ``psnr``, ``ssim``, ``lpips``, ``edge_psnr``, ``flat_psnr``.
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False
    _NAMES = ("psnr", "ssim", "lpips", "edge_psnr", "flat_psnr")

    def __init__(self, crop_border: int = 0, y_channel: bool = False, lpips: LPIPS | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_non_negative(crop_border, "crop_border")
        self.crop_border = crop_border
        self.y_channel = y_channel
        self.lpips = lpips
        for name in self._NAMES:
            self.add_state(f"{name}_total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{name}_count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def per_image(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None = None) -> dict[str, Tensor]:
        """The ``(N,)`` per-image values of one batch (for per-image tables), without accumulating."""
        kw = {"crop_border": self.crop_border, "y_channel": self.y_channel}
        values = {"psnr": psnr(sr, hr, **kw), "ssim": ssim(sr, hr, **kw)}
        if self.lpips is not None:
            values["lpips"] = self.lpips(_to_8bit(sr).float() / 255.0, _to_8bit(hr).float() / 255.0)
        if edge_map is not None:
            values["edge_psnr"] = edge_psnr(sr, hr, edge_map, **kw)
            values["flat_psnr"] = flat_psnr(sr, hr, edge_map, **kw)
        return values

    def update(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None = None, keep_mask: Tensor | None = None) -> None:
        with torch.no_grad():
            values = self.per_image(sr, hr, edge_map)
        for name, v in values.items():
            total, count = _sum_count(v, keep_mask, ignore_nan=True)
            setattr(self, f"{name}_total", getattr(self, f"{name}_total") + total.to(self.device))
            setattr(self, f"{name}_count", getattr(self, f"{name}_count") + count.to(self.device))

    def compute(self) -> dict[str, Tensor]:
        out = {}
        for name in self._NAMES:
            count = getattr(self, f"{name}_count")
            if count > 0:
                out[name] = getattr(self, f"{name}_total") / count
        return out

