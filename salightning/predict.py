"""Inference: rebuild a generator from a checkpoint and super-resolve large inputs tile by tile
(the tile grid and the seam rule: :mod:`salightning.tiling`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from salightning.tiling import check_tiling, tiled_forward, tiled_forward_uint8
from salightning.weights import load_state_dict_file


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


def _check_output(src: Path, out: Path) -> None:
    # Outputs keep the inputs' names, so writing into the input folder would overwrite them.
    src_dir = src.resolve() if src.is_dir() else src.resolve().parent
    if out.resolve() == src_dir or (out.exists() and not out.is_dir()):
        raise ValueError(
            f"--output {str(out)!r} must be a folder other than the input's (inputs are never overwritten)"
        )


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
    """
    from salightning.data.image import IMAGE_EXTENSIONS, list_images, read_image
    from salightning.data.video import VIDEO_EXTENSIONS, FrameFolder, VideoFile
    from salightning.video_io import predict_clip

    check_tiling(tile, overlap, tile_batch)
    src, out = Path(input).expanduser(), Path(output).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"--input {str(src)!r} does not exist")
    _check_output(src, out)
    device = next(generator.parameters()).device
    video_model = int(getattr(generator, "num_frames", 1)) > 1
    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    if src.is_file() and src.suffix.lower() in VIDEO_EXTENSIONS:
        return predict_clip(
            generator, VideoFile(src), out / src.stem, out / f"{src.stem}_sr.mp4", tile=tile, overlap=overlap, tile_batch=tile_batch
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
        return predict_clip(generator, clip, out / src.name, None, names, tile=tile, overlap=overlap, tile_batch=tile_batch)
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
