"""MATLAB-compatible bicubic resizing, as used to make the LR images of SR benchmarks.

MATLAB's ``imresize(A, scale)`` (bicubic, the default) differs from OpenCV, PIL and
``torch.nn.functional.interpolate`` in three ways that move PSNR by tenths of a dB:

- the cubic kernel of Keys with ``a = -0.5`` (``interpolate``'s plain bicubic uses ``-0.75``);
- when shrinking, the kernel is stretched by ``1 / scale`` (antialiasing), so every input
  pixel under the footprint of an output pixel contributes;
- at the borders the image is mirrored with the edge pixel repeated ("symmetric" padding,
  ``... 3 2 1 | 1 2 3 ...``) instead of the kernel being cut off and renormalised.

Each axis is resized by a matrix of weights (one row per output pixel, at most
``ceil(4 / scale) + 2`` non-zero entries per row), so the 2-D resize is two matrix products.
On the CPU the products run on bands of rows (the matrix is sparse: a dense product would do
tens of times the work of a ×4 shrink); on other devices one dense product per axis is faster.
Nothing is cached between calls: building the matrices costs far less than applying them.
The CPU path runs many small products; on an oversubscribed CPU (more OpenMP threads than free
cores) spinning threads can slow it a hundredfold: use one thread per process there (DataLoader
workers do) or ``OMP_WAIT_POLICY=PASSIVE``.

Values are not clamped or rounded: MATLAB does that only for integer (``uint8``) images.
Use :func:`~salightning.ops.quantize_8bit` on the result to imitate an 8-bit LR file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from salightning.checks import check_positive, check_tensor

__all__ = ["cubic_kernel", "resize_matrix", "imresize", "Imresize", "output_size"]

# On the CPU, rows of the weight matrix are multiplied in blocks so that the band of input
# lines a block touches stays close to the kernel footprint while each product stays large
# enough to run efficiently. Block height
# grows with the output/input ratio (an enlarging block touches few input lines); these
# bounds were measured on a DIV2K-sized image (bench/bench_data.py).
_MIN_BLOCK_ROWS = 8
_MAX_BLOCK_ROWS = 64


def cubic_kernel(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), zero for ``|t| > 2``.

    Args:
        t: distances in input pixels, any shape.

    Returns:
        Kernel values, same shape and dtype as ``t``.
    """
    a = t.abs()
    a2 = a * a
    a3 = a2 * a
    inner = (1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1)
    outer = (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2))
    return inner + outer


def _contributions(in_len: int, out_len: int, scale: float, antialiasing: bool) -> tuple[Tensor, Tensor]:
    """Weights and 0-based input indices of MATLAB's ``contributions``: both (out_len, P), float64/long.

    Output pixel ``i`` (1-based) sits at input coordinate ``u = i / scale + (1 - 1 / scale) / 2``;
    it takes the ``P = ceil(width) + 2`` input pixels from ``floor(u - width / 2)``, weighted by the
    (possibly stretched) kernel and normalised to sum to one; indices outside ``[1, in_len]`` are
    mirrored with the edge repeated.
    """
    stretch = antialiasing and scale < 1
    width = 4.0 / scale if stretch else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)
    dist = u[:, None] - idx
    weights = scale * cubic_kernel(scale * dist) if stretch else cubic_kernel(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric padding: indices 0, -1, -2 (1-based) map to 1, 2, 3; in_len + 1 maps to in_len.
    period = 2 * in_len
    idx0 = (idx.long() - 1) % period
    idx0 = torch.where(idx0 >= in_len, period - 1 - idx0, idx0)
    return weights, idx0


def _weights_and_spans(
    in_len: int, out_len: int, scale: float, antialiasing: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The (out_len, in_len) float64 weight matrix and, per row, its first and last non-zero column."""
    weights, idx = _contributions(in_len, out_len, scale, antialiasing)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    # Mirrored taps can land on the same input pixel: accumulate, do not overwrite.
    matrix.scatter_add_(1, idx, weights)
    used = weights != 0
    first = torch.where(used, idx, in_len).amin(dim=1)
    last = torch.where(used, idx, -1).amax(dim=1)
    return matrix, first, last


def resize_matrix(in_len: int, out_len: int, scale: float | None = None, antialiasing: bool = True) -> Tensor:
    """The (out_len, in_len) float64 matrix that resizes one axis like MATLAB's bicubic ``imresize``.

    Args:
        in_len: input length along the axis.
        out_len: output length.
        scale: the scale MATLAB uses to place the output pixels; by default ``out_len / in_len``.
            (``imresize(A, 0.25)`` on 1357 rows makes 340 rows but places them with 0.25.)
        antialiasing: stretch the kernel when shrinking (MATLAB's default).

    Returns:
        Tensor (out_len, in_len), float64, rows summing to 1: resizing a vector ``v`` of length
        ``in_len`` is ``matrix @ v``.
    """
    if scale is None:
        scale = out_len / in_len
    return _weights_and_spans(in_len, out_len, float(scale), antialiasing)[0]


def output_size(in_size: int, scale: float) -> int:
    """MATLAB's output length ``ceil(scale * in_size)``, tolerant to float error (1/3 * 300 = 100)."""
    return max(1, math.ceil(scale * in_size - 1e-9))


def _resize_axis(x: Tensor, in_len: int, out_len: int, scale: float, antialiasing: bool, dim: int) -> Tensor:
    """Resize ``x`` along ``dim`` (-2: rows, -1: columns) with MATLAB's weights."""
    matrix, first, last = _weights_and_spans(in_len, out_len, scale, antialiasing)
    matrix = matrix.to(device=x.device, dtype=x.dtype)
    block = min(_MAX_BLOCK_ROWS, max(_MIN_BLOCK_ROWS, round(16 * out_len / in_len)))
    if dim == -1:
        # The column pass runs on the already-shrunk image: bigger blocks pay off there.
        block *= 2
    if x.device.type != "cpu" or out_len <= block:
        return torch.matmul(matrix, x) if dim == -2 else torch.matmul(x, matrix.t())
    parts = []
    for r0 in range(0, out_len, block):
        r1 = min(r0 + block, out_len)
        c0, c1 = int(first[r0:r1].min()), int(last[r0:r1].max()) + 1
        band = matrix[r0:r1, c0:c1]
        if dim == -2:
            parts.append(torch.matmul(band, x[..., c0:c1, :]))
        else:
            parts.append(torch.matmul(x[..., c0:c1], band.t()))
    return torch.cat(parts, dim=dim)


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, Sequence) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise ValueError(f"{name} must be a number or a pair of numbers, got {value!r}")


def imresize(
    x: Tensor,
    scale: float | Sequence[float] | None = None,
    *,
    size: Sequence[int] | None = None,
    antialiasing: bool = True,
) -> Tensor:
    """Resize like MATLAB's ``imresize(x, scale)`` with its default bicubic method.

    Args:
        x: (..., C, H, W) floating-point tensor, any number of leading dimensions, on any
            device (float16/bfloat16 are computed in float32).
        scale: MATLAB's scale: 0.25 shrinks ×4, 4 enlarges ×4; a pair gives (height, width)
            scales. The output size is ``ceil(scale * input size)``.
        size: instead of ``scale``, the output (height, width); each axis then uses the scale
            ``out / in`` (MATLAB's ``imresize(A, [rows cols])``).
        antialiasing: stretch the kernel when shrinking (MATLAB's default ``true``).

    Returns:
        (..., C, H_out, W_out) tensor of x's dtype, neither clamped nor rounded.

    Raises:
        ValueError: if ``x`` is not a floating-point tensor of at least 2 dimensions, or if
            neither or both of ``scale`` and ``size`` are given, or they are not positive.

    Shape:
        - Input: :math:`(*, C, H, W)`
        - Output: :math:`(*, C, H_{out}, W_{out})`, ``ceil(scale * H)`` by ``ceil(scale * W)`` or ``size``.

    Example:
        >>> x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
        >>> imresize(x, 0.25).shape
        torch.Size([1, 1, 2, 2])
        >>> flat = imresize(torch.full((3, 6, 9), 0.5), size=(4, 4))  # rows of weights sum to one
        >>> flat.shape, torch.allclose(flat, torch.tensor(0.5))
        (torch.Size([3, 4, 4]), True)
    """
    check_tensor(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., C, H, W), got shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError(f"give exactly one of scale and size, got scale={scale!r}, size={size!r}")
    in_h, in_w = x.shape[-2:]
    if in_h == 0 or in_w == 0:
        raise ValueError(f"x must have a non-empty image, got shape {tuple(x.shape)}")
    if size is not None:
        out_h, out_w = (int(s) for s in _pair(size, "size"))
        check_positive(out_h, "size[0]")
        check_positive(out_w, "size[1]")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        scale_h, scale_w = _pair(scale, "scale")
        check_positive(scale_h, "scale")
        check_positive(scale_w, "scale")
        out_h, out_w = output_size(in_h, scale_h), output_size(in_w, scale_w)

    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    y = x.to(work_dtype)
    # MATLAB resizes the axis with the smaller scale first (height first on a tie).
    if scale_w < scale_h:
        y = _resize_axis(y, in_w, out_w, scale_w, antialiasing, -1)
        y = _resize_axis(y, in_h, out_h, scale_h, antialiasing, -2)
    else:
        y = _resize_axis(y, in_h, out_h, scale_h, antialiasing, -2)
        y = _resize_axis(y, in_w, out_w, scale_w, antialiasing, -1)
    return y.to(x.dtype)


class Imresize(nn.Module):
    """Module form of :func:`imresize`.

    Args:
        scale: MATLAB's scale (0.25 shrinks ×4), a number or a (height, width) pair.
        size: instead of ``scale``, the output (height, width).
        antialiasing: stretch the kernel when shrinking.

    Shape:
        - Input: :math:`(*, C, H, W)`, floating point.
        - Output: :math:`(*, C, H_{out}, W_{out})`, same dtype.

    Example:
        >>> Imresize(4)(torch.rand(2, 3, 5, 6)).shape
        torch.Size([2, 3, 20, 24])
    """

    def __init__(
        self,
        scale: float | Sequence[float] | None = None,
        size: Sequence[int] | None = None,
        antialiasing: bool = True,
    ) -> None:
        super().__init__()
        if (scale is None) == (size is None):
            raise ValueError(f"give exactly one of scale and size, got scale={scale!r}, size={size!r}")
        self.scale = scale
        self.size = size
        self.antialiasing = antialiasing

    def forward(self, x: Tensor) -> Tensor:
        return imresize(x, self.scale, size=self.size, antialiasing=self.antialiasing)

    def extra_repr(self) -> str:
        what = f"scale={self.scale}" if self.size is None else f"size={tuple(self.size)}"
        return f"{what}, antialiasing={self.antialiasing}"
