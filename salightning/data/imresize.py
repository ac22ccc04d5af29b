"""Moved to :mod:`salightning.ops.imresize`: this name is kept so that existing imports
(``from salightning.data.imresize import imresize``) keep working."""

from salightning.ops.imresize import Imresize, cubic_kernel, imresize, output_size, resize_matrix

__all__ = ["imresize", "Imresize", "resize_matrix", "cubic_kernel", "output_size"]
