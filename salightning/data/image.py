"""Single-image super-resolution data: image files, crops, augmentation, the image DataModule.

Batches are dicts ``{"lr": (B, 3, h, w), "hr": (B, 3, h*scale, w*scale), "name": list[str]}``
with values in [0, 1].

Reading: 8-bit and 16-bit PNG (16-bit colour PNGs are decoded with PyAV, because Pillow
reduces them to 8 bits), JPEG, BMP, TIFF, WebP; greyscale images become 3 equal channels, an
alpha channel is dropped (with one warning per split, counting such files). Files are only ever read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from salightning.data.cache import DecodeCache
from salightning.data.imresize import imresize

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "probe_image",
    "read_image",
    "list_images",
    "dihedral",
    "degrade_crop",
    "EpochSampler",
    "ImageSRDataset",
    "ImageSRDataModule",
]

#: File suffixes read as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")

# LR pixels of real context kept around a crop before shrinking it, so that the crop equals the
# same region of the whole shrunk image (the stretched kernel reaches about 2*scale HR pixels,
# i.e. 2 LR pixels, beyond an LR pixel's centre; 3 leaves room for MATLAB's rounding of taps).
_LR_MARGIN = 3


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says: ``height``, ``width`` and whether it has an alpha channel."""

    height: int
    width: int
    has_alpha: bool


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, or None if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def _exif_orientation(im: Any) -> int | None:
    """The EXIF orientation tag of an open image; None when absent or unreadable (a truncated
    file: its decoding reports the damage)."""
    try:
        return im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises many kinds on damaged data
        return None


def probe_image(path: str | Path) -> ImageInfo:
    """Read only the header of an image file.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if it is not an image Pillow can identify.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if _exif_orientation(im) in (5, 6, 7, 8):  # a quarter turn
                width, height = height, width
            has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image header ({err})") from err
    if width < 1 or height < 1:
        raise ValueError(f"{path}: image has an empty size {width}x{height}")
    return ImageInfo(height, width, has_alpha)


def _decode_png16(path: Path, colour_type: int) -> np.ndarray:
    """A 16-bit colour (or grey+alpha) PNG as uint16 (H, W, 3) or (H, W): Pillow keeps only 8 bits."""
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        if colour_type == 4:  # grey + alpha
            return frame.to_ndarray(format="gray16le")
        return frame.to_ndarray(format="rgb48le")


def _tiff_bits(im: Any) -> int:
    """The largest bits per sample of a TIFF opened by Pillow (8 for other formats)."""
    bits = getattr(im, "tag_v2", {}).get(258, 8) if getattr(im, "format", None) == "TIFF" else 8
    return max(bits) if isinstance(bits, tuple) else int(bits)


def _decode_tiff16(path: Path) -> np.ndarray:
    """A 16-bit TIFF as uint16 (H, W, 3) or (H, W), read by tifffile (Pillow keeps 8 bits of RGB)."""
    import tifffile

    array = tifffile.imread(path)
    if array.dtype != np.uint16:
        raise ValueError(f"unsupported TIFF pixel type {array.dtype} (8- and 16-bit unsigned integers are read)")
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        return array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., :3]
    if array.ndim != 2:
        raise ValueError(f"unsupported TIFF layout {array.shape} (a single grey or RGB image is read)")
    return array


def _decode(path: Path) -> np.ndarray:
    """An image file as uint8 or uint16 (H, W, 3) or (H, W), alpha dropped, EXIF orientation
    applied; 32-bit, floating-point and animated images are a ValueError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        png = _png_header(path)
        if png is not None and png[0] == 16 and png[1] in (2, 4, 6):
            return _decode_png16(path, png[1])
        with Image.open(path) as opened:
            frames = getattr(opened, "n_frames", 1)
            if frames > 1 and path.suffix.lower() not in (".tif", ".tiff"):
                raise ValueError(f"an animated image ({frames} frames) is not a still image; give its frames as a folder (or a video)")
            if opened.mode == "F":
                raise ValueError(f"unsupported floating-point pixel format {opened.mode!r}")
            if _tiff_bits(opened) == 16:
                return _decode_tiff16(path)
            if _tiff_bits(opened) > 16 or opened.mode in ("I", "I;32", "I;32B") and png is None:
                raise ValueError(
                    f"unsupported 32-bit pixels (mode {opened.mode!r}): 8- and 16-bit images are read; save it with fewer bits"
                )
            im = ImageOps.exif_transpose(opened)  # as viewers show it
            im.load()
            if im.mode.startswith("I;16") or im.mode == "I":
                return np.asarray(im).astype(np.uint16)
            if im.mode == "F":
                raise ValueError(f"unsupported floating-point pixel format {im.mode!r}")
            if im.mode in ("L", "RGB"):
                return np.asarray(im)
            if im.mode == "1":
                return np.asarray(im.convert("L"))
            has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))[..., :3]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, StopIteration) as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from err
    except Exception as err:  # PyAV's errors (av.error.*) and anything a damaged file provokes
        raise ValueError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err


def _to_float(array: np.ndarray) -> Tensor:
    """uint8/uint16 (H, W, 3) or (H, W) -> (3, H, W) float32 in [0, 1]."""
    peak = 65535.0 if array.dtype == np.uint16 else 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32)).div_(peak)
    if tensor.ndim == 2:
        return tensor.expand(3, *tensor.shape).contiguous()
    return tensor.permute(2, 0, 1).contiguous()


def read_image(path: str | Path) -> Tensor:
    """Read an image file as a (3, H, W) float32 tensor in [0, 1].

    8-bit files are divided by 255, 16-bit ones (PNG, TIFF) by 65535; greyscale is repeated on 3
    channels; alpha is dropped (:func:`probe_image` tells whether a file has one); the EXIF
    orientation is applied, as viewers show the image. 32-bit integer and floating-point pixels
    and animated images are refused.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if it cannot be decoded (not an image, truncated, corrupt)
            or has an unsupported pixel format.
    """
    return _to_float(_decode(Path(path)))


def _natural_key(path: Path) -> list[Any]:
    """Sort key putting frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path, option: str = "folder") -> list[Path]:
    """The image files directly inside ``folder``, in natural order.

    Args:
        folder: the folder.
        option: the user-facing name of the option that gave ``folder``, quoted in errors.

    Raises:
        FileNotFoundError: if the folder does not exist, is not a folder, or holds no images.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{option}: folder {folder} does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(f"{option}: {folder} is not a folder")
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key
    )
    if not files:
        raise FileNotFoundError(f"{option}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


# --------------------------------------------------------------------------------------------
# Crops and augmentation (shared with the video datamodule)
# --------------------------------------------------------------------------------------------


def dihedral(x: Tensor, k: int) -> Tensor:
    """One of the 8 symmetries of the square: rotation by ``k % 4`` quarter turns, then a
    horizontal flip if ``k >= 4``.

    Args:
        x: (..., C, H, W).
        k: 0..7 (0 is the identity).

    Returns:
        (..., C, H, W), or (..., C, W, H) for odd rotations.
    """
    if not 0 <= k < 8:
        raise ValueError(f"k must be in 0..7, got {k!r}")
    x = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def _quantize(lr: Tensor, quantize: bool) -> Tensor:
    lr = lr.clamp(0.0, 1.0)
    return lr.mul(255.0).round_().div_(255.0) if quantize else lr


def _context(lr_h: int, lr_w: int, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), in LR pixels, of ``box`` widened by the margin the kernel reads."""
    top, left, height, width = box
    return (
        max(0, top - _LR_MARGIN),
        max(0, left - _LR_MARGIN),
        min(lr_h, top + height + _LR_MARGIN),
        min(lr_w, left + width + _LR_MARGIN),
    )


def degrade_crop(
    hr: Tensor,
    scale: int,
    box: tuple[int, int, int, int] | None = None,
    quantize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Cut an LR/HR pair out of an HR image, making the LR with MATLAB bicubic (:func:`imresize`).

    The LR crop equals the same region of ``imresize(hr, 1 / scale)``: the crop is shrunk with
    a margin of real pixels around it, so the image border is treated only where the crop
    touches it.

    Args:
        hr: (..., C, H, W) in [0, 1], H and W multiples of ``scale``.
        scale: integer SR factor.
        box: (top, left, height, width) of the crop in LR pixels; None for the whole image.
        quantize: round the LR to 8-bit levels, like a benchmark LR PNG.

    Returns:
        ``(lr, hr_crop)``: (..., C, height, width) clamped to [0, 1], and
        (..., C, height * scale, width * scale).
    """
    lr_h, lr_w = hr.shape[-2] // scale, hr.shape[-1] // scale
    top, left, height, width = box if box is not None else (0, 0, lr_h, lr_w)
    t0, l0, t1, l1 = _context(lr_h, lr_w, (top, left, height, width))
    region = hr[..., t0 * scale : t1 * scale, l0 * scale : l1 * scale]
    lr = imresize(region, 1.0 / scale)[..., top - t0 : top - t0 + height, left - l0 : left - l0 + width]
    hr_crop = hr[..., top * scale : (top + height) * scale, left * scale : (left + width) * scale]
    return _quantize(lr, quantize), hr_crop


def _centre_box(lr_h: int, lr_w: int, size: int | None) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a centred square crop of ``size`` LR pixels, or the whole image."""
    if size is None or (size >= lr_h and size >= lr_w):
        return 0, 0, lr_h, lr_w
    h, w = min(size, lr_h), min(size, lr_w)
    return (lr_h - h) // 2, (lr_w - w) // 2, h, w


class EpochSampler(DistributedSampler):
    """Yields ``(item, seed)`` pairs: ``length`` items per epoch and a random seed for each.

    Items are visited in rounds of a random permutation, so an epoch longer than the number of
    items repeats them evenly ("enlarge"). The order and the seeds depend only on ``seed`` and
    the epoch, not on the number of workers, so a run is reproducible from ``seed``. Under DDP
    each of ``num_replicas`` processes takes every ``num_replicas``-th pair of the epoch (a
    ``DistributedSampler``, so Lightning leaves it in place).

    **Resumable**: with ``progress`` (a function returning how many samples this process has
    trained on in the whole run so far; the datamodules pass the
    trainer's batch count), each new iterator starts where training stands: epoch
    ``progress() // len(self)``, skipping the pairs already trained on. So the data order is a
    function of the batches trained, whenever the iterator is made (Lightning makes it before
    ``set_epoch``; workers prefetch at once) and however the run was stopped and resumed.
    Without ``progress`` the epoch is the one given to :meth:`set_epoch`, else it counts the
    iterations.

    Args:
        num_items: how many distinct items there are.
        length: samples per epoch (all processes together).
        seed: base seed.
        num_replicas: number of processes (default: the process group's size, else 1).
        rank: this process's rank (default: from the process group, else 0).
        progress: samples this process has consumed so far, or None.
    """

    def __init__(
        self,
        num_items: int,
        length: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        progress: Callable[[], int] | None = None,
    ) -> None:
        # DistributedSampler.__init__ is not called: it needs a dataset and a process group.
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items!r}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length!r}")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}")
        if length < self.num_replicas:
            raise ValueError(f"length={length} samples per epoch cannot be shared by {self.num_replicas} processes")
        self.num_items = num_items
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.progress = progress
        self.num_samples = length // self.num_replicas  # per process; the remainder is dropped
        self.total_size = self.num_samples * self.num_replicas
        self.shuffle, self.drop_last = True, True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def epoch_pairs(self, epoch: int) -> list[tuple[int, int]]:
        """All ``length`` pairs of an epoch, for all processes, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        rounds = math.ceil(self.length / self.num_items)
        order = np.concatenate([rng.permutation(self.num_items) for _ in range(rounds)])[: self.length]
        seeds = rng.integers(0, 2**62, size=self.length)
        return list(zip(order.tolist(), seeds.tolist()))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.progress is not None:
            epoch, offset = divmod(int(self.progress()), self.num_samples)
        else:
            epoch, offset = self.epoch, 0
            self.epoch += 1
        mine = self.epoch_pairs(epoch)[self.rank : self.total_size : self.num_replicas]
        return iter(mine[offset:])


def _split_key(key: int | tuple[int, int], base_seed: int) -> tuple[int, np.random.Generator]:
    """An item index and its random generator from a dataset key (int, or (index, seed))."""
    if isinstance(key, (tuple, list)):
        index, seed = int(key[0]), int(key[1])
        return index, np.random.default_rng(seed)
    return int(key), np.random.default_rng([base_seed, int(key)])


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    """One image: HR file, optional LR file, name, and the HR size used (a multiple of scale)."""

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

    Keys are item indices, or ``(index, seed)`` pairs from :class:`EpochSampler`; an index alone
    uses a seed derived from ``seed`` and the index. With ``decode_cache`` the HR images are read
    memory-mapped from a :class:`~salightning.data.cache.DecodeCache` (same items, bit for bit).

    Returns:
        ``{"lr": (3, h, w), "hr": (3, h*scale, w*scale), "name": str}``, floats in [0, 1].
    """

    def __init__(
        self,
        pairs: Sequence[_Pair],
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
        index, rng = _split_key(key, self.seed)
        pair = self.pairs[index]
        s = self.scale
        lr_h, lr_w = pair.height // s, pair.width // s
        if self.patch_size is not None:
            p = self.patch_size // s
            box = (int(rng.integers(0, lr_h - p + 1)), int(rng.integers(0, lr_w - p + 1)), p, p)
        else:
            box = _centre_box(lr_h, lr_w, None if self.eval_patch_size is None else self.eval_patch_size // s)
        top, left, h, w = box
        hr_array = _decode(pair.hr) if self.decode_cache is None else self.decode_cache(pair.hr)
        if pair.lr is None:
            # Convert only the crop and the context the kernel reads (decoding dominates anyway).
            t0, l0, t1, l1 = _context(lr_h, lr_w, box)
            region = _to_float(hr_array[t0 * s : t1 * s, l0 * s : l1 * s])
            lr, hr = degrade_crop(region, s, (top - t0, left - l0, h, w), self.quantize_lr)
        else:
            lr = _to_float(_decode(pair.lr)[top : top + h, left : left + w])
            hr = _to_float(hr_array[top * s : (top + h) * s, left * s : (left + w) * s])
        if self.patch_size is not None and self.augment:
            k = int(rng.integers(0, 8))
            lr, hr = dihedral(lr, k), dihedral(hr, k)
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": pair.name}


# --------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def _check_positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _warn_alpha(files: list[Path]) -> None:
    if files:
        rank_zero_warn(f"{len(files)} image(s) have an alpha channel, which is dropped (first: {files[0]})")


def _find_partner(hr: Path, lr_index: dict[str, Path], scale: int) -> Path | None:
    """The LR file of ``hr``: same stem (Set5/Set14, plain pairs) or DIV2K's ``0001x4``."""
    for stem in (hr.stem, f"{hr.stem}x{scale}"):
        if stem in lr_index:
            return lr_index[stem]
    return None


def _resolve_layout(hr: str, lr: str | None, scale: int) -> tuple[Path, Path | None]:
    """Set5/Set14 layout: a root with ``GTmod12`` (and ``LRbicx{scale}``) subfolders."""
    root = Path(hr).expanduser()
    if (root / "GTmod12").is_dir():
        if lr is None and (root / f"LRbicx{scale}").is_dir():
            return root / "GTmod12", root / f"LRbicx{scale}"
        return root / "GTmod12", None if lr is None else Path(lr).expanduser()
    return root, None if lr is None else Path(lr).expanduser()


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


# Which splits each Lightning stage needs (None or an unknown stage: all of them).
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class _BaseSRDataModule(pl.LightningDataModule):
    """DataLoader plumbing shared by the image and video datamodules."""

    def __init__(
        self,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        samples_per_epoch: int | None,
        pin_memory: bool,
        seed: int,
    ) -> None:
        super().__init__()
        _check_positive_int(batch_size, "batch_size")
        _check_positive_int(val_batch_size, "val_batch_size")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if samples_per_epoch is not None:
            _check_positive_int(samples_per_epoch, "samples_per_epoch")
            if samples_per_epoch < batch_size:
                raise ValueError(
                    f"samples_per_epoch={samples_per_epoch} is smaller than batch_size={batch_size}: "
                    "an epoch would have no full batch"
                )
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        self.pin_memory = pin_memory
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    def _dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self.datasets[split]

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0,
            # Worker seeds from the loader's own generator, not the global RNG: a resumed run's
            # first iterator would otherwise draw once more than the uninterrupted run did.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train")
        num_items = len(dataset)
        # Default: one pass over the items, but never less than one full batch.
        length = self.samples_per_epoch or max(num_items, self.batch_size)
        sampler = EpochSampler(num_items, length, self.seed, progress=self._samples_trained if self.trainer is not None else None)
        return self._loader(dataset, self.batch_size, sampler, drop_last=True)

    def _samples_trained(self) -> int:
        """Samples this process has trained on in the run (restored from a checkpoint on resume)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.processed * self.batch_size

    def _eval_sampler(self, dataset: Dataset) -> Sampler | None:
        # Under DDP, each image is evaluated by exactly one process: Lightning's default
        # DistributedSampler would pad with repeats and bias the metrics. A DistributedSampler
        # subclass is left in place by Lightning.
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

            return UnrepeatedDistributedSampler(dataset, shuffle=False)
        return None

    def val_dataloader(self) -> DataLoader:
        dataset = self._dataset("val")
        return self._loader(dataset, self.val_batch_size, self._eval_sampler(dataset), drop_last=False)

    def test_dataloader(self) -> DataLoader:
        dataset = self._dataset("test")
        return self._loader(dataset, self.val_batch_size, self._eval_sampler(dataset), drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class ImageSRDataModule(_BaseSRDataModule):
    """Single-image SR data: HR folders (LR made on the fly) or paired HR/LR folders.

    Each split (train/val/test) takes one or more HR folders and, optionally, the matching LR
    folders. Without LR folders, LR images are made on the fly with MATLAB-compatible bicubic
    (:func:`~salightning.data.imresize`), as the benchmarks' LR images were. LR partners are
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
        _check_positive_int(scale, "scale")
        _check_positive_int(patch_size, "patch_size")
        if patch_size % scale:
            raise ValueError(f"patch_size must be a multiple of scale={scale}, got {patch_size!r}")
        if eval_patch_size is not None:
            _check_positive_int(eval_patch_size, "eval_patch_size")
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
        for split in _STAGE_SPLITS.get(stage, ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = self._build(split)

    def _pairs_of(self, split: str) -> list[tuple[Path, Path | None, str]]:
        """(HR file, LR file or None, option name) of every image of ``split``."""
        hr_folders, lr_folders = self.folders[split]
        if not hr_folders:
            from salightning.data.samples import sample_image_paths

            rank_zero_info(f"{split}: using the built-in sample photos (set {split}_hr to use your own)")
            return [(p, None, f"{split}_hr") for p in sample_image_paths(split)]
        found: list[tuple[Path, Path | None, str]] = []
        for i, hr_arg in enumerate(hr_folders):
            hr_dir, lr_dir = _resolve_layout(hr_arg, lr_folders[i] if lr_folders else None, self.scale)
            hr_files = list_images(hr_dir, f"{split}_hr")
            if lr_dir is None:
                found += [(p, None, f"{split}_hr") for p in hr_files]
                continue
            lr_index = {p.stem: p for p in list_images(lr_dir, f"{split}_lr")}
            missing = []
            for hr in hr_files:
                partner = _find_partner(hr, lr_index, self.scale)
                if partner is None:
                    missing.append(hr)
                found.append((hr, partner, f"{split}_hr"))
            if missing:
                raise FileNotFoundError(
                    f"{split}_lr: no LR partner in {lr_dir} for {missing[0]} (looked for "
                    f"{missing[0].stem}.* and {missing[0].stem}x{self.scale}.*)"
                    + (f"; {len(missing) - 1} more HR file(s) lack one" if len(missing) > 1 else "")
                )
        return found

    def _build(self, split: str) -> ImageSRDataset:
        s = self.scale
        entries = self._pairs_of(split)
        bad = _skip_undecodable([f for e in entries for f in e[:2] if f is not None], self.skip_unreadable)
        training = split == "train"
        pairs: list[_Pair] = []
        alpha: list[Path] = []
        for hr, lr, _ in entries:
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
            need, option = (self.patch_size, "patch_size") if training else (s, "scale")
            if height < need or width < need:
                raise ValueError(
                    f"{hr}: image is {info.height}x{info.width} ({height}x{width} after cropping to a multiple "
                    f"of scale={s}), smaller than {option}={need}; use a smaller {option} or remove the file"
                )
            pairs.append(_Pair(hr, lr, hr.stem, height, width))
        if not pairs:
            raise FileNotFoundError(f"{split}: no readable images left (all were skipped as unreadable)")
        _warn_alpha(alpha)
        return ImageSRDataset(
            pairs,
            scale=s,
            patch_size=self.patch_size if training else None,
            augment=self.augment,
            quantize_lr=self.quantize_lr,
            eval_patch_size=None if training else self.eval_patch_size,
            seed=self.seed,
            decode_cache=DecodeCache(_decode) if self.decode_cache and training else None,
        )
