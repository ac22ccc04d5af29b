"""Data for image and video super-resolution.

- :class:`ImageSRDataModule`: HR folders (LR made on the fly) or paired HR/LR folders.
- :class:`GTImageSRDataModule`: HR-only training patches for LR synthesised on the device
  (blind SR, :mod:`salightning.degradations`), paired validation.
- :class:`VideoSRDataModule`: clips as frame folders or video files, windows of frames.
- :func:`benchmark_lr`, :func:`benchmark_dataset`: the benchmark LR protocol (mod-crop,
  MATLAB bicubic, 8-bit levels) on one image or a test folder.
- :mod:`~salightning.data.io` (reading images and clips), :mod:`~salightning.data.transforms`
  (crops, degradation, augmentation), :mod:`~salightning.data.sampling` (the resumable
  sampler), :mod:`~salightning.data.base` (the shared DataModule base; its
  :func:`leave_stop_signals_to_the_main_process` is the ``worker_init_fn`` for loaders of your own),
  :mod:`~salightning.data.samples` (real sample photos and clips, with no downloads).
- :func:`~salightning.ops.imresize` (MATLAB-compatible bicubic) is an op: :mod:`salightning.ops`.
"""

from salightning.data.base import ResumableDataLoader, SRDataModule, leave_stop_signals_to_the_main_process
from salightning.data.gt import GTImageDataset, GTImageSRDataModule
from salightning.data.image import ImageSRDataModule, ImageSRDataset, benchmark_dataset
from salightning.data.io import FrameFolder, VideoFile, find_sequences, list_images, probe_image, read_image
from salightning.data.samples import sample_image_paths, sample_video_dir, sample_video_paths
from salightning.data.sampling import EpochSampler
from salightning.data.transforms import benchmark_lr, degrade_crop, dihedral
from salightning.data.video import VideoSRDataModule, VideoSRDataset

__all__ = [
    "ImageSRDataModule",
    "GTImageSRDataModule",
    "GTImageDataset",
    "VideoSRDataModule",
    "SRDataModule",
    "ResumableDataLoader",
    "leave_stop_signals_to_the_main_process",
    "ImageSRDataset",
    "VideoSRDataset",
    "EpochSampler",
    "benchmark_lr",
    "benchmark_dataset",
    "degrade_crop",
    "dihedral",
    "read_image",
    "probe_image",
    "list_images",
    "FrameFolder",
    "VideoFile",
    "find_sequences",
    "sample_image_paths",
    "sample_video_dir",
    "sample_video_paths",
]
