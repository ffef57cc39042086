"""Video files in and out, one frame at a time (PyAV, the FFmpeg binding ComfyUI itself uses).

Nothing here holds more than one decoded frame: :func:`read_frames` yields frames as the decoder produces them,
:class:`VideoWriter` encodes each frame as it arrives and, like the image writers, writes to a temporary file
beside the target that only replaces it at the end. PyAV is optional (``pip install av``, the ``video`` extra);
a clear ImportError names it when a video is met without it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..fileio.processes import tag
from ..fileio.writers import publish

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv",
                    ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".flv", ".ogv", ".vob", ".mxf")
def _av():
    try:
        import av
    except ImportError as err:
        raise ImportError("video input and output need PyAV: pip install av (or the `video` extra: "
                          "pip install 'fiffdepth[video]')") from err
    return av


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_videos(inputs: list[str | Path]) -> list[Path]:
    """Video files inside the named folders (sorted, not recursive, hidden files left out); files named directly are
    not included."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.is_file() and is_video(p) and not p.name.startswith("."))
    return found


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as shown: after the rotation the file asks for
    height: int
    fps: Fraction  # average frame rate of the first video stream
    frames: int | None  # as the container declares it (None when it does not say)
    rotation: int = 0  # degrees counter-clockwise that bring the stored frames upright (phone videos: often +-90)
    seconds: float | None = None  # the stream's (or else the container's) duration, when the file says
    sample_aspect_ratio: Fraction = Fraction(1)  # of a pixel as shown (width / height; anamorphic video: not 1)
    time_base: Fraction | None = None  # the stream's unit of time stamps

    def estimated_frames(self) -> int | None:
        """The declared frame count, or else duration x frame rate (MKV and WebM often declare no count)."""
        if self.frames:
            return self.frames
        return max(1, round(self.seconds * float(self.fps))) if self.seconds else None


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """``[H,W,...]`` turned counter-clockwise by ``rotation`` degrees (to the nearest quarter turn), as players and
    FFmpeg show a video whose display matrix asks for it."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


_ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC: a cover picture, not a video


def _video_stream(container, path):
    """The first video stream that is not cover art (a picture attached to an audio file, disposition
    ``attached_pic``, which FFmpeg also passes over); ValueError naming the file when there is none."""
    streams = list(container.streams.video)
    moving = [s for s in streams if not int(getattr(getattr(s, "disposition", 0), "value",
                                                    getattr(s, "disposition", 0))) & _ATTACHED_PIC]
    if not moving:
        raise ValueError(f"{path} has no video stream" + (" (only cover art)" if streams else ""))
    return moving[0]


class _Decode:
    """The frames of one video stream, decoded packet by packet as FFmpeg does: a packet the decoder rejects is
    skipped (and counted) rather than ending the video, and the decoder is flushed at the end."""

    def __init__(self, container, stream):
        self.container, self.stream = container, stream
        self.frames = self.skipped = self.packets = 0
        self.first_error = None  # (where: packet number and time, error)
        self.resized = False  # whether the picture size has changed (and frames were scaled)
        self.stopped = None  # the demuxer's error where it gave up before the end of the file

    def _decode(self, packet):
        av = _av()
        try:
            return self.stream.decode(packet)
        except av.error.MemoryError:
            raise
        except av.error.EOFError:
            if packet is None:
                return []
            raise
        except av.error.FFmpegError as err:
            self.skipped += 1
            if self.first_error is None:
                seconds = packet.pts * packet.time_base if packet is not None and packet.pts is not None \
                    and packet.time_base else None
                where = "at the end" if packet is None else f"packet {self.packets}" + \
                    (f", {float(seconds):.3f} s" if seconds is not None else "")
                self.first_error = (where, err)
            return []

    def __iter__(self):
        av = _av()
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker: flushed below
                    continue
                self.packets += 1
                for frame in self._decode(packet):
                    self.frames += 1
                    yield frame
        except av.error.MemoryError:
            raise
        except av.error.FFmpegError as err:  # the container itself is damaged past this point
            self.stopped = err
        for frame in self._decode(None):
            self.frames += 1
            yield frame

    def failure(self, path) -> str:
        """Why nothing could be decoded, one line naming the file."""
        why = self.first_error[1] if self.first_error else self.stopped or "the video stream holds no frames"
        return f"cannot decode any frame of {path}: {why}"

    def summary(self, path, declared: int | None) -> str | None:
        """One line on what was skipped or missing, None when the video decoded cleanly and whole."""
        parts = []
        if self.skipped:
            parts.append(f"skipped {self.skipped} damaged packet(s) the decoder rejected (the first reported at "
                         f"{self.first_error[0]}: {self.first_error[1]})")
        if self.stopped is not None:
            parts.append(f"reading stopped early after frame {self.frames}: {self.stopped}")
        if declared and self.frames < declared:
            parts.append(f"decoded {self.frames} of the {declared} frames the container declares"
                         + ("" if parts else " (the file looks truncated)"))
        return f"video {path}: " + "; ".join(parts) if parts else None


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate and declared frame count of the first video stream (cover art is passed over); ValueError
    naming the file otherwise. The size is that of the first frame that decodes, as shown (after its rotation):
    the size :func:`read_frames` yields every frame at."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            fps = stream.average_rate or stream.guessed_rate or Fraction(24)
            frames = int(stream.frames) or None
            decode = _Decode(container, stream)
            first = next(iter(decode), None)  # the rotation travels with the decoded frames; damaged packets skipped
            if first is None:
                raise ValueError(decode.failure(path))
            width, height = int(first.width), int(first.height)
            rotation = round(getattr(first, "rotation", 0) or 0)
            rotation = rotation % 360 - 360 if rotation % 360 > 180 else rotation % 360  # in (-180, 180]
            if round(rotation / 90) % 2:
                width, height = height, width
            seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
                (container.duration / 1e6 if container.duration else None)  # container.duration: microseconds
            sar = Fraction(stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio or 1)
            if round(rotation / 90) % 2 and sar:
                sar = 1 / sar  # turned a quarter: a pixel's width becomes its height
            return VideoInfo(width, height, Fraction(fps), frames, rotation, seconds, sar or Fraction(1),
                             Fraction(stream.time_base) if stream.time_base else None)
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read video {path}: {err}") from err


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of the first video stream (not cover art) as ``[H,W,3]`` uint8 RGB arrays, decoded one at a time
    and turned upright as the file asks (:func:`upright`; PyAV before 14 does not report rotation, and frames stay
    as stored). :func:`read_timed_frames` gives each frame's time too."""
    return (array for array, _ in read_timed_frames(path))


def read_timed_frames(path: str | Path) -> Iterator[tuple[np.ndarray, Fraction | None]]:
    """:func:`read_frames` with each frame's presentation time in seconds, counted from the first frame (exact:
    time stamp x time base), or None where the stream gives no time stamp. Variable frame rate shows here.

    As tolerant as FFmpeg: a damaged packet is skipped, not fatal, and frames after a change of picture size are
    scaled to the first frame's size. One warning at the end names the file and what was skipped or missing (fewer
    frames than the container declares); a ValueError naming the file only when no frame decodes at all."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            declared = int(stream.frames) or None
            decode = _Decode(container, stream)
            size = None  # (width, height) of the first frame, as stored
            start = None  # time stamp of the first frame
            for frame in decode:
                if size is None:
                    size = (frame.width, frame.height)
                if (frame.width, frame.height) == size:
                    array = frame.to_ndarray(format="rgb24")
                else:
                    if not decode.resized:
                        decode.resized = True
                        log.warning("video %s: the picture size changes from %dx%d to %dx%d at frame %d; frames are "
                                    "scaled to %dx%d (as FFmpeg does)", path, *size, frame.width, frame.height,
                                    decode.frames - 1, *size)
                    array = frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="BICUBIC")
                time, unit = None, frame.time_base or stream.time_base  # threaded decoding may leave it unset
                if frame.pts is not None and unit:
                    start = frame.pts if start is None else start
                    time = (frame.pts - start) * Fraction(unit)
                yield upright(array, getattr(frame, "rotation", 0) or 0), time
            if decode.frames == 0:
                raise ValueError(decode.failure(path))
            if (summary := decode.summary(path, declared)) is not None:
                log.warning("%s", summary)
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot decode video {path}: {err}") from err


class VideoWriter:
    """An 8-bit H.264 video (MPEG-4 Part 2 where the FFmpeg build lacks an H.264 encoder), written frame by frame,
    that browsers and players open: 4:2:0 chroma (``yuv420p``), so an odd width or height is padded by repeating the
    last column or row; the source's sample aspect ratio; and, when frames come with their times
    (``write(frame, time)``), those times, so a variable frame rate is kept. MPEG-4 Part 2 takes one constant rate:
    there, irregular times are replaced by ``fps`` with a warning.

    ``with VideoWriter(path, fps) as out: out.write(frame)`` where ``frame`` is ``[H,W]`` or ``[H,W,3]``, float in
    [0,1] or uint8. The file appears at ``path`` only when the block ends without error, with mode 0666 less the
    umask like every other output; an existing file (one that appears while writing, too) is kept unless
    ``overwrite``.
    """

    def __init__(self, path: str | Path, fps: Fraction | float, overwrite: bool = False, crf: int = 16,
                 sample_aspect_ratio: Fraction | float = 1, time_base: Fraction | None = None):
        self.path, self.fps, self.overwrite, self.crf = Path(path), Fraction(fps).limit_denominator(1001000), \
            overwrite, crf
        self.sample_aspect_ratio = Fraction(sample_aspect_ratio).limit_denominator(65535)
        self.time_base = Fraction(time_base) if time_base else Fraction(1, 90000)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        self.frames = 0
        self.size = None  # (height, width) of the frames given; the video's may be one more each way (even)
        self._container = self._stream = self._tmp = None
        self._timed = self._irregular = False
        self._last_pts = None

    def __enter__(self) -> "VideoWriter":
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.{tag()}.", suffix=self.path.suffix,
                                    dir=self.path.parent)  # named after its writer: see fileio.processes.sweep
        os.close(fd)
        self._tmp = Path(name)
        self._container = av.open(name, mode="w", format="mp4" if self.path.suffix.lower() in (".mp4", ".m4v",
                                                                                                 ".mov") else None)
        return self

    def _open_stream(self, height: int, width: int, timed: bool) -> None:
        av = _av()
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = self.fps
        if codec == "mpeg4":  # its time base (1/rate) may not have a denominator over 65535 (MPEG-4 Part 2 field)
            rate = 1 / (1 / rate).limit_denominator(65535)
        self._stream = self._container.add_stream(codec, rate=rate)
        self.size = (height, width)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        if (width % 2, height % 2) != (0, 0):
            log.info("%s: %dx%d frames padded to %dx%d (the last column or row repeated) for 4:2:0 chroma, the pixel "
                     "format browsers and players decode", self.path.name, width, height, self._stream.width,
                     self._stream.height)
        self._stream.pix_fmt = "yuv420p"
        if self.sample_aspect_ratio != 1:
            self._stream.codec_context.sample_aspect_ratio = self.sample_aspect_ratio
        self._timed = timed and codec == "libx264"
        if self._timed:  # time stamps in the source's unit, so a variable frame rate is kept as it was
            self._stream.time_base = self._stream.codec_context.time_base = self.time_base
        if codec == "libx264":
            self._stream.options = {"crf": str(self.crf), "preset": "medium"}
        else:
            self._stream.bit_rate = 8 * width * height * max(1, round(float(self.fps)))

    def write(self, frame, time: Fraction | float | None = None) -> None:
        """Add one frame; ``time``: its presentation time in seconds from the first frame (None: ``fps`` spacing)."""
        av = _av()
        array = np.asarray(frame)
        if array.dtype != np.uint8:
            array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)  # [H,W,3]
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"a video frame must be [H,W] or [H,W,3], got shape {array.shape}")
        if self._stream is None:
            self._open_stream(*array.shape[:2], timed=time is not None)
        elif array.shape[:2] != self.size:
            raise ValueError(f"frame {self.frames} is {array.shape[1]}x{array.shape[0]}, but the video is "
                             f"{self.size[1]}x{self.size[0]}")
        pad = ((0, self._stream.height - array.shape[0]), (0, self._stream.width - array.shape[1]), (0, 0))
        if any(after for _, after in pad):
            array = np.pad(array, pad, mode="edge")  # [H',W',3], even
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        self._stamp(video_frame, time)
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def _stamp(self, video_frame, time) -> None:
        """Set the frame's time stamp from ``time`` (strictly increasing), or check it against ``fps``."""
        if not self._timed:
            if time is not None and not self._irregular and abs(time - self.frames / self.fps) > 0.5 / self.fps:
                self._irregular = True
                log.warning("%s: the source's frame times are irregular (variable frame rate), but this FFmpeg "
                            "build has no H.264 encoder; written at a constant %s fps instead", self.path.name,
                            self.fps)
            return
        if time is None:  # a frame without a time stamp among timed ones: one frame interval after the last
            pts = self._last_pts + max(1, round(1 / (self.fps * self.time_base)))
        else:
            pts = round(Fraction(time) / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # a repeated or backwards time stamp in the source
        self._last_pts = video_frame.pts = pts
        video_frame.time_base = self.time_base

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None and self._stream is not None:
                for packet in self._stream.encode():  # flush
                    self._container.mux(packet)
            self._container.close()
            if kind is None:
                if self.frames == 0:
                    raise ValueError(f"no frames were written to {self.path}")
                publish(self._tmp, self.path, self.overwrite,
                        taken=f"{self.path} appeared while it was being written; kept it")
        finally:
            self._tmp.unlink(missing_ok=True)
