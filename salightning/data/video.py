"""Video super-resolution data: the frame-window Dataset and the video DataModule.

Batches are dicts ``{"lr": ..., "hr": (B, 3, H, W), "name": list[str]}`` with values in [0, 1],
where ``lr`` holds the ``num_frames`` LR frames t-k..t+k around the HR centre frame t:
(B, T, 3, h, w), or (B, T, 3, H, W) with ``upsample_input=True`` (each LR frame
bicubic-upsampled to HR size, the input of VSRResNet / VSRResFeatGAN). Clips are read by
:mod:`salightning.data.io` (frame folders and video files).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from salightning.checks import check_at_least
from salightning.data.base import SRDataModule
from salightning.data.io import FrameFolder, VideoFile, find_sequences, open_sequence, warn_alpha
from salightning.data.samples import sample_video_dir
from salightning.data.sampling import unpack_key
from salightning.data.transforms import centre_box, degrade_crop, dihedral, random_box, reflect_index, to_lr_levels
from salightning.ops import imresize

__all__ = ["VideoSRDataset", "VideoSRDataModule"]


class VideoSRDataset(Dataset):
    """Windows of ``num_frames`` LR frames and the HR centre frame (usually built by
    :class:`VideoSRDataModule`).

    Frame indices beyond the clip's ends are mirrored (:func:`reflect_index`). LR frames are
    made from the HR frames with MATLAB-compatible bicubic (:func:`~salightning.ops.imresize`).

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
        index, rng = unpack_key(key, self.seed)
        seq_index, centre = self.items[index]
        seq = self.sequences[seq_index]
        s = self.scale
        half = self.num_frames // 2
        indices = [reflect_index(centre + o, len(seq)) for o in range(-half, half + 1)]
        height, width = seq.height // s * s, seq.width // s * s
        frames = seq.read(indices)[..., :height, :width]
        lr_h, lr_w = height // s, width // s
        if self.patch_size is not None:
            box = random_box(rng, lr_h, lr_w, self.patch_size // s)
        else:
            box = centre_box(lr_h, lr_w, None if self.eval_patch_size is None else self.eval_patch_size // s)
        lr, hr = degrade_crop(frames, s, box, self.quantize_lr)
        hr = hr[half]
        if self.patch_size is not None and self.augment:
            k = int(rng.integers(0, 8))
            lr, hr = dihedral(lr, k), dihedral(hr, k)
        if self.upsample_input:
            lr = to_lr_levels(imresize(lr, float(s)), self.quantize_lr)
        name = f"{seq.name}/{seq.frames[centre].stem}" if isinstance(seq, FrameFolder) else f"{seq.name}/{centre:05d}"
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": name}


class VideoSRDataModule(SRDataModule):
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
        check_at_least(scale, "scale", 1)
        check_at_least(patch_size, "patch_size", 1)
        check_at_least(eval_frame_step, "eval_frame_step", 1)
        if patch_size % scale:
            raise ValueError(f"patch_size must be a multiple of scale={scale}, got {patch_size!r}")
        if eval_patch_size is not None:
            check_at_least(eval_patch_size, "eval_patch_size", 1)
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
        if self.paths["train"] is None:
            sample_video_dir("train", self.sample_cache_dir)

    def _clip_paths(self, split: str) -> list[Path]:
        value = self.paths[split]
        if value is None:
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
        warn_alpha([f for clip in clips for f in clip.alpha_frames])
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
        needed = [s for s in self.splits_of(stage) if s not in self.datasets]
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
            batch["lr"] = to_lr_levels(imresize(lr, float(self.scale)), self.quantize_lr)
        return batch
