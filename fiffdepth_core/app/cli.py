"""Command line: ``fiffdepth predict IMAGE_VIDEO_OR_FOLDER... --checkpoint PATH_OR_MODEL`` (or ``python -m
fiffdepth_core``), plus ``models`` and ``download`` for the catalogue of public models
(:mod:`fiffdepth_core.app.models_cli`).

Images of different sizes may be mixed: consecutive images of the same size are batched together; background
workers decode the next images while the model runs. Videos stream through :mod:`fiffdepth_core.app.video_cli`.
Every output path is checked before the model loads, so an existing file (without ``--overwrite``) stops the run
early. Launched with ``torchrun`` or ``accelerate launch``, the processes share the inputs
(:mod:`fiffdepth_core.app.parallel`). Before the model loads, every input's header is read (unreadable or oversized
files are reported together) and an output that would replace an input stops the run
(:mod:`fiffdepth_core.fileio.headers`, :mod:`fiffdepth_core.app.outputs`).
Every error takes one form (:mod:`fiffdepth_core.app.errors`); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch

from ..fileio.errors import UserInputError
from ..fileio.headers import pixel_count, pixel_limit, prescan
from ..fileio.images import IMAGE_EXTENSIONS, load_image
from ..fileio.processes import sweep
from ..fileio.writers import write_png8
from ..method.devices import free_memory, resolve_device, resolve_dtypes
from ..method.planning import check_decode, check_memory, plan_config
from ..method.postprocess import controlnet_depth
from ..method.predictor import NonFiniteOutputError, PredictConfig, predict_depth
from .allocator import keep_freed_memory
from .claims import SharedRun, options_signature
from .errors import EXIT_INTERRUPTED, report, setup_logging
from .options import build_parser, check_args, parse_args
from .outputs import (
    Manifest,
    OutputError,
    OutputWriteError,
    check_writable,
    list_inputs,
    natural_key,
    plan_outputs,
    write_skipped_summary,
    write_output,
    written_here,
)
from .models_cli import resolve_checkpoint, run_download, run_models
from .parallel import ProcessGroup, from_env, gather_bounds
from .prefetch import default_workers, image_batches
from .video import is_video, list_videos, probe_video
from .video_cli import (check_cache_space, check_video_targets, run_image_sequence, run_video, video_outputs,
                        video_sizes)

log = logging.getLogger("fiffdepth")
AUTO_GROUP = 64  # with --batch-size 0, images are read in groups of this many and batched to fit memory


class InputsError(UserInputError):
    """Some inputs cannot be used (each is a detail line of the error)."""

    what = "inputs"



def _read_rgb(path: Path, headers: dict, max_pixels: int | None) -> torch.Tensor:
    """One input as ``[3,H,W]`` (in a decoding worker): its decode checked against free memory first."""
    check_decode(headers[path], free_memory(torch.device("cpu")), path)
    return load_image(path, max_pixels, rgb=True)  # [3,H,W]


def _write(path: Path, depth: torch.Tensor, targets: dict[str, Path], args, batch_depths: list, replaceable: set,
           manifest: Manifest, shared: SharedRun, unit: str = "") -> None:
    """The outputs of one image; ``unit``: the claim it comes under when the run takes its images as one (else the
    image's own)."""
    if not shared.holds(unit or path.stem):  # taken over by a run that thought this one gone: that run writes it
        log.warning("%s: another run took it over; its outputs are left to that run", path)
        return
    control = controlnet_depth(depth[None])[0] if "controlnet" in targets and args.normalization == "per_image" \
        else None  # whole_batch: written at the end, with the whole run's bounds
    for fmt, target in targets.items():
        overwrite = args.overwrite or target in replaceable or (target.exists() and shared.by_job(target))
        try:
            if not write_output(fmt, target, depth, overwrite, control):
                continue
        except OSError as err:
            raise OutputWriteError(f"cannot write {target}: {err.strerror or err}", "the outputs written so far are "
                                   "complete: rerun with --skip-existing to continue") from err
        manifest.record(target)
    if "controlnet" in targets and args.normalization == "whole_batch":
        batch_depths.append((targets["controlnet"], depth))
    elif args.normalization == "per_image":
        shared.release(path.stem)


def _check_inputs(args) -> tuple[list[Path], list[Path], dict, list]:
    """Every input listed and every input's header read before the model loads: (images, videos, headers (an
    ImageHeader per image, a VideoInfo per video), failures skipped under --on-error skip)."""
    videos = [v for v in list_videos(args.inputs) if v.name not in written_here(v.parent)]  # not our own outputs
    found = list_inputs(args.inputs) + sorted(videos, key=natural_key)
    if not found:
        raise UserInputError("no images or videos found in " + ", ".join(args.inputs), "image files ("
                             + " ".join(IMAGE_EXTENSIONS) + "), videos, or folders holding them (not searched "
                             "recursively)", what="inputs")
    videos, images = [p for p in found if is_video(p)], [p for p in found if not is_video(p)]
    headers, failures = prescan(images, args.max_pixels)
    failures += _check_videos(videos, args.max_pixels, headers)
    if failures and args.on_error == "stop":
        raise InputsError(f"{len(failures)} of {len(found)} input(s) cannot be used", "nothing was loaded or "
                          "written: fix or remove them, or pass --on-error skip to process the rest",
                          details=[reason for _, reason in failures])
    for _, reason in failures:
        log.warning("skipping %s", reason)
    bad = {p for p, _ in failures}
    return [p for p in images if p in headers], [p for p in videos if p not in bad], headers, failures


def _check_videos(videos: list[Path], max_pixels: int | None, infos: dict) -> list[tuple[Path, str]]:
    """Each video's frame size from its container header, against the same pixel limit as images; each readable
    video's VideoInfo goes into ``infos``."""
    failures, limit = [], pixel_limit(max_pixels)
    for video in videos:
        try:
            info = probe_video(video)
        except ImportError:
            return failures  # no PyAV: the run itself says so, once
        except (ValueError, OSError) as err:
            failures.append((video, str(err)))
            continue
        infos[video] = info
        pixels = info.width * info.height
        if limit and pixels > limit:
            failures.append((video, f"video {video} has {info.width}x{info.height} frames = "
                                    f"{pixel_count(pixels, limit)}, above the limit of {pixel_count(limit, pixels)} "
                                    "(raise it with --max-pixels N)"))
    return failures


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a job scheduler, ``kill``) ends the run like Ctrl-C: temporary files and caches are removed."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_predict(args) -> int:
    """One process, or this process's share of a data-parallel job (torchrun / accelerate launch: see
    :mod:`fiffdepth_core.app.parallel`)."""
    processes = from_env()
    with ProcessGroup(processes, resolve_device(processes.device(args.device))) as group, \
            contextlib.ExitStack() as stack:
        return _run_predict(args, group, stack)


def _run_predict(args, group: ProcessGroup, stack: contextlib.ExitStack) -> int:
    processes = group.processes
    images, videos, headers, failures = _check_inputs(args)
    # Videos default to steady depth with whole-clip ControlNet bounds; images to each image's own depth.
    video_args = argparse.Namespace(**{**vars(args), "normalization": args.normalization or "whole_batch",
                                       "temporal": "stabilize" if args.temporal == "auto" else args.temporal})
    args.temporal = "off" if args.temporal == "auto" else args.temporal
    sequence = args.temporal != "off" and len(images) > 1  # the images are the frames of one clip
    args.normalization = args.normalization or ("whole_batch" if sequence else "per_image")
    if args.skip_existing and args.normalization == "whole_batch":
        raise UserInputError("with --normalization whole_batch or --temporal "
                             f"{args.temporal if args.temporal != 'off' else 'align'}", "not with --skip-existing: "
                             "one normalisation for the whole run needs every image of it", what="--skip-existing")
    output_dir = Path(args.output_dir)
    # independent runs into one folder share it (the processes of one torchrun job split it statically instead)
    shared = SharedRun(output_dir, options_signature(args), enabled=not processes.distributed)
    theirs = shared.plan()  # files that live runs sharing the folder wrote: not in this run's way
    targets, replaceable, done = plan_outputs(images, output_dir, args.format, args.overwrite, args.skip_existing,
                                              theirs)
    if done:
        log.info("skipping %d image(s) whose outputs already exist (--skip-existing)", len(done))
        images = [p for p in images if p in targets]
    held = []  # videos a live run sharing the folder is writing: claimed at run time (taken over if it dies)
    if theirs and not sequence:
        finished = [p for p in images if all(t.name in theirs for t in targets[p].values())]
        if finished:
            log.info("leaving out %d image(s) that another run sharing %s has finished", len(finished), output_dir)
            images = [p for p in images if p not in finished]
        videos = [v for v in videos if not all(t.name in theirs for t in video_outputs(v, output_dir, args.format))]
        held = [v for v in videos if shared.elsewhere(v.stem)]
    videos, finished, resume = check_video_targets([v for v in videos if v not in held], args.output_dir,
                                                   args.format, args.overwrite, {p.stem.casefold() for p in images},
                                                   [*images, *videos], args.skip_existing)
    videos += held
    if finished:
        log.info("skipping %d video(s) whose outputs already exist (--skip-existing)", len(finished))
    # each clip's depth waits in a float32 cache file on the output folder's disk
    clips = video_sizes({v: headers[v] for v in videos if v in headers})
    if sequence:
        first = headers[images[0]]
        for path in images[1:]:
            if (headers[path].width, headers[path].height) != (first.width, first.height):
                raise UserInputError(f"{path} is {headers[path].width}x{headers[path].height} but {images[0]} is "
                                     f"{first.width}x{first.height}", "the frames of a sequence share one size",
                                     what=f"--temporal {args.temporal}")
        clips["the image sequence"] = (len(images), first.width, first.height)
    if not args.stream_window:
        check_cache_space(clips, output_dir)
    check_writable(output_dir)
    sweep(output_dir)  # temporary files of runs that were killed
    stack.enter_context(shared)
    manifest = Manifest(output_dir, shared.run, shared.options)
    if not processes.is_main:
        failures = []  # every process found the same ones; the main process reports them
    group.barrier()  # every process has checked every output before any process writes one
    if sequence:  # one aligned clip runs in one process
        images = images if processes.is_main else []
    else:  # each process takes its own block (cut at batch boundaries) and its own videos
        images, videos = processes.shard(images, max(1, args.batch_size)), processes.shard(videos)
    config = PredictConfig(processing_resolution=args.processing_resolution, batch_size=max(1, args.batch_size),
                           depth_pass=args.depth_pass)
    device = group.device
    unet_dtype, vae_dtype = resolve_dtypes(args.dtype, device)
    from ..weights.checkpoint import load_standalone

    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda")
    checkpoint, family = resolve_checkpoint(args.checkpoint, args.family, args.models_dir,
                                            args.quiet or not processes.is_main)
    backbone = load_standalone(checkpoint, device=device, dtype=unet_dtype, vae_dtype=vae_dtype,
                               channels_last=channels_last, family=family, mapped=True)
    if args.compile:
        backbone.compile()
    log.info("loaded %s (%s) on %s (UNet %s, VAE %s)", args.checkpoint, backbone.family.title, device, unet_dtype,
             vae_dtype)

    def upcast():  # after one fp16 overflow, the rest of the run stays in fp32
        nonlocal backbone
        backbone = backbone.upcast()
        return backbone

    def predict(batch: torch.Tensor) -> torch.Tensor:  # [B,C,H,W] -> [B,H,W]
        free = free_memory(device)
        run_config = plan_config(config, batch.shape, free, backbone.dtype, backbone.vae_dtype, args.vae_tiling,
                                 args.tile_size, auto_batch=args.batch_size == 0)
        check_memory(batch.shape, run_config, free, backbone.dtype, backbone.vae_dtype)
        return predict_depth(backbone, batch, run_config, fallback=upcast if backbone.dtype != torch.float32 else None)

    quiet = args.quiet or not processes.is_main  # one set of bars: the main process's

    def progress(total, unit, desc):  # a bar for the sequence paths
        return _progress(total, quiet, unit, desc)

    whole = sequence or args.normalization == "whole_batch"  # one unit: shared with no other run
    unit = f"{images[0].stem}-and-{len(images) - 1}-more" if whole and images else ""
    if whole and images and not shared.take(unit, [p for paths in targets.values() for p in paths.values()]):
        log.info("another run sharing %s has these %d image(s); nothing left for this run", output_dir, len(images))
        images = []
    if sequence:
        if images:
            run_image_sequence(images, targets, predict, args, progress, replace=shared.by_job)
            manifest.record(*(p for paths in targets.values() for p in paths.values()))
            shared.release(unit)
        images = []
    total = group.sum(len(images))  # the bar counts every process's images
    bar = group.progress(total, _progress(total, quiet))
    workers = default_workers(processes.local_world_size) if args.workers is None else args.workers
    pending, started = [], time.perf_counter()

    def unreadable(path: Path, message: str) -> None:  # a decode that failed after the header check passed
        if args.on_error == "stop":
            raise UserInputError(message, "pass --on-error skip to process the rest", what="input")
        log.warning("skipping %s", message)
        failures.append((path, message))
        bar.update(1)

    elsewhere: dict[Path, None] = {}  # images another run sharing the folder held when this one came to them
    predicted: set[Path] = set()

    def take(path: Path) -> bool:  # claimed just before it is decoded; one another run has is counted as done
        if whole or shared.take(path.stem, list(targets[path].values())):
            return True
        if path not in elsewhere:
            elsewhere[path] = None
            bar.update(1)
        return False

    decode = functools.partial(_read_rgb, headers={p: headers[p] for p in images}, max_pixels=args.max_pixels)
    todo = images
    while todo:  # then again over the images whose holder is gone meanwhile, leaving it unfinished
        for paths, batch in image_batches(todo, decode, args.batch_size or AUTO_GROUP, workers,
                                          pin_memory=device.type == "cuda", on_error=unreadable, take=take):
            try:
                depths = predict(batch)
            except NonFiniteOutputError as err:
                raise NonFiniteOutputError(f"{', '.join(map(str, paths))}: {err}") from err
            for path, depth in zip(paths, depths):
                _write(path, depth, targets[path], args, pending, replaceable, manifest, shared, unit)
            predicted.update(paths)
            bar.update(sum(path not in elsewhere for path in paths))
        todo = [p for p in elsewhere if not shared.elsewhere(p.stem) and not shared.done(targets[p].values())]
    bar.close()  # every process waits here until all images of the job are done
    if args.normalization == "whole_batch" and "controlnet" in args.format and not sequence:
        bounds = gather_bounds(group, [d for _, d in pending])  # one normalisation for the whole run, all sizes
        for target, depth in pending:
            write_png8(target, controlnet_depth(depth[None], bounds=bounds)[0], overwrite=True)
            manifest.record(target)
    if unit and not sequence:
        shared.release(unit)
    theirs_now = [p for p in elsewhere if p not in predicted]  # (only when independent runs share the folder)
    written = total - len(theirs_now)  # the whole job's, under torchrun (benchmarks/bench_folder.py reads it)
    if written and processes.is_main:
        seconds = time.perf_counter() - started
        log.info("wrote %d image(s) x %s to %s in %.2f s (%.2f images/s)", written, ", ".join(args.format),
                 args.output_dir, seconds, written / max(seconds, 1e-9))
    if theirs_now:
        log.info("%d image(s) were done by other runs sharing %s", len(theirs_now), output_dir)
    for video in videos:
        if not shared.take(video.stem, video_outputs(video, output_dir, args.format)):
            continue
        try:
            run_video(video, predict, video_args, progress, replace_ours=video in resume or shared.took_over(
                video.stem), info=headers.get(video))
            shared.release(video.stem)
        except (ValueError, OSError) as err:  # an unreadable video, found while decoding
            if args.on_error == "stop" or isinstance(err, (OutputError, FileExistsError)):
                raise
            log.warning("skipping %s: %s", video, err)
            failures.append((video, str(err)))
    failures = [item for share in group.gather(failures) for item in share]  # every process's skipped inputs
    if failures and processes.is_main:
        summary = write_skipped_summary(output_dir, failures)
        log.warning("skipped %d input(s) that could not be used; the list is in %s", len(failures), summary)
    return 0


def _progress(total: int | None, quiet: bool, unit: str = "img", desc: str = "FiffDepth"):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: count in the log instead
        tqdm = None
    if tqdm is None or quiet:
        class _Quiet:
            def update(self, n):
                pass

            def close(self):
                pass
        return _Quiet()
    return tqdm(total=total, unit=unit, desc=desc)


def main(argv: list[str] | None = None, prog: str = "fiffdepth") -> int:
    """Run the command line; returns the exit status (0, :data:`~fiffdepth_core.app.errors.EXIT_ERROR` for every
    error, 130 when interrupted). ``prog``: how the user started it, for usage lines. Run as the program (``argv``
    None: the console script, ``python -m fiffdepth_core``), it also tunes this process's allocator (allocator.py);
    called with an argument list (from Python, in tests) it leaves the caller's process as it is."""
    if argv is None:
        keep_freed_memory()
    args = parse_args(build_parser(prog), argv)
    setup_logging(args.quiet)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # downloads show one bar of ours, not one per file
    try:
        check_args(args)
        with _terminate_as_interrupt():
            if args.command != "predict":
                return run_models(args) if args.command == "models" else run_download(args)
            return run_predict(args)
    except KeyboardInterrupt:
        log.error("interrupted; the outputs written so far are complete (rerun with --skip-existing to continue)"
                  if args.command == "predict" else "interrupted; run it again to resume the download")
        return EXIT_INTERRUPTED
    except Exception as err:  # one form for the user; the traceback only with --debug
        if args.debug:
            raise
        return report(err, log)


if __name__ == "__main__":
    sys.exit(main(prog="python -m fiffdepth_core"))
