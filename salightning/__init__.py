"""salightning: PyTorch Lightning modules for GAN super-resolution with spatially adaptive losses.

Sub-packages are imported on demand (``salightning.edges``, ``salightning.losses``,
``salightning.models``, ``salightning.data``, ``salightning.metrics``) so that
``import salightning`` stays cheap.
"""

__version__ = "0.1.0"
