"""``salightning degrade``: write (HR, LR) pairs exactly as a config's generator would receive them.

The config's ``data`` (an HR-only datamodule such as :class:`~salightning.data.GTImageSRDataModule`)
gives training batches in its seeded order and ``model.degradation`` makes their LR, as
:class:`~salightning.training.SRGANModule` does on the training device; each pair is written as
8-bit PNGs ``NNNNNN_hr.png`` (the sharpened HR the pixel and perceptual losses see, when the
degradation sharpens), ``NNNNNN_hr_gan.png`` (the HR the discriminator sees) and
``NNNNNN_lr.png``, to tune a degradation by eye.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from salightning.checks import check_at_least
from salightning.ops import to_uint8

__all__ = ["write_pairs", "main"]


def _section(config: dict[str, Any], path: str, file: Path) -> Any:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node or node[key] is None:
            raise ValueError(f"{file}: needs {path} (a class_path / init_args mapping) to write degraded pairs")
        node = node[key]
    return node


def _instantiate(spec: Any, base: type, name: str) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(f"--{name}", type=base)
    return parser.instantiate_classes(parser.parse_object({name: spec}))[name]


def write_pairs(config: str | Path, output: str | Path, count: int, device: str = "cpu") -> list[Path]:
    """Write ``count`` pairs from ``config``'s training data and degradation into ``output``.

    Returns:
        The LR files written, in order.
    """
    import pytorch_lightning as pl

    from salightning.degradations.pipeline import RealESRGANDegradation

    check_at_least(count, "count", 1)
    file = Path(config)
    try:
        parsed = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{file}: cannot read the config: {error}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{file}: a config must be a YAML mapping")
    degradation: RealESRGANDegradation = _instantiate(_section(parsed, "model.degradation", file), RealESRGANDegradation, "degradation")
    data: pl.LightningDataModule = _instantiate(_section(parsed, "data", file), pl.LightningDataModule, "data")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    data.setup("fit")
    written: list[Path] = []
    with torch.no_grad():
        for batch in data.train_dataloader():
            if "lr" in batch:
                raise ValueError(f"{file}: data gives training batches with LR; use an HR-only datamodule (salightning.data.GTImageSRDataModule)")
            hr = batch["hr"].to(device)
            lr, hr_usm = degradation(hr)
            for images in zip(hr_usm, hr, lr):
                stem = out / f"{len(written):06d}"
                for suffix, image in zip(("hr", "hr_gan", "lr"), images):
                    Image.fromarray(np.ascontiguousarray(to_uint8(image).permute(1, 2, 0).cpu().numpy())).save(f"{stem}_{suffix}.png")
                written.append(Path(f"{stem}_lr.png"))
                if len(written) == count:
                    return written
    return written


def main(argv: list[str]) -> None:
    """The ``salightning degrade`` command."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="salightning degrade", description="Write (HR, LR) pairs as a config's generator receives them (model.degradation on its data).")
    parser.add_argument("--config", type=str, required=True, help="a fit config with model.degradation and an HR-only data module")
    parser.add_argument("--output", type=str, required=True, help="folder for the PNGs (created)")
    parser.add_argument("--count", type=int, default=16, help="pairs to write")
    parser.add_argument("--device", type=str, default="cpu", help="device the degradation runs on")
    args = parser.parse_args(argv)
    written = write_pairs(args.config, args.output, args.count, args.device)
    print(f"wrote {len(written)} pairs to {Path(args.output).resolve()}")
