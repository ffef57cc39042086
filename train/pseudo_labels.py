"""Cache Depth Anything V2 pseudo labels (relative disparity) for the real-photo branch.

    python train/pseudo_labels.py --images DIR_OR_SHARDS --out LABEL_DIR \
        [--model depth-anything/Depth-Anything-V2-Large-hf | local folder] [--batch-size 8] [--device cuda] \
        [--dtype float16]

``--images`` is a folder of images (recursive) or of img2dataset WebDataset shards (``00000.tar``...), one shard
or a glob. For every image the teacher's disparity is upsampled bilinearly to the image's native size and saved
as float16 ``LABEL_DIR/<image id>.npy`` (ids as in ``train/datasets/image_sources.py``), which
``train/datasets/real_photos.py`` reads. Resumable: images whose label exists are skipped; labels are written
atomically, so an interrupted run never leaves a half-written file. Unreadable images are skipped and counted.
Depth Anything V2 Base/Large/Giant weights are CC-BY-NC-4.0 (Small is Apache-2.0).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if not __package__:  # started as `python train/<script>.py`: see train/script_root.py
    import script_root  # noqa: F401

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from train.datasets.common import SKIPPABLE  # noqa: E402
from train.datasets.image_sources import ImageRef, index_images, label_path, read_image, save_label  # noqa: E402

logger = logging.getLogger("pseudo_labels")

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Large-hf"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_teacher(model: str, device: torch.device, dtype: torch.dtype):
    """``(image processor, depth model)`` from a hub id or a local folder, in eval mode on ``device``."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    processor = AutoImageProcessor.from_pretrained(model)
    network = AutoModelForDepthEstimation.from_pretrained(model).to(device=device, dtype=dtype).eval()
    return processor, network


@torch.inference_mode()
def predict_disparity(processor, network, images: list[torch.Tensor]) -> list[np.ndarray]:
    """Teacher disparity ``[H,W]`` float32 at each image's native size, for RGB ``[3,H,W]`` images in [0,1].

    Images are preprocessed one by one (sizes differ) and run in groups of equal processed size.
    """
    param = next(network.parameters())
    pixels = []
    for image in images:
        array = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [H,W,3]
        pixels.append(processor(images=array, return_tensors="pt")["pixel_values"])  # [1,3,h,w]
    results: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, values in enumerate(pixels):
        groups.setdefault(tuple(values.shape), []).append(i)
    for members in groups.values():
        batch = torch.cat([pixels[i] for i in members]).to(device=param.device, dtype=param.dtype)  # [b,3,h,w]
        predicted = network(pixel_values=batch).predicted_depth.float()  # [b,h',w']
        for row, i in enumerate(members):
            size = tuple(images[i].shape[-2:])
            native = F.interpolate(predicted[row][None, None], size=size, mode="bilinear", align_corners=False)
            results[i] = native[0, 0].cpu().numpy()  # [H,W]
    return results  # type: ignore[return-value]


def _decode(refs: list[ImageRef]) -> tuple[list[ImageRef], list[torch.Tensor], int]:
    good, images, bad = [], [], 0
    for ref in refs:
        try:
            images.append(read_image(ref))
            good.append(ref)
        except SKIPPABLE as err:
            logger.warning("skipping unreadable image %s (%s): %s", ref.id, ref.path, err)
            bad += 1
    return good, images, bad


def make_labels(images, out, model: str = DEFAULT_MODEL, batch_size: int = 8, device: str | None = None,
                dtype: str | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write missing labels; returns counts ``written``, ``existing`` (skipped) and ``corrupt`` (unreadable)."""
    if int(batch_size) < 1:
        raise ValueError(f"`--batch-size` must be >= 1, got {batch_size}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("float16" if str(device).startswith("cuda") else "float32")
    if dtype not in DTYPES:
        raise ValueError(f"`--dtype` must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out)
    refs = index_images(images)
    todo = [ref for ref in refs if overwrite or not label_path(out, ref).exists()]
    stats = {"written": 0, "existing": len(refs) - len(todo), "corrupt": 0}
    logger.info("%d images, %d labels already cached, %d to compute", len(refs), stats["existing"], len(todo))
    if not todo:
        return stats
    processor, network = load_teacher(model, torch.device(device), DTYPES[dtype])
    from tqdm import tqdm

    with tqdm(total=len(todo), desc="pseudo labels", unit="img") as progress:
        for start in range(0, len(todo), int(batch_size)):
            chunk = todo[start:start + int(batch_size)]
            good, decoded, bad = _decode(chunk)
            stats["corrupt"] += bad
            for ref, disparity in zip(good, predict_disparity(processor, network, decoded) if good else []):
                stats["written"] += save_label(label_path(out, ref), disparity, overwrite=overwrite)
            progress.update(len(chunk))
    logger.info("labels written: %(written)d, already there: %(existing)d, unreadable images: %(corrupt)d", stats)
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder of images, folder of .tar shards, a shard or a glob")
    parser.add_argument("--out", required=True, type=Path, help="label folder (<id>.npy float16 disparity)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder of a Depth Anything model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: float16 on cuda, else float32")
    parser.add_argument("--overwrite", action="store_true", help="recompute labels that already exist")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, int]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return make_labels(args.images, args.out, args.model, args.batch_size, args.device, args.dtype, args.overwrite)


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        logger.error("%s", err)
        sys.exit(2)
