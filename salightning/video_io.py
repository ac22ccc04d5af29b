"""Streaming video inference at constant memory: decode -> window of T frames -> SR -> write.

Only the generator's window of ``num_frames`` prepared LR frames is held (each LR frame is
bicubic-upsampled once, when the generator wants upsampled input, and reused by every window it
appears in); each SR frame is written (PNG and/or encoded video) as soon as it is made. The
output equals :func:`salightning.predict.super_resolve_clip` on the whole clip.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from salightning.data.io import FrameFolder, VideoFile
from salightning.data.transforms import reflect_index
from salightning.ops import imresize, quantize_8bit
from salightning.tiling import check_tiling, tiled_forward, to_uint8
from salightning.models.protocol import generator_spec


class ClipDecodeError(ValueError):
    """A frame of a clip could not be decoded; the message names the file and the frame. The SR
    frames written before it are kept (unlike a disk error, after which nothing is left)."""


def iter_frames(clip: FrameFolder | VideoFile) -> Iterator[Tensor]:
    """Decode a clip frame by frame.

    Raises:
        ClipDecodeError: naming the file and the frame, when a frame cannot be decoded or a
            video ends before the frame count its header promised.

    Shape:
        - Output: each frame :math:`(3, h, w)`, float32 in [0, 1].
    """
    if isinstance(clip, FrameFolder):
        for index in range(len(clip)):
            try:
                frame = clip.read([index])[0]
            except ValueError as err:
                raise ClipDecodeError(str(err)) from err
            yield frame
        return
    import av

    index = 0
    try:
        with av.open(str(clip.path)) as container:
            for frame in container.decode(video=0):
                yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float().div_(255.0)
                index += 1
    except Exception as err:  # PyAV raises av.error.* for damaged data
        raise ClipDecodeError(f"{clip.path}: cannot decode frame {index} ({type(err).__name__}: {err})") from err
    if index < len(clip):
        raise ClipDecodeError(f"{clip.path}: cannot decode frame {index}: the file ends after {index} of {len(clip)} frames")


def frame_rate(clip: FrameFolder | VideoFile, default: float = 25.0) -> Any:
    """The clip's average frame rate (a ``Fraction`` for videos), ``default`` for folders of frames."""
    if isinstance(clip, FrameFolder):
        return default
    import av

    with av.open(str(clip.path)) as container:
        return container.streams.video[0].average_rate or default


@torch.no_grad()
def stream_super_resolve(
    generator: nn.Module, frames: Iterable[Tensor], length: int, tile: int = 256, overlap: int = 32, tile_batch: int = 4
) -> Iterator[Tensor]:
    """Super-resolve a clip frame by frame, holding only the generator's window of frames.

    Frame ``t`` sees the window t-k..t+k (mirrored at the clip's ends, as
    :func:`salightning.predict.super_resolve_clip`); frame ``t`` is yielded once frame ``t + k``
    has been read.

    Args:
        generator: single-image (``num_frames == 1``) or video generator.
        frames: the LR frames, in order (e.g. :func:`iter_frames`).
        length: the number of frames ``frames`` yields.
        tile, overlap, tile_batch: as :func:`salightning.tiling.tiled_forward`.

    Shape:
        - frames: each :math:`(C, h, w)` in [0, 1].
        - Output: each :math:`(C, h \\cdot s, w \\cdot s)` in [0, 1], on the generator's device.
    """

    check_tiling(tile, overlap, tile_batch)
    device = next(generator.parameters()).device
    num_frames = generator_spec(generator).num_frames
    scale = generator_spec(generator).scale
    upsample = num_frames > 1 and generator_spec(generator).input_upsampled
    k = num_frames // 2
    window: deque[tuple[int, Tensor]] = deque(maxlen=min(num_frames, max(length, 1)) if num_frames > 1 else 1)
    source = iter(frames)
    read = 0

    def pull() -> None:
        nonlocal read
        frame = next(source)[None].to(device)
        if upsample:
            frame = quantize_8bit(imresize(frame, scale))
        window.append((read, frame[0]))
        read += 1

    for t in range(length):
        while read < min(t + k + 1, length):
            pull()
        if num_frames == 1:
            x = window[-1][1][None]
        else:
            held = dict(window)
            x = torch.stack([held[reflect_index(t + d, length)] for d in range(-k, k + 1)])[None]
        yield tiled_forward(generator, x, tile, overlap, tile_batch).clamp(0, 1)[0]


#: Input codec -> the encoder its SR video is written with (others: libx264).
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "mpeg4": "mpeg4"}
#: Encoders that take a ``crf`` option.
CRF_ENCODERS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1")
#: Audio codecs an MP4 file can carry, copied packet by packet.
MP4_AUDIO = ("aac", "mp3", "opus", "ac3", "eac3", "alac", "flac")
DEFAULT_CRF = 12  # visually lossless with x264


def check_encoder(codec: str) -> None:
    """Raise a ``ValueError`` naming ``--video_codec`` unless PyAV can encode video with ``codec``."""
    import av

    try:
        found = av.codec.Codec(codec, "w").type == "video"
    except Exception:  # PyAV raises its own UnknownCodecError
        found = False
    if not found:
        raise ValueError(f"--video_codec {codec}: PyAV has no video encoder of that name here; try libx264, libx265 or libvpx-vp9")


def video_settings(path: str | Path) -> dict[str, Any]:
    """What the SR video copies from the input video ``path``: ``fps`` (the average frame rate),
    ``codec`` (the encoder for the input's codec, libx264 when there is none), ``crf`` (the
    x264 / x265 CRF recorded in the stream's encoder-settings SEI, ``None`` when absent) and
    ``audio`` (``path`` when it has an audio stream an MP4 can hold, else ``None``); and
    ``pix_fmt``, the input's pixel format (the SR video is always ``yuv420p``)."""
    import re

    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or 25
        codec = ENCODERS.get(stream.codec_context.name, "libx264")
        if codec not in av.codecs_available:
            codec = "libx264"
        pattern = re.compile(rb"crf=([0-9]+(?:\.[0-9]+)?)")
        # x265 writes its settings in the stream's extradata (MP4), x264 in its first packet
        found = pattern.search(bytes(stream.codec_context.extradata or b""))
        for n, packet in enumerate(container.demux(stream)):
            if found or n >= 2:
                break
            found = pattern.search(bytes(packet))
        crf = round(float(found.group(1))) if found else None
        audio = path if any(a.codec_context.name in MP4_AUDIO for a in container.streams.audio) else None
        pix_fmt = stream.codec_context.pix_fmt
    return {"fps": fps, "codec": codec, "crf": crf, "audio": audio, "pix_fmt": pix_fmt}


def subsamples_chroma(pix_fmt: str | None) -> bool:
    """Whether writing a video of pixel format ``pix_fmt`` as ``yuv420p`` loses colour resolution
    (4:4:4 / 4:2:2 YUV, RGB; not 4:2:0 or greyscale)."""
    if not pix_fmt:
        return False
    return not pix_fmt.startswith(("yuv420", "yuvj420", "yuva420", "nv12", "nv21", "gray", "pal8", "monow", "monob"))


class VideoWriter:
    """Encode RGB frames one at a time (yuv420p, odd rows/columns cropped), with the audio of
    another file copied packet by packet beside them.

    Args:
        path: the output file.
        fps: frame rate (``int`` or ``Fraction``).
        crf: quality for encoders that take one (12 is visually lossless with x264).
        codec: the video encoder (a PyAV codec name).
        audio: a file whose first audio stream is copied (up to the video's length), or ``None``.
    """

    def __init__(self, path: str | Path, fps: Any = 25, crf: int = DEFAULT_CRF, codec: str = "libx264", audio: str | Path | None = None) -> None:
        import av

        self.path = Path(path)
        self.fps = fps
        self._frames = 0
        self._audio_in = self._audio_out = self._packets = None
        self._pending: Any = None
        self._started = False
        existed = self.path.exists()
        self._container = av.open(str(self.path), mode="w")
        try:
            self._stream = self._container.add_stream(codec, rate=fps)
            self._stream.pix_fmt = "yuv420p"
            options = {"crf": str(crf)} if codec in CRF_ENCODERS else {}
            if codec == "libx264":
                options["preset"] = "medium"
            if codec == "libx265":
                options["x265-params"] = "log-level=error"  # x265 prints its settings to stderr otherwise
            if codec == "libvpx-vp9":
                options["b"] = "0"  # constant quality
            self._stream.options = options
            if audio is not None:
                self._audio_in = av.open(str(audio))
                source = self._audio_in.streams.audio[0]
                self._audio_out = self._container.add_stream_from_template(source)
                self._packets = self._audio_in.demux(source)
        except BaseException:
            # Failed part-way (an unknown codec, an unreadable audio file): close what was opened,
            # and leave no half-made output behind.
            if self._audio_in is not None:
                self._audio_in.close()
            self._container.close()
            if not existed:
                self.path.unlink(missing_ok=True)
            raise

    def _mux_audio(self, until: float) -> None:
        # Copy audio packets that start before `until` seconds, interleaved with the video.
        if self._packets is None:
            return
        while True:
            packet = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if packet is None:
                self._packets = None
                return
            if packet.pts is None:
                continue
            if float(packet.pts * packet.time_base) >= until:
                self._pending = packet
                return
            packet.stream = self._audio_out
            self._container.mux(packet)

    def write(self, frame: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 frame."""
        import av

        h, w = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
        if not self._started:
            self._stream.height, self._stream.width = h, w
            self._started = True
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")):
            self._container.mux(packet)
        self._frames += 1
        self._mux_audio(self._frames / float(self.fps))

    def close(self) -> None:
        """Flush the encoder and close the file (what was written stays playable)."""
        try:
            if self._started:
                for packet in self._stream.encode():
                    self._container.mux(packet)
                self._mux_audio(self._frames / float(self.fps))
            self._container.close()
        finally:
            if self._audio_in is not None:
                self._audio_in.close()


def predict_clip(
    generator: nn.Module,
    clip: FrameFolder | VideoFile,
    frames_dir: Path | None,
    video_path: Path | None,
    names: list[str] | None = None,
    tile: int = 256,
    overlap: int = 32,
    tile_batch: int = 4,
    progress: bool | None = None,
    written: list[Path] | None = None,
    codec: str | None = None,
    crf: int | None = None,
) -> list[Path]:
    """Stream a clip through the generator into PNG frames and/or an encoded video.

    Args:
        generator: single-image or video generator.
        clip: the LR clip.
        frames_dir: folder for the SR frames as PNGs (``None``: no PNGs).
        video_path: the SR video (``None``: no video): frame rate, codec, CRF and audio from the
            input video (:func:`video_settings`; H.264 at 25 frames/s for folders of frames).
        names: the PNGs' stems (default ``frame_NNNNN``).
        tile, overlap, tile_batch: as :func:`salightning.tiling.tiled_forward`.
        progress: show a progress bar with frames/s and ETA (``None``: when stderr is a terminal).
        written: a list each file is appended to before it is written (default: a new one), so
            that a caller can remove them after a disk error.
        codec, crf: override the video encoder and its quality (default: from the input).

    Returns:
        the files written. On a frame that cannot be decoded the frames done so far are kept
        (the video is closed playable) and the :class:`ClipDecodeError` names the file and the frame.
    """
    from tqdm import tqdm

    length = len(clip)
    names = names or [f"frame_{t:05d}" for t in range(length)]
    written = [] if written is None else written
    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
    if video_path is not None:
        written.append(video_path)
    writer = None
    if video_path is not None:
        settings = video_settings(clip.path) if isinstance(clip, VideoFile) else {"fps": frame_rate(clip), "codec": "libx264", "crf": None, "audio": None, "pix_fmt": None}
        if subsamples_chroma(settings["pix_fmt"]):
            kept = f"; the PNG frames in {frames_dir} keep full colour resolution" if frames_dir is not None else ""
            warnings.warn(
                f"{clip.path} is {settings['pix_fmt']}: its SR video {video_path} is written as yuv420p (4:2:0, half the "
                f"colour resolution), the pixel format players and encoders support{kept}",
                stacklevel=2,
            )
        crf = crf if crf is not None else settings["crf"] if settings["crf"] is not None else DEFAULT_CRF
        writer = VideoWriter(video_path, fps=settings["fps"], crf=crf, codec=codec or settings["codec"], audio=settings["audio"])
    bar = tqdm(total=length, unit="frame", desc=clip.name, disable=None if progress is None else not progress)
    try:
        for t, sr in enumerate(stream_super_resolve(generator, iter_frames(clip), length, tile, overlap, tile_batch)):
            image = to_uint8(sr).cpu().numpy()
            if frames_dir is not None:
                written.append(frames_dir / f"{names[t]}.png")
                Image.fromarray(image).save(written[-1])
            if writer is not None:
                writer.write(image)
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return written
