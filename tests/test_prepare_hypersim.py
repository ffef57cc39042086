"""train/prepare_hypersim.py on a synthetic raw Hypersim scene written with h5py in the release layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fixtures_train import write_hypersim_raw
from train.datasets.hypersim import HypersimDataset
from train.prepare_hypersim import main

REPO = Path(__file__).resolve().parents[1]
CSV_HEADER = "scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,split_partition_name\n"


def full_size_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """768x1024: grey 0.5 everywhere, a darker 0.125 patch, a 100.0 hot block without geometry; 10 m distance."""
    color = np.full((768, 1024, 3), 0.5, np.float32)
    color[300:310, 300:310] = 0.125  # < 10% of pixels: the 90th percentile stays 0.5
    color[100:110, 200:210] = 100.0
    entity = np.ones((768, 1024), np.int32)
    entity[100:110, 200:210] = -1  # no geometry: depth 0, ignored by the tone map's percentile
    return color, np.full((768, 1024), 10.0, np.float32), entity


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    raw, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("out")
    write_hypersim_raw(raw, "ai_001_001", "cam_00", 0, *full_size_frame())
    small = np.ones((8, 8), np.int32)
    write_hypersim_raw(raw, "ai_002_001", "cam_01", 5, np.full((8, 8, 3), 0.2), np.full((8, 8), 2.0), small)
    csv = raw / "metadata_images_split_scene_v1.csv"
    csv.write_text(CSV_HEADER + "ai_001_001,cam_00,0,True,,train\n"
                   "ai_001_001,cam_00,1,True,,train\n"  # listed but not downloaded: skipped
                   "ai_001_001,cam_00,2,False,CONTENT FLAGGED FOR REMOVAL,\n"
                   "ai_002_001,cam_01,5,True,,val\n")
    counts = main(["--raw-root", str(raw), "--out-root", str(out), "--split-csv", str(csv)])
    return raw, out, csv, counts


def test_planar_depth_hand_computed(converted):
    _, out, _, counts = converted
    assert counts == {"train": 1, "val": 1}
    depth = cv2.imread(str(out / "train/ai_001_001/depth_plane_cam_00_fr0000.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (768, 1024)
    # depth = 10 m * f / |(u, v, f)|, f = 886.81, pixel centres u = x - 511.5, v = y - 383.5
    assert depth[0, 0] == depth[767, 1023] == 8112  # 8111.886 mm at the corners
    assert depth[383, 511] == 10000  # 9999.997 mm at the centre
    assert depth[383, 612] == 9936  # u = 100.5: 9936.396 mm
    assert (depth[100:110, 200:210] == 0).all()  # entity -1: invalid


def test_tone_map_hand_computed(converted):
    _, out, _, _ = converted
    rgb = cv2.imread(str(out / "train/ai_001_001/rgb_cam_00_fr0000.png"))[..., ::-1]  # [H,W,RGB]
    # scale = 0.8^2.2 / p90(brightness) = 0.8^2.2 / 0.5, then (scale * rgb)^(1/2.2)
    assert (rgb[0, 0] == 204).all()  # 0.8 * 255 = 204
    assert (rgb[305, 305] == 109).all()  # 0.8 * 0.25^(1/2.2) * 255 = 108.63
    assert (rgb[105, 205] == 255).all()  # the hot block clips


def test_split_files_and_reader(converted):
    _, out, _, _ = converted
    train_split = out / "train/filename_list_train.txt"
    assert train_split.read_text() == "ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0000.png\n"
    assert (out / "val/ai_002_001/depth_plane_cam_01_fr0005.png").is_file()
    sample = HypersimDataset(out / "train", train_split, hflip=False)[(0, 0)]
    assert sample["rgb"].shape == (3, 480, 640) and sample["valid"].float().mean() > 0.99


def test_existing_files_kept_unless_overwrite(converted):
    raw, out, csv, _ = converted
    rgb_path = out / "train/ai_001_001/rgb_cam_00_fr0000.png"
    original = rgb_path.read_bytes()
    cv2.imwrite(str(rgb_path), np.zeros((4, 4, 3), np.uint8))
    sentinel = rgb_path.read_bytes()
    main(["--raw-root", str(raw), "--out-root", str(out), "--split-csv", str(csv), "--splits", "train"])
    assert rgb_path.read_bytes() == sentinel
    main(["--raw-root", str(raw), "--out-root", str(out), "--split-csv", str(csv), "--splits", "train",
          "--overwrite"])
    assert rgb_path.read_bytes() == original


@pytest.mark.slow
def test_runs_as_script_without_csv(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    ids = np.ones((8, 8), np.int32)
    for frame in (0, 3):
        write_hypersim_raw(raw, "ai_003_002", "cam_00", frame, np.full((8, 8, 3), 0.3), np.full((8, 8), 1.0), ids)
    result = subprocess.run([sys.executable, str(REPO / "train/prepare_hypersim.py"), "--raw-root", str(raw),
                             "--out-root", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = (out / "train/filename_list_train.txt").read_text().splitlines()
    assert lines == [f"ai_003_002/rgb_cam_00_fr000{i}.png ai_003_002/depth_plane_cam_00_fr000{i}.png" for i in (0, 3)]
    missing = subprocess.run([sys.executable, str(REPO / "train/prepare_hypersim.py"), "--raw-root",
                              str(tmp_path / "nope"), "--out-root", str(out)], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "nope" in missing.stderr
