r"""Real-ESRGAN's second-order degradation as one batched module on the input's device.

:class:`RealESRGANDegradation` turns a batch of HR patches into the LR images a blind SR
generator trains on (Wang et al., "Real-ESRGAN", ICCVW 2021, section 3): it sharpens the HR
(USM), then applies twice blur -> random resize -> Gaussian or Poisson noise -> JPEG, the second
time ending with a resize to the LR size and a 2-D sinc filter before or after the JPEG, and
rounds the LR to 8 bits. Options are named and defaulted as Real-ESRGAN's
``train_realesrgan_x4plus.yml`` (``*2`` options are the second degradation's).

What is drawn per image and what per batch:

- per image: blur kernel type, size (7 to ``blur_kernel_size``, odd) and parameters, sinc or not;
  whether the second blur happens; each resize's interpolation (area, bilinear, bicubic); noise
  type, strength and grey/colour; JPEG quality; whether the final sinc filter happens, its size
  and cut-off; the order of the final [resize + sinc] and JPEG.
- per batch (they set the batch's tensor shape): whether each of the two random resizes goes up,
  down or keeps the size, and its scale factor.

Randomness: every draw comes from one CPU ``torch.Generator`` (the module's, seeded by ``seed``,
or one passed to ``forward``); the noise fields are drawn on the input's device by a generator
seeded from it at each call, so the output is a function of that generator's state, and the
module's generator state is saved in its ``state_dict`` (extra state) for bit-identical resume.
Small parameters are drawn, and the (B, 21, 21) kernels built, on the CPU (no device sync);
all image work runs on the input's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salightning.checks import check_at_least, check_tensor
from salightning.degradations.jpeg import jpeg
from salightning.degradations.kernels import (
    filter2d,
    gaussian_kernels,
    generalized_gaussian_kernels,
    plateau_kernels,
    sinc_kernels,
)
from salightning.degradations.noise import add_gaussian_noise, add_poisson_noise
from salightning.degradations.usm import usm_sharpen
from salightning.ops import quantize_8bit

__all__ = ["RealESRGANDegradation", "DegradedPair", "KERNEL_TYPES", "RESIZE_MODES"]

#: blur kernel families of ``kernel_list`` (iso: sigma_y = sigma_x, no rotation)
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
#: interpolations of the random resizes, each drawn with probability 1/3
RESIZE_MODES = ("area", "bilinear", "bicubic")
_MIN_KERNEL_SIZE = 7
_USM_RADIUS = 50


class DegradedPair(NamedTuple):
    """What :class:`RealESRGANDegradation` returns.

    Attributes:
        lr: (B, 3, H / scale, W / scale) degraded LR on the 8-bit levels ``k / 255``.
        hr_usm: (B, 3, H, W) the USM-sharpened HR the LR was made from (the HR itself with
            ``sharpen=False``): the target of the pixel and perceptual losses.
    """

    lr: Tensor
    hr_usm: Tensor


def _check_probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_distribution(values: Sequence[float], name: str, length: int | None = None) -> tuple[float, ...]:
    probs = tuple(_check_probability(v, f"{name}[{i}]") for i, v in enumerate(values))
    if length is not None and len(probs) != length:
        raise ValueError(f"{name} must have {length} probabilities, got {len(probs)}: {list(values)}")
    if abs(sum(probs) - 1) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got {list(values)} (sum {sum(probs):g})")
    return probs


def _check_range(
    values: Sequence[float], name: str, low: float | None = None, high: float | None = None, contains: float | None = None
) -> tuple[float, float]:
    pair = tuple(values)
    if len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair):
        raise ValueError(f"{name} must be two finite numbers [low, high], got {values!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if lo > hi:
        raise ValueError(f"{name} is inverted: low {lo:g} > high {hi:g}; give [low, high]")
    if (low is not None and lo < low) or (high is not None and hi > high):
        raise ValueError(f"{name} must lie within [{low}, {high}], got [{lo:g}, {hi:g}]")
    if contains is not None and not lo <= contains <= hi:
        raise ValueError(f"{name} must contain {contains:g} (values below and above it are drawn), got [{lo:g}, {hi:g}]")
    return lo, hi


def _check_kernel_size(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_KERNEL_SIZE or value % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= {_MIN_KERNEL_SIZE} (kernel sides are drawn from 7 to it), got {value!r}")
    return value


@dataclass(frozen=True)
class _BlurOptions:
    """One degradation's blur options, checked."""

    kernel_size: int
    types: tuple[int, ...]  # indices into KERNEL_TYPES
    probs: tuple[float, ...]
    sinc_prob: float
    sigma: tuple[float, float]
    betag: tuple[float, float]
    betap: tuple[float, float]

    @classmethod
    def checked(cls, suffix: str, kernel_size: int, kernel_list: Sequence[str], kernel_prob: Sequence[float],
                sinc_prob: float, blur_sigma: Sequence[float], betag_range: Sequence[float],
                betap_range: Sequence[float]) -> _BlurOptions:
        unknown = [k for k in kernel_list if k not in KERNEL_TYPES]
        if unknown or not kernel_list:
            raise ValueError(f"kernel_list{suffix} must name kernels among {list(KERNEL_TYPES)}, got {list(kernel_list)}")
        return cls(
            kernel_size=_check_kernel_size(kernel_size, f"blur_kernel_size{suffix}"),
            types=tuple(KERNEL_TYPES.index(k) for k in kernel_list),
            probs=_check_distribution(kernel_prob, f"kernel_prob{suffix}", len(kernel_list)),
            sinc_prob=_check_probability(sinc_prob, f"sinc_prob{suffix}"),
            sigma=_check_range(blur_sigma, f"blur_sigma{suffix}", low=1e-6),
            betag=_check_range(betag_range, f"betag_range{suffix}", low=1e-6, contains=1.0),
            betap=_check_range(betap_range, f"betap_range{suffix}", low=1e-6, contains=1.0),
        )


def _uniform(bounds: tuple[float, float], n: int, generator: torch.Generator) -> Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _window_mask(sizes: Tensor, side: int) -> Tensor:
    """(n, side, side) float64: 1 inside each image's centred ``sizes[i]`` window."""
    r = torch.arange(side, dtype=torch.float64).sub(side // 2).abs()
    inside = r.view(1, side) <= (sizes.view(-1, 1) // 2)
    return (inside.unsqueeze(2) & inside.unsqueeze(1)).to(torch.float64)


def _restrict(kernels: Tensor, sizes: Tensor) -> Tensor:
    """Kernels computed on the full grid, cut to each image's window and renormalised: equal to the
    kernel computed at that size and zero-padded."""
    masked = kernels * _window_mask(sizes, kernels.shape[-1])
    return masked / masked.sum(dim=(-2, -1), keepdim=True)


def _kernel_sizes(side: int, n: int, generator: torch.Generator) -> Tensor:
    choices = torch.arange(_MIN_KERNEL_SIZE, side + 1, 2)
    return choices[torch.randint(len(choices), (n,), generator=generator)]


def _random_kernels(opts: _BlurOptions, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(n, K, K) float64 blur kernels on the CPU, one random type, size and parameter set per
    image, zero outside each image's window, and the window sizes (n,)."""
    sizes = _kernel_sizes(opts.kernel_size, n, generator)
    kind = torch.tensor(opts.types)[torch.multinomial(torch.tensor(opts.probs), n, replacement=True, generator=generator)]
    is_sinc = torch.rand(n, generator=generator) < opts.sinc_prob
    sigma_x = _uniform(opts.sigma, n, generator)
    sigma_y = _uniform(opts.sigma, n, generator)
    theta = _uniform((-math.pi, math.pi), n, generator)
    isotropic = kind % 2 == 0  # iso, generalized_iso, plateau_iso
    sigma_y = torch.where(isotropic, sigma_x, sigma_y)
    theta = torch.where(isotropic, torch.zeros(()), theta)
    # Real-ESRGAN draws beta below or above 1 with equal chance
    below = torch.rand(n, generator=generator) < 0.5
    betag = torch.where(below, _uniform((opts.betag[0], 1.0), n, generator), _uniform((1.0, opts.betag[1]), n, generator))
    betap = torch.where(below, _uniform((opts.betap[0], 1.0), n, generator), _uniform((1.0, opts.betap[1]), n, generator))
    cutoff = torch.where(sizes < 13, _uniform((math.pi / 3, math.pi), n, generator), _uniform((math.pi / 5, math.pi), n, generator))
    k = opts.kernel_size
    families = torch.stack(
        [
            gaussian_kernels(k, sigma_x, sigma_y, theta),
            generalized_gaussian_kernels(k, sigma_x, sigma_y, theta, betag),
            plateau_kernels(k, sigma_x, sigma_y, theta, betap),
            sinc_kernels(k, cutoff),
        ],
        dim=1,
    )
    family = torch.where(is_sinc, 3, kind // 2)
    chosen = families[torch.arange(n), family]
    return _restrict(chosen, sizes), sizes


def _by_subset(x: Tensor, groups: Tensor, count: int, fn: Any) -> Tensor:
    """Apply ``fn(subset, group, index)`` to the images of each group 0..count-1 and reassemble."""
    outputs: list[tuple[Tensor, Tensor]] = []
    for g in range(count):
        index = (groups == g).nonzero().flatten()
        if len(index) == len(groups):
            return fn(x, g, index)
        if len(index):
            outputs.append((index, fn(x[index.to(x.device)], g, index)))
    out = x.new_empty((len(groups), *outputs[0][1].shape[1:]))
    for index, value in outputs:
        out[index.to(x.device)] = value
    return out


def _blur(x: Tensor, kernels: Tensor, sizes: Tensor) -> Tensor:
    """Filter image i with ``kernels[i]`` unless ``sizes[i]`` is 0 (no filter: those images are
    left out of the convolution). One grouped convolution with the full kernels: one call per
    window size would be smaller work but slower on a CPU (oneDNN builds a primitive per shape)."""

    def run(sub: Tensor, filtered: int, index: Tensor) -> Tensor:
        return filter2d(sub, kernels[index.to(kernels.device)]) if filtered else sub

    return _by_subset(x, (sizes > 0).long(), 2, run)


def _resize(x: Tensor, modes: Tensor, size: tuple[int, int] | None = None, scale: float | None = None) -> Tensor:
    """Resize each image with its interpolation ``RESIZE_MODES[modes[i]]`` to one size (or scale)."""
    return _by_subset(x, modes, len(RESIZE_MODES), lambda sub, m, _: F.interpolate(sub, size=size, scale_factor=scale, mode=RESIZE_MODES[m]))


class RealESRGANDegradation(nn.Module):
    """Real-ESRGAN's degradation of HR patches into LR images, batched on the input's device.

    Args:
        scale: SR factor; the HR patch side must be a multiple of it.
        blur_kernel_size, kernel_list, kernel_prob, sinc_prob, blur_sigma, betag_range,
            betap_range: the first blur (odd side >= 7; kernel families of
            :data:`KERNEL_TYPES` and their probabilities, summing to 1; probability of a sinc
            kernel instead; sigma range; generalized-Gaussian and plateau beta ranges, each
            containing 1).
        blur_kernel_size2, kernel_list2, kernel_prob2, sinc_prob2, blur_sigma2, betag_range2,
            betap_range2: the same for the second blur.
        final_sinc_prob: probability of the final sinc filter (side 7 to ``blur_kernel_size``).
        resize_prob, resize_prob2: probabilities of [up, down, keep] for each random resize.
        resize_range, resize_range2: [low, high] scale factors (containing 1) of each resize.
        gaussian_noise_prob, gaussian_noise_prob2: probability of Gaussian (else Poisson) noise.
        noise_range, noise_range2: Gaussian noise sigma range, in 8-bit levels.
        poisson_scale_range, poisson_scale_range2: Poisson noise scale range.
        gray_noise_prob, gray_noise_prob2: probability of grey (channel-shared) noise.
        jpeg_range, jpeg_range2: JPEG quality ranges, within [1, 100].
        second_blur_prob: probability of the second blur.
        sharpen: USM-sharpen the HR (radius 50, weight 0.5, threshold 10) before degrading it,
            as Real-ESRGAN does; ``forward`` returns the sharpened HR.
        seed: seed of the module's generator.

    Shape:
        - Input: HR (B, 3, H, W) in [0, 1], H and W multiples of ``scale``.
        - Output: :class:`DegradedPair` ``(lr (B, 3, H/scale, W/scale), hr_usm (B, 3, H, W))``.

    Example:
        >>> degrade = RealESRGANDegradation(scale=4, seed=0)
        >>> lr, hr_usm = degrade(torch.rand(2, 3, 128, 128))
        >>> lr.shape, hr_usm.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 3, 128, 128]))
    """

    def __init__(
        self,
        scale: int = 4,
        blur_kernel_size: int = 21,
        kernel_list: Sequence[str] = KERNEL_TYPES,
        kernel_prob: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        sinc_prob: float = 0.1,
        blur_sigma: Sequence[float] = (0.2, 3.0),
        betag_range: Sequence[float] = (0.5, 4.0),
        betap_range: Sequence[float] = (1.0, 2.0),
        blur_kernel_size2: int = 21,
        kernel_list2: Sequence[str] = KERNEL_TYPES,
        kernel_prob2: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        sinc_prob2: float = 0.1,
        blur_sigma2: Sequence[float] = (0.2, 1.5),
        betag_range2: Sequence[float] = (0.5, 4.0),
        betap_range2: Sequence[float] = (1.0, 2.0),
        final_sinc_prob: float = 0.8,
        resize_prob: Sequence[float] = (0.2, 0.7, 0.1),
        resize_range: Sequence[float] = (0.15, 1.5),
        gaussian_noise_prob: float = 0.5,
        noise_range: Sequence[float] = (1.0, 30.0),
        poisson_scale_range: Sequence[float] = (0.05, 3.0),
        gray_noise_prob: float = 0.4,
        jpeg_range: Sequence[float] = (30.0, 95.0),
        second_blur_prob: float = 0.8,
        resize_prob2: Sequence[float] = (0.3, 0.4, 0.3),
        resize_range2: Sequence[float] = (0.3, 1.2),
        gaussian_noise_prob2: float = 0.5,
        noise_range2: Sequence[float] = (1.0, 25.0),
        poisson_scale_range2: Sequence[float] = (0.05, 2.5),
        gray_noise_prob2: float = 0.4,
        jpeg_range2: Sequence[float] = (30.0, 95.0),
        sharpen: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.scale = check_at_least(scale, "scale", 1)
        self.blur1 = _BlurOptions.checked("", blur_kernel_size, kernel_list, kernel_prob, sinc_prob, blur_sigma, betag_range, betap_range)
        self.blur2 = _BlurOptions.checked("2", blur_kernel_size2, kernel_list2, kernel_prob2, sinc_prob2, blur_sigma2, betag_range2, betap_range2)
        self.final_sinc_prob = _check_probability(final_sinc_prob, "final_sinc_prob")
        self.second_blur_prob = _check_probability(second_blur_prob, "second_blur_prob")
        self.resize_prob = (_check_distribution(resize_prob, "resize_prob", 3), _check_distribution(resize_prob2, "resize_prob2", 3))
        self.resize_range = (
            _check_range(resize_range, "resize_range", low=1e-6, contains=1.0),
            _check_range(resize_range2, "resize_range2", low=1e-6, contains=1.0),
        )
        self.gaussian_noise_prob = (_check_probability(gaussian_noise_prob, "gaussian_noise_prob"), _check_probability(gaussian_noise_prob2, "gaussian_noise_prob2"))
        self.noise_range = (_check_range(noise_range, "noise_range", low=0.0), _check_range(noise_range2, "noise_range2", low=0.0))
        self.poisson_scale_range = (
            _check_range(poisson_scale_range, "poisson_scale_range", low=0.0),
            _check_range(poisson_scale_range2, "poisson_scale_range2", low=0.0),
        )
        self.gray_noise_prob = (_check_probability(gray_noise_prob, "gray_noise_prob"), _check_probability(gray_noise_prob2, "gray_noise_prob2"))
        self.jpeg_range = (_check_range(jpeg_range, "jpeg_range", 1.0, 100.0), _check_range(jpeg_range2, "jpeg_range2", 1.0, 100.0))
        if not isinstance(sharpen, bool):
            raise ValueError(f"sharpen must be True or False, got {sharpen!r}")
        self.sharpen = sharpen
        self.generator = torch.Generator().manual_seed(check_at_least(seed, "seed", 0))
        self._noise_generators: dict[torch.device, torch.Generator] = {}

    # the generator's state travels in state_dict, so a checkpoint resumes the same draws
    def get_extra_state(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def min_patch_size(self) -> int:
        """The smallest HR side these options can degrade (reflected borders of every filter)."""
        need = _USM_RADIUS // 2 + 1 if self.sharpen else 1
        need = max(need, self.blur1.kernel_size // 2 + 1)
        # the second blur sees the image after the first resize, the final sinc the LR
        need = max(need, math.ceil((self.blur2.kernel_size // 2 + 1) / self.resize_range[0][0]))
        need = max(need, (self.blur1.kernel_size // 2 + 1) * self.scale)
        # the second resize must leave at least one pixel
        return max(need, math.ceil(self.scale / self.resize_range[1][0]))

    def _noise_generator(self, device: torch.device, generator: torch.Generator) -> torch.Generator:
        noise_generator = self._noise_generators.get(device)
        if noise_generator is None:
            noise_generator = self._noise_generators[device] = torch.Generator(device=device)
        noise_generator.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        return noise_generator

    def _random_resize(self, n: int, stage: int, generator: torch.Generator) -> tuple[float, Tensor]:
        """Per batch: up, down or keep, and the factor; per image (n): the interpolation."""
        lo, hi = self.resize_range[stage]
        direction = int(torch.multinomial(torch.tensor(self.resize_prob[stage]), 1, generator=generator))
        up, down = float(_uniform((1.0, hi), 1, generator)), float(_uniform((lo, 1.0), 1, generator))
        factor = (up, down, 1.0)[direction]
        modes = torch.randint(len(RESIZE_MODES), (n,), generator=generator)
        return factor, modes

    def _random_noise(self, x: Tensor, stage: int, generator: torch.Generator, noise_generator: torch.Generator) -> Tensor:
        n = x.shape[0]
        gaussian = torch.rand(n, generator=generator) < self.gaussian_noise_prob[stage]
        sigma = _uniform(self.noise_range[stage], n, generator)
        poisson_scale = _uniform(self.poisson_scale_range[stage], n, generator)
        gray = torch.rand(n, generator=generator) < self.gray_noise_prob[stage]

        def add(sub: Tensor, group: int, index: Tensor) -> Tensor:
            is_gaussian, is_gray = divmod(group, 2)
            if is_gaussian:
                return add_gaussian_noise(sub, sigma[index].to(sub.device), bool(is_gray), noise_generator)
            return add_poisson_noise(sub, poisson_scale[index].to(sub.device), bool(is_gray), noise_generator)

        # groups: 0 Poisson colour, 1 Poisson grey, 2 Gaussian colour, 3 Gaussian grey
        return _by_subset(x, 2 * gaussian.long() + gray.long(), 4, add)

    def _random_quality(self, n: int, stage: int, generator: torch.Generator) -> Tensor:
        return _uniform(self.jpeg_range[stage], n, generator)

    def forward(self, hr: Tensor, generator: torch.Generator | None = None) -> DegradedPair:
        """Degrade ``hr`` (B, 3, H, W) in [0, 1]; draws from ``generator`` (a CPU generator) or the module's."""
        check_tensor(hr, "hr", ndim=4, channels=3, value_range=(0.0, 1.0))
        b, _, h, w = hr.shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"hr patch {h}x{w} is not divisible by scale={self.scale}; use a patch size that is a multiple of it")
        if min(h, w) < self.min_patch_size():
            raise ValueError(
                f"hr patch {h}x{w} is too small for these options: it needs sides >= {self.min_patch_size()} "
                f"(blur_kernel_size={self.blur1.kernel_size}, blur_kernel_size2={self.blur2.kernel_size}, "
                f"resize_range={list(self.resize_range[0])}, scale={self.scale}); use larger patches or smaller kernels"
            )
        g = self.generator if generator is None else generator
        if g.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (noise is drawn on the device from it), got one on {g.device}")
        device = hr.device
        noise_generator = self._noise_generator(device, g)
        with torch.no_grad():
            hr_usm = usm_sharpen(hr) if self.sharpen else hr
            # kernels are built on the CPU from the CPU draws (no device sync) and copied once
            kernel1, sizes1 = _random_kernels(self.blur1, b, g)
            kernel2, sizes2 = _random_kernels(self.blur2, b, g)
            sizes2 = torch.where(torch.rand(b, generator=g) < self.second_blur_prob, sizes2, 0)
            side = self.blur1.kernel_size
            sinc_sizes = _kernel_sizes(side, b, g)
            sinc_sizes = torch.where(torch.rand(b, generator=g) < self.final_sinc_prob, sinc_sizes, 0)
            sinc = _restrict(sinc_kernels(side, _uniform((math.pi / 3, math.pi), b, g)), sinc_sizes.clamp_min(1))
            kernel1, kernel2, sinc = (k.to(device=device, dtype=hr.dtype) for k in (kernel1, kernel2, sinc))

            # first degradation
            out = _blur(hr_usm, kernel1, sizes1)
            factor, modes = self._random_resize(b, 0, g)
            out = _resize(out, modes, scale=factor)
            out = self._random_noise(out, 0, g, noise_generator)
            out = jpeg(out.clamp(0, 1), self._random_quality(b, 0, g))

            # second degradation
            out = _blur(out, kernel2, sizes2)
            factor, modes = self._random_resize(b, 1, g)
            out = _resize(out, modes, size=(int(h / self.scale * factor), int(w / self.scale * factor)))
            out = self._random_noise(out, 1, g, noise_generator)

            # [resize back + sinc] then JPEG, or JPEG then [resize back + sinc], per image
            quality = self._random_quality(b, 1, g)
            final_modes = torch.randint(len(RESIZE_MODES), (b,), generator=g)
            sinc_first = (torch.rand(b, generator=g) < 0.5).long()
            lr_size = (h // self.scale, w // self.scale)

            def finish(sub: Tensor, order: int, index: Tensor) -> Tensor:
                resize_and_sinc = lambda t: _blur(_resize(t, final_modes[index], size=lr_size), sinc[index.to(device)], sinc_sizes[index])  # noqa: E731
                if order == 1:
                    return jpeg(resize_and_sinc(sub).clamp(0, 1), quality[index])
                return resize_and_sinc(jpeg(sub.clamp(0, 1), quality[index]))

            lr = quantize_8bit(_by_subset(out, sinc_first, 2, finish))
        return DegradedPair(lr, hr_usm)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, sharpen={self.sharpen}"
