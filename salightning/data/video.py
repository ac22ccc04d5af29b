"""Video super-resolution data: frame folders and video files, frame windows, the video DataModule.

Batches are dicts ``{"lr": ..., "hr": (B, 3, H, W), "name": list[str]}`` with values in [0, 1],
where ``lr`` holds the ``num_frames`` LR frames t-k..t+k around the HR centre frame t:
(B, T, 3, h, w), or (B, T, 3, H, W) with ``upsample_input=True`` (each LR frame
bicubic-upsampled to HR size, the input of VSRResNet / VSRResFeatGAN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from salightning.data.image import (
    _BaseSRDataModule,
    _centre_box,
    _check_positive_int,
    _natural_key,
    _quantize,
    _split_key,
    _STAGE_SPLITS,
    _warn_alpha,
    IMAGE_EXTENSIONS,
    degrade_crop,
    dihedral,
    list_images,
    probe_image,
    read_image,
)
from salightning.data.imresize import imresize

__all__ = [
    "VIDEO_EXTENSIONS",
    "write_video",
    "FrameFolder",
    "VideoFile",
    "find_sequences",
    "open_sequence",
    "reflect_index",
    "VideoSRDataset",
    "VideoSRDataModule",
]

#: File suffixes read as videos (case-insensitive), through PyAV (FFmpeg).
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".gif", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".y4m",
)


def reflect_index(index: int, length: int) -> int:
    """Mirror a frame index into ``0..length-1`` without repeating the edge (-1 -> 1, length -> length-2)."""
    if length == 1:
        return 0
    period = 2 * (length - 1)
    index %= period
    return period - index if index >= length else index


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

    def _decode_count(self) -> int:
        import av

        with av.open(str(self.path)) as container:
            return sum(1 for _ in container.decode(video=0))

    def _open(self) -> Any:
        import av

        if self._container is None:
            self._container = av.open(str(self.path))
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


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


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
        elif _has_images(path):
            found.append(path)
        else:
            children = sorted(path.iterdir(), key=_natural_key)
            clips = [c for c in children if (c.is_dir() and _has_images(c)) or c.suffix.lower() in VIDEO_EXTENSIONS]
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


class VideoSRDataset(Dataset):
    """Windows of ``num_frames`` LR frames and the HR centre frame (usually built by
    :class:`VideoSRDataModule`).

    Frame indices beyond the clip's ends are mirrored (:func:`reflect_index`). LR frames are
    made from the HR frames with MATLAB-compatible bicubic (:func:`imresize`).

    Args:
        sequences: the clips.
        items: (clip index, centre frame) of each item.
        scale: SR factor.
        num_frames: window length T (odd).
        patch_size: HR training crop (random, in LR coordinates, with one of 8 dihedral
            transforms shared by all frames); None for evaluation (whole frames).
        augment: apply the dihedral transforms.
        quantize_lr: round LR frames to 8-bit levels.
        upsample_input: bicubic-upsample the LR frames to HR size here (in the worker).
        eval_patch_size: HR centre crop for evaluation; None for whole frames.
        seed: seed for keys given as plain indices.

    Returns:
        ``{"lr": (T, 3, h, w) or (T, 3, H, W), "hr": (3, H, W), "name": "clip/frame"}``.
    """

    def __init__(
        self,
        sequences: Sequence[FrameFolder | VideoFile],
        items: Sequence[tuple[int, int]],
        scale: int,
        num_frames: int = 5,
        patch_size: int | None = None,
        augment: bool = True,
        quantize_lr: bool = True,
        upsample_input: bool = False,
        eval_patch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.sequences = list(sequences)
        self.items = list(items)
        self.scale = scale
        self.num_frames = num_frames
        self.patch_size = patch_size
        self.augment = augment
        self.quantize_lr = quantize_lr
        self.upsample_input = upsample_input
        self.eval_patch_size = eval_patch_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = _split_key(key, self.seed)
        seq_index, centre = self.items[index]
        seq = self.sequences[seq_index]
        s = self.scale
        half = self.num_frames // 2
        indices = [reflect_index(centre + o, len(seq)) for o in range(-half, half + 1)]
        height, width = seq.height // s * s, seq.width // s * s
        frames = seq.read(indices)[..., :height, :width]
        lr_h, lr_w = height // s, width // s
        if self.patch_size is not None:
            p = self.patch_size // s
            box = (int(rng.integers(0, lr_h - p + 1)), int(rng.integers(0, lr_w - p + 1)), p, p)
        else:
            box = _centre_box(lr_h, lr_w, None if self.eval_patch_size is None else self.eval_patch_size // s)
        lr, hr = degrade_crop(frames, s, box, self.quantize_lr)
        hr = hr[half]
        if self.patch_size is not None and self.augment:
            k = int(rng.integers(0, 8))
            lr, hr = dihedral(lr, k), dihedral(hr, k)
        if self.upsample_input:
            lr = _quantize(imresize(lr, float(s)), self.quantize_lr)
        name = f"{seq.name}/{seq.frames[centre].stem}" if isinstance(seq, FrameFolder) else f"{seq.name}/{centre:05d}"
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": name}


class VideoSRDataModule(_BaseSRDataModule):
    """Video SR data: clips as frame folders (Vid4 layout) or video files (MP4 etc. via PyAV).

    Each sample is a window of ``num_frames`` frames t-k..t+k (mirrored at the clip's ends) with
    the HR centre frame as target; LR frames are made with MATLAB-compatible bicubic.
    Train/validation are split by clip, as in the paper (80/20 of the training clips, chosen
    reproducibly from ``seed``, unless ``val`` is given); test clips are separate. A split
    left as None uses the built-in sample clips (:mod:`salightning.data.samples`: synthetic
    camera motion over real photos, built once into a cache folder).

    For VSRResNet / VSRResFeatGAN (``upsample_input=True``) each LR frame is upsampled to HR
    size with the same bicubic, either in the DataLoader workers or after the batch reached the
    accelerator (``upsample_on="accelerator"``, 1/scale² of the transfer; done in
    :meth:`on_after_batch_transfer`, which Lightning calls — outside Lightning, call it
    yourself). Lightning uses this hook instead of the LightningModule's if both define it.

    Args:
        train: training clips: folder(s) of clips, frame folder(s) or video file(s).
        val: validation clips; None splits ``val_fraction`` of the training clips off.
        test: test clips (for testing and prediction).
        val_fraction: share of the training clips used for validation when ``val`` is None.
        scale: SR factor.
        num_frames: frames per window (odd; 5 in VSRResFeatGAN).
        patch_size: HR training crop size (a multiple of ``scale``).
        upsample_input: give ``lr`` at HR size (bicubic-upsampled frames).
        upsample_on: where to upsample: "workers" or "accelerator".
        batch_size: training batch size (incomplete last batches are dropped).
        val_batch_size: validation/test batch size (frames of one size per batch).
        num_workers: DataLoader worker processes.
        samples_per_epoch: training windows per epoch (None: one per frame of the training clips).
        augment: apply one of the 8 dihedral transforms to each training window.
        quantize_lr: round LR frames to 8-bit levels, like stored LR videos.
        eval_patch_size: HR centre crop for validation/test instead of whole frames.
        eval_frame_step: use every n-th frame as a validation/test centre frame.
        skip_unreadable: decode every clip once at setup and leave out those that fail, with a
            warning listing them; otherwise a bad clip raises.
        sample_cache_dir: where the built-in sample clips are built (default
            ``$SALIGHTNING_CACHE_DIR`` or ``~/.cache/salightning``).
        pin_memory: pin batches in memory when a CUDA device is present.
        seed: seed of the clip split, crops, augmentations and sample order.

    Raises:
        FileNotFoundError: a missing path or a folder without clips.
        ValueError: an undecodable clip, frames of different sizes, frames smaller than
            ``patch_size``, a clip with fewer frames than ``num_frames`` (naming the file).
    """

    def __init__(
        self,
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        val_fraction: float = 0.2,
        scale: int = 4,
        num_frames: int = 5,
        patch_size: int = 128,
        upsample_input: bool = False,
        upsample_on: Literal["workers", "accelerator"] = "accelerator",
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 4,
        samples_per_epoch: int | None = None,
        augment: bool = True,
        quantize_lr: bool = True,
        eval_patch_size: int | None = None,
        eval_frame_step: int = 1,
        skip_unreadable: bool = False,
        sample_cache_dir: str | None = None,
        pin_memory: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, samples_per_epoch, pin_memory, seed)
        _check_positive_int(scale, "scale")
        _check_positive_int(patch_size, "patch_size")
        _check_positive_int(eval_frame_step, "eval_frame_step")
        if patch_size % scale:
            raise ValueError(f"patch_size must be a multiple of scale={scale}, got {patch_size!r}")
        if eval_patch_size is not None:
            _check_positive_int(eval_patch_size, "eval_patch_size")
            if eval_patch_size % scale:
                raise ValueError(f"eval_patch_size must be a multiple of scale={scale}, got {eval_patch_size!r}")
        if not isinstance(num_frames, int) or num_frames < 1 or num_frames % 2 == 0:
            raise ValueError(f"num_frames must be an odd integer >= 1, got {num_frames!r}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if upsample_on not in ("workers", "accelerator"):
            raise ValueError(f"upsample_on must be 'workers' or 'accelerator', got {upsample_on!r}")
        self.save_hyperparameters()
        self.paths = {"train": train, "val": val, "test": test}
        self.val_fraction = val_fraction
        self.scale = scale
        self.num_frames = num_frames
        self.patch_size = patch_size
        self.upsample_input = upsample_input
        self.upsample_on = upsample_on
        self.augment = augment
        self.quantize_lr = quantize_lr
        self.eval_patch_size = eval_patch_size
        self.eval_frame_step = eval_frame_step
        self.skip_unreadable = skip_unreadable
        self.sample_cache_dir = sample_cache_dir
        #: Clip names of each split, filled by :meth:`setup`.
        self.split_names: dict[str, list[str]] = {}

    # -- clips ---------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Build the built-in sample clips once (one process per node) when training uses them.

        Other cases build them in :meth:`setup` when needed (building is safe to race)."""
        from salightning.data.samples import sample_video_dir

        if self.paths["train"] is None:
            sample_video_dir("train", self.sample_cache_dir)

    def _clip_paths(self, split: str) -> list[Path]:
        value = self.paths[split]
        if value is None:
            from salightning.data.samples import sample_video_dir

            rank_zero_info(f"{split}: using the built-in sample clips (set `{split}` to use your own)")
            return find_sequences([sample_video_dir(split, self.sample_cache_dir)], split)
        return find_sequences([value] if isinstance(value, str) else list(value), split)

    def _open_clips(self, paths: list[Path], option: str) -> list[FrameFolder | VideoFile]:
        clips: list[FrameFolder | VideoFile] = []
        bad: list[str] = []
        for path in paths:
            try:
                clip = open_sequence(path, option)
                if self.skip_unreadable:
                    clip.check_decodable()
            except ValueError as err:
                if not self.skip_unreadable:
                    raise
                bad.append(str(err))
                continue
            clips.append(clip)
        if bad:
            rank_zero_warn(f"skip_unreadable=True: leaving out {len(bad)} unreadable clip(s):\n  " + "\n  ".join(bad))
        if not clips:
            raise FileNotFoundError(f"{option}: no readable clips left (all were skipped as unreadable)")
        for clip in clips:
            where = clip.path
            if len(clip) < self.num_frames:
                raise ValueError(f"{where}: clip has {len(clip)} frames, fewer than num_frames={self.num_frames}")
            height, width = clip.height // self.scale * self.scale, clip.width // self.scale * self.scale
            need, what = (self.patch_size, "patch_size") if option == "train" else (self.scale, "scale")
            if height < need or width < need:
                raise ValueError(
                    f"{where}: frames are {clip.height}x{clip.width}, smaller than {what}={need}; "
                    f"use a smaller {what} or leave the clip out"
                )
        _warn_alpha([f for clip in clips for f in clip.alpha_frames])
        return clips

    def _split_clips(self) -> dict[str, list[FrameFolder | VideoFile]]:
        """Open the clips of all splits; the train/val split of the training clips is by ``seed``."""
        train = self._open_clips(self._clip_paths("train"), "train")
        if self.paths["val"] is not None:
            val = self._open_clips(self._clip_paths("val"), "val")
        else:
            if len(train) < 2:
                raise ValueError(
                    f"train: found {len(train)} clip ({train[0].path}); at least 2 are needed to split off "
                    "validation clips, or give `val`"
                )
            order = np.random.default_rng(self.seed).permutation(len(train))
            n_val = min(len(train) - 1, max(1, round(self.val_fraction * len(train))))
            val_ids = set(order[:n_val].tolist())
            val = [c for i, c in enumerate(train) if i in val_ids]
            train = [c for i, c in enumerate(train) if i not in val_ids]
        return {"train": train, "val": val}

    # -- datasets ------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        needed = [s for s in _STAGE_SPLITS.get(stage, ("train", "val", "test")) if s not in self.datasets]
        clips: dict[str, list[FrameFolder | VideoFile]] = {}
        if "train" in needed or "val" in needed:
            clips.update(self._split_clips())
        if "test" in needed:
            clips["test"] = self._open_clips(self._clip_paths("test"), "test")
        for split in needed:
            self.split_names[split] = [c.name for c in clips[split]]
            self.datasets[split] = self._dataset_of(split, clips[split])

    def _dataset_of(self, split: str, clips: list[FrameFolder | VideoFile]) -> VideoSRDataset:
        training = split == "train"
        step = 1 if training else self.eval_frame_step
        items = [(i, t) for i, clip in enumerate(clips) for t in range(0, len(clip), step)]
        return VideoSRDataset(
            clips,
            items,
            scale=self.scale,
            num_frames=self.num_frames,
            patch_size=self.patch_size if training else None,
            augment=self.augment,
            quantize_lr=self.quantize_lr,
            upsample_input=self.upsample_input and self.upsample_on == "workers",
            eval_patch_size=None if training else self.eval_patch_size,
            seed=self.seed,
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Upsample ``batch["lr"]`` (B, T, 3, h, w) to (B, T, 3, H, W) on the batch's device when
        ``upsample_input`` and ``upsample_on="accelerator"``; otherwise return the batch unchanged."""
        lr, hr = batch["lr"], batch["hr"]
        if self.upsample_input and self.upsample_on == "accelerator" and lr.shape[-2:] != hr.shape[-2:]:
            batch["lr"] = _quantize(imresize(lr, float(self.scale)), self.quantize_lr)
        return batch
