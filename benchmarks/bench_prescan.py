"""What the CLI's input pre-scan costs: reading every image's header before the model loads.

    python -m benchmarks.bench_prescan                 # 1000 small PNG and JPEG images, 3 repeats
    python -m benchmarks.bench_prescan --count 200 --size 64 --repeats 1

Makes a folder of small seeded images (half PNG, half JPEG), then times, per image:
the pre-scan (``fiffdepth_core.fileio.headers.prescan``: open, header, size and pixel-limit check), the full decode the
run does anyway (``fiffdepth_core.fileio.images.load_image``), and the listing (``fiffdepth_core.app.outputs.list_inputs``).
Prints the median of ``--repeats`` runs of each and the pre-scan as a share of the decode. The first repeat
warms the OS file cache; the figures are for files already in the cache, as in a run that reads them again.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("fiffdepth.bench_prescan")


def make_folder(folder: Path, count: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size * 4 // 3, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:05d}.{'png' if i % 2 else 'jpg'}")
    return folder


def timed(function, repeats: int) -> float:
    runs = []
    for _ in range(repeats + 1):  # one warm-up run
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs[1:])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="images in the folder (default 1000)")
    parser.add_argument("--size", type=int, default=256, help="image height in px (width = 4/3 of it; default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fiffdepth_core.app import list_inputs
    from fiffdepth_core.fileio import load_image, prescan

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "images", args.count, args.size)
        images = list_inputs([folder])
        listing = timed(lambda: list_inputs([folder]), args.repeats)
        scan = timed(lambda: prescan(images), args.repeats)
        decode = timed(lambda: [load_image(p) for p in images], args.repeats)
    result = {"images": len(images), "size": f"{args.size * 4 // 3}x{args.size}", "listing_s": listing,
              "prescan_s": scan, "decode_s": decode, "prescan_ms_per_image": 1000 * scan / len(images),
              "decode_ms_per_image": 1000 * decode / len(images), "prescan_share_of_decode": scan / decode}
    log.info("%d images of %s (PNG and JPEG), median of %d runs:", len(images), result["size"], args.repeats)
    log.info("  listing     %.3f s", listing)
    log.info("  pre-scan    %.3f s  (%.3f ms per image)", scan, result["prescan_ms_per_image"])
    log.info("  full decode %.3f s  (%.3f ms per image)", decode, result["decode_ms_per_image"])
    log.info("  pre-scan = %.1f%% of the decode the run does anyway", 100 * result["prescan_share_of_decode"])
    return result


if __name__ == "__main__":
    main()
