"""Convert the raw Hypersim HDF5 release into Marigold's training layout (what ``train/datasets/hypersim.py`` reads).

    python train/prepare_hypersim.py --raw-root RAW --out-root OUT \
        [--split-csv metadata_images_split_scene_v1.csv] [--scenes ai_001_001 ...] [--overwrite]

Reads ``RAW/<scene>/images/scene_<cam>_final_hdf5/frame.NNNN.color.hdf5`` (linear HDR RGB) and, from
``scene_<cam>_geometry_hdf5/``, ``frame.NNNN.depth_meters.hdf5`` (Euclidean distance to the camera centre) and
``frame.NNNN.render_entity_id.hdf5`` (-1 = no geometry). Writes, per split::

    OUT/<split>/<scene>/rgb_<cam>_frNNNN.png          Hypersim's tone map, 8-bit
    OUT/<split>/<scene>/depth_plane_<cam>_frNNNN.png  planar depth, uint16 mm, 0 = invalid
    OUT/<split>/filename_list_<split>.txt              Marigold split file: "rgb_rel depth_rel" per line

With a split CSV, frames go to the CSV's split (only ``included_in_public_release`` rows); without one, every
frame found goes to ``--split-name`` (default train). Existing outputs are kept unless ``--overwrite``; existing
split-file lines are kept and merged; nothing is ever deleted. Values are rounded (Marigold truncates) and depth
beyond 65.535 m saturates at 65535 (the reader's 65 m limit then marks it invalid) instead of wrapping around.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from pathlib import Path

import numpy as np

if not __package__:  # started as `python train/<script>.py`: see train/script_root.py
    import script_root  # noqa: F401

from fiffdepth_core.fileio import write_atomic  # noqa: E402

logger = logging.getLogger("prepare_hypersim")

FOCAL_LENGTH = 886.81  # px, Hypersim's (fixed, as Marigold uses it for all scenes)
GAMMA = 1.0 / 2.2
PERCENTILE = 90
BRIGHTNESS_TARGET = 0.8
FRAME_RE = re.compile(r"frame\.(\d{4})\.color\.hdf5$")


def tone_map(rgb: np.ndarray, entity_id: np.ndarray) -> np.ndarray:
    """Hypersim's tone map: HDR ``[H,W,3]`` -> [0,1], 90th-percentile brightness (over pixels with geometry) to 0.8."""
    rgb = np.nan_to_num(rgb.astype(np.float64), nan=0.0, posinf=1e6, neginf=0.0)
    valid = entity_id != -1
    if not valid.any():
        scale = 1.0
    else:
        brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]  # [H,W], CCIR601
        current = np.percentile(brightness[valid], PERCENTILE)
        scale = 0.0 if current < 1e-4 else BRIGHTNESS_TARGET ** (1.0 / GAMMA) / current
    return np.clip(np.power(np.maximum(scale * rgb, 0.0), GAMMA), 0.0, 1.0)


def distance_to_planar(distance: np.ndarray, focal: float = FOCAL_LENGTH) -> np.ndarray:
    """Ray length to the camera centre ``[H,W]`` -> planar depth: d * f / |(u, v, f)|, pixel-centre u, v."""
    height, width = distance.shape
    u = np.arange(width, dtype=np.float64) - width / 2 + 0.5  # [W]
    v = np.arange(height, dtype=np.float64) - height / 2 + 0.5  # [H]
    norm = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2 + focal ** 2)  # [H,W]
    return distance.astype(np.float64) * focal / norm


def depth_to_mm(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres; invalid and non-finite pixels 0, beyond 65.535 m saturated."""
    ok = valid & np.isfinite(depth) & (depth > 0)
    mm = np.clip(np.round(np.where(ok, depth, 0.0) * 1000.0), 0, 65535)
    return mm.astype(np.uint16)


def _read_h5(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as handle:
        return np.asarray(handle["dataset"])


def _write_png(path: Path, array: np.ndarray, overwrite: bool) -> None:
    """Write a PNG atomically (temporary file + rename), never replacing an existing one unless ``overwrite``."""
    import cv2

    if path.exists() and not overwrite:
        return
    image = np.ascontiguousarray(array[..., ::-1] if array.ndim == 3 else array)  # RGB -> BGR for OpenCV

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"OpenCV could not write {path}")

    write_atomic(path, write, overwrite)


def convert_frame(raw_root: Path, out_dir: Path, scene: str, camera: str, frame: int, focal: float,
                  overwrite: bool) -> tuple[str, str] | None:
    """Convert one frame; returns the split-file pair, or None when its raw files are missing or unreadable."""
    images = raw_root / scene / "images"
    color = images / f"scene_{camera}_final_hdf5" / f"frame.{frame:04d}.color.hdf5"
    geometry = images / f"scene_{camera}_geometry_hdf5"
    distance = geometry / f"frame.{frame:04d}.depth_meters.hdf5"
    entity = geometry / f"frame.{frame:04d}.render_entity_id.hdf5"
    rgb_rel = f"{scene}/rgb_{camera}_fr{frame:04d}.png"
    depth_rel = f"{scene}/depth_plane_{camera}_fr{frame:04d}.png"
    if (out_dir / rgb_rel).exists() and (out_dir / depth_rel).exists() and not overwrite:
        return rgb_rel, depth_rel
    try:
        rgb, dist, ids = _read_h5(color), _read_h5(distance), _read_h5(entity)
    except (OSError, KeyError) as err:
        logger.warning("skipping %s %s frame %d: %s", scene, camera, frame, err)
        return None
    if rgb.shape[:2] != dist.shape or dist.shape != ids.shape:
        logger.warning("skipping %s %s frame %d: sizes differ (%s, %s, %s)", scene, camera, frame, rgb.shape,
                       dist.shape, ids.shape)
        return None
    rgb8 = np.round(tone_map(rgb, ids) * 255.0).astype(np.uint8)  # [H,W,3]
    depth = distance_to_planar(dist, focal)  # [H,W] metres
    _write_png(out_dir / rgb_rel, rgb8, overwrite)
    _write_png(out_dir / depth_rel, depth_to_mm(depth, ids != -1), overwrite)
    return rgb_rel, depth_rel


def frames_from_csv(split_csv: Path, scenes: set[str] | None, splits: set[str]) -> list[tuple[str, str, str, int]]:
    """``(split, scene, camera, frame)`` rows of Hypersim's split CSV that are in the public release."""
    rows = []
    with open(split_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("included_in_public_release", "").strip().lower() != "true":
                continue
            split = row["split_partition_name"].strip()
            if split in splits and (scenes is None or row["scene_name"] in scenes):
                rows.append((split, row["scene_name"], row["camera_name"], int(row["frame_id"])))
    return rows


def frames_from_tree(raw_root: Path, scenes: set[str] | None, split: str) -> list[tuple[str, str, str, int]]:
    """Every frame with a colour HDF5 under ``raw_root``, all in ``split``."""
    rows = []
    for color in sorted(raw_root.glob("*/images/scene_*_final_hdf5/frame.*.color.hdf5")):
        scene, camera = color.parents[2].name, color.parent.name[len("scene_"):-len("_final_hdf5")]
        match = FRAME_RE.search(color.name)
        if match and (scenes is None or scene in scenes):
            rows.append((split, scene, camera, int(match.group(1))))
    return rows


def write_split_file(path: Path, pairs: list[tuple[str, str]], overwrite: bool) -> None:
    """Write ``rgb depth`` lines, merged with the lines already there unless ``overwrite``."""
    lines = {f"{rgb} {depth}" for rgb, depth in pairs}
    if path.exists() and not overwrite:
        lines |= {line.strip() for line in path.read_text().splitlines() if line.strip()}
    text = "".join(f"{line}\n" for line in sorted(lines))
    write_atomic(path, lambda tmp: tmp.write_text(text), overwrite=True)  # merged above: nothing is lost


def prepare(raw_root: Path, out_root: Path, split_csv: Path | None = None, scenes: list[str] | None = None,
            splits: tuple[str, ...] = ("train", "val", "test"), split_name: str = "train",
            focal: float = FOCAL_LENGTH, overwrite: bool = False) -> dict[str, int]:
    """Convert the selected frames; returns the number of frames written per split (existing ones included)."""
    if not raw_root.is_dir():
        raise ValueError(f"`--raw-root` must be an existing folder, got {str(raw_root)!r} (not found)")
    if split_csv is not None and not split_csv.is_file():
        raise ValueError(f"`--split-csv` must be an existing file, got {str(split_csv)!r} (not found)")
    wanted = set(scenes) if scenes else None
    rows = (frames_from_csv(split_csv, wanted, set(splits)) if split_csv is not None
            else frames_from_tree(raw_root, wanted, split_name))
    if not rows:
        raise ValueError(f"no Hypersim frames selected under {raw_root} (scenes={scenes}, split_csv={split_csv})")
    from tqdm import tqdm

    done: dict[str, list[tuple[str, str]]] = {}
    for split, scene, camera, frame in tqdm(rows, desc="hypersim", unit="frame"):
        pair = convert_frame(raw_root, out_root / split, scene, camera, frame, focal, overwrite)
        if pair is not None:
            done.setdefault(split, []).append(pair)
    for split, pairs in done.items():
        write_split_file(out_root / split / f"filename_list_{split}.txt", pairs, overwrite)
    counts = {split: len(pairs) for split, pairs in done.items()}
    logger.info("converted %s; %d of %d selected frames missing or unreadable", counts,
                len(rows) - sum(counts.values()), len(rows))
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw-root", type=Path, required=True, help="raw Hypersim download (folders ai_XXX_YYY)")
    parser.add_argument("--out-root", type=Path, required=True, help="output folder (gets train/ val/ test/)")
    parser.add_argument("--split-csv", type=Path, default=None, help="metadata_images_split_scene_v1.csv")
    parser.add_argument("--scenes", nargs="+", default=None, help="only these scenes (default: all)")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to convert (CSV)")
    parser.add_argument("--split-name", default="train", help="split of every frame when no CSV is given")
    parser.add_argument("--focal-length", type=float, default=FOCAL_LENGTH, help="pixels (Hypersim: 886.81)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that already exist")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, int]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return prepare(args.raw_root, args.out_root, args.split_csv, args.scenes, tuple(args.splits), args.split_name,
                   args.focal_length, args.overwrite)


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        logger.error("%s", err)
        sys.exit(2)
