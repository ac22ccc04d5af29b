"""Reading images, frame folders and video files; pairing HR images with their LR files.

Images: 8-bit and 16-bit PNG (decoded by :func:`torchvision.io.decode_image`, which keeps
16 bits where Pillow keeps 8), JPEG, BMP, TIFF (16-bit TIFF through tifffile), WebP, PNM;
greyscale images become 3 equal channels, an alpha channel is dropped (:func:`probe_image`
says whether a file has one), the EXIF orientation is applied. Clips: frame folders (one image
per frame, the Vid4 layout) and video files (through PyAV). Files are only ever read, except by
:func:`write_video`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageInfo",
    "probe_image",
    "decode_image",
    "array_to_tensor",
    "read_image",
    "read_image_channels",
    "natural_key",
    "list_images",
    "has_images",
    "warn_alpha",
    "pair_images",
    "write_video",
    "FrameFolder",
    "VideoFile",
    "find_sequences",
    "open_sequence",
]

#: File suffixes read as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")

#: File suffixes read as videos (case-insensitive), through PyAV (FFmpeg).
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".gif", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".y4m",
)


# --------------------------------------------------------------------------------------------
# Images
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


def _decode_png16(path: Path, colour_type: int, keep_alpha: bool = False) -> np.ndarray:
    """A 16-bit colour (or grey+alpha) PNG as uint16 (H, W, 3) or (H, W) (with alpha: (H, W, 4)
    or (H, W, 2)): Pillow keeps only 8 bits."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode_image

    image = tv_decode_image(str(path), mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
    if keep_alpha and colour_type in (4, 6):
        return image.permute(1, 2, 0).numpy()
    if colour_type == 4:  # grey + alpha
        return image[0].numpy()
    return image[:3].permute(1, 2, 0).numpy()


def _tiff_bits(im: Any) -> int:
    """The largest bits per sample of a TIFF opened by Pillow (8 for other formats)."""
    bits = getattr(im, "tag_v2", {}).get(258, 8) if getattr(im, "format", None) == "TIFF" else 8
    return max(bits) if isinstance(bits, tuple) else int(bits)


def _decode_tiff16(path: Path, keep_alpha: bool = False) -> np.ndarray:
    """A 16-bit TIFF as uint16 (H, W, 3) or (H, W) (with alpha: (H, W, 4) or (H, W, 2)), read by
    tifffile (Pillow keeps 8 bits of RGB)."""
    import tifffile

    array = tifffile.imread(path)
    if array.dtype != np.uint16:
        raise ValueError(f"unsupported TIFF pixel type {array.dtype} (8- and 16-bit unsigned integers are read)")
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF
    if keep_alpha and array.ndim == 3 and array.shape[-1] in (2, 4):
        return array
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        return array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., :3]
    if array.ndim != 2:
        raise ValueError(f"unsupported TIFF layout {array.shape} (a single grey or RGB image is read)")
    return array


def decode_image(path: str | Path, keep_alpha: bool = False) -> np.ndarray:
    """An image file as its stored integers: uint8 or uint16 (H, W, 3) or (H, W), alpha
    dropped (``keep_alpha``: kept as the last channel, (H, W, 4) or (H, W, 2)), EXIF orientation
    applied (:func:`read_image` makes a float tensor of it).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if it cannot be decoded or holds 32-bit, floating-point
            or animated images.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        png = _png_header(path)
        if png is not None and png[0] == 16 and png[1] in (2, 4, 6):
            return _decode_png16(path, png[1], keep_alpha)
        with Image.open(path) as opened:
            frames = getattr(opened, "n_frames", 1)
            if frames > 1 and path.suffix.lower() not in (".tif", ".tiff"):
                raise ValueError(f"an animated image ({frames} frames) is not a still image; give its frames as a folder (or a video)")
            if opened.mode == "F":
                raise ValueError(f"unsupported floating-point pixel format {opened.mode!r}")
            if _tiff_bits(opened) == 16:
                return _decode_tiff16(path, keep_alpha)
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
            if keep_alpha and has_alpha:
                return np.asarray(im.convert("LA" if im.mode in ("L", "LA", "La") else "RGBA"))
            return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))[..., :3]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, StopIteration) as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from err
    except Exception as err:  # torchvision's RuntimeError and anything a damaged file provokes
        raise ValueError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err


def array_to_tensor(array: np.ndarray, expand_grey: bool = True) -> Tensor:
    """Integers of an image (uint8 or uint16, (H, W, C) or (H, W)) as a (C, H, W) float32 tensor
    in [0, 1]: divided by 255 or 65535; greyscale (H, W) repeated on 3 channels, or with
    ``expand_grey=False`` one channel."""
    peak = 65535.0 if array.dtype == np.uint16 else 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32)).div_(peak)
    if tensor.ndim == 2:
        return tensor.expand(3 if expand_grey else 1, *tensor.shape).contiguous()
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
    return array_to_tensor(decode_image(path))


def read_image_channels(path: str | Path) -> Tensor:
    """Read an image file as a (C, H, W) float32 tensor in [0, 1] with its own channels: C = 1
    (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); otherwise as :func:`read_image`."""
    return array_to_tensor(decode_image(path, keep_alpha=True), expand_grey=False)


def natural_key(path: Path) -> list[Any]:
    """Sort key of file names putting frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path, option: str = "folder") -> list[Path]:
    """The image files directly inside ``folder``, in natural order; links that lead to no file
    (a symlink loop, a missing target) are skipped with a warning naming them.

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
    named = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    files = sorted((p for p in named if p.is_file()), key=natural_key)
    dangling = sorted((p for p in named if p.is_symlink() and not p.exists()), key=natural_key)
    if dangling:
        from pytorch_lightning.utilities import rank_zero_warn

        rank_zero_warn(
            f"{option}: skipped {len(dangling)} image link(s) in {folder} that lead to no file (a symlink loop or a "
            f"missing target; first: {dangling[0].name}); fix or remove them"
        )
    if not files:
        raise FileNotFoundError(f"{option}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files



def warn_alpha(files: Sequence[Path]) -> None:
    """Warn once (on rank 0) that ``files`` have an alpha channel, which reading drops."""
    if files:
        from pytorch_lightning.utilities import rank_zero_warn

        rank_zero_warn(f"{len(files)} image(s) have an alpha channel, which is dropped (first: {files[0]})")


def has_images(folder: str | Path) -> bool:
    """Whether ``folder`` holds image files directly inside."""
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in Path(folder).iterdir())


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


def pair_images(hr: str | Path, lr: str | Path | None, scale: int, split: str = "test") -> list[tuple[Path, Path | None]]:
    """The HR image files of a folder, each with its LR file (or None).

    LR partners are found by name: the same stem (Set5/Set14 ``GTmod12``/``LRbicx4``, plain
    pairs) or the stem with the scale appended (DIV2K's ``0001.png`` and ``0001x4.png``). A
    Set5/Set14 root holding ``GTmod12`` (and ``LRbicx{scale}``) can be given as ``hr``.

    Args:
        hr: the HR folder (or a Set5/Set14 root).
        lr: the LR folder, or None (LR made from HR; a Set5/Set14 root's ``LRbicx{scale}`` is used).
        scale: SR factor, for DIV2K names and ``LRbicx{scale}``.
        split: the split, quoted in errors as ``{split}_hr``/``{split}_lr``.

    Raises:
        FileNotFoundError: a folder that is missing or holds no images, or an HR image without
            an LR partner (naming the file).
    """
    hr_dir, lr_dir = _resolve_layout(str(hr), None if lr is None else str(lr), scale)
    hr_files = list_images(hr_dir, f"{split}_hr")
    if lr_dir is None:
        return [(p, None) for p in hr_files]
    lr_index = {p.stem: p for p in list_images(lr_dir, f"{split}_lr")}
    found = [(p, _find_partner(p, lr_index, scale)) for p in hr_files]
    missing = [p for p, partner in found if partner is None]
    if missing:
        raise FileNotFoundError(
            f"{split}_lr: no LR partner in {lr_dir} for {missing[0]} (looked for "
            f"{missing[0].stem}.* and {missing[0].stem}x{scale}.*)"
            + (f"; {len(missing) - 1} more HR file(s) lack one" if len(missing) > 1 else "")
        )
    return found


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------


def write_video(frames: np.ndarray, path: str | Path, fps: int = 25, crf: int = 12) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as an H.264 MP4 with PyAV (yuv420p, so H and W
    must be even; ``crf`` 12 is visually lossless)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class FrameFolder:
    """A clip stored as one image file per frame (Vid4 layout), in natural name order.

    Args:
        path: the folder.
        option: the user-facing option that named it, quoted in errors.

    Raises:
        FileNotFoundError: if the folder is missing or holds no images.
        ValueError: naming the frame, if a frame's header is unreadable or its size differs.
    """

    def __init__(self, path: str | Path, option: str = "folder") -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.frames = list_images(self.path, option)
        infos = [probe_image(f) for f in self.frames]
        self.height, self.width = infos[0].height, infos[0].width
        for frame, info in zip(self.frames, infos):
            if (info.height, info.width) != (self.height, self.width):
                raise ValueError(
                    f"{frame}: frame is {info.height}x{info.width} but the first frame of the clip "
                    f"({self.frames[0].name}) is {self.height}x{self.width}"
                )
        self.alpha_frames = [f for f, info in zip(self.frames, infos) if info.has_alpha]

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, indices: Sequence[int]) -> Tensor:
        """Frames ``indices`` as a (len(indices), 3, H, W) float32 tensor in [0, 1]."""
        cache = {i: read_image(self.frames[i]) for i in sorted(set(indices))}
        return torch.stack([cache[i] for i in indices])

    def check_decodable(self) -> None:
        """Decode every frame once (raises ValueError naming the first bad frame)."""
        for frame in self.frames:
            read_image(frame)


#: Video files a process keeps open between reads (one window usually reads one file several times).
MAX_OPEN_VIDEOS = 8
_OPEN_VIDEOS: dict[int, VideoFile] = {}  # id -> file, least recently read first


class VideoFile:
    """A clip stored as a video file, decoded with PyAV (FFmpeg), with random access by seeking.

    The frame list comes from the packets' timestamps; reading frames t..t+k seeks to the
    key frame before t and decodes forward. Files whose packets lack timestamps are decoded
    from the start instead (correct, slower). Frames are read as 8-bit RGB.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if it has no video stream or cannot be decoded.
    """

    def __init__(self, path: str | Path) -> None:
        import av

        self.path = Path(path)
        self.name = self.path.stem
        self.alpha_frames: list[Path] = []
        self._container: Any = None
        self._opened_by: int | None = None
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such video file")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise ValueError("no video stream")
                stream = container.streams.video[0]
                packets = [p for p in container.demux(stream) if p.size > 0 and not p.is_discard]
                pts = [p.pts for p in packets]
            with av.open(str(self.path)) as container:
                first = next(container.decode(video=0))
        except StopIteration:
            raise ValueError(f"{self.path}: cannot decode video (no frame could be decoded)") from None
        except ValueError as err:
            raise ValueError(f"{self.path}: cannot decode video ({err})") from err
        except Exception as err:  # PyAV raises av.error.* (InvalidDataError, ...) for damaged files
            raise ValueError(f"{self.path}: cannot decode video ({type(err).__name__}: {err})") from err
        self.height, self.width = first.height, first.width
        # Without timestamps, fall back to counting frames from the start.
        self._pts: list[int] | None = None if any(p is None for p in pts) else sorted(pts)
        self._count = len(pts) if self._pts is not None else self._decode_count()

    def __len__(self) -> int:
        return self._count

    def __getstate__(self) -> dict[str, Any]:
        # An open container cannot cross process boundaries; each worker opens its own.
        state = self.__dict__.copy()
        state["_container"] = None
        return state

    def close(self) -> None:
        """Close the file kept open for reading (reopened by the next :meth:`read`)."""
        _OPEN_VIDEOS.pop(id(self), None)
        container, self._container = getattr(self, "_container", None), None
        # A container inherited through fork is the parent's: only the process that opened it closes it.
        if container is not None and self._opened_by == os.getpid():
            container.close()

    def __del__(self) -> None:
        self.close()

    def _decode_count(self) -> int:
        import av

        with av.open(str(self.path)) as container:
            return sum(1 for _ in container.decode(video=0))

    def _open(self) -> Any:
        import av

        if self._container is not None and self._opened_by != os.getpid():
            self._container = None  # inherited through fork: open one of this process's own
        if self._container is None:
            self._container = av.open(str(self.path))
            self._opened_by = os.getpid()
        # The most recently read files stay open (each holds a file and a decoder); older ones are closed.
        _OPEN_VIDEOS.pop(id(self), None)
        _OPEN_VIDEOS[id(self)] = self
        while len(_OPEN_VIDEOS) > MAX_OPEN_VIDEOS:
            _OPEN_VIDEOS[next(iter(_OPEN_VIDEOS))].close()
        return self._container

    def _decode_range(self, lo: int, hi: int) -> dict[int, np.ndarray] | None:
        """Frames lo..hi by seeking; None if the timestamps did not line up."""
        container = self._open()
        stream = container.streams.video[0]
        wanted = {self._pts[i]: i for i in range(lo, hi + 1)}
        container.seek(self._pts[lo], stream=stream, backward=True, any_frame=False)
        out: dict[int, np.ndarray] = {}
        for frame in container.decode(stream):
            if frame.pts is None:
                return None
            if frame.pts in wanted:
                out[wanted[frame.pts]] = frame.to_ndarray(format="rgb24")
            if frame.pts >= self._pts[hi]:
                break
        return out if len(out) == hi - lo + 1 else None

    def _decode_sequential(self, lo: int, hi: int) -> dict[int, np.ndarray]:
        import av

        out: dict[int, np.ndarray] = {}
        with av.open(str(self.path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= lo:
                    out[i] = frame.to_ndarray(format="rgb24")
                if i >= hi:
                    break
        return out

    def read(self, indices: Sequence[int]) -> Tensor:
        """Frames ``indices`` as a (len(indices), 3, H, W) float32 tensor in [0, 1].

        Raises:
            ValueError: naming the file, if the frames cannot be decoded.
        """
        lo, hi = min(indices), max(indices)
        try:
            frames = self._decode_range(lo, hi) if self._pts is not None else None
            if frames is None:
                frames = self._decode_sequential(lo, hi)
        except Exception as err:
            raise ValueError(f"{self.path}: cannot decode frames {lo}..{hi} ({type(err).__name__}: {err})") from err
        if len(frames) < hi - lo + 1:
            raise ValueError(f"{self.path}: cannot decode frames {lo}..{hi} (the file ends early)")
        array = np.stack([frames[i] for i in indices])
        return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)

    def check_decodable(self) -> None:
        """Decode every frame once (raises ValueError naming the file)."""
        try:
            count = self._decode_count()
        except Exception as err:
            raise ValueError(f"{self.path}: cannot decode video ({type(err).__name__}: {err})") from err
        if count < self._count:
            raise ValueError(f"{self.path}: only {count} of {self._count} frames could be decoded")


def find_sequences(paths: Sequence[str | Path], option: str = "folder") -> list[Path]:
    """Expand user paths into clips: frame folders and video files.

    Each path may be a video file, a frame folder (images directly inside), or a folder of
    clips (subfolders of frames, as in Vid4's ``GT/calendar``, ``GT/city``..., and/or video
    files).

    Raises:
        FileNotFoundError: naming the path, if it does not exist or holds no clip.
        ValueError: naming the path, if a file is not a video.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{option}: {path} does not exist")
        if path.is_file():
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                raise ValueError(f"{option}: {path} is not a video file ({', '.join(VIDEO_EXTENSIONS)})")
            found.append(path)
        elif has_images(path):
            found.append(path)
        else:
            children = sorted(path.iterdir(), key=natural_key)
            clips = [c for c in children if (c.is_dir() and has_images(c)) or c.suffix.lower() in VIDEO_EXTENSIONS]
            if not clips:
                raise FileNotFoundError(
                    f"{option}: no clips in {path}: expected frame folders (one folder of images per clip) "
                    f"or video files ({', '.join(VIDEO_EXTENSIONS)})"
                )
            found += clips
    return found


def open_sequence(path: str | Path, option: str = "folder") -> FrameFolder | VideoFile:
    """A :class:`FrameFolder` for a folder, a :class:`VideoFile` for a file."""
    path = Path(path)
    return VideoFile(path) if path.is_file() else FrameFolder(path, option)
