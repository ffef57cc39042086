"""Training dataset readers on tiny fixtures in their real on-disk formats: values, geometry, determinism, bad input."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
import torch
from fixtures_train import make_hypersim, make_shards, make_vkitti, random_rgb, write_label, write_png16, write_rgb

from fiffdepth_core.method.depth_norm import disparity_to_depth_target
from train.datasets import build_dataset
from train.datasets.common import aug_rng, draw_flip, resize_rgb
from train.datasets.hypersim import HypersimDataset
from train.datasets.image_sources import read_image
from train.datasets.procedural import ProceduralDataset, ProceduralRealDataset
from train.datasets.procedural_scene import Box, Plane, Sphere
from train.datasets.raster_io import read_rgb
from train.datasets.real_photos import RealPhotosDataset
from train.datasets.rgbd_folder import RGBDFolderDataset
from train.datasets.sampling import StepBatchSampler, build_loader
from train.datasets.vkitti import VKittiDataset, kb_crop_box

FLIP_SEED = next(s for s in range(100) if draw_flip(aug_rng(s)))
KEEP_SEED = next(s for s in range(100) if not draw_flip(aug_rng(s)))


def np_normalise(depth_m: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Independent 2/98 percentile normalisation with numpy (linear interpolation), 0 where invalid."""
    values = depth_m[valid]
    low, high = np.quantile(values, 0.02), np.quantile(values, 0.98)
    return np.where(valid, np.clip((depth_m - low) / (high - low) * 2 - 1, -1, 1), 0.0)


def halves_depth() -> np.ndarray:
    """32x48 mm: left half 1 m, right half 3 m, a 4x4 hole (0 = invalid) at the top-left."""
    depth = np.full((32, 48), 1000, np.uint16)
    depth[:, 24:] = 3000
    depth[:4, :4] = 0
    return depth


def ramp_depth() -> np.ndarray:
    depth = (1000 + 7 * np.arange(32 * 48)).reshape(32, 48).astype(np.uint16)
    depth[10, 10] = 65500  # 65.5 m: beyond Hypersim's 65 m limit
    return depth


@pytest.fixture(scope="module")
def hypersim(tmp_path_factory):
    root = tmp_path_factory.mktemp("hypersim")
    split = make_hypersim(root, [halves_depth(), ramp_depth(), np.zeros((32, 48), np.uint16), ramp_depth()])
    return root, split


def test_hypersim_halves_hand_computed(hypersim):
    root, split = hypersim
    sample = HypersimDataset(root, split, size=(16, 24), hflip=False)[(0, 0)]
    assert sample["rgb"].shape == (3, 16, 24) and sample["rgb"].dtype == torch.float32
    assert sample["depth"].shape == (1, 16, 24) and sample["valid"].dtype == torch.bool
    # 2% / 98% quantiles are 1 m / 3 m, so left -> -1, right -> +1; nearest-exact /2 keeps source pixel 2i+1.
    expected = torch.full((16, 24), -1.0)
    expected[:, 12:] = 1.0
    expected[:2, :2] = 0.0
    valid = torch.ones(16, 24, dtype=torch.bool)
    valid[:2, :2] = False
    assert torch.equal(sample["depth"][0], expected) and torch.equal(sample["valid"][0], valid)
    assert sample["name"] == "ai_001_000/rgb_cam_00_fr0000.png" and sample["skipped"] == 0


def test_hypersim_rgb_is_antialiased_bilinear(hypersim):
    root, split = hypersim
    sample = HypersimDataset(root, split, size=(16, 24), hflip=False)[(0, 0)]
    source = random_rgb(32, 48, seed=0).astype(np.float64) / 255.0
    weights = np.array([1, 3, 3, 1]) / 8.0  # triangle filter of a 2x antialiased bilinear downsample
    i, j = 5, 7
    window = source[2 * i - 1:2 * i + 3, 2 * j - 1:2 * j + 3]  # [4,4,3]
    expected = np.einsum("a,b,abc->c", weights, weights, window) * 2 - 1
    assert np.allclose(sample["rgb"][:, i, j].numpy(), expected, atol=1e-5)


def test_hypersim_ramp_matches_numpy_percentiles(hypersim):
    root, split = hypersim
    sample = HypersimDataset(root, split, size=(32, 48), hflip=False)[(1, 0)]
    depth_m = ramp_depth().astype(np.float64) / 1000.0
    valid = (depth_m > 1e-5) & (depth_m < 65.0)
    assert not valid[10, 10]
    assert np.allclose(sample["depth"][0].numpy(), np_normalise(depth_m, valid), atol=1e-5)
    assert np.array_equal(sample["valid"][0].numpy(), valid)


def test_all_invalid_depth_gives_empty_mask(hypersim):
    root, split = hypersim
    sample = HypersimDataset(root, split, size=(16, 24))[(2, 3)]
    assert not sample["valid"].any() and torch.all(sample["depth"] == 0) and sample["skipped"] == 0


def test_flip_is_mirror_of_unflipped(hypersim):
    root, split = hypersim
    flipping, plain = HypersimDataset(root, split, size=(16, 24)), HypersimDataset(root, split, (16, 24), False)
    flipped, reference = flipping[(1, FLIP_SEED)], plain[(1, FLIP_SEED)]
    for key in ("rgb", "depth", "valid"):
        assert torch.equal(flipped[key], torch.flip(reference[key], dims=[-1]))
    assert torch.equal(flipping[(1, KEEP_SEED)]["rgb"], reference["rgb"])


def test_same_key_same_sample(hypersim):
    root, split = hypersim
    data = HypersimDataset(root, split, size=(16, 24))
    a, b = data[(3, 12345)], data[(3, 12345)]
    assert all(torch.equal(a[k], b[k]) for k in ("rgb", "depth", "valid"))


def test_missing_root_or_split_named(tmp_path, hypersim):
    root, split = hypersim
    with pytest.raises(ValueError, match="nowhere"):
        HypersimDataset(tmp_path / "nowhere", split)
    with pytest.raises(ValueError, match="no_split.txt"):
        HypersimDataset(root, tmp_path / "no_split.txt")
    with pytest.raises(ValueError, match="first entry"):
        HypersimDataset(tmp_path, split)  # split relative to another root


def test_corrupt_and_mismatched_files_are_skipped(tmp_path, caplog):
    split = make_hypersim(tmp_path, [ramp_depth()] * 4)
    (tmp_path / "ai_001_000/rgb_cam_00_fr0000.png").write_bytes(b"not a png at all")
    write_png16(tmp_path / "ai_001_001/depth_plane_cam_00_fr0000.png", np.full((16, 16), 1000, np.uint16))
    data = HypersimDataset(tmp_path, split, size=(16, 24))
    with caplog.at_level(logging.WARNING, logger="train.datasets.common"):
        first, again = data[(0, 1)], data[(0, 2)]
    assert first["skipped"] == 2 and first["name"] == "ai_001_002/rgb_cam_00_fr0000.png"  # 0 corrupt, 1 mismatched
    assert again["skipped"] == 2
    warned = [r.getMessage() for r in caplog.records if "skipping bad training sample" in r.getMessage()]
    assert len(warned) == 2  # once per bad file, not once per read


def test_every_candidate_bad_raises(tmp_path):
    split = make_hypersim(tmp_path, [ramp_depth()] * 2)
    for i in range(2):
        (tmp_path / f"ai_001_00{i}/depth_plane_cam_00_fr0000.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(RuntimeError, match="could not be read"):
        HypersimDataset(tmp_path, split, size=(16, 24))[(0, 0)]


def test_vkitti_kb_crop_and_centimetres(tmp_path):
    frames = [("Scene02", "clone", 0, 0), ("Scene02", "fog", 1, 3)]
    pairs = make_vkitti(tmp_path, frames)
    assert kb_crop_box(375, 1242) == (23, 13)  # bottom 352 rows, (1242 - 1216) / 2 columns each side
    data = VKittiDataset(tmp_path, hflip=False)  # scan mode, default size: the 352x1216 crop itself
    assert [(p[0], p[1]) for p in data.pairs] == sorted(pairs)
    sample = data[(0, 0)]
    assert sample["rgb"].shape == (3, 352, 1216)
    source = read_rgb(tmp_path / pairs[0][0]) * 2 - 1
    assert torch.equal(sample["rgb"], source[:, 23:375, 13:1229])
    columns = (np.arange(1242)[13:1229] + 500) / 100.0  # metres in the crop
    valid = np.ones((352, 1216), bool)
    valid[:40 - 23] = False  # the 655.35 m sky rows that survive the crop
    expected = np_normalise(np.tile(columns, (352, 1)), valid)
    assert np.array_equal(sample["valid"][0].numpy(), valid)
    assert np.allclose(sample["depth"][0].numpy(), expected, atol=1e-5)


def test_vkitti_split_file_and_resize(tmp_path):
    pairs = make_vkitti(tmp_path, [("Scene06", "morning", 0, 7)])
    split = tmp_path / "vkitti_train.txt"
    split.write_text(f"{pairs[0][0]} {pairs[0][1]}\n")
    sample = VKittiDataset(tmp_path, split, size=(176, 608))[(0, 5)]
    assert sample["rgb"].shape == (3, 176, 608) and sample["valid"].shape == (1, 176, 608)
    assert sample["name"] == pairs[0][0]


def _rgbd_folder(root, with_exr: bool = True):
    height, width = 16, 24
    ramp = np.linspace(1.0, 3.0, height * width).reshape(height, width)
    write_rgb(root / "rgb/a.png", random_rgb(height, width, 1))
    write_png16(root / "depth/a.png", np.round(ramp * 1000))
    mask = np.full((height, width), 255, np.uint8)
    mask[:, :5] = 0
    write_rgb(root / "mask/a.png", np.repeat(mask[..., None], 3, axis=2))
    write_rgb(root / "rgb/sub/b.jpg", random_rgb(height, width, 2))
    (root / "depth/sub").mkdir(parents=True)
    np.save(root / "depth/sub/b.npy", ramp.astype(np.float32))
    if with_exr:
        from fiffdepth_core.fileio.writers import write_exr

        write_rgb(root / "rgb/c.png", random_rgb(height, width, 3))
        write_exr(root / "depth/c.exr", ramp.astype(np.float32))
    return ramp


def test_rgbd_folder_png_npy_exr_and_mask(tmp_path):
    ramp = _rgbd_folder(tmp_path)
    data = RGBDFolderDataset(tmp_path, size=(16, 24), hflip=False)
    assert [item[0] for item in data.items] == ["a", "c", "sub/b"]
    a, c, b = (data[(i, 0)] for i in range(3))
    mask = np.ones(ramp.shape, bool)
    mask[:, :5] = False
    assert np.array_equal(a["valid"][0].numpy(), mask)
    assert np.allclose(a["depth"][0].numpy(), np_normalise(np.round(ramp * 1000) / 1000, mask), atol=1e-5)
    for sample in (b, c):
        assert sample["valid"].all()
        assert np.allclose(sample["depth"][0].numpy(), np_normalise(ramp, np.ones(ramp.shape, bool)), atol=1e-5)
    assert b["name"] == "sub/b"


def test_rgbd_folder_depth_scale_and_range(tmp_path):
    _rgbd_folder(tmp_path, with_exr=False)
    capped = RGBDFolderDataset(tmp_path, size=(16, 24), hflip=False, max_depth=2.0)[(0, 0)]  # mm PNG: >= 2 m invalid
    assert capped["valid"][0, :8, 5:].all() and not capped["valid"][0, 8:].any()  # row 8 starts at 2.003 m
    scaled = RGBDFolderDataset(tmp_path, size=(16, 24), hflip=False, max_depth=2.0, depth_scale=1e-4)[(0, 0)]
    assert scaled["valid"][0, :, 5:].all()  # 0.1 .. 0.3 m now, all under the cap


def test_build_dataset_checks_spec(tmp_path):
    with pytest.raises(ValueError, match="hypersim"):
        build_dataset({"type": "nyu"}, None, True)
    with pytest.raises(ValueError, match="split"):
        build_dataset({"type": "hypersim", "root": str(tmp_path)}, None, True)
    with pytest.raises(ValueError, match="colour"):
        build_dataset({"type": "procedural", "colour": 1}, (16, 16), True)
    for kind in ("vkitti", "rgbd_folder"):
        with pytest.raises(ValueError, match="absent"):
            build_dataset({"type": kind, "root": str(tmp_path / "absent")}, None, True)
    with pytest.raises(ValueError, match="multiples of 8"):
        build_dataset({"type": "procedural"}, (15, 16), True)
    data = build_dataset({"type": "procedural", "length": 3, "probability": 0.5}, (16, 24), False)
    assert len(data) == 3 and data[(0, 0)]["rgb"].shape == (3, 16, 24)
    _rgbd_folder(tmp_path, with_exr=False)
    assert build_dataset({"type": "rgbd_folder", "root": str(tmp_path)}, (8, 16), True)[(1, 0)]["rgb"].shape[1:] == (8, 16)


def test_default_sizes(tmp_path):
    assert build_dataset({"type": "procedural", "length": 1}, None, True).size == (480, 640)
    make_vkitti(tmp_path, [("Scene01", "clone", 0, 0)])
    assert build_dataset({"type": "vkitti", "root": str(tmp_path)}, None, True).size == (352, 1216)


# ---- real photos (WebDataset shards / image folder + cached labels) ----

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    ids = make_shards(root / "shards", [[(48, 64), (40, 60)], [(48, 64)]])
    labels = root / "labels"
    rows = np.arange(48, dtype=np.float32)[:, None] + 1.0  # disparity grows downwards: bottom = near
    write_label(labels, ids[0], np.tile(rows, (1, 64)))
    write_label(labels, ids[1], np.random.default_rng(0).random((40, 60)) + 0.1)
    return root, ids, labels  # ids[2] has no label


def test_real_photos_from_shards(shards):
    root, ids, labels = shards
    data = RealPhotosDataset(root / "shards", labels, size=(24, 32), hflip=False)
    assert [ref.id for ref in data.refs] == ids
    sample = data[(0, 0)]  # 48x64 -> exactly 24x32: no crop freedom
    assert sample["name"] == ids[0] and sample["skipped"] == 0
    assert sample["rgb"].shape == (3, 24, 32) and sample["valid"].all()
    expected, _ = disparity_to_depth_target(torch.nn.functional.interpolate(
        torch.from_numpy(np.tile(np.arange(48, dtype=np.float32)[:, None] + 1, (1, 64)))[None, None],
        size=(24, 32), mode="bilinear", antialias=True)[0])
    assert torch.allclose(sample["depth"], expected, atol=1e-4)
    assert sample["depth"][0, -1, 0] == -1 and sample["depth"][0, 0, 0] == 1  # near bottom, far top


def test_real_photos_random_crop_and_flip(shards):
    root, ids, labels = shards
    data, plain = (RealPhotosDataset(root / "shards", labels, size=(24, 32), hflip=h) for h in (True, False))
    full = resize_rgb(read_image(data.refs[1]), (24, 36)) * 2 - 1  # 40x60 covers 24x32 at 24x36
    lefts = set()
    for seed in range(12):
        crop = plain[(1, seed)]["rgb"]
        left = next(x for x in range(5) if torch.allclose(full[:, :, x:x + 32], crop, atol=1e-6))
        lefts.add(left)
    assert len(lefts) > 1  # the crop position moves with aug_seed
    flipped, reference = data[(1, FLIP_SEED)], plain[(1, FLIP_SEED)]
    for key in ("rgb", "depth", "valid"):
        assert torch.allclose(flipped[key], torch.flip(reference[key], dims=[-1]), atol=1e-6)


def test_real_photos_missing_label_skipped_and_label_dir_checked(shards, tmp_path):
    root, ids, labels = shards
    sample = RealPhotosDataset(root / "shards", labels, size=(24, 32))[(2, 0)]
    assert sample["skipped"] == 1 and sample["name"] == ids[0]  # wrapped around to index 0
    with pytest.raises(ValueError, match="no_labels"):
        RealPhotosDataset(root / "shards", tmp_path / "no_labels")
    with pytest.raises(ValueError, match="images"):
        RealPhotosDataset(tmp_path / "no_images", labels)


def test_real_photos_from_folder(tmp_path):
    write_rgb(tmp_path / "photos/city/0001.jpg", random_rgb(32, 40, 5))
    write_rgb(tmp_path / "photos/0002.png", random_rgb(30, 30, 6))
    write_label(tmp_path / "labels", "city/0001", np.linspace(1, 2, 32 * 40).reshape(32, 40))
    write_label(tmp_path / "labels", "0002", np.ones((31, 30)))  # wrong size: skipped
    data = build_dataset({"type": "real_photos", "images": str(tmp_path / "photos"),
                          "labels": str(tmp_path / "labels")}, (16, 16), True)
    sample = data[(0, 4)]
    assert sample["skipped"] == 1 and sample["name"] == "city/0001"
    assert sample["depth"].shape == (1, 16, 16) and sample["valid"].all()


# ---- procedural ----

def test_ray_caster_hand_computed_hits():
    origin, ray = np.zeros(3, np.float32), np.array([[0.0], [0.0], [1.0]], np.float32)  # [3,1]
    assert Sphere((0, 0, 5), 1.0).intersect(origin, ray)[0] == pytest.approx(4.0)
    assert Box((0, 0, 5), (1, 1, 1), 0.0).intersect(origin, ray)[0] == pytest.approx(4.0)
    assert Box((0, 0, 5), (1, 1, 1), math.pi / 4).intersect(origin, ray)[0] == pytest.approx(5 - math.sqrt(2))
    slanted = np.array([[0.0], [-0.5], [1.0]], np.float32)  # camera-frame z = 1: t is the planar depth
    assert Plane(1, -1.5, 1.0).intersect(origin, slanted)[0] == pytest.approx(3.0)


def test_procedural_deterministic_any_size_and_flip():
    data, plain = ProceduralDataset((24, 40), length=5, seed=3), ProceduralDataset((24, 40), False, 5, 3)
    a, b = data[(2, 7)], data[(2, 7)]
    assert all(torch.equal(a[k], b[k]) for k in ("rgb", "depth", "valid"))
    assert not torch.equal(data[(1, 7)]["rgb"], a["rgb"])
    assert a["rgb"].shape == (3, 24, 40) and -1 <= a["rgb"].min() and a["rgb"].max() <= 1
    flipped, reference = data[(2, FLIP_SEED)], plain[(2, FLIP_SEED)]
    assert torch.equal(flipped["depth"], torch.flip(reference["depth"], dims=[-1]))


def test_procedural_real_target_follows_depth():
    synthetic, real = ProceduralDataset((64, 64), False), ProceduralRealDataset((64, 64), False)
    for index in range(3):
        gt, fake = synthetic[(index, 0)], real[(index, 0)]
        assert torch.equal(gt["rgb"], fake["rgb"]) and fake["valid"].all()
        both = gt["valid"][0]
        corr = np.corrcoef(gt["depth"][0][both].numpy(), fake["depth"][0][both].numpy())[0, 1]
        assert corr > 0.6


def test_procedural_speed():
    """CPU time of this process, not wall time: other processes on a shared machine do not make it fail."""
    small, large = ProceduralDataset((64, 64)), ProceduralDataset((480, 640))
    small[(0, 0)]
    start = time.process_time()
    for i in range(10):
        small[(i, i)]
    assert (time.process_time() - start) / 10 < 0.05
    start = time.process_time()
    large[(0, 0)]
    assert time.process_time() - start < 1.5


# ---- sampling ----

def test_sampler_resume_equals_uninterrupted():
    args = dict(dataset_sizes=[50, 7], probabilities=[0.9, 0.1], batch_size=3, seed=11, num_steps=60)
    full = list(StepBatchSampler(**args))
    resumed = list(StepBatchSampler(**args, start_step=37))
    assert resumed == full[37:] and len(resumed) == 23
    for batch in full:
        assert len({key[0] for key in batch}) == 1  # a batch comes from one dataset


def test_sampler_mixing_epochs_and_ranks():
    sampler = StepBatchSampler([1000, 1000], [0.9, 0.1], batch_size=1, seed=0, num_steps=3000)
    share = np.mean([batch[0][0] == 0 for batch in sampler])
    assert abs(share - 0.9) < 0.03
    epoch = StepBatchSampler([10], [1.0], batch_size=5, seed=4, num_steps=2)
    assert sorted(key[1] for batch in epoch for key in batch) == list(range(10))  # no repeat within an epoch
    ranks = [StepBatchSampler([100, 100], [0.5, 0.5], 4, 1, 10, rank=r, world_size=2) for r in (0, 1)]
    for step in range(10):
        k0, k1 = ranks[0].keys(step), ranks[1].keys(step)
        assert k0[0][0] == k1[0][0] and not {k[1] for k in k0} & {k[1] for k in k1}


def test_sampler_checks_inputs():
    with pytest.raises(ValueError, match="probabilities"):
        StepBatchSampler([5, 5], [1.0], 2, 0, 10)
    with pytest.raises(ValueError, match="start_step"):
        StepBatchSampler([5], [1.0], 2, 0, 10, start_step=11)


def test_loader_with_workers_matches_single_process():
    datasets = [ProceduralDataset((16, 16), length=20), ProceduralRealDataset((8, 24), length=20)]
    kwargs = dict(probabilities=[0.5, 0.5], batch_size=2, seed=5, num_steps=4)
    serial = list(build_loader(datasets, **kwargs))
    parallel = list(build_loader(datasets, **kwargs, num_workers=2))
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel):
        assert a["name"] == b["name"] and torch.equal(a["depth"], b["depth"]) and torch.equal(a["rgb"], b["rgb"])
        assert a["valid"].dtype == torch.bool and a["skipped"].tolist() == [0, 0]
        assert a["rgb"].shape[1:] in ((3, 16, 16), (3, 8, 24))
