"""Inference: rebuild a generator from a checkpoint and super-resolve large inputs tile by tile
(the tile grid and the seam rule: :mod:`salightning.tiling`).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from salightning.checkpoints import TRUST_HELP
from salightning.paths import check_not_existing, check_output_not_inside, remove_outputs, resolve_path, write_error
from salightning.tiling import check_tiling, tiled_forward, tiled_forward_uint8, tiled_forward_uint8_batch
from salightning.video_io import ClipDecodeError
from salightning.models.protocol import generator_spec


def _check_output(src: Path, out: Path, video_model: bool) -> None:
    """Refuse an output that is a file, or that is on or inside the input, or where an output
    would land on the input (outputs keep the inputs' names)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {str(out)!r} is a file; give a folder (inputs are never overwritten)")
    check_output_not_inside([src], out, "--output")
    if src.is_file():
        check_output_not_inside([src], out / f"{src.stem}.png", "--output")
    elif video_model:
        check_output_not_inside([src], out / resolve_path(src, "--input").name, "--output")


@torch.no_grad()
def super_resolve_clip(generator: nn.Module, frames: Tensor, tile: int = 256, overlap: int = 32, tile_batch: int = 4) -> Tensor:
    """Super-resolve every frame of a clip.

    Args:
        generator: single-image (``num_frames == 1``) or video generator.
        frames: (T, C, h, w) LR frames in [0, 1].

    Returns:
        (T, C, h*scale, w*scale) SR frames in [0, 1]. Video generators see the window
        t-k..t+k of each frame, mirrored at the clip's ends, bicubic-upsampled first when the
        generator expects it (``input_upsampled``).
    """
    from salightning.data.transforms import reflect_index
    from salightning.ops import imresize, quantize_8bit

    device = next(generator.parameters()).device
    num_frames = generator_spec(generator).num_frames
    scale = generator_spec(generator).scale
    k = num_frames // 2
    outputs = []
    for t in range(frames.shape[0]):
        if num_frames == 1:
            x = frames[t : t + 1].to(device)
        else:
            idx = [reflect_index(t + d, frames.shape[0]) for d in range(-k, k + 1)]
            x = frames[idx].to(device)
            if generator_spec(generator).input_upsampled:
                # 8-bit levels, as the video datamodule feeds them in training
                x = quantize_8bit(imresize(x, scale))
            x = x.unsqueeze(0)
        outputs.append(tiled_forward(generator, x, tile, overlap, tile_batch).clamp(0, 1)[0].cpu())
    return torch.stack(outputs)


# ---------------------------------------------------------------- devices and precision

#: ``--precision`` -> the dtype the generator's weights and activations are cast to.
PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """The ``torch.device`` of ``--device`` (``cpu``, ``cuda``, ``cuda:N``; ``auto``: cuda when
    available). Raises a ``ValueError`` naming the option for a device this machine does not have."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"--device must be cpu, cuda, cuda:N or auto; got --device={device}")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu")
        if index and int(index) >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device(device)


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of ``--precision`` (``32``, ``bf16``, ``fp16``), or a ``ValueError`` naming it when
    ``device`` cannot run it (fp16 needs CUDA; bf16 on CUDA needs a GPU that supports it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got --precision={precision}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA device (half-precision convolutions are slow or missing on the CPU); got --device {device}; use bf16 or 32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use fp16 or 32")
    return PRECISIONS[precision]


def check_devices(devices: int, device: str) -> None:
    """Raise a ``ValueError`` unless ``--devices`` is >= 1 and fits ``--device`` (a plain ``cpu``
    or ``cuda``, and no more GPUs than there are)."""
    if devices < 1:
        raise ValueError(f"--devices must be >= 1; got --devices={devices}")
    if devices == 1:
        return
    kind = resolve_device(device).type
    if ":" in device:
        raise ValueError(f"--devices {devices} spreads the work over devices 0..{devices - 1}; give --device {kind} instead of --device {device}")
    if kind == "cuda" and devices > torch.cuda.device_count():
        raise ValueError(f"--devices {devices}: this machine has {torch.cuda.device_count()} CUDA device(s)")


# ---------------------------------------------------------------- 8-bit outputs

#: Outputs larger than this (MiB of 8-bit pixels) are made in a memory-mapped file and written in strips.
MEMMAP_MIB = 64


def write_png(image: np.ndarray, path: str | os.PathLike, compress_level: int = 6, strip_bytes: int = 1 << 20) -> None:
    """Write an 8-bit image as PNG a strip of rows at a time, so no copy of the whole image is made
    (Pillow first converts RGB to 4 bytes per pixel). Every row uses PNG's Up filter (the
    difference to the row above): on photos it compresses as well as Pillow's default at a
    fraction of the cost of choosing a filter per row.

    Shape:
        - image: :math:`(H, W, C)` ``uint8`` with ``C`` 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); may be a ``numpy.memmap``.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"write_png takes an (H, W, 1|2|3|4) uint8 array; got {image.dtype} {tuple(image.shape)}")
    height, width, channels = image.shape
    row_bytes = width * channels
    strip = max(1, strip_bytes // max(row_bytes, 1))
    compressor = zlib.compressobj(compress_level)

    def chunk(handle: Any, kind: bytes, data: bytes) -> None:
        handle.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        chunk(handle, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0))
        previous = np.zeros((1, row_bytes), np.uint8)
        for top in range(0, height, strip):
            rows = np.asarray(image[top : top + strip]).reshape(-1, row_bytes)
            filtered = np.empty((rows.shape[0], row_bytes + 1), np.uint8)
            filtered[:, 0] = 2  # Up
            np.subtract(rows, np.concatenate([previous, rows[:-1]]), out=filtered[:, 1:])  # wraps modulo 256, as PNG wants
            data = compressor.compress(filtered.tobytes())
            if data:
                chunk(handle, b"IDAT", data)
            previous = rows[-1:].copy()
        chunk(handle, b"IDAT", compressor.flush())
        chunk(handle, b"IEND", b"")


@dataclass
class SRImage:
    """One super-resolved image on its way to ``output``: ``pixels`` ``(H, W, C)`` uint8, held in
    memory or in the memory-mapped file ``backing`` (deleted once written)."""

    output: Path
    pixels: np.ndarray
    backing: Path | None = None

    def write(self) -> None:
        """Write the PNG (large images a strip at a time) and delete the backing file."""
        try:
            if self.backing is not None:
                write_png(self.pixels, self.output)
            else:
                Image.fromarray(self.pixels.squeeze(-1) if self.pixels.shape[-1] == 1 else self.pixels).save(self.output)
        finally:
            self.discard()

    def discard(self) -> None:
        """Release the pixels (and the backing file) without writing."""
        self.pixels = np.empty((0, 0, 0), np.uint8)
        if self.backing is not None:
            self.backing.unlink(missing_ok=True)


def output_size(generator: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The output's ``(H, W)`` for an ``height x width`` input."""
    factor = 1 if generator_spec(generator).input_upsampled else generator_spec(generator).scale
    return height * factor, width * factor


#: ``--alpha``: how an alpha channel is upscaled (the colour always goes through the generator).
ALPHA_MODES = ("imresize", "generator")
#: ITU-R BT.601 luma, as Pillow's ``convert("L")``: a grey input's output is grey again.
_LUMA = (0.299, 0.587, 0.114)


class KeepChannels(nn.Module):
    """An RGB generator for grey, grey + alpha, RGB and RGBA images: the output has the input's channels.

    Grey runs through the generator as three equal channels and comes back as its BT.601 luma.
    Alpha is upscaled apart from the colour, as Real-ESRGAN does: with ``alpha="imresize"``
    by MATLAB-style bicubic (:func:`salightning.ops.imresize`: smooth edges, no texture invented in
    a mask), with ``alpha="generator"`` through the generator as a grey image (sharper edges, twice
    the work). Tiling is exact either way (the bicubic kernel reaches 2 input pixels).

    Args:
        generator: a single-image generator taking RGB in [0, 1].
        alpha: one of :data:`ALPHA_MODES`.

    Shape:
        - x: :math:`(B, C, h, w)`, :math:`C \\in \\{1, 2, 3, 4\\}`.
        - Output: :math:`(B, C, h \\cdot s, w \\cdot s)`.
    """

    def __init__(self, generator: nn.Module, alpha: str = "imresize") -> None:
        super().__init__()
        if alpha not in ALPHA_MODES:
            raise ValueError(f"--alpha must be one of {', '.join(ALPHA_MODES)}; got --alpha={alpha}")
        self.generator, self.alpha = generator, alpha
        self.scale, self.num_frames, self.input_upsampled = generator_spec(generator)

    def _grey(self, x: Tensor) -> Tensor:
        sr = self.generator(x.expand(-1, 3, -1, -1))
        weights = torch.tensor(_LUMA, dtype=sr.dtype, device=sr.device).view(1, 3, 1, 1)
        return (sr * weights).sum(1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        from salightning.ops import imresize

        channels = x.shape[1]
        if channels not in (1, 2, 3, 4):
            raise ValueError(f"KeepChannels takes 1 to 4 channels (grey, grey + alpha, RGB, RGBA); got shape {tuple(x.shape)}")
        if channels == 3:
            return self.generator(x)
        colour = self._grey(x[:, :1]) if channels < 3 else self.generator(x[:, :3])
        if channels == 1:
            return colour
        alpha = x[:, -1:]
        alpha = self._grey(alpha) if self.alpha == "generator" else imresize(alpha.float(), self.scale).to(colour.dtype)
        return torch.cat([colour, alpha], 1)


def output_name(path: Path, suffix: str = "") -> str:
    """The output PNG's name of the image ``path``: ``<stem><suffix>.png``."""
    return f"{path.stem}{suffix}.png"


def super_resolve_images(
    generator: nn.Module,
    files: Sequence[Path],
    out: Path,
    tile: int = 256,
    overlap: int = 32,
    tile_batch: int = 4,
    batch_size: int = 1,
    memmap_mib: float = MEMMAP_MIB,
    suffix: str = "",
    alpha: str = "imresize",
    progress: bool | None = None,
) -> Iterator[SRImage]:
    """Super-resolve image files into 8-bit outputs, ``out/<stem><suffix>.png`` each (not yet written),
    with the input's channels: grey stays grey, alpha is kept (:class:`KeepChannels`).

    Consecutive images of equal size and channels run through the generator ``batch_size`` at a
    time; another image starts a new batch. An image whose 8-bit output exceeds ``memmap_mib`` MiB runs
    alone into a ``numpy.memmap`` in a hidden temporary file in ``out`` (deleted once written), so
    memory holds about one 8-bit output plus the tiles of one batch. ``progress`` shows bars for
    the images and for the tiles of each image (``None``: when stderr is a terminal).
    """
    from tqdm import tqdm

    from salightning.data.io import read_image_channels

    device = next(generator.parameters()).device
    generator = KeepChannels(generator, alpha)
    pending: list[tuple[Path, Tensor]] = []
    bar = tqdm(total=len(files), unit="image", desc="images", disable=len(files) < 2 or (None if progress is None else not progress))

    def flush() -> Iterator[SRImage]:
        batch = torch.stack([lr for _, lr in pending]).to(device)
        sr = tiled_forward_uint8_batch(generator, batch, tile, overlap, tile_batch, progress=progress)
        names = [path for path, _ in pending]
        pending.clear()
        del batch
        for i, path in enumerate(names):
            yield SRImage(out / output_name(path, suffix), sr[i])
            bar.update(1)

    try:
        for path in files:
            lr = read_image_channels(path)
            height, width = output_size(generator, *lr.shape[-2:])
            if pending and (len(pending) == batch_size or pending[0][1].shape != lr.shape):
                yield from flush()
            if height * width * lr.shape[0] > memmap_mib * 2**20:
                handle, name = tempfile.mkstemp(dir=out, prefix=f".{path.stem}.", suffix=".uint8")
                os.close(handle)
                backing = Path(name)
                try:
                    pixels = np.memmap(backing, dtype=np.uint8, mode="w+", shape=(height, width, lr.shape[0]))
                    tiled_forward_uint8(generator, lr[None].to(device), tile, overlap, tile_batch, out=pixels, progress=progress)
                except BaseException:
                    backing.unlink(missing_ok=True)
                    raise
                del lr  # not held while the PNG is written
                yield SRImage(out / output_name(path, suffix), pixels, backing)
                bar.update(1)
            else:
                pending.append((path, lr))
        if pending:
            yield from flush()
    finally:
        bar.close()


# ---------------------------------------------------------------- predict


def predict_path(
    generator: nn.Module,
    input: str | os.PathLike,
    output: str | os.PathLike,
    tile: int = 256,
    overlap: int = 32,
    tile_batch: int = 4,
    batch_size: int = 1,
    memmap_mib: float = MEMMAP_MIB,
    video_options: dict[str, Any] | None = None,
    suffix: str = "",
    overwrite: bool = False,
    alpha: str = "imresize",
    progress: bool | None = None,
) -> list[Path]:
    """Super-resolve an image, a folder of images, a folder of frames, a video file, or a folder
    of video files.

    * an image: ``output/<stem><suffix>.png``, grey, grey + alpha, RGB or RGBA as the input
      (alpha upscaled by ``alpha``, see :class:`KeepChannels`);
    * a folder: each image as above (single-image generator), or, for a video generator, the
      folder is one clip: ``output/<folder><suffix>/<frame>.png``;
    * a video file: ``output/<stem><suffix>/frame_NNNNN.png`` and ``output/<stem><suffix>_sr.mp4``
      (codec, quality, frame rate and audio from the input unless ``video_options`` say otherwise);
    * a folder holding videos and no images: each video as above.

    An existing file is never replaced unless ``overwrite`` (then it is replaced, a symlink
    included, not written through); an input never is. ``progress`` shows bars for images, tiles
    and frames (``None``: when stderr is a terminal).

    Clips are streamed (:func:`salightning.video_io.predict_clip`): memory holds the generator's
    window of frames, not the clip; a progress bar shows frames/s on a terminal. Images are
    batched by ``batch_size`` when they have equal sizes, and made in a memory-mapped file when
    their 8-bit output exceeds ``memmap_mib`` MiB (:func:`super_resolve_images`).

    Returns:
        the files written.

    Raises:
        FileNotFoundError: the input does not exist.
        ValueError: unreadable input, an output that would overwrite the input, or bad tiling options.
        FileExistsError: an output exists and ``overwrite`` is not set; the message names it.
        OSError: a file could not be written (full or read-only disk), with its errno and name;
            the files of this call are removed, and the folders it created (the frames of a clip
            that failed mid-stream are kept, and named in the error).
    """
    src, out = Path(input).expanduser(), Path(output).expanduser()
    check_tiling(tile, overlap, tile_batch)
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1; got --batch_size={batch_size}")
    units = work_units(generator, src, out, suffix, overwrite)
    written: list[Path] = []
    clip_folders = [clip_outputs(u, out, suffix)[0] for u in units if u.kind != "image"]
    created = [p for p in (*clip_folders, out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        run_units(
            generator, units, out, tile, overlap, tile_batch, batch_size, memmap_mib, video_options, written,
            suffix=suffix, overwrite=overwrite, alpha=alpha, progress=progress,
        )
        return written
    except BaseException as err:
        if not isinstance(err, ClipDecodeError):  # a damaged clip keeps the frames made before it
            remove_outputs(written, created)
        if isinstance(err, OSError) and err.errno is not None:
            raise write_error(err, written[-1] if written else out) from err
        raise


@dataclass(frozen=True)
class WorkUnit:
    """One input of a predict run: an image, a video file or a folder of frames (one clip)."""

    kind: str  # "image", "video" or "frames"
    path: Path


def clip_outputs(unit: WorkUnit, out: Path, suffix: str = "") -> tuple[Path, Path | None]:
    """Where a clip's SR goes: its folder of PNG frames and, for a video file, its SR video."""
    if unit.kind == "video":
        return out / f"{unit.path.stem}{suffix}", out / f"{unit.path.stem}{suffix}_sr.mp4"
    return out / f"{resolve_path(unit.path, '--input').name}{suffix}", None


def planned_outputs(unit: WorkUnit, out: Path, suffix: str = "") -> list[Path]:
    """The files ``unit`` will write under ``out``."""
    from salightning.data.io import FrameFolder, VideoFile

    if unit.kind == "image":
        return [out / output_name(unit.path, suffix)]
    frames_dir, video = clip_outputs(unit, out, suffix)
    if unit.kind == "video":
        return [frames_dir / f"frame_{t:05d}.png" for t in range(len(VideoFile(unit.path)))] + [video]
    return [frames_dir / f"{frame.stem}.png" for frame in FrameFolder(unit.path, option="--input").frames]


def check_outputs_free(units: Sequence[WorkUnit], out: Path, suffix: str, overwrite: bool) -> None:
    """Refuse outputs that exist (unless ``overwrite``) or that are, through a symlink, one of the inputs (always)."""
    from salightning.data.io import FrameFolder

    inputs = {resolve_path(u.path, "--input") for u in units if u.kind != "frames"}
    inputs |= {resolve_path(f, "--input") for u in units if u.kind == "frames" for f in FrameFolder(u.path, option="--input").frames}
    planned = [p for u in units for p in planned_outputs(u, out, suffix)]
    onto_inputs = [p for p in planned if resolve_path(p, "--output") in inputs]
    if onto_inputs:
        raise ValueError(f"--output {str(out)!r}: {onto_inputs[0]} is an input (inputs are never overwritten, even with --overwrite); choose another --output or --suffix")
    if not overwrite:
        check_not_existing(planned, f"--output {str(out)!r}", "choose another --output or --suffix")


def work_units(generator: nn.Module, src: Path, out: Path, suffix: str = "", overwrite: bool = False) -> list[WorkUnit]:
    """The inputs of ``--input`` as work units, checked before any work (existence, types,
    outputs that would overwrite inputs, each other, or existing files unless ``overwrite``)."""
    units = _find_units(generator, src, out)
    check_outputs_free(units, out, suffix, overwrite)
    return units


def _find_units(generator: nn.Module, src: Path, out: Path) -> list[WorkUnit]:
    from salightning.data.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_images

    resolve_path(src, "--input")  # a symlink loop is named as one, not as a missing file
    if not src.exists():
        raise FileNotFoundError(f"--input {str(src)!r} does not exist")
    video_model = generator_spec(generator).num_frames > 1
    _check_output(src, out, video_model)
    if src.is_file() and src.suffix.lower() in VIDEO_EXTENSIONS:
        return [WorkUnit("video", src)]
    if src.is_file():
        if src.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"--input {str(src)!r} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a video ({', '.join(VIDEO_EXTENSIONS)})")
        if video_model:
            raise ValueError(f"--input {str(src)!r} is a single image but the checkpoint's generator needs {generator.num_frames} frames: give a folder of frames or a video")
        return [WorkUnit("image", src)]
    has_images = src.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in src.iterdir())
    videos = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) if src.is_dir() else []
    if videos and not has_images:
        return [WorkUnit("video", p) for p in videos]
    if video_model:
        return [WorkUnit("frames", src)]
    files = list_images(src, option="--input")
    stems = Counter(p.stem for p in files)
    clashes = sorted(p.name for p in files if stems[p.stem] > 1)
    if clashes:
        raise ValueError(f"--input {str(src)!r}: {', '.join(clashes)} would all be written to the same output PNG; rename or move them")
    return [WorkUnit("image", p) for p in files]


def run_units(
    generator: nn.Module,
    units: Sequence[WorkUnit],
    out: Path,
    tile: int,
    overlap: int,
    tile_batch: int,
    batch_size: int,
    memmap_mib: float,
    video_options: dict[str, Any] | None,
    written: list[Path],
    *,
    suffix: str = "",
    overwrite: bool = False,
    alpha: str = "imresize",
    progress: bool | None = None,
) -> None:
    """Super-resolve ``units`` into ``out`` (checked by :func:`work_units`); each file is appended
    to ``written`` before it is written. ``overwrite`` removes an existing output first."""
    from salightning.data.io import FrameFolder, VideoFile, probe_image
    from salightning.video_io import predict_clip

    images = [u.path for u in units if u.kind == "image"]
    for item in super_resolve_images(generator, images, out, tile, overlap, tile_batch, batch_size, memmap_mib, suffix, alpha, progress):
        if overwrite:
            item.output.unlink(missing_ok=True)  # replace a symlink, never write through it
        written.append(item.output)
        item.write()
    for unit in units:
        if unit.kind == "image":
            continue
        frames_dir, video = clip_outputs(unit, out, suffix)
        if overwrite:
            for path in planned_outputs(unit, out, suffix):
                path.unlink(missing_ok=True)
        if unit.kind == "video":
            predict_clip(
                generator, VideoFile(unit.path), frames_dir, video, tile=tile, overlap=overlap, tile_batch=tile_batch,
                progress=progress, written=written, **(video_options or {}),
            )
        else:
            clip = FrameFolder(unit.path, option="--input")
            if probe_image(clip.frames[0]).has_alpha:
                print(f"salightning: note: the frames in {unit.path} have an alpha channel; a video generator sees RGB, so the SR frames have none", file=sys.stderr)
            predict_clip(
                generator, clip, frames_dir, None, [frame.stem for frame in clip.frames],
                tile=tile, overlap=overlap, tile_batch=tile_batch, progress=progress, written=written,
            )


# ---------------------------------------------------------------- several devices


class RankSplit(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``length`` items: each rank gets its share, every
    item exactly once (unlike ``DistributedSampler``, which pads with repeats)."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world); got rank={rank}, world={world}")
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


def _lightning_parts() -> tuple[type, type]:
    # Built on first use: Lightning is imported only for --devices > 1.
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import BasePredictionWriter

    class PredictionModule(pl.LightningModule):
        """Lightning's predict loop over work units: each batch is a rank's next units."""

        def __init__(self, generator: nn.Module, units: Sequence[WorkUnit], out: Path, options: dict[str, Any]) -> None:
            super().__init__()
            self.generator, self.units, self.out, self.options = generator, list(units), out, options

        def predict_dataloader(self) -> torch.utils.data.DataLoader:
            batch = self.options["batch_size"] if all(u.kind == "image" for u in self.units) else 1
            sampler = RankSplit(len(self.units), self.trainer.global_rank, self.trainer.world_size)
            return torch.utils.data.DataLoader(range(len(self.units)), batch_size=batch, sampler=sampler, collate_fn=list)

        def predict_step(self, batch: list[int], batch_idx: int) -> list[Any]:
            units = [self.units[i] for i in batch]
            o = self.options
            images = [u.path for u in units if u.kind == "image"]
            made: list[Any] = list(super_resolve_images(
                self.generator, images, self.out, o["tile"], o["overlap"], o["tile_batch"], o["batch_size"], o["memmap_mib"], o["suffix"], o["alpha"], False,
            ))
            clips = [u for u in units if u.kind != "image"]
            if clips:  # clips are streamed: their frames are written as they are made
                written: list[Path] = []
                run_units(
                    self.generator, clips, self.out, o["tile"], o["overlap"], o["tile_batch"], 1, o["memmap_mib"], o["video_options"], written,
                    suffix=o["suffix"], overwrite=o["overwrite"], alpha=o["alpha"], progress=False,
                )
                made += written
            return made

    class RankWriter(BasePredictionWriter):
        """Writes each rank's images as its batches end; records every file (``written``)."""

        def __init__(self, overwrite: bool = False) -> None:
            super().__init__(write_interval="batch")
            self.written: list[Path] = []
            self.overwrite = overwrite

        def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            for item in prediction:
                if isinstance(item, SRImage):
                    if self.overwrite:
                        item.output.unlink(missing_ok=True)
                    self.written.append(item.output)
                    item.write()
                else:
                    self.written.append(item)

    return PredictionModule, RankWriter


def predict_on_devices(
    generator: nn.Module, input: str | os.PathLike, output: str | os.PathLike, devices: int, accelerator: str = "cpu", **options: Any
) -> list[Path]:
    """:func:`predict_path` spread over ``devices`` processes by Lightning's predict loop (DDP:
    NCCL on GPUs, gloo on CPUs): the work units (images, videos) are split between the ranks
    (:class:`RankSplit`) and each rank writes its own outputs. Call it from a script that can be
    started again (Lightning launches the other ranks by re-running the command).

    Returns:
        the files this rank wrote.
    """
    import pytorch_lightning as pl

    options = {
        "tile": 256, "overlap": 32, "tile_batch": 4, "batch_size": 1, "memmap_mib": MEMMAP_MIB, "video_options": None,
        "suffix": "", "overwrite": False, "alpha": "imresize", **options,
    }
    options.pop("progress", None)  # one bar per rank would interleave
    check_tiling(options["tile"], options["overlap"], options["tile_batch"])
    src, out = Path(input).expanduser(), Path(output).expanduser()
    units = work_units(generator, src, out, options["suffix"], options["overwrite"])
    out.mkdir(parents=True, exist_ok=True)
    module_cls, writer_cls = _lightning_parts()
    writer = writer_cls(options["overwrite"])
    trainer = pl.Trainer(
        accelerator=accelerator, devices=devices, strategy="ddp" if devices > 1 else "auto", use_distributed_sampler=False,
        logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False, callbacks=[writer],
    )
    trainer.predict(module_cls(generator, units, out, options), return_predictions=False)
    return writer.written


# ---------------------------------------------------------------- the command


def add_arguments(parser: Any) -> None:
    """The options of ``salightning predict`` (a jsonargparse ``ArgumentParser``)."""
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by `salightning fit`, or a file written by `salightning export`")
    parser.add_argument("--generator", type=str | None, default=None, help="class path of the generator of an exported .pth (safetensors exports name it)")
    parser.add_argument("--generator_init_args", type=dict | None, default=None, help="the generator's init args for --generator, e.g. '{scale: 4}'")
    parser.add_argument("--input", type=str, required=True, help="an image, a folder of images, a folder of frames, a video file, or a folder of videos")
    parser.add_argument("--output", type=str, required=True, help="output folder (created; inputs are never overwritten)")
    parser.add_argument("--tile", type=int, default=256, help="tiles hold at most tile x tile input pixels (the fewest equal tiles that cover the input are used), 0 = no tiling")
    parser.add_argument("--tile_overlap", type=int, default=32, help="least overlap between neighbouring tiles in input pixels (even)")
    parser.add_argument("--tile_batch", type=int, default=4, help="tiles run through the generator at once")
    parser.add_argument("--batch_size", type=int, default=1, help="equal-size images run through the generator at once (other sizes: one at a time)")
    parser.add_argument("--precision", type=str, default="32", choices=list(PRECISIONS), help="32, bf16 (CPU or GPU) or fp16 (GPU only): the generator's weights and activations")
    parser.add_argument("--no_ema", action="store_true", help="use the raw generator even if the checkpoint has an EMA one")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    parser.add_argument("--devices", type=int, default=1, help="processes (GPUs, or CPU processes with --device cpu) that share the inputs through Lightning's predict loop")
    parser.add_argument("--memmap_mib", type=float, default=MEMMAP_MIB, help="images whose 8-bit output is larger (MiB) are made in a memory-mapped file next to the output and written in strips")
    parser.add_argument("--video_codec", type=str | None, default=None, help="encoder of the output video (default: the input's codec where an encoder exists, else libx264)")
    parser.add_argument("--crf", type=int | None, default=None, help="quality of the output video (default: the input's x264/x265 CRF when it records one, else 12)")
    parser.add_argument("--trust_module", type=str, nargs="+", default=[], help=TRUST_HELP)
    parser.add_argument("--suffix", type=str, default="", help="appended to each output's name: photo.png -> photo<suffix>.png (e.g. _x4)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never an input); without it an existing output stops the run before any work")
    parser.add_argument(
        "--alpha", type=str, default="imresize", choices=list(ALPHA_MODES),
        help="upscaling of an alpha channel (kept, apart from the colour): imresize = bicubic, smooth; generator = through the network as grey, sharper",
    )
    parser.add_argument("--progress", type=bool | None, default=None, help="progress bars for images, tiles and frames (default: when stderr is a terminal)")


def main(args: Any) -> list[Path]:
    """Run ``salightning predict`` with parsed ``args`` (see :func:`add_arguments`). Every option
    is checked before the checkpoint is read or any work is done."""
    from salightning.export import load_for_predict

    device = resolve_device(args.device)
    dtype = check_precision(args.precision, device)
    check_tiling(args.tile, args.tile_overlap, args.tile_batch)
    check_devices(args.devices, args.device)
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1; got --batch_size={args.batch_size}")
    if "/" in args.suffix or os.sep in args.suffix:
        raise ValueError(f"--suffix is appended to file names and cannot hold a path separator; got --suffix={args.suffix!r}")
    if args.crf is not None and not 0 <= args.crf <= 63:
        raise ValueError(f"--crf must be in [0, 63] (0 = lossless, 12 visually lossless); got --crf={args.crf}")
    video_options = {"codec": args.video_codec, "crf": args.crf}
    if args.video_codec is not None:
        from salightning.video_io import check_encoder

        check_encoder(args.video_codec)
    many = args.devices > 1
    generator = load_for_predict(
        args.ckpt_path, args.generator, args.generator_init_args, use_ema=not args.no_ema,
        map_location="cpu" if many else device, trusted_modules=args.trust_module,
    ).to(dtype)
    options = {
        "tile": args.tile, "overlap": args.tile_overlap, "tile_batch": args.tile_batch, "batch_size": args.batch_size, "memmap_mib": args.memmap_mib,
        "video_options": video_options, "suffix": args.suffix, "overwrite": args.overwrite, "alpha": args.alpha, "progress": args.progress,
    }
    if many:
        written = predict_on_devices(generator, args.input, args.output, args.devices, "gpu" if device.type == "cuda" else "cpu", **options)
        rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))
        print(f"rank {rank}: wrote {len(written)} file(s) to {Path(args.output).resolve()}")
        return written
    written = predict_path(generator, args.input, args.output, **options)
    print(f"wrote {len(written)} file(s) to {Path(args.output).resolve()}")
    return written
