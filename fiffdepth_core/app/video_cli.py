"""The CLI's sequence paths: video files, and image folders predicted as one aligned sequence (``--temporal align``
or ``stabilize``).

A video ``clip.mp4`` gives, in the output folder:

* ``clip/clip_000000.npy``, ``clip/clip_000000_depth16.png``, ``clip/clip_000000.exr``, ... per frame (frame index
  from 0), for each depth ``--format`` asked for;
* ``clip_controlnet.mp4``: the 8-bit ControlNet map (near = white) at the source frame rate, always;
* ``clip_color.mp4``: the colour preview, with ``--format color``.

Both passes stream (see :mod:`fiffdepth_core.app.sequence`): the depth cache lives in a temporary folder inside the
output folder and is removed at the end, whatever happens.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..fileio.images import load_image
from ..fileio.processes import sweep, tag
from ..fileio.writers import WRITERS
from ..method.postprocess import colorize
from .outputs import MANIFEST, Manifest, OutputError, output_path, write_output, written_here
from .sequence import DepthCache, first_pass, second_pass, stream_pass
from .video import VideoInfo, VideoWriter, probe_video, read_timed_frames

log = logging.getLogger("fiffdepth")
DEPTH_FORMATS = tuple(WRITERS)  # per-frame files; controlnet and color become videos
VIDEO_GROUP = 16  # with --batch-size 0, frames are read in groups of this many and batched to fit memory


def video_targets(video: Path, output_dir: str | Path, formats) -> dict[str, Path]:
    out = Path(output_dir)
    targets = {"frames": out / video.stem, "controlnet": out / f"{video.stem}_controlnet.mp4"}
    if "color" in formats:
        targets["color"] = out / f"{video.stem}_color.mp4"
    return targets


def video_outputs(video: Path, output_dir: str | Path, formats) -> list[Path]:
    """The video files a video's run writes (the ControlNet video, the colour preview with ``color``)."""
    return [path for name, path in video_targets(video, output_dir, formats).items() if name != "frames"]


def frame_path(folder: Path, stem: str, index: int, fmt: str) -> Path:
    return output_path(folder, f"{stem}_{index:06d}", fmt)


def check_video_targets(videos: list[Path], output_dir, formats, overwrite: bool, taken: set[str],
                        inputs=(), skip_existing: bool = False) -> tuple[list[Path], list[Path], set[Path]]:
    """Every video's outputs checked before any model loads; returns (videos to run, videos skipped as done,
    videos whose unfinished earlier outputs may be replaced).

    Refused, whatever the flags: two inputs with one name (with each other and with image outputs ``taken``), an
    output that would replace an input of the run (``inputs``), and a file where a frames folder goes. Without
    ``overwrite``, existing outputs are refused, except with ``skip_existing``: a video whose videos exist is done
    (they appear last, when its run completes) and is skipped; one whose frames folder holds only files an earlier
    run wrote (and no finished video) is run again over them.
    """
    resolved = {Path(p).resolve() for p in inputs}
    depth = any(fmt in DEPTH_FORMATS for fmt in formats)
    run, skipped, resume = [], [], set()
    for video in videos:
        if video.stem.casefold() in taken:  # on macOS and Windows, Clip and clip are one file name
            raise OutputError(f"two inputs share the name {video.stem!r} (one is {video})", "inputs whose outputs do "
                              "not collide: run them into different --output-dir folders", what="inputs")
        taken.add(video.stem.casefold())
        targets = video_targets(video, output_dir, formats)
        folder = targets.pop("frames")
        for path in targets.values():
            if path.resolve() in resolved:
                raise OutputError(f"the {path.name} output of {video} would replace an input of this run",
                                  "another --output-dir: inputs are never overwritten, even with --overwrite")
        if depth and any(p.parent == folder.resolve() for p in resolved):
            raise OutputError(f"{folder} holds inputs of this run, and {video}'s depth frames would be written "
                              "there", "another --output-dir: inputs are never overwritten")
        if depth and folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder} is a file, but {video}'s depth frames go in a folder of that name",
                              "move the file, or choose another --output-dir")
        if overwrite:
            run.append(video)
            continue
        if skip_existing and all(p.exists() for p in targets.values()):
            skipped.append(video)
            continue
        existing = [str(p) for p in targets.values() if p.exists()]
        frames = [p for p in folder.iterdir() if p.name != MANIFEST] if depth and folder.is_dir() else []
        ours = written_here(folder) if frames else set()
        if skip_existing and not existing and all(p.name in ours for p in frames):
            resume.add(video)  # cut short before: its own frame files are replaced
        elif frames:
            existing.append(f"{folder}/ (not empty)")
        if existing:
            hint = "--overwrite to replace it" + ("" if skip_existing else ", or --skip-existing to keep finished "
                                                  "videos")
            raise OutputError(f"output already exists: {', '.join(existing)}", f"pass {hint}")
        run.append(video)
    return run, skipped, resume


def check_cache_space(clips: dict[str, tuple[int, int, int]], output_dir) -> None:
    """Refuse, before the model loads, a clip whose float32 depth cache would not fit on the output folder's disk.

    ``clips``: name -> (frames, width, height). Clips run one after another and each cache is removed when its clip
    is done, so the largest one must fit."""
    if not clips:
        return
    folder = Path(output_dir).resolve()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    name, (frames, width, height) = max(clips.items(), key=lambda item: item[1][0] * item[1][1] * item[1][2])
    need = frames * width * height * 4
    if need > free:
        raise OutputError(f"{output_dir}: {name} needs {_size(need)} of free disk there for its depth cache "
                          f"({frames} frames of {width}x{height} float32, removed at the end) but {_size(free)} is "
                          "free", "free some space, choose another --output-dir, split the clip, or use "
                          "--stream-window N, which needs no cache")


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.2f} MB"


def video_sizes(infos: dict[Path, VideoInfo]) -> dict[str, tuple[int, int, int]]:
    """name -> (frames, width, height) of each video whose frame count is declared or follows from its duration."""
    return {video.name: (info.estimated_frames(), info.width, info.height) for video, info in infos.items()
            if info.estimated_frames()}


def remove_stale_frames(folder: Path, stem: str, count: int, formats) -> int:
    """After ``--overwrite`` with a shorter clip: remove the earlier run's frames numbered from ``count`` on (only
    this clip's own frame names, in the formats just written), so the folder holds one run's sequence, not a mix."""
    removed = 0
    for fmt in formats:
        index = count
        while (path := frame_path(folder, stem, index, fmt)).is_file():
            path.unlink()
            removed, index = removed + 1, index + 1
    if removed:
        log.info("%s: removed %d frame file(s) left from a longer earlier run (--overwrite)", folder, removed)
    return removed


def _frames(video: Path, times: list):
    """The video's frames as ``[3,H,W]`` float tensors; each frame's time is appended to ``times``."""
    for array, time in read_timed_frames(video):  # [H,W,3] uint8
        times.append(time)
        yield torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)  # [3,H,W]


def run_video(video: Path, predict: Callable[[torch.Tensor], torch.Tensor], args, progress,
              replace_ours: bool = False, info: VideoInfo | None = None) -> int:
    """Depth for every frame of ``video``; returns the frame count. ``progress(total, unit, desc)`` makes a bar.
    ``replace_ours``: frame files an earlier, unfinished run wrote may be replaced (``--skip-existing``).

    Every file written is recorded in its folder's output log (:class:`~fiffdepth_core.app.outputs.Manifest`), so a
    later run over these folders does not take the depth frames or videos as inputs. ``info``: the video's
    :func:`~fiffdepth_core.app.video.probe_video`, when the caller has it already."""
    info = info or probe_video(video)
    targets = video_targets(video, args.output_dir, args.format)
    depth_formats = [fmt for fmt in args.format if fmt in DEPTH_FORMATS]
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    sweep(targets["frames"])  # temporary frame files of a run that was killed
    frame_log = Manifest(targets["frames"])
    replace = args.overwrite or replace_ours
    times: list = []  # each frame's time, from the decoder: the videos keep the source's timing
    settings = {"sample_aspect_ratio": info.sample_aspect_ratio, "time_base": info.time_base}
    with VideoWriter(targets["controlnet"], info.fps, args.overwrite, **settings) as control_out, \
            _optional_writer(targets.get("color"), info.fps, args.overwrite, settings) as color_out:
        def write(index, depth, control):
            for fmt in depth_formats:
                path = frame_path(targets["frames"], video.stem, index, fmt)
                WRITERS[fmt](path, depth, overwrite=replace)
                frame_log.record(path)
            control_out.write(control.numpy(), times[index])
            if color_out is not None:
                color_out.write(colorize(depth[None])[0].permute(1, 2, 0).numpy(), times[index])

        count = depth_passes(_frames(video, times), predict, write, args, progress, info.estimated_frames(), video.name,
                             "frame")
    Manifest(args.output_dir).record(targets["controlnet"], *([targets["color"]] if "color" in targets else []))
    if replace:
        remove_stale_frames(targets["frames"], video.stem, count, depth_formats)
    log.info("%s: %d frames at %s fps -> %s", video.name, count, info.fps, targets["controlnet"])
    return count


def depth_passes(frames, predict, write, args, progress, total: int | None, name: str, unit: str) -> int:
    """The frames' depth through ``write(index, depth, control)``: one streaming pass with ``--stream-window N``,
    else two passes over a disk cache in the output folder (whole-clip bounds). Returns the frame count."""
    batch = args.batch_size or VIDEO_GROUP
    if args.stream_window:
        bar = progress(total, unit, f"{name} depth")
        count, aligner = stream_pass(frames, predict, batch, write, args.stream_window, args.temporal,
                                     args.normalization, progress=bar.update)
        bar.close()
    else:
        with tempfile.TemporaryDirectory(prefix=f".fiffdepth-cache.{tag()}.", dir=args.output_dir) as scratch:
            cache = DepthCache(Path(scratch) / "depth.f32")
            try:
                bar = progress(total, unit, f"{name} depth")
                aligner = first_pass(frames, predict, batch, cache, args.temporal, progress=bar.update)
                bar.close()
                count = len(cache)
                if count:
                    bar = progress(count, unit, f"{name} write")
                    second_pass(cache, write, args.temporal, args.normalization, progress=bar.update)
                    bar.close()
            finally:
                cache.close()
    if count == 0:
        raise ValueError(f"{name} has no decodable frames")
    if aligner is not None and aligner.cuts:
        log.info("%s: %d scene cut(s) in the picture; alignment restarted at each", name, aligner.cuts)
    if aligner is not None and aligner.unsteady:
        log.info("%s: the depth of %d frame(s) disagreed with the clip's while the picture went on (the model is "
                 "unsteady there); aligned by range", name, aligner.unsteady)
    return count


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _optional_writer(path, fps, overwrite, settings):
    return _Nothing() if path is None else VideoWriter(path, fps, overwrite, **settings)


def run_image_sequence(images: list[Path], targets: dict[Path, dict[str, Path]],
                       predict: Callable[[torch.Tensor], torch.Tensor], args, progress,
                       replace: Callable[[Path], bool] = lambda path: False) -> None:
    """Images predicted as consecutive frames of one clip (``--temporal align/stabilize``), written under their own
    names. ``replace(path)``: whether an existing output may be replaced without ``--overwrite`` (one that a run
    sharing the folder left unfinished)."""
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    frames = (load_image(path, rgb=True) for path in images)  # [3,H,W] each, read lazily

    def write(index, depth, control):
        for fmt, target in targets[images[index]].items():
            write_output(fmt, target, depth, args.overwrite or (target.exists() and replace(target)), control)

    depth_passes(frames, predict, write, args, progress, len(images), "the image sequence", "img")
