"""Side-by-side comparison crops with their metrics (Figs. 8-10)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from salightning.data.io import read_image
from salightning.data.transforms import benchmark_lr
from salightning.metrics import lpips_metric, psnr
from salightning.ops import imresize, to_uint8
from salightning.paths import remove_outputs, write_error
from salightning.predict import super_resolve_clip

from salightning.evaluate.models import BICUBIC, Source, load_models, resolve_device

#: Height in pixels of the caption band under each crop of :func:`comparison_figure`.
CAPTION_HEIGHT = 30
#: Gap in pixels between the crops of :func:`comparison_figure` (and around them).
FIGURE_PADDING = 4


def _log_figure_to_wandb(path: Path, key: str) -> bool:
    """Log the PNG to the active W&B run, if there is one (never starts a run)."""
    try:
        import wandb
    except ImportError:
        return False
    if getattr(wandb, "run", None) is None:
        return False
    wandb.log({key: wandb.Image(str(path))})
    return True


@torch.no_grad()
def comparison_figure(
    images: Sequence[tuple[str, str | os.PathLike]],
    boxes: Sequence[tuple[int, int, int]],
    models: Mapping[str, Source],
    output: str | os.PathLike,
    scale: int | None = None,
    include_bicubic: bool = True,
    y_channel: bool = True,
    lpips: Literal["alex", "vgg"] | None = "alex",
    backbone_weights: str | os.PathLike | None = None,
    cell_size: int = 192,
    tile: int = 0,
    tile_overlap: int = 32,
    device: str | torch.device = "auto",
    use_ema: bool = True,
    wandb_key: str = "comparison",
    trusted_modules: Sequence[str] = (),
) -> Path:
    """Side-by-side crops: GT | LR (nearest-upsampled) | bicubic | model A | model B ...

    Each HR image is mod-cropped to the scale, its LR made with MATLAB bicubic and 8-bit
    rounding (as in :func:`evaluate_checkpoints`); every model super-resolves the whole LR
    image, then the same box is cut from each result. Under each crop: its label and the
    crop's PSNR (Y channel or RGB, no border crop) and LPIPS against the GT crop (LPIPS only
    when its weights are available). One row per image.

    The PNG is ``n_cols * (cell_size + 4) + 4`` pixels wide and
    ``n_rows * (cell_size + 30 + 4) + 4`` high (:data:`FIGURE_PADDING`, :data:`CAPTION_HEIGHT`),
    with ``n_cols = 2 + include_bicubic + len(models)``; crops are enlarged or shrunk to
    ``cell_size`` with nearest-neighbour sampling so pixels stay visible. When a W&B run is
    active (``wandb.run`` is not None) the figure is also logged under ``wandb_key``.

    Args:
        images: ``(name, HR image path)`` per row.
        boxes: ``(top, left, size)`` of the square crop in HR pixels, one per image.
        models: label -> checkpoint written by ``salightning fit`` (or a built generator).
        output: the PNG file to write (its folder is created).
        scale: SR factor; ``None`` takes the generators' (which must agree).
        include_bicubic: add the bicubic-upsampled LR column.
        y_channel: PSNR on the MATLAB BT.601 Y channel (else RGB).
        lpips: LPIPS trunk (``"alex"``, ``"vgg"``) or ``None``.
        backbone_weights: torchvision ImageNet weights of the LPIPS trunk (``None``: torchvision's cache).
        cell_size: displayed size of each crop in pixels.
        tile, tile_overlap, device, use_ema, trusted_modules: as in :func:`evaluate_checkpoints`.

    Returns:
        the path of the PNG.
    """
    from PIL import Image, ImageDraw, ImageFont

    if len(images) != len(boxes):
        raise ValueError(f"boxes must give one (top, left, size) per image: {len(images)} images, {len(boxes)} boxes")
    if not images:
        raise ValueError("images is empty")
    if not isinstance(cell_size, int) or cell_size < 1:
        raise ValueError(f"cell_size must be an int >= 1, got {cell_size!r}")
    dev = resolve_device(device)
    loaded = load_models(models, dev, use_ema, trusted_modules)
    model_scales = {g.scale for _, g in loaded}
    if scale is None:
        if len(model_scales) != 1:
            raise ValueError(f"the generators have scales {sorted(model_scales)}; give models of one scale (or scale= without models)")
        scale = model_scales.pop()
    elif model_scales - {scale}:
        raise ValueError(f"scale={scale} but the generators have scales {sorted(model_scales)}")
    lpips_module, _ = lpips_metric(lpips, backbone_weights)
    if lpips_module is not None:
        lpips_module = lpips_module.to(dev)

    n_cols = 2 + int(include_bicubic) + len(loaded)
    pad, cell = FIGURE_PADDING, cell_size
    figure = Image.new("RGB", (n_cols * (cell + pad) + pad, len(images) * (cell + CAPTION_HEIGHT + pad) + pad), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default()

    def paste(crop: Tensor, row: int, col: int, caption: list[str]) -> None:
        array = to_uint8(crop).permute(1, 2, 0).cpu().numpy()
        tile_image = Image.fromarray(array).resize((cell, cell), Image.Resampling.NEAREST)
        x, y = pad + col * (cell + pad), pad + row * (cell + CAPTION_HEIGHT + pad)
        figure.paste(tile_image, (x, y))
        for k, text in enumerate(caption):
            draw.text((x + 2, y + cell + 2 + k * (CAPTION_HEIGHT // 2 - 1)), text, fill="black", font=font)

    for row, ((name, path), box) in enumerate(zip(images, boxes)):
        if len(box) != 3:
            raise ValueError(f"boxes[{row}] must be (top, left, size), got {box!r}")
        top, left, size = (int(v) for v in box)
        lr, hr = benchmark_lr(read_image(path), scale)
        _, height, width = hr.shape
        if size < 1 or top < 0 or left < 0 or top + size > height or left + size > width:
            raise ValueError(
                f"boxes[{row}]=(top={top}, left={left}, size={size}) does not fit in {name!r} "
                f"({height}x{width} after cropping to a multiple of scale={scale})"
            )
        window = (slice(None), slice(top, top + size), slice(left, left + size))
        gt = hr[window].to(dev)
        lr_up = lr.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        paste(gt, row, 0, ["GT", name])
        paste(lr_up[window], row, 1, [f"LR x{scale} (nearest)", f"{lr.shape[-2]}x{lr.shape[-1]} px"])
        candidates: list[tuple[str, Tensor]] = []
        if include_bicubic:
            candidates.append((BICUBIC, imresize(lr.unsqueeze(0).to(dev), float(scale)).clamp(0, 1)[0]))
        for label, generator in loaded:
            candidates.append((label, super_resolve_clip(generator, lr.unsqueeze(0), tile, tile_overlap)[0]))
        for col, (label, sr) in enumerate(candidates, start=2):
            crop = sr[window].to(dev)
            metrics = f"PSNR {float(psnr(crop[None], gt[None], y_channel=y_channel)[0]):.2f} dB"
            if lpips_module is not None:
                metrics += f" / LPIPS {float(lpips_module(crop[None], gt[None])[0]):.3f}"
            paste(crop, row, col, [label, metrics])

    out = Path(output).expanduser()
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.save(out, format="PNG")
    except OSError as err:
        remove_outputs([out], created)
        raise write_error(err, out) from err
    _log_figure_to_wandb(out, wandb_key)
    return out
