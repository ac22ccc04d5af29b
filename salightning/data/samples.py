"""Built-in real sample data, with nothing downloaded.

Images: photographs that ship inside the installed scikit-image package (``skimage/data``),
read from there at run time. Each split uses different photos:

========  ==========================================================================
split     files (all public domain or CC0, see :data:`SAMPLE_IMAGE_SOURCES`)
========  ==========================================================================
train     astronaut, hubble_deep_field, retina, motorcycle_left, ihc (colour);
          brick, grass, gravel (greyscale textures, read as 3 equal channels)
val       chelsea (colour), camera (greyscale)
test      coffee, rocket (colour)
========  ==========================================================================

Video: scikit-image's only real clip, ``no_time_for_that_tiny.gif``, is 25×14 pixels, far
too small to give high-resolution frames. The sample clips are therefore made from the real
photos above by moving (and slowly zooming) a virtual camera across them: the content of
every frame is real, the **motion is synthetic** (a smooth pan of a few pixels per frame,
no parallax, no moving objects, no motion blur). Each frame is the camera window shrunk to
180×240 with :func:`~salightning.ops.imresize`, rounded to 8 bits (:func:`~salightning.ops.to_uint8`). They are written
once into a cache folder as frame folders (one folder of PNGs per clip, the Vid4 layout) and
as H.264 MP4 files (through PyAV), and reused afterwards.

The cache folder is ``$SALIGHTNING_CACHE_DIR`` if set, else ``~/.cache/salightning``; every
function takes a ``cache_dir`` to override it. Nothing is ever written into the package.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from salightning.data.io import read_image, write_video
from salightning.ops import imresize, to_uint8

__all__ = [
    "SAMPLE_IMAGES",
    "SAMPLE_IMAGE_SOURCES",
    "SAMPLE_CLIPS",
    "SampleClip",
    "skimage_data_dir",
    "sample_image_paths",
    "default_cache_dir",
    "sample_video_dir",
    "sample_video_paths",
]

#: File names (inside ``skimage/data``) of the sample photos of each split.
SAMPLE_IMAGES: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png",
        "hubble_deep_field.jpg",
        "retina.jpg",
        "motorcycle_left.png",
        "ihc.png",
        "brick.png",
        "grass.png",
        "gravel.png",
    ),
    "val": ("chelsea.png", "camera.png"),
    "test": ("coffee.png", "rocket.jpg"),
}

#: Where each sample photo comes from, as scikit-image documents it.
SAMPLE_IMAGE_SOURCES: dict[str, str] = {
    "astronaut.png": "astronaut Eileen Collins, NASA Great Images database; public domain",
    "hubble_deep_field.jpg": "Hubble eXtreme Deep Field, NASA/HubbleSite; public domain",
    "retina.jpg": "fundus photograph of a normal left eye, M. Häggström, Wikimedia Commons; CC0",
    "motorcycle_left.png": "left view of the Middlebury 2014 stereo 'motorcycle' scene (Scharstein et al.)",
    "ihc.png": "immunohistochemistry of colonic glands, CMMI; no known copyright restrictions",
    "brick.png": "brick wall texture, CC0Textures; CC0 (greyscale)",
    "grass.png": "grass texture, DeviantArt user linolafett; CC0 (greyscale)",
    "gravel.png": "gravel texture, CC0Textures; CC0 (greyscale)",
    "chelsea.png": "Chelsea the cat, photo by Stefan van der Walt; CC0",
    "camera.png": "man with a camera, photo by Lav Varshney; CC0 (greyscale)",
    "coffee.png": "cup of coffee, photo by Rachel Michetti; CC0",
    "rocket.jpg": "launch of DSCOVR on Falcon 9, SpaceX; public domain",
}

Split = Literal["train", "val", "test"]

_FRAME_SIZE = (180, 240)  # (height, width) of the sample clips' frames; multiples of 12
_CLIP_FRAMES = 16
_VIDEO_VERSION = "video-v1"  # bump when the clips change, so stale caches are not reused


@dataclass(frozen=True)
class SampleClip:
    """A synthetic camera move over a real photo.

    The window centre starts at ``start`` (fractions of the photo's height and width) and moves
    by ``velocity`` output pixels per frame; the window is ``zoom`` times the frame size,
    changing linearly from ``zoom[0]`` to ``zoom[1]`` (a larger zoom shows more of the photo).
    """

    name: str
    photo: str
    split: Literal["train", "test"]
    zoom: tuple[float, float]
    start: tuple[float, float]
    velocity: tuple[float, float]


#: The sample clips. "train" clips are split 80/20 into train/val by the video datamodule.
SAMPLE_CLIPS: tuple[SampleClip, ...] = (
    SampleClip("retina_pan", "retina.jpg", "train", (3.0, 3.0), (0.40, 0.35), (0.8, 2.4)),
    SampleClip("retina_zoom", "retina.jpg", "train", (3.4, 2.6), (0.62, 0.55), (-1.0, 0.6)),
    SampleClip("hubble_pan", "hubble_deep_field.jpg", "train", (2.0, 2.0), (0.45, 0.35), (0.6, 2.0)),
    SampleClip("motorcycle_pan", "motorcycle_left.png", "train", (1.6, 1.6), (0.50, 0.35), (0.2, 2.5)),
    SampleClip("astronaut_tilt", "astronaut.png", "train", (1.5, 1.5), (0.40, 0.50), (1.5, -0.5)),
    SampleClip("ihc_pan", "ihc.png", "train", (1.4, 1.4), (0.55, 0.40), (-1.0, 1.5)),
    SampleClip("coffee_pan", "coffee.png", "test", (1.4, 1.4), (0.50, 0.45), (0.4, 1.8)),
    SampleClip("chelsea_zoom", "chelsea.png", "test", (1.6, 1.2), (0.50, 0.50), (0.0, 0.8)),
)


def skimage_data_dir() -> Path:
    """The ``data`` folder of the installed scikit-image package."""
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def sample_image_paths(split: Split = "train") -> list[Path]:
    """Paths of the sample photos of ``split`` ("train", "val" or "test"), inside scikit-image.

    Raises:
        ValueError: for an unknown split.
        FileNotFoundError: if the installed scikit-image lacks one of the photos.
    """
    if split not in SAMPLE_IMAGES:
        raise ValueError(f"split must be one of {sorted(SAMPLE_IMAGES)}, got {split!r}")
    folder = skimage_data_dir()
    paths = [folder / name for name in SAMPLE_IMAGES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the installed scikit-image lacks the sample photo(s) {missing}; reinstall scikit-image>=0.22"
        )
    return paths


def default_cache_dir() -> Path:
    """``$SALIGHTNING_CACHE_DIR`` if set, else ``~/.cache/salightning``."""
    env = os.environ.get("SALIGHTNING_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "salightning"


def _clip_frames(clip: SampleClip) -> np.ndarray:
    """The frames of ``clip``: (frames, H, W, 3) uint8."""
    photo = read_image(skimage_data_dir() / clip.photo)
    _, ph, pw = photo.shape
    fh, fw = _FRAME_SIZE
    frames = []
    for t in range(_CLIP_FRAMES):
        frac = t / (_CLIP_FRAMES - 1)
        zoom = clip.zoom[0] + (clip.zoom[1] - clip.zoom[0]) * frac
        wh, ww = min(ph, round(fh * zoom)), min(pw, round(fw * zoom))
        cy = clip.start[0] * ph + clip.velocity[0] * zoom * t
        cx = clip.start[1] * pw + clip.velocity[1] * zoom * t
        top = int(np.clip(round(cy - wh / 2), 0, ph - wh))
        left = int(np.clip(round(cx - ww / 2), 0, pw - ww))
        window = photo[:, top : top + wh, left : left + ww]
        frames.append(to_uint8(imresize(window, size=_FRAME_SIZE)).permute(1, 2, 0).numpy())
    return np.stack(frames)


def _build_videos(root: Path) -> None:
    """Write all sample clips into ``root`` (frames/<split>/<clip>/ and mp4/<split>/<clip>.mp4)."""
    from PIL import Image

    for clip in SAMPLE_CLIPS:
        frames = _clip_frames(clip)
        folder = root / "frames" / clip.split / clip.name
        folder.mkdir(parents=True)
        for t, array in enumerate(frames):
            Image.fromarray(array).save(folder / f"frame_{t:04d}.png")
        (root / "mp4" / clip.split).mkdir(parents=True, exist_ok=True)
        write_video(frames, root / "mp4" / clip.split / f"{clip.name}.mp4")
    (root / "README.txt").write_text(
        "salightning sample clips: a synthetic camera pan/zoom over real photos bundled with\n"
        "scikit-image (real content, synthetic motion). Safe to delete; rebuilt on demand.\n"
    )


def _video_root(cache_dir: str | os.PathLike | None) -> Path:
    """The sample-clip cache folder, built on first use (atomically, safe with several processes)."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = base / "samples" / _VIDEO_VERSION
    if (root / "README.txt").is_file():
        return root
    base.joinpath("samples").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=base / "samples"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is ordinary readable data
    try:
        _build_videos(tmp)
        try:
            tmp.rename(root)
        except OSError:
            # Another process finished first: keep its copy.
            if not (root / "README.txt").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def sample_video_dir(
    split: Literal["train", "test"] = "train",
    cache_dir: str | os.PathLike | None = None,
    fmt: Literal["frames", "mp4"] = "frames",
) -> Path:
    """The folder holding the sample clips of ``split``, built on first use.

    Args:
        split: "train" (six clips, which the video datamodule splits into train and val) or
            "test" (two clips over photos no train clip uses).
        cache_dir: where to build the clips; default :func:`default_cache_dir`.
        fmt: "frames" (one folder of PNG frames per clip, the Vid4 layout) or "mp4" (one
            H.264 file per clip, yuv420p, so slightly lossy).

    Returns:
        The folder, e.g. ``~/.cache/salightning/samples/video-v1/frames/train``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if fmt not in ("frames", "mp4"):
        raise ValueError(f"fmt must be 'frames' or 'mp4', got {fmt!r}")
    return _video_root(cache_dir) / fmt / split


def sample_video_paths(
    split: Literal["train", "test"] = "train",
    cache_dir: str | os.PathLike | None = None,
    fmt: Literal["frames", "mp4"] = "frames",
) -> list[Path]:
    """One path per sample clip of ``split``: frame folders or MP4 files (see :func:`sample_video_dir`)."""
    folder = sample_video_dir(split, cache_dir, fmt)
    suffix = ".mp4" if fmt == "mp4" else ""
    return [folder / f"{c.name}{suffix}" for c in SAMPLE_CLIPS if c.split == split]
