"""Ground-truth-only image data for blind SR: training batches hold HR patches and no LR.

The LR of such batches is synthesised on the training device (for instance by
:class:`~salightning.degradations.RealESRGANDegradation`, the ``degradation`` of
:class:`~salightning.training.SRGANModule`), not in the data workers. Validation and test
splits stay paired (LR folders, or the benchmark bicubic LR made on the fly), so models are
evaluated without synthesis.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from salightning.data.image import ImageSRDataModule, ImageSRDataset
from salightning.data.io import array_to_tensor, decode_image
from salightning.data.sampling import unpack_key
from salightning.data.transforms import dihedral, random_box

__all__ = ["GTImageDataset", "GTImageSRDataModule"]


class GTImageDataset(Dataset):
    """Random HR crops of the images of a training :class:`ImageSRDataset` (its files, patch
    size, augmentation, seed and decode cache), without LR.

    Returns:
        ``{"hr": (3, patch_size, patch_size), "name": str}``, floats in [0, 1].
    """

    def __init__(self, images: ImageSRDataset) -> None:
        if images.patch_size is None:
            raise ValueError("GTImageDataset needs a training ImageSRDataset (patch_size set)")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = unpack_key(key, self.images.seed)
        pair = self.images.pairs[index]
        top, left, h, w = random_box(rng, pair.height, pair.width, self.images.patch_size)
        array = decode_image(pair.hr) if self.images.decode_cache is None else self.images.decode_cache(pair.hr)
        hr = array_to_tensor(array[top : top + h, left : left + w])
        if self.images.augment:
            hr = dihedral(hr, int(rng.integers(0, 8)))
        return {"hr": hr.contiguous(), "name": pair.name}


class GTImageSRDataModule(ImageSRDataModule):
    """:class:`ImageSRDataModule` whose training batches are ``{"hr": (B, 3, P, P), "name"}``.

    Training takes HR folders only (DIV2K/DF2K/OST style, whole images or sub-images);
    ``patch_size`` is the HR patch the degradation receives (Real-ESRGAN: 256), and need not be
    aligned to ``scale``'s grid. Validation and test are as in :class:`ImageSRDataModule`.
    Arguments are :class:`ImageSRDataModule`'s; ``train_lr`` must stay None.
    """

    def setup(self, stage: str | None = None) -> None:
        if self.folders["train"][1]:
            raise ValueError("GTImageSRDataModule trains on HR images only: leave train_lr unset (the LR is synthesised on the device)")
        super().setup(stage)

    def _build(self, split: str) -> Dataset:
        dataset = super()._build(split)
        return GTImageDataset(dataset) if split == "train" else dataset
