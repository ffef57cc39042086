"""Writers for tiny training-data fixtures in the real on-disk formats (Hypersim/Marigold, vKITTI 2, RGB-D folder,
img2dataset WebDataset shards, Hypersim raw HDF5, a tiny Depth Anything model)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """uint8 ``[H,W,3]`` as PNG or JPEG (by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(rgb).save(path)
    return path


def write_png16(path: Path, values: np.ndarray) -> Path:
    """uint16 ``[H,W]`` as a single-channel 16-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values.astype(np.uint16))
    return path


def random_rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_hypersim(root: Path, depths_mm: list[np.ndarray]) -> Path:
    """Marigold's Hypersim layout with one frame per depth map; returns the split file."""
    lines = []
    for i, depth in enumerate(depths_mm):
        rgb_rel, depth_rel = f"ai_001_00{i}/rgb_cam_00_fr0000.png", f"ai_001_00{i}/depth_plane_cam_00_fr0000.png"
        write_rgb(root / rgb_rel, random_rgb(*depth.shape, seed=i))
        write_png16(root / depth_rel, depth)
        lines.append(f"{rgb_rel} {depth_rel}")
    split = root / "filename_list_train_filtered.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def vkitti_paths(scene: str, variation: str, camera: int, frame: int) -> tuple[str, str]:
    tail = f"{scene}/{variation}/frames/{{}}/Camera_{camera}/{{}}_{frame:05d}.{{}}"
    return "rgb/" + tail.format("rgb", "rgb", "jpg"), "depth/" + tail.format("depth", "depth", "png")


def make_vkitti(root: Path, frames: list[tuple[str, str, int, int]], height: int = 375, width: int = 1242) -> list:
    """A vKITTI 2 tree (jpg + centimetre PNG) at the real 375x1242 size; returns the (rgb, depth) rel paths."""
    pairs = []
    for k, (scene, variation, camera, frame) in enumerate(frames):
        rgb_rel, depth_rel = vkitti_paths(scene, variation, camera, frame)
        write_rgb(root / rgb_rel, random_rgb(height, width, seed=100 + k))
        depth_cm = np.tile(np.arange(width, dtype=np.uint16) + 500, (height, 1))  # 5 m + 1 cm per column
        depth_cm[:40] = 65535  # sky rows (655.35 m: invalid)
        write_png16(root / depth_rel, depth_cm)
        pairs.append((rgb_rel, depth_rel))
    return pairs


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def make_shards(folder: Path, sizes_per_shard: list[list[tuple[int, int]]]) -> list[str]:
    """img2dataset-style shards ``00000.tar``... (key.jpg/.txt/.json + _stats.json); returns the image ids."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for s, sizes in enumerate(sizes_per_shard):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as writer:
            for i, (height, width) in enumerate(sizes):
                key = f"{s:05d}{i:04d}"
                meta = {"url": f"http://example.invalid/{key}.jpg", "status": "success", "width": width,
                        "height": height}
                writer.write({"__key__": key, "jpg": jpeg_bytes(random_rgb(height, width, seed=1000 * s + i)),
                              "txt": f"caption {key}", "json": json.dumps(meta).encode()})
                ids.append(f"{s:05d}/{key}")
        (folder / f"{s:05d}_stats.json").write_text(json.dumps({"count": len(sizes)}))
    return ids


def write_label(labels: Path, image_id: str, disparity: np.ndarray) -> Path:
    path = labels / f"{image_id}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, disparity.astype(np.float16))
    return path


def write_hypersim_raw(raw: Path, scene: str, camera: str, frame: int, color: np.ndarray, distance: np.ndarray,
                       entity: np.ndarray) -> None:
    """One raw Hypersim frame: three HDF5 files with a ``dataset`` array each, as in the public release."""
    import h5py

    images = raw / scene / "images"
    for folder, name, array in ((f"scene_{camera}_final_hdf5", "color", color.astype(np.float16)),
                                (f"scene_{camera}_geometry_hdf5", "depth_meters", distance.astype(np.float16)),
                                (f"scene_{camera}_geometry_hdf5", "render_entity_id", entity.astype(np.int32))):
        (images / folder).mkdir(parents=True, exist_ok=True)
        with h5py.File(images / folder / f"frame.{frame:04d}.{name}.hdf5", "w") as handle:
            handle.create_dataset("dataset", data=array, compression="gzip", compression_opts=9)


def write_tiny_depth_anything(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised, tiny Depth Anything model + DPT image processor saved with save_pretrained."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    torch.manual_seed(seed)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    processor = DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                  resample=3, do_pad=False, image_mean=[0.485, 0.456, 0.406],
                                  image_std=[0.229, 0.224, 0.225])
    processor.save_pretrained(folder)
    return folder
