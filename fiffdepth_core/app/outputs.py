"""Where a CLI run writes, checked before the model loads: never over an input, never over a file the user owns.

* An output path that is also an input of the run is an error, with or without ``--overwrite``.
* Every file the CLI writes is recorded in ``.fiffdepth-outputs.jsonl`` in its output folder (name, size,
  modification time; :mod:`fiffdepth_core.app.manifest`). A later run that reads that folder as input leaves those
  files out, so depth maps never become inputs; a file the user replaced since (other size or time) counts as
  theirs again.
* ``--skip-existing`` resumes a half-done folder: images whose outputs all exist are skipped; outputs of an
  image cut short may be replaced only if this project wrote them.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from ..fileio.errors import InputNotFoundError, UserInputError
from ..fileio.images import IMAGE_EXTENSIONS
from .manifest import MANIFEST, Manifest, written_here  # noqa: F401 - MANIFEST: its old home

log = logging.getLogger(__name__)

SKIPPED_SUMMARY = "fiffdepth_skipped.txt"
FORMATS = ("npy", "png16", "exr", "controlnet", "color")
FORMAT_SUFFIX = {"npy": ".npy", "png16": "_depth16.png", "exr": ".exr", "controlnet": "_controlnet.png",
                 "color": "_color.png"}


class OutputError(UserInputError):
    """An output location cannot be used; the message names the path and what to change."""

    what = "--output-dir"


class OutputWriteError(RuntimeError):
    """Writing an output failed during the run (disk full, folder gone): ``value`` names the file and the cause,
    ``allowed`` what to do; the message is both."""

    def __init__(self, value: str, allowed: str):
        self.value, self.allowed = value, allowed
        super().__init__(f"{value}; {allowed}")


def natural_key(path: Path) -> list:
    """Sort key that orders numbered names as people do: ``frame2`` before ``frame10``."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def list_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files named directly plus the images inside named folders (in natural order, so ``frame2`` comes before
    ``frame10``; not recursive, regular files only), leaving out hidden files (``.name``: temporary files, macOS's
    ``._name`` companions) and files a FiffDepth run wrote into that folder."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            ours = written_here(item)
            candidates = sorted((p for p in item.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                                 and not p.name.startswith(".")), key=natural_key)
            kept = [p for p in candidates if p.name not in ours]
            if len(kept) < len(candidates):
                log.info("%s: leaving out %d file(s) an earlier FiffDepth run wrote there", item,
                         len(candidates) - len(kept))
            found += kept
        elif item.is_file():
            found.append(item)
        elif item.exists():
            raise UserInputError(f"{item} is not a regular file or folder", "image or video files, or folders of "
                                 "them", what="input")
        else:
            raise InputNotFoundError(f"{item} not found", "image or video files, or folders of them",
                                     what="input")
    return found


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be made in it (before any model loads)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fiffdepth-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{folder} is not writable: {err.strerror or err}", "a folder this user may create files "
                          "in") from None


def output_path(output_dir: str | Path, stem: str, fmt: str) -> Path:
    """Where ``fmt`` output for the input called ``stem`` goes, e.g. ``<dir>/<stem>.npy``."""
    if fmt not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {fmt!r}")
    return Path(output_dir) / f"{stem}{FORMAT_SUFFIX[fmt]}"


def plan_outputs(images: list[Path], output_dir: Path, formats: list[str], overwrite: bool, skip_existing: bool,
                 shared: set[str] = frozenset()) -> tuple[dict[Path, dict[str, Path]], set[Path], list[Path]]:
    """(targets per image, outputs that may be replaced, images skipped as already done).

    ``shared``: names of files that live runs sharing the folder wrote (:mod:`fiffdepth_core.app.claims`): neither in
    the way nor to be replaced."""
    targets: dict[Path, dict[str, Path]] = {}
    seen: dict[str, Path] = {}
    for image in images:
        key = image.stem.casefold()  # on macOS and Windows, Clip and clip are one file name
        if key in seen:
            raise OutputError(f"two inputs share the name {image.stem!r} ({seen[key]} and {image})", "inputs whose "
                              "outputs do not collide: run them into different --output-dir folders", what="inputs")
        seen[key] = image
        targets[image] = {fmt: output_path(output_dir, image.stem, fmt) for fmt in formats}
    inputs = {p.resolve(): p for p in images}
    for image, paths in targets.items():
        for path in paths.values():
            if path.resolve() in inputs:
                raise OutputError(f"the {path.name} output of {image} would replace the input image "
                                  f"{inputs[path.resolve()]}", "another --output-dir: inputs are never overwritten, "
                                  "even with --overwrite")
    ours = written_here(output_dir)
    skipped = [image for image, paths in targets.items() if skip_existing and all(p.exists() for p in paths.values())]
    for image in skipped:
        del targets[image]
    replaceable = {p for paths in targets.values() for p in paths.values() if p.exists() and p.name not in shared
                   and (overwrite or (skip_existing and p.name in ours))}
    existing = [str(p) for paths in targets.values() for p in paths.values() if p.exists() and p not in replaceable
                and p.name not in shared]
    if existing:
        more = [f"and {len(existing) - 5} more"] if len(existing) > 5 else []
        raise OutputError(f"{len(existing)} output file(s) already exist in {output_dir}", "pass --skip-existing to "
                          "keep finished images, or --overwrite to replace them", details=[*existing[:5], *more])
    return targets, replaceable, skipped


def write_output(fmt: str, target: Path, depth, overwrite: bool, control=None) -> bool:
    """Write depth ``[H,W]`` as the ``fmt`` output ``target``: a depth file, the colour preview, or the ControlNet
    map ``control`` (``[3,H,W]``, when given). False when there is nothing to write (no ControlNet map yet)."""
    from ..fileio.writers import WRITERS, write_png8
    from ..method.postprocess import colorize

    if fmt in WRITERS:
        WRITERS[fmt](target, depth, overwrite=overwrite)
    elif fmt == "color":
        write_png8(target, colorize(depth[None])[0], overwrite=overwrite)
    elif fmt == "controlnet" and control is not None:
        write_png8(target, control, overwrite=overwrite)
    else:
        return False
    return True


def write_skipped_summary(folder: Path, failures: list[tuple[Path, str]]) -> Path:
    """``fiffdepth_skipped.txt``: one ``path<TAB>reason`` line per input that was skipped."""
    from ..fileio.writers import write_atomic

    text = "".join(f"{path}\t{reason}\n" for path, reason in failures)
    target = Path(folder) / SKIPPED_SUMMARY
    write_atomic(target, lambda tmp: tmp.write_text(text), overwrite=True)
    Manifest(folder).record(target)
    return target
