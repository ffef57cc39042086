"""In-training validation through the shared predictor (the one the node calls) with least-squares alignment.

Validation sets (``validation.dataset`` in the config):

* ``{type: procedural, seed: 999, length: 16}``: held-out procedural scenes with exact depth (debug runs);
* ``{eval_set: nyuv2 | kitti | eth3d | scannet | diode, data_root: ..., split: ..., limit: 100}``: a benchmark in
  Marigold's layout, read by the evaluation readers, scored with the evaluation protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fiffdepth_core.method import PredictConfig, evaluate_depth, mean_metrics, predict_depth


@dataclass
class ValItem:
    name: str
    rgb: torch.Tensor  # [3,H,W] in [0,1]
    depth: np.ndarray  # [H,W] metres
    valid: np.ndarray  # [H,W] bool
    min_depth: float
    max_depth: float


def _procedural_items(spec: dict, size, limit: int) -> list[ValItem]:
    from train.datasets.procedural import ProceduralDataset

    data = ProceduralDataset(size=tuple(spec.get("size", size)), hflip=False, length=int(spec.get("length", 16)),
                             seed=int(spec.get("seed", 999)))
    items = []
    for index in range(min(len(data), limit)):
        rgb, depth = data.render(index)
        depth = depth[0].numpy()
        items.append(ValItem(data.describe(index), rgb, depth, np.isfinite(depth), 1e-3, 1e3))
    return items


def _benchmark_items(spec: dict, limit: int) -> list[ValItem]:
    from train.datasets.eval_sets import DataSource, drop_missing, get_eval_set, load_item, load_samples

    eval_set = get_eval_set(spec["eval_set"])
    source = DataSource(spec["data_root"])
    samples, _ = load_samples(eval_set, source, spec.get("split"))
    samples, _ = drop_missing(samples, source, "skip")
    items = []
    for sample in samples[: min(limit, int(spec.get("limit", limit)))]:
        item = load_item(eval_set, source, sample)
        items.append(ValItem(sample.id, torch.from_numpy(item.rgb), item.depth, item.valid, eval_set.min_depth,
                             eval_set.max_depth))
    return items


def build_validation(spec: dict | None, size, limit: int) -> list[ValItem]:
    """The validation items named by ``spec`` (empty when validation is off)."""
    if not spec:
        return []
    if spec.get("type") == "procedural":
        return _procedural_items(spec, size, limit)
    if "eval_set" in spec:
        return _benchmark_items(spec, limit)
    raise ValueError(f"`validation.dataset` must be {{type: procedural, ...}} or {{eval_set: NAME, data_root: "
                     f"...}}, got {spec!r}")


def run_validation(backbone, items: list[ValItem], config: PredictConfig) -> tuple[dict, list[torch.Tensor]]:
    """AbsRel/delta1 (least squares in depth space, as evaluation) and the predicted depth maps."""
    rows, depths = [], []
    with torch.inference_mode():
        for item in items:
            depth = predict_depth(backbone, item.rgb[None], config)[0]  # [H,W] in [0,1]
            depths.append(depth.cpu())
            rows.append(evaluate_depth(depth.cpu().numpy(), item.depth, item.valid, item.min_depth,
                                       item.max_depth if math.isfinite(item.max_depth) else math.inf))
    metrics = mean_metrics(rows, ("abs_rel", "delta1"))
    return metrics, depths
