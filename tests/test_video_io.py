"""Streaming video inference (salightning.video_io): equal to the whole-clip path, bounded memory."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_png

from salightning.data.samples import sample_video_paths
from salightning.data.io import FrameFolder, VideoFile
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
    from salightning.data.io import write_video
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


def _clip_with_audio(photos, path, frames: int = 8, crf: int = 20) -> float:
    """An H.264 clip (CRF ``crf``, 29.97 frames/s) of a camera panning over a real photo, with an
    AAC 440 Hz tone as long as the video; returns the tone's length in seconds."""
    import fractions

    import av

    photo = (photos[0].permute(1, 2, 0) * 255).round().byte().numpy()
    rate = fractions.Fraction(30000, 1001)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt, video.options = 64, 48, "yuv420p", {"crf": str(crf)}
        audio = container.add_stream("aac", rate=22050)
        audio.layout = "mono"
        for t in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[100 + 2 * t : 148 + 2 * t, 200 + 3 * t : 264 + 3 * t]), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(22050 * frames / rate)) / 22050)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 22050, start
            for packet in audio.encode(chunk):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return len(samples) / 22050


def _audio(path) -> tuple[str, int, np.ndarray]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])
        return stream.codec_context.name, stream.codec_context.sample_rate, samples


def test_the_sr_video_keeps_the_inputs_frame_rate_quality_and_audio(vsr, photos, tmp_path):
    from fractions import Fraction

    from salightning.video_io import video_settings

    seconds = _clip_with_audio(photos, tmp_path / "clip.mp4")
    (tmp_path / "in").mkdir()
    (tmp_path / "clip.mp4").rename(tmp_path / "in" / "clip.mp4")
    written = predict_path(vsr, tmp_path / "in" / "clip.mp4", tmp_path / "out", tile=0)
    video = tmp_path / "out" / "clip_sr.mp4"
    assert video in written
    settings = video_settings(video)
    assert settings["fps"] == Fraction(30000, 1001) and settings["crf"] == 20 and settings["codec"] == "libx264"
    assert len(VideoFile(video)) == 8 and (VideoFile(video).height, VideoFile(video).width) == (192, 256)
    codec, rate, samples = _audio(video)
    _, _, original = _audio(tmp_path / "in" / "clip.mp4")
    assert (codec, rate) == ("aac", 22050)
    assert abs(len(samples) / rate - seconds) < 0.1  # the whole tone, copied
    np.testing.assert_array_equal(samples[: len(original)], original[: len(samples)])  # packets copied, not re-encoded


def test_codec_and_crf_can_be_overridden(vsr, photos, tmp_path):
    from salightning.video_io import predict_clip, video_settings

    _clip_with_audio(photos, tmp_path / "clip.mp4", frames=4)
    predict_clip(vsr, VideoFile(tmp_path / "clip.mp4"), None, tmp_path / "out.mp4", tile=0, codec="libx265", crf=30)
    settings = video_settings(tmp_path / "out.mp4")
    assert settings["codec"] == "libx265" and settings["crf"] == 30
    assert len(VideoFile(tmp_path / "out.mp4")) == 4


def test_a_folder_of_videos_gives_each_its_frames_and_video(vsr, photos, tmp_path):
    from salightning.data.io import write_video

    (tmp_path / "in").mkdir()
    for name, shift in (("a", 0), ("b", 7)):
        frames = [(photos[0][:, 60 + shift + t : 84 + shift + t, 90 + 2 * t : 122 + 2 * t].permute(1, 2, 0) * 255).round().byte().numpy() for t in range(3)]
        write_video(np.stack(frames), tmp_path / "in" / f"{name}.mp4")
    written = predict_path(vsr, tmp_path / "in", tmp_path / "out", tile=0)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == sorted(
        [f"{n}/frame_{t:05d}.png" for n in "ab" for t in range(3)] + ["a_sr.mp4", "b_sr.mp4"]
    )
    assert len(VideoFile(tmp_path / "out" / "b_sr.mp4")) == 3


# --------------------------------------------------------------------------------------------
# Open files and notes (issue 25)
# --------------------------------------------------------------------------------------------


def _open_fds(folder=None) -> int:
    """Open file descriptors of this process (those on files under ``folder``, if given)."""
    import os

    fds = os.listdir("/proc/self/fd")
    if folder is None:
        return len(fds)
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile (the listing's own descriptor)
            pass
    return sum(t.startswith(str(folder)) for t in targets)


def _panning_frames(photos, count: int = 3):
    return np.stack([(photos[0][:, 60 + t : 84 + t, 90 + 2 * t : 122 + 2 * t].permute(1, 2, 0) * 255).round().byte().numpy() for t in range(count)])


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_reading_many_video_files_keeps_few_open_and_close_releases_them(photos, tmp_path, monkeypatch):
    from salightning.data import io

    monkeypatch.setattr(io, "MAX_OPEN_VIDEOS", 3)
    for i in range(10):
        io.write_video(_panning_frames(photos), tmp_path / f"clip{i}.mp4")
    clips = [VideoFile(tmp_path / f"clip{i}.mp4") for i in range(10)]
    assert _open_fds(tmp_path) == 0
    for clip in clips:
        clip.read([0, 1])
    assert _open_fds(tmp_path) == 3  # the three read last, not all ten
    assert clips[-1].read([2]).shape == (1, 3, 24, 32) and clips[0].read([2]).shape == (1, 3, 24, 32)  # closed ones reopen
    for clip in clips:
        clip.close()
    assert _open_fds(tmp_path) == 0


def test_a_video_writer_that_fails_part_way_leaves_no_file_and_nothing_open(tmp_path):
    from salightning.video_io import VideoWriter

    with pytest.raises(Exception):
        VideoWriter(tmp_path / "out.mp4", codec="no_such_encoder")
    with pytest.raises(Exception):
        VideoWriter(tmp_path / "out.mp4", audio=tmp_path / "no_such_audio.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert _open_fds(tmp_path) == 0


def test_a_444_video_is_noted_when_its_sr_video_is_written_as_420(vsr, photos, tmp_path):
    import av

    from salightning.video_io import predict_clip

    path = tmp_path / "clip444.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv444p"
        for array in _panning_frames(photos):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.warns(UserWarning, match=r"clip444\.mp4 is yuv444p: its SR video .*out\.mp4 is written as yuv420p"):
        predict_clip(vsr, VideoFile(path), tmp_path / "frames", tmp_path / "out.mp4", tile=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 4:2:0 input: nothing to note
        io_frames = _panning_frames(photos)
        from salightning.data.io import write_video

        write_video(io_frames, tmp_path / "clip420.mp4")
        predict_clip(vsr, VideoFile(tmp_path / "clip420.mp4"), None, tmp_path / "out420.mp4", tile=0)
