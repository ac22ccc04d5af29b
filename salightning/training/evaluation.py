"""The means of one evaluation stage (validation or test) of :class:`~salightning.training.SRGANModule`.

The image metrics are :class:`salightning.metrics.SRMetrics`, the object ``salightning evaluate``
uses, with the same edge map (:func:`salightning.edges.local_variance` of the HR image) and the
same conventions (8-bit levels, ``scale`` pixels of border, MATLAB Y channel), so a checkpoint
scored on the same images by ``salightning fit`` (``val/psnr``), ``salightning test --config``
and ``salightning evaluate`` gets the same PSNR / SSIM / LPIPS / edge / flat PSNR. Beside them,
two weight-free metrics of torchmetrics (:func:`~salightning.metrics.ms_ssim`,
:func:`~salightning.metrics.vif`) and the loss terms are torchmetrics ``MeanMetric`` s. All are
per-image means, exact under DDP (the datamodules never pad with repeated images).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from salightning.edges import local_variance
from salightning.metrics import LPIPS, VIF_MIN_SIZE, SRMetrics, ms_ssim, vif
from salightning.training.objective import ImageTooSmallError

__all__ = ["EvaluationMeans", "naming_images"]


class EvaluationMeans(nn.Module):
    """Per-image means of the paper's metrics and of named loss terms over an evaluation epoch.

    Args:
        crop_border: border pixels left out of PSNR / SSIM (the SR scale).
        y_channel: metrics on the MATLAB BT.601 Y channel (RGB images only), else on RGB.
        lpips: an :class:`~salightning.metrics.LPIPS` metric (RGB images only), or None.

    Shape:
        update(sr, hr, losses): ``(N, C, H, W)`` images in [0, 1]; ``losses`` maps a name to an
            ``(N,)`` or scalar tensor (one value per image).
        compute(): dict name -> scalar: ``psnr``, ``ssim``, ``lpips`` (with ``lpips``),
            ``edge_psnr``, ``flat_psnr``, ``ms_ssim``, ``vif`` (images of at least 41x41 pixels
            inside the border) and the loss names.
    """

    def __init__(self, crop_border: int, y_channel: bool = True, lpips: LPIPS | None = None) -> None:
        super().__init__()
        self.crop_border, self.y_channel = crop_border, y_channel
        self.lpips = lpips
        self.images: SRMetrics | None = None  # made at the first batch, when the channels are known
        self.means = nn.ModuleDict()

    def _mean(self, name: str, values: Tensor) -> None:
        if name not in self.means:
            self.means[name] = MeanMetric(nan_strategy="ignore").to(values.device)
        self.means[name].update(values.detach().float())

    def update(self, sr: Tensor, hr: Tensor, losses: Mapping[str, Tensor]) -> None:
        rgb = hr.shape[1] == 3
        if self.images is None:
            # The Y channel exists for RGB images only: grey images are scored as they are.
            self.images = SRMetrics(self.crop_border, self.y_channel and rgb, self.lpips if rgb else None).to(hr.device)
        kw = {"crop_border": self.crop_border, "y_channel": self.y_channel and rgb}
        with torch.no_grad():
            self.images.update(sr, hr, local_variance(hr))
            inner = min(hr.shape[-2:]) - 2 * self.crop_border
            self._mean("ms_ssim", ms_ssim(sr, hr, **kw))
            if inner >= VIF_MIN_SIZE:
                self._mean("vif", vif(sr, hr, **kw))
        for name, value in losses.items():
            self._mean(name, value.expand(hr.shape[0]))

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {} if self.images is None else dict(self.images.compute())
        out.update({name: metric.compute() for name, metric in self.means.items() if metric.update_called})
        return out

    def reset(self) -> None:
        for metric in ([] if self.images is None else [self.images]) + list(self.means.values()):
            metric.reset()


@contextmanager
def naming_images(names: Sequence[str] | str | None, stage: str) -> Iterator[None]:
    """Re-raise an :class:`ImageTooSmallError` of an evaluation batch naming its images."""
    try:
        yield
    except ImageTooSmallError as err:
        listed = ", ".join([names] if isinstance(names, str) else list(names or [])) or "unnamed images"
        raise ValueError(
            f"{stage} images {listed}: {err} (or set data.eval_patch_size to the discriminator's input size)"
        ) from None
