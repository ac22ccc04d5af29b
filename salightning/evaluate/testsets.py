"""Test sets of an evaluation: built-in samples, image folders (the benchmark LR protocol), clips."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from salightning.data.image import benchmark_dataset
from salightning.data.io import VIDEO_EXTENSIONS, find_sequences, has_images, open_sequence
from salightning.data.samples import sample_video_paths
from salightning.data.transforms import benchmark_lr
from salightning.models.protocol import generator_spec


#: Test sets that need no files: label -> what it is (give the label with the value ``None``).
BUILTIN_TEST_SETS: dict[str, str] = {
    "samples": "the built-in sample test photos (coffee, rocket; salightning.data.samples)",
    "sample_clips": "the built-in sample test clips (synthetic camera motion over real photos; salightning.data.samples)",
}

TestSetSpec = str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike] | None


@dataclass
class TestSet:
    label: str
    kind: Literal["image", "video"]
    hr: str | None = None  # image sets: HR folder (None: built-in sample photos)
    lr: str | None = None  # image sets: paired LR folder
    clips: list[Path] = field(default_factory=list)  # video sets
    builtin: bool = False


def resolve_test_set(label: str, spec: TestSetSpec) -> TestSet:
    """Classify a test-set value: built-in, image folder (or HR/LR pair), or clips."""
    option = f"test_sets[{label!r}]"
    if spec is None:
        if label == "samples":
            return TestSet(label, "image", builtin=True)
        if label == "sample_clips":
            return TestSet(label, "video", clips=sample_video_paths("test"), builtin=True)
        raise ValueError(f"{option} is None, which only names a built-in test set ({sorted(BUILTIN_TEST_SETS)}); give a path")
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"{option} must be a path or a (hr_folder, lr_folder) pair, got {spec!r}")
        hr, lr = (Path(p).expanduser() for p in spec)
        for p in (hr, lr):
            if not p.is_dir():
                raise FileNotFoundError(f"{option}: folder {p} does not exist")
        return TestSet(label, "image", hr=str(hr), lr=str(lr))
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{option}: {path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"{option}: {path} is a file but not a video ({', '.join(VIDEO_EXTENSIONS)}); give a folder of images")
        return TestSet(label, "video", clips=[path])
    # Images directly inside (or a Set5/Set14 root): an image test set; otherwise a folder of clips.
    if (path / "GTmod12").is_dir() or has_images(path):
        return TestSet(label, "image", hr=str(path))
    return TestSet(label, "video", clips=find_sequences([path], option=option))


def is_video_model(generator: nn.Module) -> bool:
    return generator_spec(generator).num_frames > 1


def default_test_sets(generators: Sequence[nn.Module]) -> dict[str, TestSetSpec]:
    """The built-in sample photos, plus the sample clips when a generator is a video one."""
    sets: dict[str, TestSetSpec] = {"samples": None}
    if any(is_video_model(g) for g in generators):
        sets["sample_clips"] = None
    return sets


def image_items(test_set: TestSet, scale: int) -> tuple[Iterator[tuple[Tensor, Tensor]], int, bool]:
    """(iterator of (lr (1,C,h,w), hr (1,C,H,W)), number of images, whether LR comes from files)."""
    dataset = benchmark_dataset(test_set.hr, test_set.lr, scale)
    paired = any(pair.lr is not None for pair in dataset.pairs)

    def items() -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(len(dataset)):
            item = dataset[i]
            yield item["lr"].unsqueeze(0), item["hr"].unsqueeze(0)

    return items(), len(dataset), paired


def video_items(test_set: TestSet, scale: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(lr (T,C,h,w), hr (T,C,H,W)) of each clip, LR made like :class:`VideoSRDataset` makes it."""
    for path in test_set.clips:
        clip = open_sequence(path, option=f"test_sets[{test_set.label!r}]")
        if clip.height < scale or clip.width < scale:
            raise ValueError(f"{path}: frames are {clip.height}x{clip.width}, smaller than scale={scale}")
        lr, hr = benchmark_lr(clip.read(list(range(len(clip)))), scale)
        yield lr, hr
