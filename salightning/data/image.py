"""Single-image super-resolution data: the image Dataset and DataModule.

Batches are dicts ``{"lr": (B, 3, h, w), "hr": (B, 3, h*scale, w*scale), "name": list[str]}``
with values in [0, 1]. Files are read by :mod:`salightning.data.io`, LR images made by
:mod:`salightning.data.transforms` (the benchmark protocol: MATLAB bicubic, 8-bit levels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from salightning.checks import check_at_least
from salightning.data.base import SRDataModule
from salightning.data.cache import DecodeCache
from salightning.data.io import array_to_tensor, decode_image, pair_images, probe_image, read_image, warn_alpha
from salightning.data.samples import sample_image_paths
from salightning.data.sampling import unpack_key
from salightning.data.transforms import centre_box, context_box, degrade_crop, dihedral, random_box

__all__ = ["ImagePair", "ImageSRDataset", "image_dataset", "benchmark_dataset", "ImageSRDataModule"]


@dataclass(frozen=True)
class ImagePair:
    """One image of an :class:`ImageSRDataset`: HR file, optional LR file, name, and the HR size
    used (a multiple of scale)."""

    hr: Path
    lr: Path | None
    name: str
    height: int
    width: int


class ImageSRDataset(Dataset):
    """LR/HR pairs from image files (usually built by :class:`ImageSRDataModule`).

    Training items (``patch_size`` set): a random crop chosen in LR coordinates and one of the
    8 dihedral transforms, identical on LR and HR. Evaluation items (``patch_size`` None): the
    whole image mod-cropped to ``scale``, or its centre ``eval_patch_size`` crop.

    Keys are item indices, or ``(index, seed)`` pairs from :class:`~salightning.data.EpochSampler`; an index alone
    uses a seed derived from ``seed`` and the index. With ``decode_cache`` the HR images are read
    memory-mapped from a :class:`~salightning.data.cache.DecodeCache` (same items, bit for bit).

    Returns:
        ``{"lr": (3, h, w), "hr": (3, h*scale, w*scale), "name": str}``, floats in [0, 1].
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        scale: int,
        patch_size: int | None = None,
        augment: bool = True,
        quantize_lr: bool = True,
        eval_patch_size: int | None = None,
        seed: int = 0,
        decode_cache: DecodeCache | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.decode_cache = decode_cache
        self.scale = scale
        self.patch_size = patch_size
        self.augment = augment
        self.quantize_lr = quantize_lr
        self.eval_patch_size = eval_patch_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = unpack_key(key, self.seed)
        pair = self.pairs[index]
        s = self.scale
        lr_h, lr_w = pair.height // s, pair.width // s
        if self.patch_size is not None:
            box = random_box(rng, lr_h, lr_w, self.patch_size // s)
        else:
            box = centre_box(lr_h, lr_w, None if self.eval_patch_size is None else self.eval_patch_size // s)
        top, left, h, w = box
        hr_array = decode_image(pair.hr) if self.decode_cache is None else self.decode_cache(pair.hr)
        if pair.lr is None:
            # Convert only the crop and the context the kernel reads (decoding dominates anyway).
            t0, l0, t1, l1 = context_box(lr_h, lr_w, box)
            region = array_to_tensor(hr_array[t0 * s : t1 * s, l0 * s : l1 * s])
            lr, hr = degrade_crop(region, s, (top - t0, left - l0, h, w), self.quantize_lr)
        else:
            lr = array_to_tensor(decode_image(pair.lr)[top : top + h, left : left + w])
            hr = array_to_tensor(hr_array[top * s : (top + h) * s, left * s : (left + w) * s])
        if self.patch_size is not None and self.augment:
            k = int(rng.integers(0, 8))
            lr, hr = dihedral(lr, k), dihedral(hr, k)
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": pair.name}


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def _skip_undecodable(paths: list[Path], skip: bool) -> set[Path]:
    """With ``skip``, decode every file once and return those that fail (after warning)."""
    if not skip:
        return set()
    bad: dict[Path, str] = {}
    for path in paths:
        try:
            read_image(path)
        except ValueError as err:
            bad[path] = str(err)
    if bad:
        listing = "\n  ".join(bad.values())
        rank_zero_warn(f"skip_unreadable=True: leaving out {len(bad)} unreadable file(s):\n  {listing}")
    return set(bad)


def image_dataset(
    entries: Sequence[tuple[Path, Path | None]],
    scale: int,
    patch_size: int | None = None,
    augment: bool = True,
    quantize_lr: bool = True,
    eval_patch_size: int | None = None,
    skip_unreadable: bool = False,
    seed: int = 0,
    decode_cache: DecodeCache | None = None,
    split: str = "test",
) -> ImageSRDataset:
    """An :class:`ImageSRDataset` of ``(HR file, LR file or None)`` entries, with their sizes checked.

    Each HR image is used up to the last multiple of ``scale`` (or ``scale`` times its LR
    partner's size); alpha channels are dropped with one warning.

    Args:
        entries: the images, e.g. from :func:`~salightning.data.io.pair_images`.
        scale: SR factor.
        patch_size: HR training crop (training items), or None (evaluation items).
        augment: dihedral augmentation of training items.
        quantize_lr: round LR made on the fly to 8-bit levels.
        eval_patch_size: HR centre crop of evaluation items, or None for whole images.
        skip_unreadable: decode every file once and leave out those that fail, with a warning.
        seed: seed of the items given as plain indices.
        decode_cache: a cache of decoded HR images, or None.
        split: the split, quoted in errors.

    Raises:
        FileNotFoundError: if no readable image is left.
        ValueError: an image smaller than ``patch_size`` (or ``scale``), or an LR/HR pair whose
            sizes do not match ``scale`` (naming the files).
    """
    s = scale
    bad = _skip_undecodable([f for e in entries for f in e if f is not None], skip_unreadable)
    pairs: list[ImagePair] = []
    alpha: list[Path] = []
    for hr, lr in entries:
        if hr in bad or lr in bad:
            continue
        info = probe_image(hr)
        alpha += [hr] if info.has_alpha else []
        if lr is None:
            height, width = info.height // s * s, info.width // s * s
        else:
            lr_info = probe_image(lr)
            alpha += [lr] if lr_info.has_alpha else []
            if not (lr_info.height * s <= info.height < (lr_info.height + 1) * s) or not (
                lr_info.width * s <= info.width < (lr_info.width + 1) * s
            ):
                raise ValueError(
                    f"{lr}: LR image is {lr_info.height}x{lr_info.width} but its HR partner {hr} is "
                    f"{info.height}x{info.width}; with scale={s} the LR must be "
                    f"{info.height // s}x{info.width // s}"
                )
            height, width = lr_info.height * s, lr_info.width * s
        need, option = (patch_size, "patch_size") if patch_size is not None else (s, "scale")
        if height < need or width < need:
            raise ValueError(
                f"{hr}: image is {info.height}x{info.width} ({height}x{width} after cropping to a multiple "
                f"of scale={s}), smaller than {option}={need}; use a smaller {option} or remove the file"
            )
        pairs.append(ImagePair(hr, lr, hr.stem, height, width))
    if not pairs:
        raise FileNotFoundError(f"{split}: no readable images left (all were skipped as unreadable)")
    warn_alpha(alpha)
    return ImageSRDataset(
        pairs,
        scale=s,
        patch_size=patch_size,
        augment=augment,
        quantize_lr=quantize_lr,
        eval_patch_size=eval_patch_size,
        seed=seed,
        decode_cache=decode_cache,
    )


def benchmark_dataset(hr: str | Path | None = None, lr: str | Path | None = None, scale: int = 4) -> ImageSRDataset:
    """Whole images of a test folder under the benchmark protocol: HR cropped to a multiple of
    ``scale``; LR from the files found by name (:func:`~salightning.data.io.pair_images`) or, without
    them, made by :func:`~salightning.data.transforms.benchmark_lr` (MATLAB bicubic, 8-bit).

    Args:
        hr: the HR folder (or a Set5/Set14 root); None for the built-in sample test photos.
        lr: the LR folder, or None.
        scale: SR factor.

    Raises:
        FileNotFoundError: a folder that is missing or holds no images, or an HR image without
            an LR partner.
        ValueError: an image smaller than ``scale`` or an LR/HR pair of mismatched sizes.
    """
    check_at_least(scale, "scale", 1)
    entries = [(p, None) for p in sample_image_paths("test")] if hr is None else pair_images(hr, lr, scale, "test")
    return image_dataset(entries, scale)


class ImageSRDataModule(SRDataModule):
    """Single-image SR data: HR folders (LR made on the fly) or paired HR/LR folders.

    Each split (train/val/test) takes one or more HR folders and, optionally, the matching LR
    folders. Without LR folders, LR images are made on the fly with MATLAB-compatible bicubic
    (:func:`~salightning.ops.imresize`), as the benchmarks' LR images were. LR partners are
    found by name: same name (Set5/Set14 ``GTmod12``/``LRbicx4``, plain pairs) or with the
    scale appended (DIV2K: ``DIV2K_train_HR/0001.png`` and ``DIV2K_train_LR_bicubic/X4/0001x4.png``).
    A Set5/Set14 root holding ``GTmod12`` and ``LRbicx{scale}`` can be given directly as the HR
    folder. Pairing and sizes are checked when the datamodule is set up.

    A split left as None uses the built-in sample photos of that split
    (:mod:`salightning.data.samples`, photos bundled with scikit-image), so the datamodule
    works with no arguments and no downloads.

    Args:
        train_hr: HR folder(s) for training.
        train_lr: matching LR folder(s), or None to make LR on the fly.
        val_hr: HR folder(s) for validation (the paper: Set14).
        val_lr: matching LR folder(s), or None.
        test_hr: HR folder(s) for testing and prediction.
        test_lr: matching LR folder(s), or None.
        scale: SR factor (LR size × scale = HR size).
        patch_size: HR training patch size (a multiple of ``scale``); the crop is chosen in LR
            coordinates so LR and HR stay aligned.
        batch_size: training batch size (incomplete last batches are dropped).
        val_batch_size: batch size for validation/test; whole images of different sizes need 1.
        num_workers: DataLoader worker processes.
        samples_per_epoch: training samples per epoch; images repeat as needed, so short
            folders make long epochs (None: one pass, at least one batch).
        augment: apply one of the 8 dihedral transforms (rotations/flips) to each training pair.
        quantize_lr: round on-the-fly LR images to 8-bit levels, like the LR PNGs of benchmarks.
        eval_patch_size: if set, validation/test use the centre crop of this HR size instead of
            whole images (fast checks on a CPU).
        skip_unreadable: decode every file once at setup and leave out the ones that fail, with
            one warning listing them; otherwise an undecodable file raises when it is read.
        pin_memory: pin batches in memory when a CUDA device is present.
        seed: seed of the crops, augmentations and sample order (reproducible for any
            ``num_workers``).
        decode_cache: keep the training HR images decoded in a
            :class:`~salightning.data.cache.DecodeCache` (``$SALIGHTNING_CACHE_DIR/decoded``):
            the first read decodes, later crops read only their region of a memory map. The
            items are bit-identical to the uncached ones.

    Raises:
        FileNotFoundError: a folder that is missing or holds no images, or an HR image without
            an LR partner (naming the file).
        ValueError: a file that cannot be read, an image smaller than ``patch_size``, or an
            LR/HR pair whose sizes do not match ``scale`` (naming the files).
    """

    def __init__(
        self,
        train_hr: str | list[str] | None = None,
        train_lr: str | list[str] | None = None,
        val_hr: str | list[str] | None = None,
        val_lr: str | list[str] | None = None,
        test_hr: str | list[str] | None = None,
        test_lr: str | list[str] | None = None,
        scale: int = 4,
        patch_size: int = 128,
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 4,
        samples_per_epoch: int | None = None,
        augment: bool = True,
        quantize_lr: bool = True,
        eval_patch_size: int | None = None,
        skip_unreadable: bool = False,
        pin_memory: bool = True,
        seed: int = 0,
        decode_cache: bool = False,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, samples_per_epoch, pin_memory, seed)
        self.decode_cache = decode_cache
        check_at_least(scale, "scale", 1)
        check_at_least(patch_size, "patch_size", 1)
        if patch_size % scale:
            raise ValueError(f"patch_size must be a multiple of scale={scale}, got {patch_size!r}")
        if eval_patch_size is not None:
            check_at_least(eval_patch_size, "eval_patch_size", 1)
            if eval_patch_size % scale:
                raise ValueError(f"eval_patch_size must be a multiple of scale={scale}, got {eval_patch_size!r}")
        self.save_hyperparameters()
        self.folders = {
            "train": (_as_list(train_hr), _as_list(train_lr)),
            "val": (_as_list(val_hr), _as_list(val_lr)),
            "test": (_as_list(test_hr), _as_list(test_lr)),
        }
        for split, (hr, lr) in self.folders.items():
            if lr and len(lr) != len(hr):
                raise ValueError(
                    f"{split}_lr must list one LR folder per {split}_hr folder, got {len(lr)} for {len(hr)}"
                )
        self.scale = scale
        self.patch_size = patch_size
        self.augment = augment
        self.quantize_lr = quantize_lr
        self.eval_patch_size = eval_patch_size
        self.skip_unreadable = skip_unreadable

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits_of(stage):
            if split not in self.datasets:
                self.datasets[split] = self._build(split)

    def _pairs_of(self, split: str) -> list[tuple[Path, Path | None]]:
        """(HR file, LR file or None) of every image of ``split``."""
        hr_folders, lr_folders = self.folders[split]
        if not hr_folders:
            rank_zero_info(f"{split}: using the built-in sample photos (set {split}_hr to use your own)")
            return [(p, None) for p in sample_image_paths(split)]
        found: list[tuple[Path, Path | None]] = []
        for i, hr in enumerate(hr_folders):
            found += pair_images(hr, lr_folders[i] if lr_folders else None, self.scale, split)
        return found

    def _build(self, split: str) -> ImageSRDataset:
        training = split == "train"
        return image_dataset(
            self._pairs_of(split),
            self.scale,
            patch_size=self.patch_size if training else None,
            augment=self.augment,
            quantize_lr=self.quantize_lr,
            eval_patch_size=None if training else self.eval_patch_size,
            skip_unreadable=self.skip_unreadable,
            seed=self.seed,
            decode_cache=DecodeCache(decode_image) if self.decode_cache and training else None,
            split=split,
        )

