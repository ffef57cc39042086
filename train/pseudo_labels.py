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

On several GPUs or nodes, launch it with ``torchrun --nproc_per_node N`` or ``accelerate launch --num_processes N``
(same arguments): each process labels its own contiguous block of the image list, and the progress bar and the
final counts cover the whole job. A relaunch skips the labels any earlier run finished.
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

from fiffdepth_core.app import ProcessGroup, decoded, default_workers, from_env  # noqa: E402  # noqa: E402
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


def _read(ref: ImageRef) -> torch.Tensor:
    try:
        return read_image(ref)
    except SKIPPABLE as err:
        raise ValueError(f"{ref.id} ({ref.path}): {err}") from None


def _chunks(refs: list[ImageRef], batch_size: int, workers: int):
    """``(readable refs, their images, unreadable count)`` per ``batch_size`` refs, read ahead by ``workers``."""
    good, images, bad = [], [], 0
    for count, (ref, image, error) in enumerate(decoded(refs, _read, workers), start=1):
        if image is None:
            logger.warning("skipping unreadable image %s", error)
            bad += 1
        else:
            good.append(ref)
            images.append(image)
        if count % batch_size == 0 or count == len(refs):
            yield good, images, bad
            good, images, bad = [], [], 0


def make_labels(images, out, model: str = DEFAULT_MODEL, batch_size: int = 8, device: str | None = None,
                dtype: str | None = None, overwrite: bool = False, workers: int | None = None) -> dict[str, int]:
    """Write missing labels; returns counts ``written``, ``existing`` (skipped) and ``corrupt`` (unreadable).

    Under torchrun / ``accelerate launch`` each process labels its own block of the images and the counts are the
    whole job's (on every process)."""
    if int(batch_size) < 1:
        raise ValueError(f"`--batch-size` must be >= 1, got {batch_size}")
    if workers is not None and int(workers) < 0:
        raise ValueError(f"`--workers` must be >= 0, got {workers}")
    processes = from_env()
    device = processes.device(device or "auto")
    device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    dtype = dtype or ("float16" if str(device).startswith("cuda") else "float32")
    if dtype not in DTYPES:
        raise ValueError(f"`--dtype` must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out)
    refs = index_images(images)
    mine = processes.shard(refs, align=int(batch_size))  # split, then skip: never judge another's fresh labels
    todo = [ref for ref in mine if overwrite or not label_path(out, ref).exists()]
    workers = default_workers(processes.local_world_size) if workers is None else int(workers)
    with ProcessGroup(processes, device) as group:
        counts = group.gather((len(mine) - len(todo), len(todo)))
        existing, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        if processes.is_main:
            logger.info("%d images, %d labels already cached, %d to compute", len(refs), existing, total)
        stats = {"written": 0, "existing": len(mine) - len(todo), "corrupt": 0}
        bar = None
        if processes.is_main and total:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="pseudo labels", unit="img")
        progress = group.progress(total, bar)
        if todo:
            processor, network = load_teacher(model, torch.device(device), DTYPES[dtype])
            for good, decoded_images, bad in _chunks(todo, int(batch_size), workers):
                stats["corrupt"] += bad
                for ref, disparity in zip(good, predict_disparity(processor, network, decoded_images) if good else []):
                    stats["written"] += save_label(label_path(out, ref), disparity, overwrite=overwrite)
                progress.update(len(good) + bad)
        progress.close()
        stats = {key: sum(s[key] for s in group.gather(stats)) for key in stats}
    if processes.is_main:
        logger.info("labels written: %(written)d, already there: %(existing)d, unreadable images: %(corrupt)d",
                    stats)
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder of images, folder of .tar shards, a shard or a glob")
    parser.add_argument("--out", required=True, type=Path, help="label folder (<id>.npy float16 disparity)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder of a Depth Anything model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: float16 on cuda, else float32")
    parser.add_argument("--workers", type=int, default=None, help="processes reading images ahead of the teacher "
                        "(default: up to 4 per process, as the cores allow; 0 = read on the main thread)")
    parser.add_argument("--overwrite", action="store_true", help="recompute labels that already exist")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, int]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return make_labels(args.images, args.out, args.model, args.batch_size, args.device, args.dtype, args.overwrite,
                       args.workers)


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        logger.error("%s", err)
        sys.exit(2)
