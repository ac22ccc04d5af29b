"""Image operations shared by data, metrics and inference, with no state and no IO.

- :func:`imresize` / :class:`Imresize`: MATLAB-compatible bicubic resize (how benchmark LR
  images are made).
- :func:`quantize_8bit` / :class:`Quantize8bit` and :func:`to_uint8`: the one rounding of
  [0, 1] images to 8-bit levels.
"""

from salightning.ops.imresize import Imresize, imresize, resize_matrix
from salightning.ops.quantize import Quantize8bit, quantize_8bit, to_uint8

__all__ = ["imresize", "Imresize", "resize_matrix", "quantize_8bit", "Quantize8bit", "to_uint8"]
