"""Finding pretrained weight files without downloading them.

Nothing downloads at run time: ImageNet backbones (VGG19 for the perceptual loss, AlexNet /
VGG16 / SqueezeNet for LPIPS) are read from torchvision's cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), where
clusters usually pre-fill them, or from a file the user names.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


#: torchvision's file names for the backbones this library uses.
TORCHVISION_FILES = {
    "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg16": "vgg16-397923af.pth",
    "alexnet": "alexnet-owt-7be5be79.pth",
    "squeezenet1_1": "squeezenet1_1-b8a52dc0.pth",
}


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is needed and neither the cache nor a named file has it."""


def torchvision_cache_dir() -> Path:
    """Where torchvision looks for downloaded weights: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(arch: str, path: str | os.PathLike | None = None, *, option: str = "weights_path", flag: str | None = None) -> Path:
    """Return the weights file of torchvision backbone ``arch`` (a key of ``TORCHVISION_FILES``).

    Args:
        arch: backbone name, e.g. ``"vgg19"``.
        path: a file the user named; when given it must exist.
        option: the name of the user-facing option that takes ``path``, quoted in errors.
        flag: the command-line flag that sets it in a config, quoted too (e.g.
            ``--model.perceptual_loss.init_args.weights``).

    Raises:
        MissingWeightsError: naming the expected file and both ways to provide it.
    """
    if arch not in TORCHVISION_FILES:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {sorted(TORCHVISION_FILES)}")
    filename = TORCHVISION_FILES[arch]
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingWeightsError(f"{option}={str(path)!r}: no such file (expected the {arch} ImageNet weights, {filename})")
        return p
    cached = torchvision_cache_dir() / filename
    if cached.is_file():
        return cached
    raise MissingWeightsError(
        f"The {arch} ImageNet weights are needed but were not found, and nothing is downloaded at run time.\n"
        f"Provide them in one of two ways:\n"
        f"  1. put {filename} in torchvision's cache: {cached}\n"
        f"     (on a machine with internet: python -c \"import torchvision; torchvision.models.{arch}(weights='DEFAULT')\",\n"
        f"      then copy the file; set TORCH_HOME to use another cache folder), or\n"
        f"  2. name the file with the {option} option" + (f" ({flag} on the command line)." if flag else ".")
    )
