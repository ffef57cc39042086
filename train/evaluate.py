"""Zero-shot evaluation of FiffDepth (Table 1: Marigold's protocol; Table 2: Depth Pro's boundary F1).

Run from the repository root::

    python train/evaluate.py --checkpoint PATH --dataset nyuv2 --data-root DATA/nyuv2
    python train/evaluate.py --predictions DIR --dataset kitti --data-root kitti_eigen_split_test.tar \\
        --alignment least_square_disparity --name "Depth Anything V2"

A checkpoint runs through the same predictor the node uses (``load_standalone`` + ``predict_depth``); its
predictions are cached as ``<output>/predictions/<sample id>.npy``, so an interrupted run resumes. A folder of
predictions from any method (``<sample id>`` + ``.npy`` / ``.exr`` / ``_depth16.png`` / ``.png``) is scored by
the same code. Results: ``results.json`` and ``results.md`` (our row beside the published rows), optionally
``per_image.csv`` and a gallery of the worst images by AbsRel.

On several GPUs or nodes, launch the same command with ``torchrun --nproc_per_node N`` or ``accelerate launch
--num_processes N``: each process predicts and scores its own contiguous block of samples, and the main process
gathers the per-image rows into the same table a single process writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # started as `python train/<script>.py`: see train/script_root.py
    import script_root  # noqa: F401

import argparse  # noqa: E402
import heapq  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fiffdepth_core.app import ProcessGroup, decoded, default_workers, from_env  # noqa: E402  # noqa: E402
from fiffdepth_core.fileio import json_safe, load_image, read_exr, write_npy, write_png8  # noqa: E402
from fiffdepth_core.method import (  # noqa: E402
    ALIGNMENTS,
    DEPTH_METRICS,
    DTYPES,  # noqa: E402
    FAMILY_CHOICES,  # noqa: E402
    MIN_EVAL_DEPTH,
    PASSES,
    PredictConfig,
    align,
    boundary_f1,
    evaluate_depth,
    mean_metrics,
    predict_depth,
)
from train.datasets.eval_sets import (  # noqa: E402
    EVAL_SETS,
    ON_MISSING,
    DataSource,
    EvalItem,
    EvalSet,
    Sample,
    drop_missing,
    load_item,
    load_samples,
)
from train.eval_report import flat_name, reference_rows, render_case, write_per_image_csv, write_results  # noqa: E402

log = logging.getLogger("fiffdepth.evaluate")

PREDICTION_SUFFIXES = (".npy", ".exr", "_depth16.png", ".png")
Predictor = Callable[[list[EvalItem]], list[np.ndarray]]


@dataclass(frozen=True)
class Protocol:
    task: str
    alignment: str
    min_depth: float
    max_depth: float
    alignment_max_res: int | None


class CheckpointPredictor:
    """``predict_depth`` on a standalone backbone; each prediction cached as ``<cache>/<sample id>.npy``."""

    def __init__(self, backbone, config: PredictConfig, cache_dir: Path, recompute: bool = False):
        self.backbone, self.config, self.cache_dir, self.recompute = backbone, config, cache_dir, recompute
        self.reused = self.computed = 0
        self._fresh: set[str] = set()  # ids predicted in this run (valid even under `recompute`)

    def path(self, sample_id: str) -> Path:
        return self.cache_dir / f"{sample_id}.npy"

    def load(self, sample_id: str, shape: tuple[int, int]) -> np.ndarray | None:
        path = self.path(sample_id)
        if (self.recompute and sample_id not in self._fresh) or not path.is_file():
            return None
        depth = np.load(path)
        return depth if depth.shape == tuple(shape) else None

    def __call__(self, items: list[EvalItem]) -> list[np.ndarray]:
        out = [self.load(i.sample.id, i.depth.shape) for i in items]
        todo = [k for k, depth in enumerate(out) if depth is None]
        self.reused += len(items) - len(todo)
        if todo:
            images = torch.from_numpy(np.stack([items[k].rgb for k in todo]))  # [B,3,H,W]
            with torch.inference_mode():
                depth = predict_depth(self.backbone, images.to(self.backbone.device), self.config).cpu().numpy()
            for k, d in zip(todo, depth):
                write_npy(self.path(items[k].sample.id), d, overwrite=True)
                self._fresh.add(items[k].sample.id)
                out[k] = d
            self.computed += len(todo)
        return out


class FolderPredictor:
    """Predictions of any method, read from ``<folder>/<sample id><suffix>``."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise FileNotFoundError(f"`--predictions` must be a folder, got {folder} (not found)")
        self.folder = folder

    def find(self, sample_id: str) -> Path | None:
        return next((p for s in PREDICTION_SUFFIXES if (p := self.folder / f"{sample_id}{s}").is_file()), None)

    def load(self, sample_id: str, shape=None) -> np.ndarray:
        path = self.find(sample_id)
        if path is None:
            raise FileNotFoundError(f"no prediction for {sample_id} in {self.folder} (tried {PREDICTION_SUFFIXES})")
        if path.suffix == ".npy":
            return np.load(path).astype(np.float32).squeeze()
        if path.suffix == ".exr":
            return read_exr(path)
        return load_image(path)[0].numpy()  # 16-bit PNG -> value / 65535

    def __call__(self, items: list[EvalItem]) -> list[np.ndarray]:
        return [self.load(i.sample.id) for i in items]


def batches(eval_set: EvalSet, source: DataSource, samples: list[Sample], size: int,
            workers: int = 0) -> Iterator[list[EvalItem]]:
    """Consecutive samples of the same image size, up to ``size`` at a time (``predict_depth`` needs one size),
    read by ``workers`` background processes (0: on this thread)."""
    pending: list[EvalItem] = []
    for _, item, error in decoded(samples, partial(load_item, eval_set, source), workers):
        if item is None:
            raise ValueError(error)
        if pending and (len(pending) == size or pending[0].rgb.shape != item.rgb.shape):
            yield pending
            pending = []
        pending.append(item)
    if pending:
        yield pending


def aligned_prediction(pred: np.ndarray, item: EvalItem, protocol: Protocol) -> np.ndarray:
    """The prediction as the metrics see it: aligned on the valid pixels, clipped to the range, then >= 1e-6."""
    aligned, _ = align(pred, item.depth, item.valid, protocol.alignment, protocol.alignment_max_res)
    return np.clip(np.clip(aligned, protocol.min_depth, protocol.max_depth), MIN_EVAL_DEPTH, None)


def score_item(pred: np.ndarray, item: EvalItem, protocol: Protocol) -> dict | None:
    """Every depth metric (and the boundary F1 on boundary sets) of one image; None if no pixel is valid."""
    result = evaluate_depth(pred, item.depth, item.valid, protocol.min_depth, protocol.max_depth,
                            protocol.alignment, protocol.alignment_max_res)
    if result is not None and protocol.task == "boundary":
        with np.errstate(invalid="ignore"):
            usable = item.mask & np.isfinite(item.depth) & (item.depth > 0)
        result["boundary_f1"] = boundary_f1(aligned_prediction(pred, item, protocol), item.depth, usable)
    return result


def evaluate_samples(eval_set: EvalSet, source: DataSource, samples: list[Sample], predictor: Predictor,
                     protocol: Protocol, batch_size: int = 1, progress=True, workers: int = 0) -> list[dict | None]:
    """Predict and score every sample in order; returns one metrics dict (or None: no valid pixel) per sample.

    ``progress``: show a bar (bool), or an object whose ``update(n)`` counts the images (a job-wide counter)."""
    from tqdm.auto import tqdm

    rows: list[dict | None] = []
    bar = progress if hasattr(progress, "update") else tqdm(total=len(samples), desc=f"eval {eval_set.name}",
                                                            unit="img", disable=not progress)
    for items in batches(eval_set, source, samples, batch_size, workers):
        for item, pred in zip(items, predictor(items)):
            row = score_item(pred, item, protocol)
            if row is None:
                log.warning("%s: no valid GT pixel; skipped", item.sample.id)
            rows.append(row)
        bar.update(len(items))
    if bar is not progress:
        bar.close()
    return rows


def write_gallery(folder: Path, worst: list[tuple[float, Sample]], eval_set: EvalSet, source: DataSource,
                  predictor, protocol: Protocol) -> None:
    """image | GT | aligned prediction | AbsRel error, one PNG per worst image, ranked from the worst."""
    for rank, (value, sample) in enumerate(worst, start=1):
        item = load_item(eval_set, source, sample)
        aligned = aligned_prediction(predictor.load(sample.id, item.depth.shape), item, protocol)
        strip = render_case(item.rgb, item.depth, aligned, item.valid)
        write_png8(folder / f"{rank:03d}_absrel{value:.3f}_{flat_name(sample.id)}.png", strip, overwrite=True)


def check_cache(cache_dir: Path, meta: dict, recompute: bool) -> None:
    """Refuse to mix cached predictions of another checkpoint or setting, unless ``--recompute``."""
    path = cache_dir / "cache.json"
    if path.is_file() and not recompute:
        old = json.loads(path.read_text())
        if old != meta:
            diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
            raise ValueError(f"the prediction cache {cache_dir} was made with other settings {diff} (cached, now); "
                             "pass another --output-dir, or --recompute to overwrite it")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2) + "\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="FiffDepth checkpoint (any layout load_standalone reads)")
    src.add_argument("--predictions", type=Path, help="folder of another method's predictions named by sample id")
    p.add_argument("--dataset", required=True, choices=sorted(EVAL_SETS))
    p.add_argument("--data-root", required=True, type=Path, help="the set's extracted folder or its .tar")
    p.add_argument("--split", type=Path, help="split list (default: the usual one in the data root, else a scan)")
    p.add_argument("--output-dir", type=Path, help="default: eval_results/<dataset>/<name>")
    p.add_argument("--name", help="method name in the table (default: the checkpoint/predictions folder name)")
    p.add_argument("--alignment", choices=ALIGNMENTS, help="default: the set's (least_square)")
    p.add_argument("--processing-resolution", type=_non_negative, help="long edge; 0 = native (default: the set's)")
    p.add_argument("--depth-pass", choices=PASSES, default="detailed")
    p.add_argument("--family", choices=FAMILY_CHOICES, default="auto",
                   help="model family of --checkpoint (default auto: detected; Lotus-D, GenPercept, E2E-FT...)")
    p.add_argument("--batch-size", type=_positive, default=1)
    p.add_argument("--workers", type=_non_negative, help="processes reading samples ahead of the model (default: "
                   "up to 4 per process, as the cores allow; 0 = read on the main thread)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                   help="auto: fp32 on CPU, bf16 on GPUs that have it, else fp16")
    p.add_argument("--limit", type=_positive, help="evaluate only the first N samples (a quick, partial run)")
    p.add_argument("--on-missing", choices=ON_MISSING, default="stop", help="a listed file or prediction is missing")
    p.add_argument("--per-image", action="store_true", help="also write per_image.csv")
    p.add_argument("--gallery", type=_non_negative, default=0, help="write the N worst images by AbsRel as PNGs")
    p.add_argument("--recompute", action="store_true", help="ignore and overwrite cached predictions")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def _make_predictor(args, eval_set: EvalSet, output_dir: Path, device: torch.device, group: ProcessGroup):
    if args.predictions is not None:
        return FolderPredictor(args.predictions), {"predictions": str(args.predictions.resolve())}
    from fiffdepth_core.method import resolve_dtypes
    from fiffdepth_core.weights import fingerprint, inspect_checkpoint, load_standalone

    dtype, vae_dtype = resolve_dtypes(args.dtype, device)
    resolution = eval_set.processing_resolution if args.processing_resolution is None else args.processing_resolution
    config = PredictConfig(processing_resolution=resolution, batch_size=args.batch_size, depth_pass=args.depth_pass)
    info = inspect_checkpoint(args.checkpoint, args.family)
    meta = {"checkpoint": str(args.checkpoint.resolve()), "dataset": eval_set.name, "dtype": str(dtype),
            "processing_resolution": resolution, "depth_pass": args.depth_pass,
            "weights": fingerprint(info), "family": info.family.name}  # a re-export invalidates the cache
    problem = None
    if group.processes.is_main:  # one process checks and claims the cache; every process stops if it refuses
        try:
            check_cache(output_dir / "predictions", meta, args.recompute)
        except ValueError as err:
            problem = str(err)
    problem = group.gather(problem)[0]
    if problem:
        raise ValueError(problem)
    backbone = load_standalone(args.checkpoint, device=device, dtype=dtype, vae_dtype=vae_dtype, family=args.family)
    log.info("loaded %s on %s (%s); processing resolution %s", args.checkpoint, device, dtype, resolution or "native")
    return CheckpointPredictor(backbone, config, output_dir / "predictions", args.recompute), meta


def _drop_unpredicted(samples: list[Sample], predictor, on_missing: str) -> tuple[list[Sample], list[str]]:
    """In --predictions mode: samples without a prediction file stop the run, or are skipped and counted."""
    if not isinstance(predictor, FolderPredictor):
        return samples, []
    absent = [s.id for s in samples if predictor.find(s.id) is None]
    if absent:
        log.warning("%d samples have no prediction in %s, e.g. %s", len(absent), predictor.folder, absent[:5])
        if on_missing == "stop":
            raise FileNotFoundError(f"no prediction for {len(absent)} samples in {predictor.folder} (first: "
                                    f"{absent[0]}); pass --on-missing skip to evaluate the rest and count them")
    return [s for s in samples if s.id not in set(absent)], absent


def _results(args, eval_set: EvalSet, protocol: Protocol, predictor, origin: dict, split: str, rows: list,
             counts: dict) -> dict:
    metrics = mean_metrics(rows, DEPTH_METRICS + (("boundary_f1",) if eval_set.task == "boundary" else ()))
    resolution = getattr(getattr(predictor, "config", None), "processing_resolution", None)
    return json_safe({
        "method": args.name, "source": origin,
        "dataset": {k: getattr(eval_set, k) for k in ("name", "title", "task", "count", "note")},
        "protocol": {**asdict(protocol), "processing_resolution": resolution, "split": split,
                     "data_root": str(args.data_root)},
        "counts": {**counts, "evaluated": metrics["images"], "skipped_empty": metrics["skipped_empty"]},
        "metrics": metrics, "reference": reference_rows(eval_set.name)})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    eval_set = EVAL_SETS[args.dataset]
    args.name = args.name or (args.checkpoint or args.predictions).resolve().name
    output_dir = args.output_dir or Path("eval_results") / eval_set.name / args.name
    processes = from_env()  # several under torchrun / accelerate launch
    from fiffdepth_core.method import resolve_device

    device = resolve_device(processes.device(args.device)) if args.checkpoint is not None else torch.device("cpu")
    with ProcessGroup(processes, device) as group:
        # 1. The samples: split list (or layout scan), minus missing files; the predictions; --limit.
        source = DataSource(args.data_root)
        listed, split = load_samples(eval_set, source, args.split)
        samples, missing = drop_missing(listed, source, args.on_missing)
        predictor, origin = _make_predictor(args, eval_set, output_dir, device, group)
        samples, unpredicted = _drop_unpredicted(samples, predictor, args.on_missing)
        samples = samples[:args.limit] if args.limit else samples

        # 2. Predict (or read) and score every image, each process its own block; gathered in sample order.
        protocol = Protocol(eval_set.task, args.alignment or eval_set.alignment, eval_set.min_depth,
                            eval_set.max_depth, eval_set.alignment_max_res)
        workers = default_workers(processes.local_world_size) if args.workers is None else args.workers
        bar = _progress_bar(len(samples), eval_set, not args.no_progress and processes.is_main)
        progress = group.progress(len(samples), bar)
        mine = evaluate_samples(eval_set, source, processes.shard(samples, args.batch_size), predictor, protocol, args.batch_size,
                                progress, workers)
        progress.close()
        rows = [row for part in group.gather(mine) for row in part]
        cache_counts = group.gather((getattr(predictor, "computed", 0), getattr(predictor, "reused", 0)))
    if not processes.is_main:
        return 0
    counts = {"listed": len(listed), "missing_files": len(missing), "missing_predictions": len(unpredicted)}
    results = _results(args, eval_set, protocol, predictor, origin, split, rows, counts)

    # 3. Outputs: per-image CSV, worst-case gallery, results.json + results.md (also printed).
    scored = [(s, r) for s, r in zip(samples, rows) if r is not None]
    if args.per_image:
        rows_out = [{"sample_id": s.id, **r} for s, r in scored]
        results["per_image_csv"] = str(write_per_image_csv(output_dir / "per_image.csv", rows_out))
    if args.gallery:
        worst = heapq.nlargest(args.gallery, ((r["abs_rel"], s) for s, r in scored), key=lambda pair: pair[0])
        write_gallery(output_dir / "gallery", worst, eval_set, source, predictor, protocol)
    json_path, md_path = write_results(output_dir, results)
    if isinstance(predictor, CheckpointPredictor):
        log.info("predictions: %d computed, %d reused from the cache", sum(c for c, _ in cache_counts),
                 sum(r for _, r in cache_counts))
    log.info("wrote %s and %s", json_path, md_path)
    sys.stdout.write(md_path.read_text())
    return 0


def _progress_bar(total: int, eval_set: EvalSet, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"eval {eval_set.name}", unit="img")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:  # bad flags or data: one clear line, no traceback
        log.error("%s", err)
        sys.exit(2)
