"""The command line's options: the parser, the checks of their ranges, and the synopsis ``docs/cli.md`` shows.

The synopsis is generated from the parser (:func:`synopsis`), and a test compares the one in ``docs/cli.md`` with it,
so the documentation lists exactly the options the program takes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..fileio.errors import UserInputError
from ..method.devices import DTYPES
from ..method.families import FAMILY_CHOICES
from ..method.postprocess import NORMALIZATIONS
from ..method.predictor import DEFAULT_PROCESSING_RESOLUTION, PASSES
from ..method.temporal import TEMPORAL_MODES
from ..method.tiling import DEFAULT_TILE_SIZE, TileConfig
from .errors import Parser
from .models_cli import MODELS_DIR_HELP, add_commands
from .outputs import FORMATS

DESCRIPTION = "FiffDepth: one-pass depth maps from a fine-tuned Stable Diffusion 2 UNet."
PREDICT_HELP = "depth maps for images, videos and folders of them"


def build_parser(prog: str = "fiffdepth") -> argparse.ArgumentParser:
    """The command line's parser; ``prog`` is how the user started it (``fiffdepth`` or ``python -m
    fiffdepth_core``), so usage lines and error hints name that. ``parser.commands`` maps each subcommand to its
    parser."""
    parser = Parser(prog=prog, description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("predict", help=PREDICT_HELP, description=f"{PREDICT_HELP[0].upper()}{PREDICT_HELP[1:]}: "
                       "every image and every video frame gets a depth map (0 = near) in the formats asked for.")
    parser.commands = {"predict": p}
    p.add_argument("inputs", nargs="+", metavar="IMAGE_VIDEO_OR_FOLDER",
                   help="image and video files and/or folders of them (not recursive)")
    p.add_argument("--checkpoint", required=True, metavar="PATH_OR_MODEL", help="FiffDepth checkpoint: diffusers "
                   "folder, folder of single files, or one .safetensors bundle; or a catalogue model (its id or its "
                   "Hugging Face repository id; the models command lists them), downloaded on first use")
    p.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help=MODELS_DIR_HELP)
    p.add_argument("--family", default="auto", choices=FAMILY_CHOICES,
                   help="model family (default auto: detected from the checkpoint): "
                        + ", ".join(FAMILY_CHOICES[1:]))
    p.add_argument("--processing-resolution", type=int, default=DEFAULT_PROCESSING_RESOLUTION, metavar="PX",
                   help=f"long edge the model sees, in px (default {DEFAULT_PROCESSING_RESOLUTION}; 0 = native size)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="images per model call (default 1; 0 = as many as fit in free memory)")
    p.add_argument("--format", nargs="+", default=["npy", "png16"], choices=FORMATS, metavar="FORMAT",
                   help=f"outputs to write, any of {', '.join(FORMATS)} (default: npy png16)")
    p.add_argument("--output-dir", default="fiffdepth_output", metavar="DIR",
                   help="folder for outputs (default ./fiffdepth_output)")
    p.add_argument("--pass", dest="depth_pass", default="detailed", choices=PASSES,
                   help="detailed = t=0 (the paper's output); filtered = t=-1 low-pass pass")
    p.add_argument("--normalization", default=None, choices=NORMALIZATIONS,
                   help="ControlNet output: normalise each image, or the whole run at once (default: per_image for "
                   "images, whole_batch for videos and --temporal align/stabilize)")
    p.add_argument("--temporal", default="auto", choices=("auto", *TEMPORAL_MODES),
                   help="align: treat a video (or the images, in name order) as one clip, level exposure flicker "
                   "and average out the noise of still areas before the model, and align each frame's "
                   "depth in scale and shift to a running reference, so it does not flicker; the clip's depth is "
                   "then rescaled as a whole to [0,1]. stabilize: align, then average each pixel's noise-level "
                   "changes over a few frames (larger changes pass at once); the steadiest video depth. off: each "
                   "frame's own depth. auto (default): stabilize for videos, off for images")
    p.add_argument("--stream-window", type=int, default=0, metavar="FRAMES",
                   help="videos and image sequences: 0 = whole-clip bounds, two passes over a float32 disk cache in "
                   "the output folder (default); N = one pass with no cache, for clips of any length: each frame is "
                   "written with bounds averaged over the N frames around it (N/2 frames held in memory)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda, cuda:1, mps, ...")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="UNet precision (auto: fp32 on CPU, "
                   "bf16 on GPUs that have it, else fp16)")
    p.add_argument("--vae-tiling", default="auto", choices=("auto", "on", "off"),
                   help="tiled VAE for large images (auto: when the whole image would not fit in memory)")
    p.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, metavar="PX",
                   help=f"VAE tile size in px when tiling (default {DEFAULT_TILE_SIZE})")
    p.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                   help="NHWC memory layout for faster convolutions (auto: on for CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models: the first image of each size "
                   "compiles (about a minute on a GPU), later ones run faster")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="processes decoding images ahead of the "
                   "model (default: up to 4 per process, as the cores allow; 0 = decode on the main thread)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    p.add_argument("--skip-existing", action="store_true", help="skip images whose outputs all exist (resume a "
                   "half-done folder)")
    p.add_argument("--on-error", default="stop", choices=("stop", "skip"), help="an unreadable input: stop before "
                   "the model loads (default), or skip it and list it in fiffdepth_skipped.txt at the end")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N", help="refuse inputs with more pixels than "
                   "this (default: Pillow's limit, about 89.5 million, or $FIFFDEPTH_MAX_PIXELS; 0 = no limit)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    add_commands(sub, parser.commands)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that an unknown option is reported by the subcommand it was given to
    (so the hint names ``fiffdepth predict --help``, not the top level's)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def check_args(args) -> None:
    """The options' ranges, before anything is read."""
    if args.command != "predict":
        return
    if args.vae_tiling != "off":
        try:
            TileConfig.for_size(args.tile_size)
        except ValueError:
            raise UserInputError(str(args.tile_size), "a multiple of 8, at least 64 px",
                                 what="--tile-size") from None
    for flag, value in (("--batch-size", args.batch_size), ("--processing-resolution", args.processing_resolution),
                        ("--max-pixels", args.max_pixels), ("--workers", args.workers),
                        ("--stream-window", args.stream_window)):
        if value is not None and value < 0:
            raise UserInputError(str(value), "a whole number >= 0", what=flag)


def synopsis(parser: argparse.ArgumentParser, command: str, width: int = 116) -> str:
    """The subcommand's options in the form ``docs/cli.md`` shows: ``prog command POSITIONAL... --required VALUE``
    then every optional one in brackets (choices joined by ``|``), wrapped at ``width`` with continuation lines
    indented by four spaces and ending in a backslash."""
    sub = parser.commands[command]
    words, optional = [f"{sub.prog}"], []
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            words.append(action.metavar + ("..." if action.nargs in ("+", "*") else ""))
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:
            text = " | ".join(sorted(action.option_strings, key=len)) if len(action.option_strings) > 1 else flag
        elif action.choices is not None and action.nargs in ("+", "*"):
            text = f"{flag} {' '.join(action.choices)}"
        elif action.choices is not None:
            text = f"{flag} {'|'.join(action.choices)}"
        else:
            text = f"{flag} {action.metavar or action.dest.upper()}"
        (words if action.required else optional).append(text)
    words += [f"[{text}]" for text in optional]
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) + 2 > width:
            lines.append(line + " \\")
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])
