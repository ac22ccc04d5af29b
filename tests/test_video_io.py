"""Streaming video inference (salightning.video_io): equal to the whole-clip path, bounded memory."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_png

from salightning.data.samples import sample_video_paths
from salightning.data.video import FrameFolder, VideoFile
from salightning.models import VSRResNet
from salightning.predict import predict_path, super_resolve_clip
from salightning.video_io import iter_frames, stream_super_resolve


@pytest.fixture(scope="module")
def vsr() -> VSRResNet:
    torch.manual_seed(0)
    return VSRResNet(num_frames=5, frame_features=4, num_features=8, num_blocks=2, scale=4).eval()


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("samples")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mp4", "frames"])
def test_streaming_equals_the_whole_clip_path_on_a_real_clip(vsr, sample_cache, fmt):
    path = sample_video_paths("test", cache_dir=sample_cache, fmt=fmt)[0]
    clip = VideoFile(path) if fmt == "mp4" else FrameFolder(path)
    frames = clip.read(list(range(len(clip))))
    streamed_input = torch.stack(list(iter_frames(clip)))
    assert torch.equal(streamed_input, frames)
    whole = super_resolve_clip(vsr, frames, tile=0)
    streamed = torch.stack(list(stream_super_resolve(vsr, iter_frames(clip), len(clip), tile=0)))
    assert streamed.shape == whole.shape == (len(clip), 3, 4 * clip.height, 4 * clip.width)
    assert torch.equal(streamed, whole)


@pytest.mark.parametrize("length", [7, 21])
def test_streaming_holds_only_the_window(vsr, photos, length):
    """Counted, not timed: frame t is made once frame t+2 is read, and LR frames older than t-2 are released."""
    source = [photos[0][:, 60 + 2 * t : 84 + 2 * t, 90 + 3 * t : 122 + 3 * t].clone() for t in range(length)]
    refs = [weakref.ref(frame) for frame in source]
    read = []

    def frames():
        while source:
            read.append(len(read))
            yield source.pop(0)

    most_alive = 0
    for t, sr in enumerate(stream_super_resolve(vsr, frames(), length, tile=0)):
        assert sr.shape == (3, 96, 128)
        assert len(read) == min(t + 3, length)
        most_alive = max(most_alive, sum(ref() is not None for ref in refs[: len(read)]))
    assert most_alive <= 1  # of the LR frames read, only the last is alive: the window holds upsampled copies


def test_a_corrupt_frame_mid_stream_keeps_the_frames_done_and_names_the_frame(vsr, photos, tmp_path):
    clip = tmp_path / "clip"
    for t in range(8):
        save_png(photos[0][:, 60 + 2 * t : 84 + 2 * t, 90 + 3 * t : 122 + 3 * t], clip / f"{t:03d}.png")
    data = (clip / "005.png").read_bytes()
    (clip / "005.png").write_bytes(data[: len(data) // 2])  # the header still reads, the pixels do not
    with pytest.raises(ValueError, match="005.png"):
        predict_path(vsr, clip, tmp_path / "out", tile=0)
    done = sorted(p.name for p in (tmp_path / "out" / "clip").glob("*.png"))
    assert done == ["000.png", "001.png", "002.png"]
    got = np.asarray(Image.open(tmp_path / "out" / "clip" / "000.png"))
    assert got.dtype == np.uint8 and got.shape == (96, 128, 3)


def test_a_video_ending_early_keeps_the_frames_done_and_names_the_file_and_frame(vsr, photos, tmp_path, monkeypatch):
    from salightning.data.video import write_video
    from salightning.video_io import predict_clip

    frames = [(photos[0][:, 60 + 2 * t : 84 + 2 * t, 90 + 3 * t : 122 + 3 * t].permute(1, 2, 0) * 255).round().byte().numpy() for t in range(6)]
    write_video(np.stack(frames), tmp_path / "clip.mp4")
    clip = VideoFile(tmp_path / "clip.mp4")
    assert len(clip) == 6
    clip._count = 9  # the header promised more frames than the stream holds
    with pytest.raises(ValueError, match=r"clip.mp4: cannot decode frame 6: the file ends after 6 of 9 frames"):
        predict_clip(vsr, clip, tmp_path / "out", tmp_path / "out.mp4", tile=0)
    assert len(list((tmp_path / "out").glob("*.png"))) == 4  # frames 0..3 were made before frame 6 was needed
    assert len(VideoFile(tmp_path / "out.mp4")) == 4  # the partial video was closed playable
