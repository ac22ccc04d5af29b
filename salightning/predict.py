"""Inference: rebuild a generator from a checkpoint and super-resolve large inputs tile by tile.

Tiling: the input is cut into overlapping tiles; each output pixel is taken from the tile in
which it lies farthest from a cut (the central part of each tile), so the seams see the same
context as untiled inference up to ``overlap / 2`` input pixels on each side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from salightning.weights import load_state_dict_file


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _keep(start: int, size: int, length: int, half: int) -> tuple[int, int]:
    # The part of a tile [start, start+size) that this tile owns: its centre, or up to the image edge.
    lo = start + half if start > 0 else 0
    hi = start + size - half if start + size < length else length
    return lo, hi


@torch.no_grad()
def tiled_forward(generator: nn.Module, x: Tensor, tile: int = 128, overlap: int = 32) -> Tensor:
    """Run ``generator`` on ``x`` in overlapping spatial tiles.

    Args:
        generator: a salightning generator (attributes ``scale`` and ``input_upsampled``).
        x: (B, C, h, w) for single-image generators, (B, T, C, H, W) for video generators.
        tile: tile size in input pixels (``0`` disables tiling).
        overlap: overlap between neighbouring tiles in input pixels (even, < tile).

    Returns:
        (B, C, H_out, W_out): the super-resolved image (centre frame for video).
    """
    if tile < 0 or overlap < 0 or overlap % 2 or (tile and overlap >= tile):
        raise ValueError(f"tile and overlap must satisfy 0 <= overlap < tile, overlap even; got tile={tile}, overlap={overlap}")
    h, w = x.shape[-2:]
    if tile == 0 or (h <= tile and w <= tile):
        return generator(x)
    factor = 1 if getattr(generator, "input_upsampled", False) else int(getattr(generator, "scale", 1))
    half = overlap // 2
    out: Tensor | None = None
    for top in _starts(h, tile, tile - overlap):
        for left in _starts(w, tile, tile - overlap):
            patch = x[..., top : top + tile, left : left + tile]
            sr = generator(patch)
            if out is None:
                out = sr.new_zeros(*sr.shape[:-2], h * factor, w * factor)
            th, tw = patch.shape[-2:]
            y0, y1 = _keep(top, th, h, half)
            x0, x1 = _keep(left, tw, w, half)
            out[..., y0 * factor : y1 * factor, x0 * factor : x1 * factor] = sr[
                ..., (y0 - top) * factor : (y1 - top) * factor, (x0 - left) * factor : (x1 - left) * factor
            ]
    assert out is not None
    return out


def load_generator(checkpoint: str | os.PathLike, use_ema: bool = True, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the generator of a checkpoint written by ``salightning fit`` and load its weights.

    The generator's class and arguments come from the checkpoint's hyper-parameters (the
    LightningCLI config); only the generator is built, so no VGG/LPIPS weights are needed.
    The EMA generator is used when the checkpoint has one and ``use_ema`` is true.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a salightning checkpoint or does not match its generator.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    ckpt: Any = load_state_dict_file(path)
    hparams = ckpt.get("hyper_parameters", {})
    state = ckpt.get("state_dict")
    gen_cfg = hparams.get("generator")
    if state is None or not isinstance(gen_cfg, dict) or "class_path" not in gen_cfg:
        raise ValueError(
            f"checkpoint {str(path)!r} was not written by `salightning fit` (no generator config in its "
            "hyper_parameters); build the generator yourself and use salightning.models.load_pretrained"
        )
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "generator", fail_untyped=False)
    generator = parser.instantiate_classes(parser.parse_object({"generator": gen_cfg})).generator
    prefix = "generator_ema.module." if use_ema and any(k.startswith("generator_ema.module.") for k in state) else "generator."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {str(path)!r}: generator weights do not match its config: {err}") from err
    return generator.eval().to(map_location)


def export_generator(checkpoint: str | os.PathLike, output: str | os.PathLike, use_ema: bool = True) -> Path:
    """Write the generator weights of a ``salightning fit`` checkpoint as a plain state dict
    (loadable by :func:`salightning.models.load_pretrained` and as ``pretrained_generator``).
    Refuses to overwrite an existing file."""
    out = Path(output)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} exists; choose another output path")
    generator = load_generator(checkpoint, use_ema=use_ema)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(generator.state_dict(), tmp)
    tmp.replace(out)  # atomic: a crash never leaves a half-written file under the final name
    return out
