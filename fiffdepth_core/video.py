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

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv")


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
    """Video files inside the named folders (sorted, not recursive); files named directly are not included."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.is_file() and is_video(p))
    return found


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as shown: after the rotation the file asks for
    height: int
    fps: Fraction  # average frame rate of the first video stream
    frames: int | None  # as the container declares it (None when it does not say)
    rotation: int = 0  # degrees counter-clockwise that bring the stored frames upright (phone videos: often +-90)


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """``[H,W,...]`` turned counter-clockwise by ``rotation`` degrees (to the nearest quarter turn), as players and
    FFmpeg show a video whose display matrix asks for it."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate and declared frame count of the first video stream; ValueError naming the file otherwise."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or Fraction(24)
            frames = int(stream.frames) or None
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            first = next(container.decode(stream), None)  # the rotation travels with the decoded frames
            rotation = round(getattr(first, "rotation", 0) or 0) if first is not None else 0
            rotation = rotation % 360 - 360 if rotation % 360 > 180 else rotation % 360  # in (-180, 180]
            if round(rotation / 90) % 2:
                width, height = height, width
            return VideoInfo(width, height, Fraction(fps), frames, rotation)
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read video {path}: {err}") from err


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of the first video stream as ``[H,W,3]`` uint8 RGB arrays, decoded one at a time and turned
    upright as the file asks (:func:`upright`; PyAV before 14 does not report rotation, and frames stay as stored)."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0) or 0)
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot decode video {path}: {err}") from err


class VideoWriter:
    """An 8-bit H.264 video (MPEG-4 Part 2 where the FFmpeg build lacks an H.264 encoder), written frame by frame.

    ``with VideoWriter(path, fps) as out: out.write(frame)`` where ``frame`` is ``[H,W]`` or ``[H,W,3]``, float in
    [0,1] or uint8. The file appears at ``path`` only when the block ends without error; an existing file is kept
    unless ``overwrite``.
    """

    def __init__(self, path: str | Path, fps: Fraction | float, overwrite: bool = False, crf: int = 16):
        self.path, self.fps, self.overwrite, self.crf = Path(path), Fraction(fps).limit_denominator(1001000), \
            overwrite, crf
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        self.frames = 0
        self._container = self._stream = self._tmp = None

    def __enter__(self) -> "VideoWriter":
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(name)
        self._container = av.open(name, mode="w", format="mp4" if self.path.suffix.lower() in (".mp4", ".m4v",
                                                                                                 ".mov") else None)
        return self

    def _open_stream(self, height: int, width: int) -> None:
        av = _av()
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.width, self._stream.height = width, height
        even = width % 2 == 0 and height % 2 == 0
        self._stream.pix_fmt = "yuv420p" if even or codec != "libx264" else "yuv444p"  # 4:2:0 needs even sizes
        if codec == "libx264":
            self._stream.options = {"crf": str(self.crf), "preset": "medium"}
        else:
            self._stream.bit_rate = 8 * width * height * max(1, round(float(self.fps)))

    def write(self, frame) -> None:
        av = _av()
        array = np.asarray(frame)
        if array.dtype != np.uint8:
            array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)  # [H,W,3]
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"a video frame must be [H,W] or [H,W,3], got shape {array.shape}")
        if self._stream is None:
            self._open_stream(*array.shape[:2])
        elif (array.shape[0], array.shape[1]) != (self._stream.height, self._stream.width):
            raise ValueError(f"frame {self.frames} is {array.shape[1]}x{array.shape[0]}, but the video is "
                             f"{self._stream.width}x{self._stream.height}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None and self._stream is not None:
                for packet in self._stream.encode():  # flush
                    self._container.mux(packet)
            self._container.close()
            if kind is None:
                if self.frames == 0:
                    raise ValueError(f"no frames were written to {self.path}")
                if not self.overwrite and self.path.exists():
                    raise FileExistsError(f"{self.path} appeared while it was being written; kept it")
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
