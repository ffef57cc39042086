"""Command line: ``python -m fiffdepth_core predict IMAGE_VIDEO_OR_FOLDER... --checkpoint PATH``.

Images of different sizes may be mixed: consecutive images of the same size are batched together; background
workers decode the next images while the model runs. Videos stream through :mod:`fiffdepth_core.app.video_cli`. Every
output path is checked before the model loads, so an existing file (without ``--overwrite``) stops the run early.
Launched with ``torchrun`` or ``accelerate launch``, the processes share the inputs (:mod:`fiffdepth_core.app.parallel`).
Before the model loads, every input's header is read (unreadable or oversized files are reported together) and an
output that would replace an input stops the run (:mod:`fiffdepth_core.fileio.headers`, :mod:`fiffdepth_core.app.outputs`).
Errors end in one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import sys
import time
from pathlib import Path

import torch

from ..fileio.headers import pixel_limit, prescan
from ..fileio.images import load_image
from ..fileio.writers import WRITERS, write_png8
from ..method.devices import DTYPES, free_memory, resolve_device, resolve_dtypes
from ..method.families import FAMILY_CHOICES
from ..method.image import to_rgb
from ..method.planning import check_decode, check_memory, plan_config
from ..method.postprocess import NORMALIZATIONS, colorize, controlnet_depth
from ..method.predictor import DEFAULT_PROCESSING_RESOLUTION, PASSES, NonFiniteOutputError, PredictConfig, predict_depth
from ..method.temporal import TEMPORAL_MODES
from ..method.tiling import DEFAULT_TILE_SIZE, TileConfig
from .outputs import (
    FORMATS,
    Manifest,
    OutputError,
    OutputWriteError,
    check_writable,
    list_inputs,
    natural_key,
    plan_outputs,
    write_skipped_summary,
    written_here,
)
from .parallel import ProcessGroup, WorkerFailedError, from_env, gather_bounds
from .prefetch import default_workers, image_batches
from .video import is_video, list_videos, probe_video
from .video_cli import check_cache_space, check_video_targets, run_image_sequence, run_video, video_sizes

log = logging.getLogger("fiffdepth")
AUTO_GROUP = 64  # with --batch-size 0, images are read in groups of this many and batched to fit memory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fiffdepth_core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="estimate depth for images and folders of images")
    p.add_argument("inputs", nargs="+", help="image and video files and/or folders of them (not recursive)")
    p.add_argument("--checkpoint", required=True, help="FiffDepth checkpoint: diffusers folder, folder of "
                   "single files, or one .safetensors bundle")
    p.add_argument("--family", default="auto", choices=FAMILY_CHOICES,
                   help="model family (default auto: detected from the checkpoint): fiffdepth, lotus-d, "
                        "lotus-d-disparity, genpercept, genpercept-disparity or marigold-e2e-ft")
    p.add_argument("--processing-resolution", type=int, default=DEFAULT_PROCESSING_RESOLUTION,
                   help=f"long edge the model sees, in px (default {DEFAULT_PROCESSING_RESOLUTION}; 0 = native size)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per model call (default 1; 0 = as many as fit in free memory)")
    p.add_argument("--format", nargs="+", default=["npy", "png16"], choices=FORMATS, metavar="FORMAT",
                   help=f"outputs to write, any of {', '.join(FORMATS)} (default: npy png16)")
    p.add_argument("--output-dir", default="fiffdepth_output", help="folder for outputs (default ./fiffdepth_output)")
    p.add_argument("--pass", dest="depth_pass", default="detailed", choices=PASSES,
                   help="detailed = t=0 (the paper's output); filtered = t=-1 low-pass pass")
    p.add_argument("--normalization", default=None, choices=NORMALIZATIONS,
                   help="ControlNet output: normalise each image, or the whole run at once (default: per_image for "
                   "images, whole_batch for videos and --temporal align/stabilize)")
    p.add_argument("--temporal", default="auto", choices=("auto", *TEMPORAL_MODES),
                   help="align: treat a video (or the images, in name order) as one clip and align each frame's "
                   "depth in scale and shift to a running reference, so it does not flicker; the clip's depth is "
                   "then rescaled as a whole to [0,1]. stabilize: align, then average each pixel's noise-level "
                   "changes over a few frames (larger changes pass at once); the steadiest video depth. off: each "
                   "frame's own depth. auto (default): stabilize for videos, off for images")
    p.add_argument("--stream-window", type=int, default=0, metavar="FRAMES",
                   help="videos and image sequences: 0 = whole-clip bounds, two passes over a float32 disk cache in "
                   "the output folder (default); N = one pass with no cache, for clips of any length: each frame is "
                   "written with bounds averaged over the N frames around it (N/2 frames held in memory)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, ...")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="UNet precision (auto: fp32 on CPU, "
                   "bf16 on GPUs that have it, else fp16)")
    p.add_argument("--vae-tiling", default="auto", choices=("auto", "on", "off"),
                   help="tiled VAE for large images (auto: when the whole image would not fit in memory)")
    p.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                   help=f"VAE tile size in px when tiling (default {DEFAULT_TILE_SIZE})")
    p.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                   help="NHWC memory layout for faster convolutions (auto: on for CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models: the first image of each size "
                   "compiles (about a minute on a GPU), later ones run faster")
    p.add_argument("--workers", type=int, default=None, help="processes decoding images ahead of the model "
                   "(default: up to 4 per process, as the cores allow; 0 = decode on the main thread)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    p.add_argument("--skip-existing", action="store_true", help="skip images whose outputs all exist (resume a "
                   "half-done folder)")
    p.add_argument("--on-error", default="stop", choices=("stop", "skip"), help="an unreadable input: stop before "
                   "the model loads (default), or skip it and list it in fiffdepth_skipped.txt at the end")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse inputs with more pixels than this "
                   "(default: Pillow's limit, about 89.5 million, or $FIFFDEPTH_MAX_PIXELS; 0 = no limit)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


class InputsError(ValueError):
    """Some inputs cannot be read (each was logged above the final line)."""






def _read_rgb(path: Path, headers: dict, max_pixels: int | None) -> torch.Tensor:
    """One input as ``[3,H,W]`` (in a decoding worker): its decode checked against free memory first."""
    check_decode(headers[path], free_memory(torch.device("cpu")), path)
    return to_rgb(load_image(path, max_pixels)[None])[0]  # [3,H,W]


def _write(path: Path, depth: torch.Tensor, targets: dict[str, Path], args, batch_depths: list, replaceable: set,
           manifest: Manifest) -> None:
    for fmt, target in targets.items():
        overwrite = args.overwrite or target in replaceable
        try:
            if fmt in WRITERS:
                WRITERS[fmt](target, depth, overwrite=overwrite)
            elif fmt == "color":
                write_png8(target, colorize(depth[None])[0], overwrite=overwrite)
            elif fmt == "controlnet" and args.normalization == "per_image":
                write_png8(target, controlnet_depth(depth[None])[0], overwrite=overwrite)
            else:
                continue
        except OSError as err:
            raise OutputWriteError(f"cannot write {target}: {err.strerror or err}; the outputs written so far are complete "
                              "(rerun with --skip-existing to continue)") from err
        manifest.record(target)
    if "controlnet" in targets and args.normalization == "whole_batch":
        batch_depths.append((targets["controlnet"], depth))


def _check_inputs(args) -> tuple[list[Path], list[Path], dict, list]:
    """Every input listed and every input's header read before the model loads: (images, videos, headers (an
    ImageHeader per image, a VideoInfo per video), failures skipped under --on-error skip)."""
    videos = [v for v in list_videos(args.inputs) if v.name not in written_here(v.parent)]  # not our own outputs
    found = list_inputs(args.inputs) + sorted(videos, key=natural_key)
    if not found:
        raise SystemExit("error: no images or videos found in " + ", ".join(args.inputs))
    videos, images = [p for p in found if is_video(p)], [p for p in found if not is_video(p)]
    headers, failures = prescan(images, args.max_pixels)
    failures += _check_videos(videos, args.max_pixels, headers)
    if failures and args.on_error == "stop":
        for _, reason in failures:
            log.error("%s", reason)
        raise InputsError(f"{len(failures)} of {len(found)} input(s) cannot be used (listed above); nothing was "
                          "loaded or written: fix or remove them, or pass --on-error skip to process the rest")
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
        if limit and info.width * info.height > limit:
            failures.append((video, f"video {video} has {info.width}x{info.height} frames = "
                                    f"{info.width * info.height / 1e6:.1f} megapixels, above the limit of "
                                    f"{limit / 1e6:.1f} megapixels (raise it with --max-pixels N)"))
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
    with ProcessGroup(processes, resolve_device(processes.device(args.device))) as group:
        return _run_predict(args, group)


def _run_predict(args, group: ProcessGroup) -> int:
    processes = group.processes
    images, videos, headers, failures = _check_inputs(args)
    # Videos default to steady depth with whole-clip ControlNet bounds; images to each image's own depth.
    video_args = argparse.Namespace(**{**vars(args), "normalization": args.normalization or "whole_batch",
                                       "temporal": "stabilize" if args.temporal == "auto" else args.temporal})
    args.temporal = "off" if args.temporal == "auto" else args.temporal
    sequence = args.temporal != "off" and len(images) > 1  # the images are the frames of one clip
    args.normalization = args.normalization or ("whole_batch" if sequence else "per_image")
    if args.skip_existing and args.normalization == "whole_batch":
        raise OutputError("--skip-existing cannot be combined with --normalization whole_batch or --temporal "
                          f"{args.temporal if args.temporal != 'off' else 'align'}: "
                          "one normalisation for the whole run needs every image of it")
    output_dir = Path(args.output_dir)
    targets, replaceable, done = plan_outputs(images, output_dir, args.format, args.overwrite, args.skip_existing)
    if done:
        log.info("skipping %d image(s) whose outputs already exist (--skip-existing)", len(done))
        images = [p for p in images if p in targets]
    videos, finished, resume = check_video_targets(videos, args.output_dir, args.format, args.overwrite,
                                                   {p.stem.casefold() for p in images}, [*images, *videos],
                                                   args.skip_existing)
    if finished:
        log.info("skipping %d video(s) whose outputs already exist (--skip-existing)", len(finished))
    # each clip's depth waits in a float32 cache file on the output folder's disk
    clips = video_sizes({v: headers[v] for v in videos if v in headers})
    if sequence:
        first = headers[images[0]]
        for path in images[1:]:
            if (headers[path].width, headers[path].height) != (first.width, first.height):
                raise OutputError(f"--temporal {args.temporal}: {path} is {headers[path].width}x{headers[path].height}"
                                  f" but {images[0]} is {first.width}x{first.height}; the frames of a sequence must "
                                  "share one size")
        clips["the image sequence"] = (len(images), first.width, first.height)
    if not args.stream_window:
        check_cache_space(clips, output_dir)
    check_writable(output_dir)
    manifest = Manifest(output_dir)
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
    backbone = load_standalone(args.checkpoint, device=device, dtype=unet_dtype, vae_dtype=vae_dtype,
                               channels_last=channels_last, family=args.family)
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

    if sequence:
        if images:
            run_image_sequence(images, targets, predict, args, progress)
            manifest.record(*(p for paths in targets.values() for p in paths.values()))
        images = []
    total = group.sum(len(images))  # the bar counts every process's images
    bar = group.progress(total, _progress(total, quiet))
    workers = default_workers(processes.local_world_size) if args.workers is None else args.workers
    pending, started = [], time.perf_counter()

    def unreadable(path: Path, message: str) -> None:  # a decode that failed after the header check passed
        if args.on_error == "stop":
            raise ValueError(message)
        log.warning("skipping %s", message)
        failures.append((path, message))
        bar.update(1)

    decode = functools.partial(_read_rgb, headers={p: headers[p] for p in images}, max_pixels=args.max_pixels)
    for paths, batch in image_batches(images, decode, args.batch_size or AUTO_GROUP, workers,
                                      pin_memory=device.type == "cuda", on_error=unreadable):
        try:
            depths = predict(batch)
        except NonFiniteOutputError as err:
            raise NonFiniteOutputError(f"{', '.join(map(str, paths))}: {err}") from err
        for path, depth in zip(paths, depths):
            _write(path, depth, targets[path], args, pending, replaceable, manifest)
        bar.update(len(paths))
    bar.close()  # every process waits here until all images of the job are done
    if args.normalization == "whole_batch" and "controlnet" in args.format and not sequence:
        bounds = gather_bounds(group, [d for _, d in pending])  # one normalisation for the whole run, all sizes
        for target, depth in pending:
            write_png8(target, controlnet_depth(depth[None], bounds=bounds)[0], overwrite=True)
            manifest.record(target)
    if total and processes.is_main:
        seconds = time.perf_counter() - started
        log.info("wrote %d image(s) x %s to %s in %.2f s (%.2f images/s)", total, ", ".join(args.format),
                 args.output_dir, seconds, total / max(seconds, 1e-9))
    for video in videos:
        try:
            run_video(video, predict, video_args, progress, replace_ours=video in resume, info=headers.get(video))
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.vae_tiling != "off":
        try:
            TileConfig.for_size(args.tile_size)
        except ValueError as err:
            raise SystemExit(f"error: --tile-size: {err}") from None
    for flag, value, low in (("--batch-size", args.batch_size, 0), ("--processing-resolution",
                                                                     args.processing_resolution, 0),
                             ("--max-pixels", args.max_pixels if args.max_pixels is not None else 0, 0),
                             ("--workers", 0 if args.workers is None else args.workers, 0),
                             ("--stream-window", args.stream_window, 0)):
        if value < low:
            raise SystemExit(f"error: {flag} must be >= {low}, got {value}")
    try:
        with _terminate_as_interrupt():
            return run_predict(args)
    except KeyboardInterrupt:
        log.error("interrupted; the outputs written so far are complete (rerun with --skip-existing to continue)")
        return 130
    except OutputError as err:  # found before the model loads, like argparse's own errors
        if args.debug:
            raise
        raise SystemExit(f"error: {err}") from None
    except Exception as err:  # one line for the user; the traceback only with --debug
        if args.debug:
            raise
        known = (FileNotFoundError, FileExistsError, ValueError, ImportError, MemoryError, OSError,
                 NonFiniteOutputError, OutputWriteError, WorkerFailedError)
        message = str(err).strip() or type(err).__name__
        if not isinstance(err, known):
            message = f"{type(err).__name__}: {message}"
        log.error("%s (--debug shows the traceback)", " ".join(message.split()) if "\n" not in message
                  else message)
        return 2


if __name__ == "__main__":
    sys.exit(main())
