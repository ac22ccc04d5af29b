"""Data for image and video super-resolution.

- :func:`imresize`: MATLAB-compatible bicubic resize (how benchmark LR images are made).
- :class:`ImageSRDataModule`: HR folders (LR made on the fly) or paired HR/LR folders.
- :class:`VideoSRDataModule`: clips as frame folders or video files, windows of frames.
- :mod:`salightning.data.samples`: real sample photos and clips, with no downloads.
"""

from salightning.data.image import (
    EpochSampler,
    ImageSRDataModule,
    ImageSRDataset,
    degrade_crop,
    dihedral,
    list_images,
    probe_image,
    read_image,
)
from salightning.data.imresize import Imresize, imresize, resize_matrix
from salightning.data.samples import sample_image_paths, sample_video_dir, sample_video_paths
from salightning.data.video import VideoFile, FrameFolder, VideoSRDataModule, VideoSRDataset, find_sequences

__all__ = [
    "imresize",
    "Imresize",
    "resize_matrix",
    "read_image",
    "probe_image",
    "list_images",
    "dihedral",
    "degrade_crop",
    "EpochSampler",
    "ImageSRDataset",
    "ImageSRDataModule",
    "FrameFolder",
    "VideoFile",
    "find_sequences",
    "VideoSRDataset",
    "VideoSRDataModule",
    "sample_image_paths",
    "sample_video_dir",
    "sample_video_paths",
]
