"""The models of an evaluation: generators from checkpoints (or built), the bicubic baseline, LPIPS."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from salightning.checkpoints import load_generator
from salightning.models.protocol import generator_spec


#: Label of the bicubic-upsampling baseline rows.
BICUBIC = "bicubic"

Source = str | os.PathLike | nn.Module


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_models(
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
        try:
            generator_spec(generator)
        except TypeError as err:
            raise ValueError(f"checkpoints[{label!r}]: {err}") from None
        models.append((label, generator))
    return models
