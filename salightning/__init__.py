"""salightning: PyTorch Lightning modules for GAN super-resolution with spatially adaptive losses.

The public API is importable from the top and loaded on first use, so ``import salightning``
stays cheap (no torch import until a name is touched)::

    import salightning
    module = salightning.SRGANModule(generator=salightning.RRDBNet(scale=4), ...)

Sub-packages: ``salightning.edges`` (W(x)), ``salightning.losses``, ``salightning.models``,
``salightning.data``, ``salightning.metrics``, ``salightning.callbacks``,
``salightning.degradations`` (Real-ESRGAN-style LR synthesis).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access).
_PUBLIC = {
    "SRGANModule": "salightning.training",
    "TrainingDiverged": "salightning.training",
    "SAPixelLoss": "salightning.losses",
    "PerceptualLoss": "salightning.losses",
    "SAPerceptualLoss": "salightning.losses",
    "DCTPerceptualLoss": "salightning.losses",
    "AdversarialLoss": "salightning.losses",
    "EdgeExtractor": "salightning.edges",
    "LocalVariance": "salightning.edges",
    "Canny": "salightning.edges",
    "SobelMagnitude": "salightning.edges",
    "local_variance": "salightning.edges",
    "canny": "salightning.edges",
    "RRDBNet": "salightning.models",
    "SRResNet": "salightning.models",
    "VSRResNet": "salightning.models",
    "VGGStyleDiscriminator": "salightning.models",
    "SRGANDiscriminator": "salightning.models",
    "VSRResFeatGANDiscriminator": "salightning.models",
    "UNetDiscriminatorSN": "salightning.models",
    "RealESRGANDegradation": "salightning.degradations",
    "load_pretrained": "salightning.checkpoints",
    "ImageSRDataModule": "salightning.data",
    "VideoSRDataModule": "salightning.data",
    "imresize": "salightning.ops",
    "SRMetrics": "salightning.metrics",
    "psnr": "salightning.metrics",
    "ssim": "salightning.metrics",
    "LPIPS": "salightning.metrics",
    "evaluate_checkpoints": "salightning.evaluate",
    "load_generator": "salightning.checkpoints",
    "predict_path": "salightning.predict",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'salightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
