"""Exports other tools load: a torch state dict (``.pth``), safetensors with the architecture in
its metadata, and ONNX with dynamic batch / height / width.

Which tool reads which format:

* ``pth``: :func:`salightning.checkpoints.load_pretrained`; spandrel (chaiNNer, ComfyUI) for
  :class:`~salightning.models.RRDBNet` with ``growth_channels=32`` at scale 2 or 4 (1 or 2 with
  ``pixel_unshuffle``; spandrel reads scale 3 as 2), also from ``safetensors``.
* ``safetensors``: :func:`load_exported` (the architecture comes from the metadata) and
  :func:`salightning.checkpoints.load_pretrained`; any safetensors reader gets the tensors.
* ``onnx``: onnxruntime, TensorRT, OpenVINO (input ``lr``, output ``sr``, in [0, 1]).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from salightning.paths import check_output_not_inside
from salightning.checkpoints import NotACheckpointError, build_generator, export_generator, generator_config, load_generator, load_pretrained, load_state_dict_file
from salightning.models.protocol import generator_spec

FORMATS = ("pth", "safetensors", "onnx")


def _fresh(output: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(output)
    if out.exists():
        raise FileExistsError(f"--output {str(out)!r} exists; choose another output path")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, out.with_name(out.name + ".tmp")


def save_safetensors(generator: nn.Module, config: dict[str, Any], output: str | os.PathLike) -> Path:
    """Write ``generator``'s weights as safetensors with metadata ``salightning.class_path``,
    ``salightning.init_args`` (JSON), ``scale``, ``num_frames`` and ``input_upsampled``."""
    from safetensors.torch import save_file

    out, tmp = _fresh(output)
    metadata = {
        "salightning.class_path": str(config["class_path"]),
        "salightning.init_args": json.dumps(config.get("init_args", {}), sort_keys=True),
        "scale": str(generator_spec(generator).scale),
        "num_frames": str(generator_spec(generator).num_frames),
        "input_upsampled": str(generator_spec(generator).input_upsampled),
    }
    save_file({k: v.detach().contiguous() for k, v in generator.state_dict().items()}, str(tmp), metadata=metadata)
    tmp.replace(out)
    return out


def save_onnx(generator: nn.Module, output: str | os.PathLike, opset: int = 17) -> Path:
    """Write ``generator`` as ONNX (fp32) with dynamic batch, height and width.

    Shape:
        - lr: :math:`(N, C, h, w)`, or :math:`(N, T, C, H, W)` for video generators.
        - sr: :math:`(N, C, h \\cdot s, w \\cdot s)`.
    """
    out, tmp = _fresh(output)
    video = generator_spec(generator).num_frames > 1
    shape = (1, int(generator.num_frames), 3, 32, 32) if video else (1, 3, 32, 32)
    axes_in = {0: "batch", 3: "height", 4: "width"} if video else {0: "batch", 2: "height", 3: "width"}
    generator = generator.eval().float().cpu()
    with torch.no_grad():
        torch.onnx.export(
            generator,
            (torch.rand(shape),),
            str(tmp),
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={"lr": axes_in, "sr": {0: "batch", 2: "height", 3: "width"}},
            opset_version=opset,
            dynamo=False,
        )
    tmp.replace(out)
    return out


def export_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    format: Literal["pth", "safetensors", "onnx"] = "pth",
    use_ema: bool = True,
    trusted_modules: Sequence[str] = (),
) -> Path:
    """Export the generator of a ``salightning fit`` checkpoint as ``format`` (see the module doc).
    Refuses to overwrite an existing file; nothing partial is left under ``output``."""
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got --format={format}")
    if format == "pth":
        return export_generator(checkpoint, output, use_ema=use_ema, trusted_modules=trusted_modules)
    if Path(output).exists():
        raise FileExistsError(f"--output {str(output)!r} exists; choose another output path")
    check_output_not_inside([checkpoint], Path(output), "--output")
    generator = load_generator(checkpoint, use_ema=use_ema, trusted_modules=trusted_modules)
    if format == "safetensors":
        return save_safetensors(generator, generator_config(load_state_dict_file(checkpoint), checkpoint), output)
    return save_onnx(generator, output)


def load_exported(
    path: str | os.PathLike, class_path: str | None = None, init_args: dict[str, Any] | None = None, trusted_modules: Sequence[str] = ()
) -> nn.Module:
    """Rebuild a generator from an exported weights file.

    The architecture comes from the safetensors metadata written by :func:`save_safetensors`, or
    from ``class_path`` (e.g. ``salightning.models.RRDBNet``) and ``init_args`` for a plain
    ``.pth`` / ``.safetensors``.

    Raises:
        ValueError: naming the file, when the architecture is unknown or the weights do not fit it.
    """
    path = Path(path)
    # A class the user names is trusted; one the file names must be salightning's or trusted.
    trusted = [*trusted_modules, class_path.rpartition(".")[0]] if class_path is not None else list(trusted_modules)
    if class_path is None and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "salightning.class_path" in metadata:
            class_path = metadata["salightning.class_path"]
            init_args = {**json.loads(metadata.get("salightning.init_args", "{}")), **(init_args or {})}
    if class_path is None:
        raise ValueError(f"{str(path)!r} does not name its architecture; pass --generator with the class path (e.g. salightning.models.RRDBNet)")
    generator = build_generator({"class_path": class_path, "init_args": init_args or {}}, path, trusted)
    return load_pretrained(generator, path).eval()


def load_for_predict(
    path: str | os.PathLike,
    class_path: str | None = None,
    init_args: dict[str, Any] | None = None,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    trusted_modules: Sequence[str] = (),
) -> nn.Module:
    """The generator for ``salightning predict --ckpt_path``: a ``salightning fit`` checkpoint
    (:func:`salightning.checkpoints.load_generator`), a safetensors export (architecture from its
    metadata), or any weights file with ``class_path`` (``--generator``) and ``init_args``.

    Raises:
        ValueError: naming the file and the option to add, when the architecture is unknown.
    """
    path = Path(path)
    if class_path is not None or path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"--ckpt_path {str(path)!r} does not exist")
        return load_exported(path, class_path, init_args, trusted_modules).to(map_location)
    try:
        return load_generator(path, use_ema=use_ema, map_location=map_location, trusted_modules=trusted_modules)
    except NotACheckpointError as err:
        raise ValueError(
            f"--ckpt_path {str(path)!r} is not a `salightning fit` checkpoint; for exported weights pass "
            "--generator with the class path (e.g. salightning.models.RRDBNet) and --generator_init_args"
        ) from err
