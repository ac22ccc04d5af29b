"""Inference: rebuild a generator from a checkpoint and super-resolve large inputs tile by tile
(the tile grid and the seam rule: :mod:`salightning.tiling`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from salightning.paths import check_output_not_inside, remove_outputs, resolve_path, write_error
from salightning.tiling import check_tiling, tiled_forward, tiled_forward_uint8
from salightning.video_io import ClipDecodeError


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
    from salightning.data.imresize import imresize
    from salightning.data.video import reflect_index

    device = next(generator.parameters()).device
    num_frames = int(getattr(generator, "num_frames", 1))
    scale = int(getattr(generator, "scale", 1))
    k = num_frames // 2
    outputs = []
    for t in range(frames.shape[0]):
        if num_frames == 1:
            x = frames[t : t + 1].to(device)
        else:
            idx = [reflect_index(t + d, frames.shape[0]) for d in range(-k, k + 1)]
            x = frames[idx].to(device)
            if getattr(generator, "input_upsampled", False):
                # 8-bit levels, as the video datamodule feeds them in training
                x = (imresize(x, scale).clamp(0, 1) * 255).round() / 255
            x = x.unsqueeze(0)
        outputs.append(tiled_forward(generator, x, tile, overlap, tile_batch).clamp(0, 1)[0].cpu())
    return torch.stack(outputs)


def predict_path(
    generator: nn.Module,
    input: str | os.PathLike,
    output: str | os.PathLike,
    tile: int = 256,
    overlap: int = 32,
    tile_batch: int = 4,
) -> list[Path]:
    """Super-resolve an image, a folder of images, a folder of frames, or a video file.

    * an image: ``output/<name>.png``;
    * a folder: each image to ``output/<name>.png`` (single-image generator), or, for a video
      generator, the folder is one clip: ``output/<folder>/<frame>.png``;
    * a video file: ``output/<stem>/frame_NNNNN.png`` and ``output/<stem>_sr.mp4`` (at the input's
      frame rate).

    Clips are streamed (:func:`salightning.video_io.predict_clip`): memory holds the generator's
    window of frames, not the clip; a progress bar shows frames/s on a terminal.

    Returns:
        the files written.

    Raises:
        FileNotFoundError: the input does not exist.
        ValueError: unreadable input, an output that would overwrite the input, or bad tiling options.
        OSError: a file could not be written (full or read-only disk), with its errno and name;
            the files of this call are removed, and the folders it created (the frames of a clip
            that failed mid-stream are kept, and named in the error).
    """
    src, out = Path(input).expanduser(), Path(output).expanduser()
    resolve_path(src, "--input")  # a symlink loop is named as one, not as a missing file
    if not src.exists():
        raise FileNotFoundError(f"--input {str(src)!r} does not exist")
    check_tiling(tile, overlap, tile_batch)
    video_model = int(getattr(generator, "num_frames", 1)) > 1
    _check_output(src, out, video_model)
    written: list[Path] = []
    clip_folders = (out / src.stem, out / resolve_path(src, "--input").name)  # video outputs go into one
    created = [p for p in (*clip_folders, out, *out.parents) if not p.exists()]
    try:
        return _predict_into(generator, src, out, tile, overlap, tile_batch, written)
    except BaseException as err:
        if not isinstance(err, ClipDecodeError):  # a damaged clip keeps the frames made before it
            remove_outputs(written, created)
        if isinstance(err, OSError) and err.errno is not None:
            raise write_error(err, written[-1] if written else out) from err
        raise


def _predict_into(generator: nn.Module, src: Path, out: Path, tile: int, overlap: int, tile_batch: int, written: list[Path]) -> list[Path]:
    """The work of :func:`predict_path`: each file is appended to ``written`` before it is written."""
    from salightning.data.image import IMAGE_EXTENSIONS, list_images, read_image
    from salightning.data.video import VIDEO_EXTENSIONS, FrameFolder, VideoFile
    from salightning.video_io import predict_clip

    device = next(generator.parameters()).device
    video_model = int(getattr(generator, "num_frames", 1)) > 1
    out.mkdir(parents=True, exist_ok=True)
    if src.is_file() and src.suffix.lower() in VIDEO_EXTENSIONS:
        return predict_clip(
            generator, VideoFile(src), out / src.stem, out / f"{src.stem}_sr.mp4", tile=tile, overlap=overlap, tile_batch=tile_batch, written=written
        )
    if src.is_file():
        if src.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"--input {str(src)!r} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a video ({', '.join(VIDEO_EXTENSIONS)})")
        if video_model:
            raise ValueError(f"--input {str(src)!r} is a single image but the checkpoint's generator needs {generator.num_frames} frames: give a folder of frames or a video")
        files = [src]
    elif video_model:
        clip = FrameFolder(src, option="--input")
        names = [frame.stem for frame in clip.frames]
        return predict_clip(
            generator, clip, out / resolve_path(src, "--input").name, None, names, tile=tile, overlap=overlap, tile_batch=tile_batch, written=written
        )
    else:
        files = list_images(src, option="--input")
        stems = Counter(p.stem for p in files)
        clashes = sorted(p.name for p in files if stems[p.stem] > 1)
        if clashes:
            raise ValueError(f"--input {str(src)!r}: {', '.join(clashes)} would all be written to the same output PNG; rename or move them")
    for path in files:
        lr = read_image(path).unsqueeze(0).to(device)
        sr = tiled_forward_uint8(generator, lr, tile, overlap, tile_batch)
        written.append(out / f"{path.stem}.png")
        Image.fromarray(sr.squeeze(-1) if sr.shape[-1] == 1 else sr).save(written[-1])
        del sr
    return written
