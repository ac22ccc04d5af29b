"""Tiled inference: the cheapest grid of equal overlapping tiles, run in batches.

The input is cut into a grid of equal tiles of at most ``tile * tile`` input pixels whose
neighbours overlap by at least ``overlap`` pixels; among such grids the one with the fewest
tiles (then the fewest processed pixels) is used. Each output pixel is taken from the tile in
which it lies farthest from a cut: neighbouring tiles split their overlap at its middle, so every
kept pixel sees at least ``overlap / 2`` input pixels of context on each side that has a cut.

Tiles are processed ``tile_batch`` at a time and written into the output as they are made; with
:func:`tiled_forward_uint8` the output is a preallocated ``uint8`` array (optionally a
``numpy.memmap``), so no full-size float copy of the output exists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from salightning.models.protocol import generator_spec


@dataclass(frozen=True)
class TileGrid:
    """A grid of equal tiles over an ``height x width`` input.

    Attributes:
        height, width: the input's size in pixels.
        tile_h, tile_w: every tile's size.
        tops, lefts: the tiles' first row / column.
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    tops: tuple[int, ...]
    lefts: tuple[int, ...]

    @property
    def num_tiles(self) -> int:
        return len(self.tops) * len(self.lefts)

    @property
    def pixel_ratio(self) -> float:
        """Pixels processed by the grid / pixels of the input (1.0 = no extra work)."""
        return self.num_tiles * self.tile_h * self.tile_w / (self.height * self.width)

    def __str__(self) -> str:
        return f"{len(self.tops)}x{len(self.lefts)} tiles of {self.tile_h}x{self.tile_w} ({self.pixel_ratio:.3f}x the input's pixels)"


def check_tiling(tile: int, overlap: int, tile_batch: int = 1) -> None:
    """Raise a ``ValueError`` naming the option unless ``0 <= overlap < tile`` (or ``tile == 0``),
    ``overlap`` is even and ``tile_batch >= 1``."""
    if tile < 0:
        raise ValueError(f"--tile must be >= 0 (0 = no tiling); got --tile={tile}")
    if overlap < 0 or overlap % 2:
        raise ValueError(f"--tile_overlap must be even and >= 0 (each side of a cut gets half); got --tile_overlap={overlap}")
    if tile and overlap >= tile:
        raise ValueError(f"--tile must be larger than --tile_overlap; got --tile={tile}, --tile_overlap={overlap}")
    if tile_batch < 1:
        raise ValueError(f"--tile_batch must be >= 1; got --tile_batch={tile_batch}")


def _split(length: int, count: int, overlap: int) -> int:
    # The smallest equal tile size with which `count` tiles overlapping by >= `overlap` cover `length`.
    return math.ceil((length + (count - 1) * overlap) / count)


def _starts(length: int, size: int, count: int) -> tuple[int, ...]:
    if count == 1:
        return (0,)
    return tuple(round(i * (length - size) / (count - 1)) for i in range(count))


def tile_grid(height: int, width: int, tile: int, overlap: int) -> TileGrid:
    """The grid of equal tiles of at most ``tile * tile`` pixels (no side longer than ``2 * tile``)
    that covers the input with neighbours overlapping by at least ``overlap`` and processes the
    fewest pixels (ties: the fewest tiles).

    Args:
        height, width: the input's size in pixels.
        tile: the tiles' pixel budget is ``tile * tile`` (``0``: one tile, no tiling).
        overlap: the least overlap between neighbouring tiles (even, ``< tile``).

    Example:
        >>> print(tile_grid(512, 512, 256, 32))
        2x3 tiles of 272x192 (1.195x the input's pixels)
    """
    check_tiling(tile, overlap)
    if tile == 0 or height * width <= tile * tile:
        return TileGrid(height, width, height, width, (0,), (0,))
    budget, longest = tile * tile, 2 * tile
    best: tuple[int, int, int, int] | None = None  # (processed pixels, tiles, rows, columns)
    for rows in range(1, height + 1):
        tile_h = _split(height, rows, overlap)
        if rows > 1 and tile_h <= overlap:
            break  # cut tiles must be longer than their overlap
        max_w = min(budget // tile_h, longest, width)
        if tile_h > longest or (max_w < width and max_w <= overlap):
            continue
        cols = 1 if max_w >= width else math.ceil((width - overlap) / (max_w - overlap))
        tile_w = _split(width, cols, overlap)
        key = (rows * cols * tile_h * tile_w, rows * cols, rows, cols)
        if best is None or key[:2] < best[:2]:
            best = key
        if rows * width * tile_h > best[0]:
            break  # more rows only add processed pixels
    if best is None:
        raise ValueError(f"--tile={tile} with --tile_overlap={overlap}: no grid of tiles fits a {height}x{width} input; raise --tile")
    rows, cols = best[2], best[3]
    tile_h, tile_w = _split(height, rows, overlap), _split(width, cols, overlap)
    return TileGrid(height, width, tile_h, tile_w, _starts(height, tile_h, rows), _starts(width, tile_w, cols))


def owned_ranges(starts: tuple[int, ...], size: int, length: int) -> list[tuple[int, int]]:
    """The ``[lo, hi)`` part of each tile (first pixels ``starts``, all ``size`` long) that goes to
    the output: neighbours split their overlap at its middle, the part of each farthest from a cut."""
    cuts = [0] + [(starts[i + 1] + starts[i] + size) // 2 for i in range(len(starts) - 1)] + [length]
    return [(cuts[i], cuts[i + 1]) for i in range(len(starts))]


def param_dtype(generator: nn.Module) -> torch.dtype:
    """The floating dtype of ``generator``'s weights (``float32`` without floating weights): the
    dtype its input is cast to, so a generator cast to ``bfloat16`` / ``float16`` runs in it."""
    return next((p.dtype for p in generator.parameters() if p.is_floating_point()), torch.float32)


def _tiles(
    generator: nn.Module, x: Tensor, grid: TileGrid, tile_batch: int, progress: bool | None = False
) -> Iterator[tuple[tuple[int, int, int, int], Tensor]]:
    # Yields ((y0, y1, x0, x1) in input pixels, the SR of that region) for each tile, batch by batch;
    # with progress (None: on a terminal) a bar counts the tiles of a tiled input.
    from tqdm import tqdm

    factor = 1 if generator_spec(generator).input_upsampled else generator_spec(generator).scale
    rows = list(zip(grid.tops, owned_ranges(grid.tops, grid.tile_h, grid.height)))
    cols = list(zip(grid.lefts, owned_ranges(grid.lefts, grid.tile_w, grid.width)))
    jobs = [(top, ys, left, xs) for top, ys in rows for left, xs in cols]
    b = x.shape[0]
    dtype = param_dtype(generator)
    disable = grid.num_tiles < 2 or (None if progress is None else not progress)
    with tqdm(total=len(jobs), unit="tile", desc=f"{grid.height}x{grid.width}", leave=False, disable=disable) as bar:
        for i in range(0, len(jobs), tile_batch):
            chunk = jobs[i : i + tile_batch]
            patches = torch.cat([x[..., top : top + grid.tile_h, left : left + grid.tile_w] for top, _, left, _ in chunk]).to(dtype)
            sr = generator(patches)
            for j, (top, (y0, y1), left, (x0, x1)) in enumerate(chunk):
                region = sr[j * b : (j + 1) * b, ..., (y0 - top) * factor : (y1 - top) * factor, (x0 - left) * factor : (x1 - left) * factor]
                yield (y0 * factor, y1 * factor, x0 * factor, x1 * factor), region
            bar.update(len(chunk))


@torch.no_grad()
def tiled_forward(generator: nn.Module, x: Tensor, tile: int = 128, overlap: int = 32, tile_batch: int = 4) -> Tensor:
    """Run ``generator`` on ``x`` in overlapping spatial tiles (see :func:`tile_grid`).

    Args:
        generator: a salightning generator (attributes ``scale`` and ``input_upsampled``).
        x: the input.
        tile: the tiles hold at most ``tile * tile`` input pixels (``0`` disables tiling).
        overlap: the least overlap between neighbouring tiles in input pixels (even, < tile).
        tile_batch: tiles run through the generator at once.

    Returns:
        the super-resolved image (centre frame for video generators), in the generator's dtype.

    Shape:
        - x: :math:`(B, C, h, w)` for single-image generators, :math:`(B, T, C, H, W)` for video generators.
        - Output: :math:`(B, C, h \\cdot s, w \\cdot s)` (:math:`s = 1` for ``input_upsampled`` generators).
    """
    check_tiling(tile, overlap, tile_batch)
    grid = tile_grid(x.shape[-2], x.shape[-1], tile, overlap)
    if grid.num_tiles == 1:
        return generator(x.to(param_dtype(generator)))
    out: Tensor | None = None
    factor = 1 if generator_spec(generator).input_upsampled else generator_spec(generator).scale
    for (y0, y1, x0, x1), region in _tiles(generator, x, grid, tile_batch):
        if out is None:
            out = region.new_zeros(*region.shape[:-2], grid.height * factor, grid.width * factor)
        out[..., y0:y1, x0:x1] = region
    assert out is not None
    return out


def to_uint8(image: Tensor) -> Tensor:
    """Quantise like :func:`torchvision.utils.save_image`: clamp to [0, 1], ``x * 255 + 0.5`` truncated.

    Shape:
        - image: :math:`(..., C, H, W)` in [0, 1].
        - Output: :math:`(..., H, W, C)`, ``uint8``.
    """
    return image.float().clamp(0, 1).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).movedim(-3, -1)


@torch.no_grad()
def tiled_forward_uint8(
    generator: nn.Module,
    x: Tensor,
    tile: int = 256,
    overlap: int = 32,
    tile_batch: int = 4,
    out: np.ndarray | None = None,
    progress: bool | None = False,
) -> np.ndarray:
    """Super-resolve one image tile by tile straight into an 8-bit ``(H, W, C)`` array.

    Each tile is quantised (as :func:`to_uint8`) and written into ``out`` as soon as it is made, so
    memory holds the 8-bit output plus the tiles of one batch, never a float copy of the output.

    Args:
        generator: as :func:`tiled_forward`.
        x: one input image (or window of frames for a video generator).
        tile, overlap, tile_batch: as :func:`tiled_forward`.
        out: the array to write into (e.g. a ``numpy.memmap`` for very large outputs); allocated
            when ``None``.
        progress: a progress bar of the tiles (``None``: when stderr is a terminal).

    Returns:
        ``out``: the super-resolved image in ``uint8``.

    Shape:
        - x: :math:`(1, C, h, w)` or :math:`(1, T, C, H, W)`.
        - Output: :math:`(h \\cdot s, w \\cdot s, C)`.
    """
    if x.shape[0] != 1:
        raise ValueError(f"tiled_forward_uint8 takes one image (batch of 1); got a batch of {x.shape[0]}")
    return tiled_forward_uint8_batch(generator, x, tile, overlap, tile_batch, None if out is None else out[None], progress)[0]


@torch.no_grad()
def tiled_forward_uint8_batch(
    generator: nn.Module,
    x: Tensor,
    tile: int = 256,
    overlap: int = 32,
    tile_batch: int = 4,
    out: np.ndarray | None = None,
    progress: bool | None = False,
) -> np.ndarray:
    """:func:`tiled_forward_uint8` for a batch of equal-size images: the batch runs through the
    generator together, tile by tile.

    Args:
        out: the ``(B, H, W, C)`` ``uint8`` array to write into; allocated when ``None``.
        progress: a progress bar of the tiles (``None``: when stderr is a terminal).

    Shape:
        - x: :math:`(B, C, h, w)` or :math:`(B, T, C, H, W)`.
        - Output: :math:`(B, h \\cdot s, w \\cdot s, C)`.
    """
    check_tiling(tile, overlap, tile_batch)
    grid = tile_grid(x.shape[-2], x.shape[-1], tile, overlap)
    factor = 1 if generator_spec(generator).input_upsampled else generator_spec(generator).scale
    for (y0, y1, x0, x1), region in _tiles(generator, x, grid, tile_batch, progress):
        shape = (x.shape[0], grid.height * factor, grid.width * factor, region.shape[-3])
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"out is {out.dtype} {tuple(out.shape)}; this input needs uint8 {shape}")
        out[:, y0:y1, x0:x1] = to_uint8(region).cpu().numpy()
    assert out is not None
    return out
