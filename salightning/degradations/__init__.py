"""Real-ESRGAN-style degradations of HR patches into blind-SR training LR, batched on the device.

- :class:`RealESRGANDegradation`: the second-order pipeline (blur, resize, noise, JPEG, twice,
  final sinc, 8-bit LR) with Real-ESRGAN's x4plus options, returning a :class:`DegradedPair`.
- Kernels, ``(B,)`` parameters to ``(B, size, size)``: :func:`gaussian_kernels`,
  :func:`generalized_gaussian_kernels`, :func:`plateau_kernels`, :func:`sinc_kernels`;
  :func:`filter2d` applies one per image.
- :func:`usm_sharpen` / :class:`USMSharpen`: separable unsharp masking of the HR target.
- :func:`jpeg` / :class:`JPEGCompression`: batched libjpeg-equivalent JPEG, quality per image.
- :func:`add_gaussian_noise`, :func:`add_poisson_noise`: noise with per-image strength.
"""

from salightning.degradations.jpeg import JPEGCompression, jpeg, quality_tables
from salightning.degradations.kernels import (
    filter2d,
    gaussian_kernels,
    generalized_gaussian_kernels,
    plateau_kernels,
    sinc_kernels,
)
from salightning.degradations.noise import add_gaussian_noise, add_poisson_noise
from salightning.degradations.pipeline import KERNEL_TYPES, RESIZE_MODES, DegradedPair, RealESRGANDegradation
from salightning.degradations.usm import USMSharpen, gaussian_kernel1d, usm_sharpen

__all__ = [
    "RealESRGANDegradation",
    "DegradedPair",
    "KERNEL_TYPES",
    "RESIZE_MODES",
    "gaussian_kernels",
    "generalized_gaussian_kernels",
    "plateau_kernels",
    "sinc_kernels",
    "filter2d",
    "usm_sharpen",
    "USMSharpen",
    "gaussian_kernel1d",
    "jpeg",
    "JPEGCompression",
    "quality_tables",
    "add_gaussian_noise",
    "add_poisson_noise",
]
