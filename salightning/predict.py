"""Inference: rebuild a generator from a checkpoint and super-resolve large inputs tile by tile
(the tile grid and the seam rule: :mod:`salightning.tiling`).
"""

from __future__ import annotations

import importlib.util
import os
from argparse import ArgumentError
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from salightning.checkpoint_io import CHECKSUM_KEY, save_atomically, tensor_digest
from salightning.paths import check_output_not_inside, remove_outputs, resolve_path, write_error
from salightning.tiling import check_tiling, tiled_forward, tiled_forward_uint8
from salightning.video_io import ClipDecodeError
from salightning.weights import load_state_dict_file


#: Help of the ``--trust_module`` option of predict, export and evaluate/test.
TRUST_HELP = (
    "modules besides salightning whose classes a checkpoint may name as its generator (importing a module "
    "runs its code; a checkpoint is never trusted to choose one)"
)


def class_paths(config: Any) -> list[str]:
    """Every ``class_path`` in a nested config (dicts and lists)."""
    if isinstance(config, dict):
        own = [config["class_path"]] if isinstance(config.get("class_path"), str) else []
        return own + [c for v in config.values() for c in class_paths(v)]
    if isinstance(config, (list, tuple)):
        return [c for v in config for c in class_paths(v)]
    return []


def check_trusted_classes(config: Any, trusted_modules: Sequence[str], source: str, allow: str = "") -> None:
    """Raise a ``ValueError`` unless every ``class_path`` in ``config`` (read from ``source``, a
    file) is a class of ``salightning`` or of a module in ``trusted_modules`` (or below it):
    importing a module runs its code, so a file never chooses which. ``allow`` says how to trust
    more (default: the ``--trust_module`` option)."""
    trusted = ("salightning", *trusted_modules)
    for class_path in class_paths(config):
        module = class_path.rpartition(".")[0]
        if not any(module == name or module.startswith(name + ".") for name in trusted):
            top = module.partition(".")[0] or class_path
            raise ValueError(
                f"{source} asks for the class {class_path!r}, which is not part of salightning; importing it would "
                "run code chosen by the file. If you trust it, allow it "
                + (allow or f"with --trust_module {top} (Python: trusted_modules=[{top!r}])")
            )


def load_generator(
    checkpoint: str | os.PathLike,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    trusted_modules: Sequence[str] = (),
) -> nn.Module:
    """Rebuild the generator of a checkpoint written by ``salightning fit`` and load its weights.

    The generator's class and arguments come from the checkpoint's hyper-parameters (the
    LightningCLI config); only the generator is built, so no VGG/LPIPS weights are needed.
    The EMA generator is used when the checkpoint has one and ``use_ema`` is true. Only classes
    of ``salightning`` and of the modules named in ``trusted_modules`` are imported.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a salightning checkpoint, does not match its generator, names
            an untrusted class, or one whose module cannot be imported.
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
    check_trusted_classes(gen_cfg, trusted_modules, f"checkpoint {str(path)!r}")
    for class_path in class_paths(gen_cfg):
        module = class_path.rpartition(".")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise ValueError(
                f"checkpoint {str(path)!r}: its generator class {class_path!r} cannot be imported: no module "
                f"named {module!r} (install it, or run where it can be imported)"
            )
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "generator", fail_untyped=False)
    try:
        generator = parser.instantiate_classes(parser.parse_object({"generator": gen_cfg})).generator
    except (ArgumentError, ImportError, ValueError, TypeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"checkpoint {str(path)!r}: cannot build its generator {gen_cfg['class_path']!r}: {reason}") from None
    prefix = "generator_ema.module." if use_ema and any(k.startswith("generator_ema.module.") for k in state) else "generator."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {str(path)!r}: generator weights do not match its config: {err}") from err
    return generator.eval().to(map_location)


def export_generator(
    checkpoint: str | os.PathLike, output: str | os.PathLike, use_ema: bool = True, trusted_modules: Sequence[str] = ()
) -> Path:
    """Write the generator weights of a ``salightning fit`` checkpoint as a plain state dict
    (loadable by :func:`salightning.models.load_pretrained` and as ``pretrained_generator``).
    Refuses to overwrite an existing file."""
    out = Path(output)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} exists; choose another output path")
    check_output_not_inside([checkpoint], out, "--output")
    generator = load_generator(checkpoint, use_ema=use_ema, trusted_modules=trusted_modules)
    state = generator.state_dict()
    setattr(state, CHECKSUM_KEY, tensor_digest(state))  # an attribute: the file stays a plain state dict
    save_atomically(state, out, "export", "nothing was written")  # never a half-written file under any name
    return out


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
