"""Evaluation-set readers on tiny fixtures written in each set's real on-disk format and layout."""

from __future__ import annotations

import logging
import struct
import tarfile

import cv2
import numpy as np
import pytest

from train.datasets import eval_readers as R
from train.datasets.eval_sets import (EVAL_SETS, DataSource, discover_lines, drop_missing, get_eval_set, load_item,
                                      load_samples, samples_from_lines)


def write_rgb(path, h, w, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])  # stored BGR, read back as RGB
    return rgb


def write_u16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(values, dtype=np.uint16))


def write_dpt(path, depth):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = depth.shape
    path.write_bytes(struct.pack("<fii", 202021.25, w, h) + depth.astype("<f4").tobytes())


def one(name, root, split=None):
    eval_set = get_eval_set(name)
    samples, _ = load_samples(eval_set, DataSource(root), split)
    return eval_set, samples


def test_table_holds_the_protocol_defaults():
    assert {k: (s.count, s.min_depth, s.max_depth, s.processing_resolution) for k, s in EVAL_SETS.items()
            if s.task == "depth"} == {"nyuv2": (654, 1e-3, 10.0, 0), "kitti": (652, 1e-5, 80.0, 0),
                                      "eth3d": (454, 1e-5, np.inf, 756), "scannet": (800, 1e-3, 10.0, 0),
                                      "diode": (771, 0.6, 350.0, 640)}
    assert all(s.alignment == "least_square" for s in EVAL_SETS.values())
    assert EVAL_SETS["eth3d"].alignment_max_res == 1024
    with pytest.raises(ValueError, match="--dataset.*nyuv2"):
        get_eval_set("nyu")


def test_nyuv2_from_a_marigold_split_list(tmp_path):
    rgb = write_rgb(tmp_path / "test/kitchen_0004/rgb_0001.png", 48, 64)
    depth_mm = np.full((48, 64), 2500, dtype=np.uint16)
    depth_mm[20, 30] = 0  # no measurement
    depth_mm[21, 30] = 12000  # beyond 10 m
    write_u16(tmp_path / "test/kitchen_0004/depth_0001.png", depth_mm)
    split = tmp_path / "list.txt"
    split.write_text("test/kitchen_0004/rgb_0001.png test/kitchen_0004/depth_0001.png "
                     "test/kitchen_0004/filled_0001.png\n")
    eval_set, samples = one("nyuv2", tmp_path, split)
    assert [s.id for s in samples] == ["test/kitchen_0004/rgb_0001"]
    item = load_item(eval_set, DataSource(tmp_path), samples[0])
    np.testing.assert_array_equal(item.rgb, np.moveaxis(rgb, -1, 0) / np.float32(255))
    assert item.depth.dtype == np.float32 and item.depth[0, 0] == pytest.approx(2.5)
    crop = np.zeros((48, 64), dtype=bool)
    crop[round(4.5):round(47.1), round(4.1):round(60.1)] = True  # 45:471, 41:601 scaled by 1/10
    np.testing.assert_array_equal(item.valid, crop & (depth_mm > 1) & (depth_mm < 10000))


def test_nyu_eigen_crop_at_native_size():
    mask = R.nyu_eigen_mask((480, 640))
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (45, 470, 41, 600)


def test_kitti_kb_crop_eigen_mask_and_none_lines(tmp_path):
    h, w = 375, 1242  # a real KITTI raster size
    rgb = write_rgb(tmp_path / "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png", h, w)
    gt = np.zeros((h, w), dtype=np.uint16)
    gt[::3, ::2] = 256 * 20  # sparse 20 m
    gt[-1, -1] = 256 * 90  # beyond 80 m
    write_u16(tmp_path / "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png", gt)
    split = tmp_path / "eigen_test_files_with_gt.txt"
    split.write_text("2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
                     "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377\n"
                     "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png None 721.5377\n")
    eval_set, samples = one("kitti", tmp_path)  # the usual list name is found in the data root
    assert len(samples) == 1
    item = load_item(eval_set, DataSource(tmp_path), samples[0])
    top, left = h - 352, (w - 1216) // 2  # 23, 13
    np.testing.assert_array_equal(item.rgb, np.moveaxis(rgb[top:, left:left + 1216], -1, 0) / np.float32(255))
    np.testing.assert_allclose(item.depth, gt[top:, left:left + 1216] / 256.0)
    eigen = np.zeros((352, 1216), dtype=bool)
    eigen[int(0.3324324 * 352):int(0.91351351 * 352), int(0.0359477 * 1216):int(0.96405229 * 1216)] = True
    cropped = gt[top:, left:left + 1216]
    np.testing.assert_array_equal(item.valid, eigen & (cropped > 0) & (cropped < 256 * 80))


def test_kitti_scan_keeps_frames_with_ground_truth():
    files = ["2011_09_26/d_sync/image_02/data/0001.png", "2011_09_26/d_sync/image_02/data/0002.png",
             "d_sync/proj_depth/groundtruth/image_02/0002.png"]
    assert discover_lines("kitti", files) == [[files[1], files[2]]]


def test_eth3d_raw_float32_named_jpg(tmp_path):
    rgb_rel = "rgb/office/images/dslr_images/DSC_0219.JPG"
    write_rgb(tmp_path / rgb_rel, 6, 9)
    depth = np.full((6, 9), 3.0, dtype=np.float32)
    depth[0, 0], depth[0, 1], depth[0, 2] = np.inf, 0.0, 1e-6
    depth_rel = "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG"
    (tmp_path / depth_rel).parent.mkdir(parents=True)
    (tmp_path / depth_rel).write_bytes(depth.astype("<f4").tobytes())
    eval_set, samples = one("eth3d", tmp_path)  # no list: scanned from the layout
    assert [s.files for s in samples] == [(rgb_rel, depth_rel)]
    item = load_item(eval_set, DataSource(tmp_path), samples[0])
    assert item.depth[0, 0] == 0.0  # inf -> 0 -> invalid
    assert item.valid.sum() == 6 * 9 - 3 and item.rgb.shape == (3, 6, 9)
    (tmp_path / depth_rel).write_bytes(depth[:5].tobytes())
    with pytest.raises(R.SampleError, match="6x9"):
        load_item(eval_set, DataSource(tmp_path), samples[0])


def test_scannet(tmp_path):
    write_rgb(tmp_path / "scene0011_00/color/1200.jpg", 12, 16)
    write_u16(tmp_path / "scene0011_00/depth/1200.png", np.full((12, 16), 1234))
    eval_set, samples = one("scannet", tmp_path)
    item = load_item(eval_set, DataSource(tmp_path), samples[0])
    assert samples[0].id == "scene0011_00/color/1200"
    assert item.depth[0, 0] == pytest.approx(1.234) and item.valid.all()


def test_diode_validity_is_its_mask_only(tmp_path):
    stem = "val/outdoor/scene_00022/scan_00193/00022_00193_outdoor_000_000"
    write_rgb(tmp_path / f"{stem}.png", 8, 10)
    depth = np.full((8, 10, 1), 50.0, dtype=np.float32)
    depth[0, 0, 0] = 400.0  # beyond 350 m but inside the mask: Marigold keeps it (mask-only validity)
    np.save(tmp_path / f"{stem}_depth.npy", depth)
    mask = np.ones((8, 10), dtype=np.float32)
    mask[1, :] = 0
    np.save(tmp_path / f"{stem}_depth_mask.npy", mask)
    split = tmp_path / "diode.txt"
    split.write_text(f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy\n")
    eval_set, samples = one("diode", tmp_path, split)
    item = load_item(eval_set, DataSource(tmp_path), samples[0])
    assert item.depth.shape == (8, 10)
    np.testing.assert_array_equal(item.valid, mask > 0)
    assert discover_lines("diode", sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*"))) == \
        [list(samples[0].files)]


def test_ibims_from_its_imagelist(tmp_path):
    write_rgb(tmp_path / "rgb/corridor_01.png", 6, 8)
    write_u16(tmp_path / "depth/corridor_01.png", np.full((6, 8), 65535 // 5))  # 10 m (x 50 / 65535)
    invalid = np.full((6, 8), 255, dtype=np.uint8)
    invalid[0, 0] = 0
    (tmp_path / "mask_invalid").mkdir()
    assert cv2.imwrite(str(tmp_path / "mask_invalid/corridor_01.png"), invalid)
    (tmp_path / "imagelist.txt").write_text("corridor_01\n")
    eval_set, samples = one("ibims", tmp_path)
    item = load_item(eval_set, DataSource(tmp_path), samples[0])
    assert item.depth[1, 1] == pytest.approx(13107 * 50 / 65535)
    assert item.valid.sum() == 6 * 8 - 1 and not item.mask[0, 0]


def test_sintel_dpt(tmp_path):
    write_rgb(tmp_path / "training/final/alley_1/frame_0001.png", 5, 7)
    depth = np.arange(35, dtype=np.float32).reshape(5, 7) + 1
    write_dpt(tmp_path / "training/depth/alley_1/frame_0001.dpt", depth)
    eval_set, samples = one("sintel", tmp_path)
    item = load_item(eval_set, DataSource(tmp_path), samples[0])
    np.testing.assert_array_equal(item.depth, depth)
    with pytest.raises(R.SampleError, match="tag"):
        R.decode_dpt(struct.pack("<fii", 1.0, 7, 5) + depth.tobytes())
    with pytest.raises(R.SampleError, match="7x5"):
        R.decode_dpt(struct.pack("<fii", 202021.25, 7, 5) + depth[:4].tobytes())


def test_a_marigold_tar_reads_like_the_folder(tmp_path):
    folder = tmp_path / "nyu"
    write_rgb(folder / "test/bathroom_0003/rgb_0046.png", 8, 8)
    write_u16(folder / "test/bathroom_0003/depth_0046.png", np.full((8, 8), 3000))
    archive = tmp_path / "nyu_labeled_extracted.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=".")  # Marigold's tars hold "./test/..." members
    eval_set, samples = one("nyuv2", archive)
    from_tar = load_item(eval_set, DataSource(archive), samples[0])
    from_dir = load_item(eval_set, DataSource(folder), samples[0])
    np.testing.assert_array_equal(from_tar.depth, from_dir.depth)
    np.testing.assert_array_equal(from_tar.rgb, from_dir.rgb)


def test_missing_files_are_listed_and_stop_or_skip(tmp_path, caplog):
    write_rgb(tmp_path / "test/a/rgb_0001.png", 4, 4)
    write_u16(tmp_path / "test/a/depth_0001.png", np.ones((4, 4)))
    write_rgb(tmp_path / "test/a/rgb_0002.png", 4, 4)  # its depth is missing
    eval_set = get_eval_set("nyuv2")
    samples = samples_from_lines(eval_set, [["test/a/rgb_0001.png", "test/a/depth_0001.png"],
                                            ["test/a/rgb_0002.png", "test/a/depth_0002.png"]])
    with pytest.raises(FileNotFoundError, match="--on-missing skip"):
        drop_missing(samples, DataSource(tmp_path), "stop")
    with caplog.at_level(logging.WARNING):
        kept, missing = drop_missing(samples, DataSource(tmp_path), "skip")
    assert [s.id for s in kept] == ["test/a/rgb_0001"] and missing == ["test/a/depth_0002.png"]
    assert "test/a/depth_0002.png" in caplog.text
    with pytest.raises(ValueError, match="--on-missing"):
        drop_missing(samples, DataSource(tmp_path), "ignore")


def test_size_mismatch_and_bad_inputs_are_named(tmp_path):
    write_rgb(tmp_path / "scene0000_00/color/0.jpg", 6, 8)
    write_u16(tmp_path / "scene0000_00/depth/0.png", np.ones((6, 9)))
    eval_set, samples = one("scannet", tmp_path)
    with pytest.raises(R.SampleError, match=r"'RGB': \(6, 8\), 'depth': \(6, 9\)"):
        load_item(eval_set, DataSource(tmp_path), samples[0])
    with pytest.raises(ValueError, match="needs 2"):
        samples_from_lines(eval_set, [["only_rgb.jpg"]])
    for escaping in ("../outside.jpg", "/abs/0.jpg"):  # sample ids name cache files: never outside the output
        with pytest.raises(ValueError, match="relative to the data root"):
            samples_from_lines(eval_set, [[escaping, "d.png"]])
    with pytest.raises(FileNotFoundError, match="--data-root"):
        DataSource(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="--split"):
        load_samples(eval_set, DataSource(tmp_path), tmp_path / "absent.txt")
    with pytest.raises(FileNotFoundError, match="no nyuv2 samples"):
        one("nyuv2", tmp_path)
