"""The zero-shot evaluation sets: one table of protocol defaults, split lists, and sample loading.

Depth sets (FiffDepth Table 1, Marigold's protocol) and boundary sets (Table 2, Depth Pro's F1). Every default of
a set (valid range, crop, processing resolution, alignment, expected count) lives in :data:`EVAL_SETS`.

Data come from Marigold's evaluation tarballs, either as the ``.tar`` itself or extracted into a folder
(``--data-root``). A split list drives each set, in Marigold's format: one sample per line, whitespace-separated
paths relative to the data root (RGB first, then depth, then the mask where the set has one; KITTI's third
column is the focal length and lines whose depth is ``None`` are dropped). iBims-1's ``imagelist.txt`` (one
name per line) is accepted too. Without a split list, the layout is scanned (see :func:`discover_lines`).

A sample's id is its RGB path without the extension, e.g. ``test/kitchen_0004/rgb_0001``; prediction files
and caches are named after it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .eval_readers import read_sample

log = logging.getLogger(__name__)

ON_MISSING = ("skip", "stop")


@dataclass(frozen=True)
class EvalSet:
    """Protocol defaults of one evaluation set."""

    name: str
    title: str  # column title in result tables
    task: str  # "depth" (AbsRel/δ1 headline) or "boundary" (boundary F1 headline, depth metrics too)
    count: int  # samples in the official split (a run with fewer is flagged as partial)
    min_depth: float  # valid GT: min < d < max (strict, as Marigold); aligned predictions are clipped to it
    max_depth: float
    processing_resolution: int  # long edge fed to the model; 0 = native
    split_file: str  # the usual split list name, looked for under the data root
    file_columns: int  # leading split-list columns that are files (RGB, depth[, mask])
    range_valid: bool = True  # False: validity is the dataset's own mask only (DIODE, as Marigold)
    alignment: str = "least_square"
    alignment_max_res: int | None = None  # Marigold's --alignment_max_res (ETH3D: 1024)
    note: str = ""


EVAL_SETS: dict[str, EvalSet] = {s.name: s for s in (
    EvalSet("nyuv2", "NYUv2", "depth", 654, 1e-3, 10.0, 0, "filename_list_test.txt", 2,
            note="Eigen crop, raw (not filled) depth"),
    EvalSet("kitti", "KITTI", "depth", 652, 1e-5, 80.0, 0, "eigen_test_files_with_gt.txt", 2,
            note="KB crop 352x1216, Eigen mask"),
    EvalSet("eth3d", "ETH3D", "depth", 454, 1e-5, math.inf, 756, "eth3d_filename_list.txt", 2,
            alignment_max_res=1024, note="LS fit on columns subsampled to 1024 (Marigold's alignment_max_res)"),
    EvalSet("scannet", "ScanNet", "depth", 800, 1e-3, 10.0, 0, "scannet_val_sampled_list_800_1.txt", 2),
    EvalSet("diode", "DIODE", "depth", 771, 0.6, 350.0, 640, "diode_val_all_filename_list.txt", 3,
            range_valid=False, note="validity = the dataset's depth mask"),
    EvalSet("ibims", "iBims-1", "boundary", 100, 1e-3, 50.0, 768, "imagelist.txt", 3,
            note="project choice: range, resolution and depth-space LS before the F1"),
    EvalSet("sintel", "Sintel", "boundary", 1064, 1e-3, 80.0, 768, "sintel_filename_list.txt", 2,
            note="project choice: training/final pass, LS fitted on depth < 80 m before the F1"),
)}


def get_eval_set(name: str) -> EvalSet:
    if name not in EVAL_SETS:
        raise ValueError(f"`--dataset` must be one of {sorted(EVAL_SETS)}, got {name!r}")
    return EVAL_SETS[name]


@dataclass(frozen=True)
class Sample:
    id: str  # RGB path without extension
    files: tuple[str, ...]  # RGB, depth[, mask], relative to the data root


@dataclass
class EvalItem:
    sample: Sample
    rgb: np.ndarray  # [3,H,W] float32 in [0,1]
    depth: np.ndarray  # [H,W] float32 metres
    valid: np.ndarray  # [H,W] bool: the pixels the depth metrics score (dataset mask AND valid range)
    mask: np.ndarray  # [H,W] bool: the dataset's own crop/validity mask only (used by the boundary F1)


class DataSource:
    """A data root that is a folder or a (Marigold) ``.tar``; paths are relative and POSIX-style."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self._members = None
        self._pid = os.getpid()
        if self.root.is_file() and tarfile.is_tarfile(self.root):
            self._tar = tarfile.open(self.root)
            self._members = {_strip(m.name): m for m in self._tar.getmembers() if m.isfile()}
        elif not self.root.is_dir():
            raise FileNotFoundError(f"`--data-root` must be a folder or a .tar file, got {self.root} (not found)")

    @property
    def is_tar(self) -> bool:
        return self._members is not None

    def files(self) -> list[str]:
        if self._members is not None:
            return sorted(self._members)
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def exists(self, rel: str) -> bool:
        return rel in self._members if self._members is not None else (self.root / rel).is_file()

    def read(self, rel: str) -> bytes:
        if self._members is not None:
            if self._pid != os.getpid():  # a reader process forked from this one: its own file position
                self._tar, self._pid = tarfile.open(self.root), os.getpid()
            return self._tar.extractfile(self._members[rel]).read()
        return (self.root / rel).read_bytes()


def _strip(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def read_split_lines(path: str | Path) -> list[list[str]]:
    """Non-empty, non-comment lines of a split list, split on whitespace."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`--split` file not found: {path}")
    return [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


# Layout scans used when no split list is given: (regex on RGB paths, templates of the other files).
DISCOVERY = {
    "nyuv2": (r"test/(?P<d>[^/]+)/rgb_(?P<n>\d+)\.png", ("test/{d}/depth_{n}.png",)),
    "kitti": (r"(?P<date>\d{4}_\d\d_\d\d)/(?P<drive>[^/]+_sync)/image_02/data/(?P<n>\d+)\.png",
              ("{drive}/proj_depth/groundtruth/image_02/{n}.png",)),
    "eth3d": (r"rgb/(?P<s>[^/]+)/images/dslr_images/(?P<n>[^/]+\.JPG)",
              ("depth/{s}_dslr_depth/{s}/ground_truth_depth/dslr_images/{n}",)),
    "scannet": (r"(?P<s>scene\d{4}_\d\d)/color/(?P<n>\d+)\.jpg", ("{s}/depth/{n}.png",)),
    "diode": (r"(?P<stem>.+/scan_[^/]+/[^/]+)\.png", ("{stem}_depth.npy", "{stem}_depth_mask.npy")),
    "ibims": (r"rgb/(?P<n>[^/]+)\.png", ("depth/{n}.png", "mask_invalid/{n}.png")),
    "sintel": (r"training/final/(?P<s>[^/]+)/(?P<n>[^/]+)\.png", ("training/depth/{s}/{n}.dpt",)),
}


def discover_lines(name: str, files: list[str]) -> list[list[str]]:
    """Split-list lines built by scanning the data root's files for the set's layout.

    A set whose GT is sparse (KITTI) keeps only RGB frames whose GT file exists; the others list every RGB frame,
    and a missing GT file is then reported like any missing file.
    """
    pattern, templates = DISCOVERY[name]
    present = set(files)
    lines = []
    for rel in files:
        match = re.fullmatch(pattern, rel)
        if match:
            line = [rel] + [t.format(**match.groupdict()) for t in templates]
            if name != "kitti" or line[1] in present:
                lines.append(line)
    return lines


def samples_from_lines(eval_set: EvalSet, lines: list[list[str]]) -> list[Sample]:
    """Samples from split-list lines (drops KITTI's ``None`` depth lines; expands iBims-1 names)."""
    samples = []
    dropped = 0
    for line in lines:
        if eval_set.name == "ibims" and len(line) == 1:
            line = [f"rgb/{line[0]}.png", f"depth/{line[0]}.png", f"mask_invalid/{line[0]}.png"]
        if len(line) < eval_set.file_columns:
            raise ValueError(f"split line {' '.join(line)!r} has {len(line)} columns; {eval_set.name} needs "
                             f"{eval_set.file_columns} (RGB, depth{', mask' if eval_set.file_columns == 3 else ''})")
        if line[1] == "None":
            dropped += 1
            continue
        rgb = PurePosixPath(line[0])
        if rgb.is_absolute() or ".." in rgb.parts:  # ids name cache files: they must stay inside the output folder
            raise ValueError(f"split line {' '.join(line)!r}: paths must be relative to the data root, without '..'")
        samples.append(Sample(str(rgb.with_suffix("")), tuple(line[:eval_set.file_columns])))
    if dropped:
        log.info("%s: dropped %d split lines without ground truth (depth 'None')", eval_set.name, dropped)
    return samples


def load_samples(eval_set: EvalSet, source: DataSource, split: str | Path | None = None) -> tuple[list[Sample], str]:
    """The set's samples from ``split``, else from ``<data root>/<usual split name>``, else from a layout scan.

    The usual split list is looked for inside a data folder, or beside a ``.tar``. Returns the samples and where
    they came from.
    """
    usual = (source.root.parent if source.is_tar else source.root) / eval_set.split_file
    if split is None and usual.is_file():
        split = usual
    if split is not None:
        return samples_from_lines(eval_set, read_split_lines(split)), str(split)
    lines = discover_lines(eval_set.name, source.files())
    if not lines:
        raise FileNotFoundError(f"no {eval_set.name} samples found under {source.root}: give a split list with "
                                f"--split (e.g. Marigold's {eval_set.split_file}) or point --data-root at the "
                                f"extracted folder or .tar of the set")
    log.warning("%s: no split list given; using the %d samples found by scanning %s", eval_set.name, len(lines),
                source.root)
    return samples_from_lines(eval_set, lines), "scan"


def drop_missing(samples: list[Sample], source: DataSource, on_missing: str = "stop") -> tuple[list[Sample], list[str]]:
    """Samples whose files all exist, and the missing files. ``on_missing="stop"`` raises if any is missing."""
    if on_missing not in ON_MISSING:
        raise ValueError(f"`--on-missing` must be one of {ON_MISSING}, got {on_missing!r}")
    kept, missing = [], []
    for sample in samples:
        absent = [f for f in sample.files if not source.exists(f)]
        missing += absent
        if not absent:
            kept.append(sample)
    if missing:
        log.warning("%d listed files are missing under %s:\n  %s%s", len(missing), source.root,
                    "\n  ".join(missing[:50]), "\n  ..." if len(missing) > 50 else "")
        if on_missing == "stop":
            raise FileNotFoundError(f"{len(missing)} listed files are missing under {source.root} (first: "
                                    f"{missing[0]}); pass --on-missing skip to evaluate the rest and count them")
    return kept, missing


def load_item(eval_set: EvalSet, source: DataSource, sample: Sample) -> EvalItem:
    """RGB, GT depth and the valid mask of one sample: the set's mask AND min < depth < max (unless mask-only)."""
    rgb, depth, mask = read_sample(eval_set.name, [source.read(f) for f in sample.files], list(sample.files))
    mask = np.ones(depth.shape, dtype=bool) if mask is None else mask
    valid = mask.copy()
    if eval_set.range_valid:
        with np.errstate(invalid="ignore"):
            valid &= (depth > eval_set.min_depth) & (depth < eval_set.max_depth)
    return EvalItem(sample, rgb, depth, valid, mask)
