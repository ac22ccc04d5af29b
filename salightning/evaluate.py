"""Evaluation like the paper: result tables (Tables I–IV) and side-by-side crops (Figs. 8–10).

* :func:`evaluate_checkpoints`: one or several checkpoints of ``salightning fit`` on one or
  several test sets -> :class:`EvaluationResults` (rows of PSNR / SSIM / LPIPS / edge PSNR /
  flat PSNR per model and test set, plus notes saying how the numbers were made);
* :func:`format_table` / :func:`write_tables`: the paper's layout (rows = models, one column
  group per test set) as Markdown and CSV;
* :func:`comparison_figure`: GT | LR | bicubic | model A | model B ... crops with the crop's
  metrics under each, as a PNG (also logged to W&B when a run is active);
* ``salightning evaluate`` (:func:`main`): the same from the command line.

How the numbers are made (what the notes of every table repeat):

* **LR from HR**, as the benchmarks' LR images were made: the HR image is cropped to a multiple
  of the scale, shrunk with MATLAB-compatible bicubic (:func:`salightning.ops.imresize`, ×1/s)
  and rounded to 8 bits (:func:`salightning.data.benchmark_lr`). A Set5/Set14-style root with
  ``GTmod12`` and ``LRbicx{s}`` folders, or an explicit ``(hr_folder, lr_folder)`` pair, uses
  the stored LR images instead (paired by name through :func:`salightning.data.benchmark_dataset`).
* **Metrics** from :mod:`salightning.metrics`: 8-bit rounded images, ``crop_border`` pixels
  (default: the scale) removed on each side, MATLAB BT.601 Y channel by default, SSIM with the
  11×11 Gaussian window (σ 1.5); LPIPS on the whole RGB images; edge / flat PSNR weighted by the
  edge map ``W(hr)`` / ``1 − W(hr)`` of the ground truth (default :class:`~salightning.edges.LocalVariance`).
  A dataset's score is the mean of the per-image values.
* **Video test sets** (folders of clips, frame folders or video files): every frame of every
  clip is super-resolved (:func:`salightning.predict.super_resolve_clip`: video generators see
  the window t−k..t+k, mirrored at the clip's ends) and the metrics are averaged over all frames
  of all clips, each frame counting once (so longer clips weigh more).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from salightning.data.image import benchmark_dataset
from salightning.data.io import VIDEO_EXTENSIONS, find_sequences, has_images, list_images, open_sequence, read_image
from salightning.data.samples import sample_image_paths, sample_video_paths
from salightning.data.transforms import benchmark_lr
from salightning.edges import EdgeExtractor, LocalVariance
from salightning.metrics import LPIPS, SRMetrics, psnr
from salightning.ops import imresize, to_uint8
from salightning.paths import check_output_not_inside, remove_outputs, write_error
from salightning.checkpoints import TRUST_HELP, load_generator
from salightning.predict import super_resolve_clip
from salightning.weights import MissingWeightsError

__all__ = [
    "BUILTIN_TEST_SETS",
    "ResultRow",
    "EvaluationResults",
    "evaluate_checkpoints",
    "format_table",
    "write_tables",
    "comparison_figure",
]

#: Test sets that need no files: label -> what it is (give the label with the value ``None``).
BUILTIN_TEST_SETS: dict[str, str] = {
    "samples": "the built-in sample test photos (coffee, rocket; salightning.data.samples)",
    "sample_clips": "the built-in sample test clips (synthetic camera motion over real photos; salightning.data.samples)",
}

#: Label of the bicubic-upsampling baseline rows.
BICUBIC = "bicubic"

# Frames per metric update: bounds the memory of SSIM's float64 moments and LPIPS on long clips.
_FRAMES_PER_UPDATE = 4

# (field, header, decimals, higher is better) of the table's metrics, in the paper's order.
_METRICS: tuple[tuple[str, str, int, bool], ...] = (
    ("psnr", "PSNR↑", 2, True),
    ("ssim", "SSIM↑", 4, True),
    ("lpips", "LPIPS↓", 4, False),
    ("edge_psnr", "edge PSNR↑", 2, True),
    ("flat_psnr", "flat PSNR↑", 2, True),
)

Source = str | os.PathLike | nn.Module
TestSetSpec = str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike] | None


# ------------------------------------------------------------------------------ results
@dataclass
class ResultRow:
    """One model on one test set: the means of the per-image (per-frame) metrics.

    ``lpips`` is ``None`` when LPIPS was not computed; ``edge_psnr`` / ``flat_psnr`` are ``None``
    without an edge extractor. ``n_images`` counts images, or frames for a video test set.
    """

    model: str
    dataset: str
    scale: int
    psnr: float
    ssim: float
    lpips: float | None
    edge_psnr: float | None
    flat_psnr: float | None
    n_images: int


@dataclass
class EvaluationResults:
    """The rows of an evaluation and the notes that say how they were computed."""

    rows: list[ResultRow]
    notes: list[str] = field(default_factory=list)

    def row(self, model: str, dataset: str) -> ResultRow:
        """The row of ``model`` on ``dataset`` (KeyError if there is none)."""
        for r in self.rows:
            if r.model == model and r.dataset == dataset:
                return r
        raise KeyError(f"no row for model={model!r}, dataset={dataset!r}")

    def __iter__(self) -> Iterator[ResultRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


# ------------------------------------------------------------------------------ inputs
@dataclass
class _TestSet:
    label: str
    kind: Literal["image", "video"]
    hr: str | None = None  # image sets: HR folder (None: built-in sample photos)
    lr: str | None = None  # image sets: paired LR folder
    clips: list[Path] = field(default_factory=list)  # video sets
    builtin: bool = False


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_test_set(label: str, spec: TestSetSpec) -> _TestSet:
    """Classify a test-set value: built-in, image folder (or HR/LR pair), or clips."""
    option = f"test_sets[{label!r}]"
    if spec is None:
        if label == "samples":
            return _TestSet(label, "image", builtin=True)
        if label == "sample_clips":
            return _TestSet(label, "video", clips=sample_video_paths("test"), builtin=True)
        raise ValueError(f"{option} is None, which only names a built-in test set ({sorted(BUILTIN_TEST_SETS)}); give a path")
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"{option} must be a path or a (hr_folder, lr_folder) pair, got {spec!r}")
        hr, lr = (Path(p).expanduser() for p in spec)
        for p in (hr, lr):
            if not p.is_dir():
                raise FileNotFoundError(f"{option}: folder {p} does not exist")
        return _TestSet(label, "image", hr=str(hr), lr=str(lr))
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{option}: {path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"{option}: {path} is a file but not a video ({', '.join(VIDEO_EXTENSIONS)}); give a folder of images")
        return _TestSet(label, "video", clips=[path])
    # Images directly inside (or a Set5/Set14 root): an image test set; otherwise a folder of clips.
    if (path / "GTmod12").is_dir() or has_images(path):
        return _TestSet(label, "image", hr=str(path))
    return _TestSet(label, "video", clips=find_sequences([path], option=option))


def _load_models(
    checkpoints: Mapping[str, Source] | Sequence[str | os.PathLike], device: torch.device, use_ema: bool, trusted_modules: Sequence[str] = ()
) -> list[tuple[str, nn.Module]]:
    if isinstance(checkpoints, Mapping):
        items = [(str(k), v) for k, v in checkpoints.items()]
    elif isinstance(checkpoints, (str, os.PathLike)):
        raise ValueError(f"checkpoints must be a dict label -> path or a list of paths, got the single path {checkpoints!r}")
    else:
        items = [(Path(p).stem, p) for p in checkpoints]
        labels = [label for label, _ in items]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(
                f"checkpoints: several files are named {duplicates}; label them, e.g. "
                "{'esrgan': 'runs/a/last.ckpt', 'sa_esrgan': 'runs/b/last.ckpt'} (CLI: --ckpt_path label=path)"
            )
    models = []
    for label, source in items:
        if label == BICUBIC:
            raise ValueError(f"checkpoints: the label {BICUBIC!r} is reserved for the bicubic baseline; rename the model")
        if isinstance(source, nn.Module):
            generator = source.eval().to(device)
        else:
            generator = load_generator(source, use_ema=use_ema, map_location=device, trusted_modules=trusted_modules)
        if not isinstance(getattr(generator, "scale", None), int):
            raise ValueError(f"checkpoints[{label!r}]: the generator has no integer `scale` attribute (the SR factor)")
        models.append((label, generator))
    return models


def _is_video_model(generator: nn.Module) -> bool:
    return int(getattr(generator, "num_frames", 1)) > 1


def _default_test_sets(generators: Sequence[nn.Module]) -> dict[str, TestSetSpec]:
    """The built-in sample photos, plus the sample clips when a generator is a video one."""
    sets: dict[str, TestSetSpec] = {"samples": None}
    if any(_is_video_model(g) for g in generators):
        sets["sample_clips"] = None
    return sets


def _image_items(test_set: _TestSet, scale: int) -> tuple[Iterator[tuple[Tensor, Tensor]], int, bool]:
    """(iterator of (lr (1,C,h,w), hr (1,C,H,W)), number of images, whether LR comes from files)."""
    dataset = benchmark_dataset(test_set.hr, test_set.lr, scale)
    paired = any(pair.lr is not None for pair in dataset.pairs)

    def items() -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(len(dataset)):
            item = dataset[i]
            yield item["lr"].unsqueeze(0), item["hr"].unsqueeze(0)

    return items(), len(dataset), paired


def _video_items(test_set: _TestSet, scale: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(lr (T,C,h,w), hr (T,C,H,W)) of each clip, LR made like :class:`VideoSRDataset` makes it."""
    for path in test_set.clips:
        clip = open_sequence(path, option=f"test_sets[{test_set.label!r}]")
        if clip.height < scale or clip.width < scale:
            raise ValueError(f"{path}: frames are {clip.height}x{clip.width}, smaller than scale={scale}")
        lr, hr = benchmark_lr(clip.read(list(range(len(clip)))), scale)
        yield lr, hr


def _lpips_module(
    lpips: Literal["alex", "vgg"] | None, backbone_weights: str | os.PathLike | None
) -> tuple[LPIPS | None, str]:
    """The LPIPS metric, or None with the note saying why it is not computed."""
    if lpips is None:
        return None, "LPIPS: not computed (disabled)"
    try:
        module = LPIPS(lpips, backbone_weights=None if backbone_weights is None else str(backbone_weights))
    except MissingWeightsError as err:
        reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        return None, f"LPIPS: not computed (weights missing: {reason})"
    source = "the ImageNet weights from torchvision's cache" if backbone_weights is None else str(backbone_weights)
    return module, f"LPIPS ({lpips}, v0.1, lower is better) on the whole RGB images, backbone {source}."


def _as_float(value: Tensor | None) -> float | None:
    return None if value is None else float(value)


# ------------------------------------------------------------------------------ evaluation
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
    dev = _resolve_device(device)
    models = _load_models(checkpoints, dev, use_ema, trusted_modules)
    for label, generator in models:
        if scale is not None and generator.scale != scale:
            raise ValueError(f"scale={scale} but the generator of {label!r} has scale={generator.scale}")
    scales = sorted({g.scale for _, g in models} or ({scale} if scale is not None else set()))
    if not scales:
        raise ValueError("give at least one checkpoint, or a scale for a bicubic-only table")
    if not models and not include_bicubic:
        raise ValueError("nothing to evaluate: no checkpoints and include_bicubic=False")
    if test_sets is None:
        test_sets = _default_test_sets([g for _, g in models])
    if not test_sets:
        raise ValueError("test_sets is empty")
    resolved = [_resolve_test_set(str(label), spec) for label, spec in test_sets.items()]
    extractor = LocalVariance() if isinstance(edge_extractor, str) and edge_extractor == "default" else edge_extractor
    if extractor is not None:
        if not isinstance(extractor, EdgeExtractor):
            raise ValueError(f"edge_extractor must be an EdgeExtractor, None or 'default', got {edge_extractor!r}")
        extractor = extractor.to(dev)
    lpips_module, lpips_note = _lpips_module(lpips, backbone_weights)
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
                items, n_items, paired = _image_items(test_set, s)
                lr_how = "LR read from files" if paired else f"LR made from HR with MATLAB bicubic ×1/{s}, 8-bit"
                what = f"{n_items} images ({lr_how})"
            else:
                items = _video_items(test_set, s)
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
                static = [label for label, g in group if _is_video_model(g)]
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


# ------------------------------------------------------------------------------ tables
def _columns(rows: Sequence[ResultRow]) -> list[tuple[str, str, int, bool]]:
    # PSNR / SSIM / LPIPS always (the paper's layout); the edge metrics when they were computed.
    return [m for m in _METRICS if m[0] in ("psnr", "ssim", "lpips") or any(getattr(r, m[0]) is not None for r in rows)]


def _table_layout(rows: Sequence[ResultRow]) -> tuple[list[tuple[str, int]], list[str], dict[tuple[str, int, str], ResultRow]]:
    models: list[tuple[str, int]] = []
    datasets: list[str] = []
    cells: dict[tuple[str, int, str], ResultRow] = {}
    for r in rows:
        if (r.model, r.scale) not in models:
            models.append((r.model, r.scale))
        if r.dataset not in datasets:
            datasets.append(r.dataset)
        cells[(r.model, r.scale, r.dataset)] = r
    return models, datasets, cells


def _fmt(value: float | None, decimals: int) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{decimals}f}"


def _best(rows: Sequence[ResultRow], dataset: str, name: str, higher: bool) -> float | None:
    values = [getattr(r, name) for r in rows if r.dataset == dataset and getattr(r, name) is not None]
    values = [v for v in values if not math.isnan(v)]
    if len(values) < 2:
        return None
    return max(values) if higher else min(values)


def format_table(
    rows: EvaluationResults | Sequence[ResultRow],
    fmt: Literal["markdown", "csv"] = "markdown",
    notes: Sequence[str] | None = None,
) -> str:
    """The paper's table layout: one row per model, one column group per test set.

    Markdown: each test-set column holds ``PSNR / SSIM / LPIPS / edge PSNR / flat PSNR`` (PSNR
    and edge metrics with 2 decimals, SSIM and LPIPS with 4; ``–`` where not computed), the best
    value of each metric per test set in bold, then the notes as a list.

    CSV: columns ``model, scale`` then, per test set ``D``, ``D/psnr, D/ssim, D/lpips,
    D/edge_psnr, D/flat_psnr, D/n_images`` with 6 decimals (empty where not computed); no notes.

    Args:
        rows: an :class:`EvaluationResults` or its rows.
        fmt: ``"markdown"`` or ``"csv"``.
        notes: notes printed under the Markdown table; default the results' notes.
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")
    if notes is None:
        notes = rows.notes if isinstance(rows, EvaluationResults) else []
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to tabulate")
    models, datasets, cells = _table_layout(rows)
    columns = _columns(rows)
    single_scale = len({s for _, s in models}) == 1
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["model", "scale"] + [f"{d}/{c}" for d in datasets for c in [m[0] for m in columns] + ["n_images"]])
        for model, s in models:
            line: list[str | int] = [model, s]
            for d in datasets:
                r = cells.get((model, s, d))
                for name, *_ in columns:
                    value = None if r is None else getattr(r, name)
                    line.append("" if value is None else f"{value:.6f}")
                line.append("" if r is None else r.n_images)
            writer.writerow(line)
        return buffer.getvalue()
    metric_header = " / ".join(m[1] for m in columns)
    scale_tag = f" ×{models[0][1]}" if single_scale else ""
    lines = [
        "| model | " + " | ".join(f"{d}{scale_tag}: {metric_header}" for d in datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    best = {(d, name): _best(rows, d, name, higher) for d in datasets for name, _, _, higher in columns}
    for model, s in models:
        label = model if single_scale else f"{model} (×{s})"
        parts = []
        for d in datasets:
            r = cells.get((model, s, d))
            if r is None:
                parts.append("–")
                continue
            values = []
            for name, _, decimals, _ in columns:
                text = _fmt(getattr(r, name), decimals)
                value = getattr(r, name)
                if value is not None and best[(d, name)] is not None and _fmt(value, decimals) == _fmt(best[(d, name)], decimals):
                    text = f"**{text}**"
                values.append(text)
            parts.append(" / ".join(values))
        lines.append(f"| {label} | " + " | ".join(parts) + " |")
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_tables(results: EvaluationResults | Sequence[ResultRow], output: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.md`` (with the notes) and ``results.csv`` into the folder ``output``
    (created; existing tables there are replaced). Returns ``{"markdown": path, "csv": path}``.
    A failed write (full or read-only disk) raises an ``OSError`` naming the file, with its errno,
    after removing the tables of this call and the folders it created."""
    folder = Path(output).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {str(folder)!r} is a file; give a folder")
    paths = {"markdown": folder / "results.md", "csv": folder / "results.csv"}
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for kind, path in paths.items():
            written.append(path)
            path.write_text(format_table(results, kind), encoding="utf-8")
    except OSError as err:
        remove_outputs(written, created)
        raise write_error(err, written[-1] if written else folder) from err
    return paths


# ------------------------------------------------------------------------------ figure
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
    dev = _resolve_device(device)
    loaded = _load_models(models, dev, use_ema, trusted_modules)
    model_scales = {g.scale for _, g in loaded}
    if scale is None:
        if len(model_scales) != 1:
            raise ValueError(f"the generators have scales {sorted(model_scales)}; give models of one scale (or scale= without models)")
        scale = model_scales.pop()
    elif model_scales - {scale}:
        raise ValueError(f"scale={scale} but the generators have scales {sorted(model_scales)}")
    lpips_module, _ = _lpips_module(lpips, backbone_weights)
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


# ------------------------------------------------------------------------------ CLI
def _split_labelled(values: Sequence[str], option: str) -> list[tuple[str | None, str]]:
    out = []
    for value in values:
        label, sep, path = value.partition("=")
        if sep and (not label or not path):
            raise ValueError(f"{option}: expected label=path or a path, got {value!r}")
        out.append((label, path) if sep else (None, value))
    return out


def _parse_compare(values: Sequence[str]) -> list[tuple[str, tuple[int, int, int]]]:
    out = []
    for value in values:
        name, sep, box = value.rpartition(":")
        try:
            top, left, size = (int(v) for v in box.split(","))
        except ValueError:
            raise ValueError(f"--compare: expected NAME:TOP,LEFT,SIZE (HR pixels), got {value!r}") from None
        if not sep or not name:
            raise ValueError(f"--compare: expected NAME:TOP,LEFT,SIZE (HR pixels), got {value!r}")
        out.append((name, (top, left, size)))
    return out


def _find_compare_image(name: str, test_sets: Mapping[str, TestSetSpec]) -> Path:
    """The HR image of the image test sets whose stem (or ``set/stem``) is ``name``."""
    wanted_set, _, stem = name.rpartition("/")
    for label, spec in test_sets.items():
        if wanted_set and label != wanted_set:
            continue
        test_set = _resolve_test_set(label, spec)
        if test_set.kind != "image":
            continue
        if test_set.hr is None:
            files = sample_image_paths("test")
        else:
            root = Path(test_set.hr)
            files = list_images(root / "GTmod12" if (root / "GTmod12").is_dir() else root, option=f"test_sets[{label!r}]")
        for f in files:
            if f.stem == stem:
                return f
    raise FileNotFoundError(f"--compare: no image named {name!r} in the image test sets {list(test_sets)}")


def main(argv: list[str]) -> None:
    """``salightning evaluate``: print the paper's table and write results.md / results.csv."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="salightning evaluate",
        description="Evaluate checkpoints on test sets like the paper (PSNR / SSIM / LPIPS, edge / flat PSNR); "
        "prints the table and writes results.md and results.csv.",
    )
    parser.add_argument("--ckpt_path", type=str, nargs="+", required=True, help="checkpoint(s) of `salightning fit`, as path or label=path")
    parser.add_argument(
        "--test_sets",
        type=str,
        nargs="+",
        default=None,
        help="test sets as label=path or path (label: folder name): folders of HR images, Set5/Set14 roots, folders of "
        f"clips or video files; or the built-in {' / '.join(BUILTIN_TEST_SETS)} (default: samples, plus sample_clips "
        "for video checkpoints)",
    )
    parser.add_argument("--output", type=str, default="evaluation", help="folder for results.md, results.csv (and comparison.png)")
    parser.add_argument("--lpips", type=Literal["alex", "vgg", "none"], default="alex", help="LPIPS trunk, or none")
    parser.add_argument("--backbone_weights", type=str | None, default=None, help="torchvision ImageNet weights of the LPIPS trunk (default: torchvision's cache)")
    parser.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of the MATLAB BT.601 Y channel")
    parser.add_argument("--crop_border", type=int | None, default=None, help="border pixels ignored by PSNR/SSIM (default: the scale)")
    parser.add_argument("--no_bicubic", action="store_true", help="leave out the bicubic baseline row")
    parser.add_argument("--no_ema", action="store_true", help="use the raw generators even if the checkpoints have EMA ones")
    parser.add_argument("--tile", type=int, default=0, help="tile size in LR pixels, 0 = whole images (exact)")
    parser.add_argument("--tile_overlap", type=int, default=32, help="overlap between tiles in LR pixels")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    parser.add_argument("--trust_module", type=str, nargs="+", default=[], help=TRUST_HELP)
    parser.add_argument(
        "--compare",
        type=str,
        nargs="+",
        default=None,
        help="comparison figure crops as NAME:TOP,LEFT,SIZE (image stem, or set/stem, of an image test set; HR pixels)",
    )
    parser.add_subclass_arguments(
        EdgeExtractor, "edge_extractor", required=False, default={"class_path": "salightning.edges.LocalVariance"}
    )
    args = parser.parse_args(argv)
    edge_extractor = parser.instantiate(args).edge_extractor

    checkpoints: dict[str, str] = {}
    for label, path in _split_labelled(args.ckpt_path, "--ckpt_path"):
        label = label or Path(path).stem
        if label in checkpoints:
            raise ValueError(f"--ckpt_path: the label {label!r} is used twice; write label=path to name each checkpoint")
        checkpoints[label] = path
    test_sets: dict[str, TestSetSpec] | None = None
    if args.test_sets:
        test_sets = {}
        for label, path in _split_labelled(args.test_sets, "--test_sets"):
            if label is None and path in BUILTIN_TEST_SETS and not Path(path).exists():
                test_sets[path] = None
                continue
            label = label or Path(path).expanduser().resolve().name
            if label in test_sets:
                raise ValueError(f"--test_sets: the label {label!r} is used twice; write label=path")
            test_sets[label] = path
    inputs = [*checkpoints.values(), *(p for p in (test_sets or {}).values() if p is not None)]
    check_output_not_inside(inputs, args.output, "--output")
    lpips = None if args.lpips == "none" else args.lpips
    common = {
        "tile": args.tile, "tile_overlap": args.tile_overlap, "device": args.device, "use_ema": not args.no_ema,
        "trusted_modules": args.trust_module,
    }
    results = evaluate_checkpoints(
        checkpoints,
        test_sets,
        y_channel=not args.rgb,
        crop_border=args.crop_border,
        lpips=lpips,
        backbone_weights=args.backbone_weights,
        edge_extractor=edge_extractor,
        include_bicubic=not args.no_bicubic,
        **common,
    )
    print(format_table(results, "markdown"))
    paths = write_tables(results, args.output)
    print(f"wrote {paths['markdown'].resolve()} and {paths['csv'].resolve()}")
    if args.compare:
        crops = _parse_compare(args.compare)
        sets = test_sets if test_sets is not None else {"samples": None}
        figure = comparison_figure(
            [(name, _find_compare_image(name, sets)) for name, _ in crops],
            [box for _, box in crops],
            checkpoints,
            Path(args.output) / "comparison.png",
            include_bicubic=not args.no_bicubic,
            y_channel=not args.rgb,
            lpips=lpips,
            backbone_weights=args.backbone_weights,
            **common,
        )
        print(f"wrote {figure.resolve()}")
