"""evaluate_checkpoints: checkpoints x test sets -> the paper's table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from salightning.edges import EdgeExtractor, LocalVariance
from salightning.metrics import SRMetrics, lpips_metric
from salightning.ops import imresize
from salightning.predict import super_resolve_clip

from salightning.evaluate.models import BICUBIC, Source, load_models, resolve_device
from salightning.evaluate.results import EvaluationResults, ResultRow
from salightning.evaluate.testsets import BUILTIN_TEST_SETS, TestSetSpec, default_test_sets, image_items, is_video_model, resolve_test_set, video_items

# Frames per metric update: bounds the memory of SSIM's float64 moments and LPIPS on long clips.
_FRAMES_PER_UPDATE = 4


def _as_float(value: Tensor | None) -> float | None:
    return None if value is None else float(value)


@torch.no_grad()
def evaluate_checkpoints(
    checkpoints: Mapping[str, Source] | Sequence[str | os.PathLike],
    test_sets: Mapping[str, TestSetSpec] | None = None,
    scale: int | None = None,
    y_channel: bool = True,
    crop_border: int | None = None,
    lpips: Literal["alex", "vgg"] | None = "alex",
    backbone_weights: str | os.PathLike | None = None,
    edge_extractor: EdgeExtractor | None | Literal["default"] = "default",
    include_bicubic: bool = True,
    tile: int = 0,
    tile_overlap: int = 32,
    device: str | torch.device = "auto",
    use_ema: bool = True,
    trusted_modules: Sequence[str] = (),
) -> EvaluationResults:
    """Evaluate checkpoints on test sets the way the paper's tables were made.

    Args:
        checkpoints: model label -> checkpoint written by ``salightning fit`` (or an already
            built generator, which is set to eval mode and moved to ``device``), or a list of checkpoint paths labelled by their file stems.
        test_sets: label -> test set, each one of: a folder of HR images (LR made from them);
            a Set5/Set14-style root with ``GTmod12`` (and ``LRbicx{s}``); an ``(hr_folder,
            lr_folder)`` pair (LR partners found by name, as :class:`~salightning.data.ImageSRDataModule`
            does); a folder of clips (frame folders and/or video files) or one video file (a
            video test set); ``None`` for a built-in set (:data:`BUILTIN_TEST_SETS`). A folder
            with images directly inside is an image test set; give its parent to use one frame
            folder as a video test set. Default: ``{"samples": None}``, plus
            ``{"sample_clips": None}`` when a generator is a video one.
        scale: the SR factor; ``None`` takes each generator's ``scale``. When given, every
            generator must have it.
        y_channel: PSNR / SSIM / edge metrics on the MATLAB BT.601 Y channel (most papers) or RGB.
        crop_border: border pixels ignored by PSNR / SSIM / edge metrics; ``None`` = the scale.
        lpips: LPIPS trunk, ``"alex"``, ``"vgg"`` or ``None`` (not computed). Missing backbone
            weights do not stop the evaluation: LPIPS is left out with a note saying why.
        backbone_weights: the torchvision ImageNet weights file of the LPIPS trunk; ``None``
            looks in torchvision's cache.
        edge_extractor: the edge map ``W(hr)`` of edge / flat PSNR (``"default"``:
            :class:`~salightning.edges.LocalVariance` with its defaults, the paper's map;
            ``None``: no edge metrics).
        include_bicubic: add a ``"bicubic"`` row (the LR upsampled with MATLAB bicubic) per scale.
        tile: tile size in LR pixels for the generators (0: whole images, exact; set it when
            images do not fit in memory, see :func:`salightning.predict.tiled_forward`).
        tile_overlap: overlap between tiles in LR pixels.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"`` ...
        use_ema: use the EMA generator of a checkpoint that has one.
        trusted_modules: modules besides ``salightning`` whose classes a checkpoint may name (see
            :func:`salightning.checkpoints.load_generator`).

    Returns:
        :class:`EvaluationResults`: one :class:`ResultRow` per model (bicubic first) and test
        set, in the given orders, and notes on how the numbers were made.

    Raises:
        FileNotFoundError: a missing checkpoint, folder, or one without images/clips.
        ValueError: a scale mismatch, an unreadable file, images too small for ``crop_border``.
    """
    if not isinstance(y_channel, bool):
        raise ValueError(f"y_channel must be a bool, got {y_channel!r}")
    if crop_border is not None and (not isinstance(crop_border, int) or crop_border < 0):
        raise ValueError(f"crop_border must be None or an int >= 0, got {crop_border!r}")
    if scale is not None and (not isinstance(scale, int) or scale < 1):
        raise ValueError(f"scale must be None or an int >= 1, got {scale!r}")
    if lpips not in ("alex", "vgg", None):
        raise ValueError(f"lpips must be 'alex', 'vgg' or None, got {lpips!r}")
    dev = resolve_device(device)
    models = load_models(checkpoints, dev, use_ema, trusted_modules)
    for label, generator in models:
        if scale is not None and generator.scale != scale:
            raise ValueError(f"scale={scale} but the generator of {label!r} has scale={generator.scale}")
    scales = sorted({g.scale for _, g in models} or ({scale} if scale is not None else set()))
    if not scales:
        raise ValueError("give at least one checkpoint, or a scale for a bicubic-only table")
    if not models and not include_bicubic:
        raise ValueError("nothing to evaluate: no checkpoints and include_bicubic=False")
    if test_sets is None:
        test_sets = default_test_sets([g for _, g in models])
    if not test_sets:
        raise ValueError("test_sets is empty")
    resolved = [resolve_test_set(str(label), spec) for label, spec in test_sets.items()]
    extractor = LocalVariance() if isinstance(edge_extractor, str) and edge_extractor == "default" else edge_extractor
    if extractor is not None:
        if not isinstance(extractor, EdgeExtractor):
            raise ValueError(f"edge_extractor must be an EdgeExtractor, None or 'default', got {edge_extractor!r}")
        extractor = extractor.to(dev)
    lpips_module, lpips_note = lpips_metric(lpips, backbone_weights)
    if lpips_module is not None:
        lpips_module = lpips_module.to(dev)

    rows: list[ResultRow] = []
    set_notes: list[str] = []
    for test_set in resolved:
        for s in scales:
            group = [(label, g) for label, g in models if g.scale == s]
            labels = ([BICUBIC] if include_bicubic else []) + [label for label, _ in group]
            border = s if crop_border is None else crop_border
            meters = {label: SRMetrics(border, y_channel, lpips_module).to(dev) for label in labels}
            counts = dict.fromkeys(labels, 0)
            if test_set.kind == "image":
                items, n_items, paired = image_items(test_set, s)
                lr_how = "LR read from files" if paired else f"LR made from HR with MATLAB bicubic ×1/{s}, 8-bit"
                what = f"{n_items} images ({lr_how})"
            else:
                items = video_items(test_set, s)
                what = (
                    f"{len(test_set.clips)} clips, LR frames made from HR with MATLAB bicubic ×1/{s}, 8-bit; "
                    "metrics averaged over all frames of all clips (each frame counts once)"
                )
            for lr, hr in items:
                outputs: dict[str, Tensor] = {}
                if include_bicubic:
                    outputs[BICUBIC] = imresize(lr.to(dev), float(s)).clamp(0.0, 1.0)
                for label, generator in group:
                    outputs[label] = super_resolve_clip(generator, lr, tile, tile_overlap)
                for start in range(0, hr.shape[0], _FRAMES_PER_UPDATE):
                    part = slice(start, start + _FRAMES_PER_UPDATE)
                    hr_part = hr[part].to(dev)
                    w = None if extractor is None else extractor(hr_part)
                    for label, sr in outputs.items():
                        meters[label].update(sr[part].to(dev), hr_part, w)
                for label in labels:
                    counts[label] += hr.shape[0]
            for label in labels:
                values = meters[label].compute()
                rows.append(
                    ResultRow(
                        model=label,
                        dataset=test_set.label,
                        scale=s,
                        psnr=float(values["psnr"]),
                        ssim=float(values["ssim"]),
                        lpips=_as_float(values.get("lpips")),
                        edge_psnr=_as_float(values.get("edge_psnr")),
                        flat_psnr=_as_float(values.get("flat_psnr")),
                        n_images=counts[label],
                    )
                )
            if test_set.kind == "video":
                what = f"{counts[labels[0]]} frames of " + what
            source = BUILTIN_TEST_SETS[test_set.label] if test_set.builtin else None
            set_notes.append(f"{test_set.label} (×{s}): {what}" + (f"; {source}" if source else "") + ".")
            if test_set.kind == "image":
                static = [label for label, g in group if is_video_model(g)]
                if static:
                    set_notes.append(
                        f"{', '.join(static)} on {test_set.label}: video generator(s) given each image as a static clip "
                        "(every frame of the window the same image)."
                    )
    notes = [
        f"PSNR / SSIM{' / edge PSNR / flat PSNR' if extractor is not None else ''} on "
        f"{'the MATLAB BT.601 Y channel' if y_channel else 'RGB'} of 8-bit rounded images, "
        f"{crop_border if crop_border is not None else 'scale = ' + ', '.join(map(str, scales))} pixels ignored at each "
        "border; SSIM with the 11×11 Gaussian window "
        "(σ 1.5); each score is the mean of the per-image values.",
        lpips_note,
    ]
    if extractor is not None:
        notes.append(
            f"edge / flat PSNR: PSNR weighted by the edge map W(HR) / 1 − W(HR) of the ground truth, "
            f"W = {extractor!r} (beyond the paper)."
        )
    return EvaluationResults(rows, notes + set_notes)
