"""Evaluation outputs: published reference rows, the markdown/JSON results, per-image CSV, worst-case gallery.

All metric values are fractions (AbsRel 0.044, δ1 0.978, F1 0.423) in JSON and CSV; tables show AbsRel and δ1
in percent as the papers do. Reference rows are the published numbers, each naming its table (the FiffDepth rows
come from a secondary transcription of its Tables 1-2, in which only NYUv2 has δ1; see docs/method.md).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fiffdepth_core.method import DEPTH_METRICS


@dataclass(frozen=True)
class Reference:
    method: str
    source: str
    values: dict = field(default_factory=dict)  # dataset -> {metric: fraction}


def _depth(abs_rel: float, delta1: float | None = None) -> dict:
    row = {"abs_rel": abs_rel / 100.0}
    if delta1 is not None:
        row["delta1"] = delta1 / 100.0
    return row


PUBLISHED: tuple[Reference, ...] = (
    Reference("FiffDepth (paper)", "FiffDepth ICCV 2025 Tables 1-2 (secondary transcription)", {
        "nyuv2": _depth(4.4, 97.8), "kitti": _depth(7.3), "eth3d": _depth(7.1), "scannet": _depth(4.2),
        "diode": _depth(23.9), "sintel": {"boundary_f1": 0.423}, "ibims": {"boundary_f1": 0.189}}),
    Reference("Marigold v1.0 (50 steps x 10)", "Marigold CVPR 2024 Table 1", {
        "nyuv2": _depth(5.5, 96.4), "kitti": _depth(9.9, 91.6), "eth3d": _depth(6.5, 96.0),
        "scannet": _depth(6.4, 95.1), "diode": _depth(30.8, 77.3)}),
    Reference("Depth Anything V2 Large", "DA V2-L rows of FiffDepth Tables 1-2", {
        "nyuv2": _depth(4.5, 97.9), "kitti": _depth(7.4), "eth3d": _depth(13.1), "scannet": _depth(4.2),
        "diode": _depth(26.2), "sintel": {"boundary_f1": 0.228}, "ibims": {"boundary_f1": 0.111}}),
    Reference("Depth Pro", "Depth Pro row of FiffDepth Table 2", {
        "sintel": {"boundary_f1": 0.409}, "ibims": {"boundary_f1": 0.176}}),
)


def headline_metrics(task: str) -> tuple[str, ...]:
    return ("abs_rel", "delta1") if task == "depth" else ("boundary_f1", "abs_rel", "delta1")


def _fmt(metric: str, value: float | None, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if metric == "boundary_f1":
        return f"{value:.3f}"
    return f"{value * 100:.{decimals}f}"


def _header(metric: str, title: str) -> str:
    return {"abs_rel": f"{title} AbsRel ↓ (%)", "delta1": f"{title} δ1 ↑ (%)",
            "boundary_f1": f"{title} boundary F1 ↑"}[metric]


def markdown_report(results: dict) -> str:
    """Our row beside the published rows, the protocol line, and every metric of this run."""
    eval_set, ours = results["dataset"], results["metrics"]
    keys = headline_metrics(eval_set["task"])
    lines = [f"## {eval_set['title']}: {results['method']}", "",
             "| Method | " + " | ".join(_header(k, eval_set["title"]) for k in keys) + " | Images | Source |",
             "| --- |" + " --- |" * (len(keys) + 2),
             f"| **{results['method']}** | " + " | ".join(_fmt(k, ours.get(k), 2) for k in keys) +
             f" | {ours['images']} | this run |"]
    for ref in results["reference"]:
        values = ref["values"]
        lines.append(f"| {ref['method']} | " + " | ".join(_fmt(k, values.get(k), 1) for k in keys) +
                     f" | {eval_set['count']} | {ref['source']} |")
    protocol = results["protocol"]
    lines += ["", f"Protocol: alignment `{protocol['alignment']}`, valid {protocol['min_depth']} < d < "
              f"{protocol['max_depth']} m, processing resolution {protocol['processing_resolution'] or 'native'}, "
              f"split: {protocol['split']}. {eval_set['note']}".rstrip()]
    counts = results["counts"]
    if ours["images"] != eval_set["count"]:
        lines += ["", f"**Partial run:** {ours['images']} of {eval_set['count']} images evaluated "
                  f"({counts['missing_files']} missing files, {counts['skipped_empty']} images without valid "
                  "pixels); not comparable with the published rows."]
    names = [k for k in (*DEPTH_METRICS, "boundary_f1") if k in ours]
    lines += ["", "All metrics of this run (fractions; silog x 100 as Marigold):", "",
              "| " + " | ".join(names) + " |", "|" + " --- |" * len(names),
              "| " + " | ".join(f"{ours[k]:.4f}" for k in names) + " |", ""]
    return "\n".join(lines)


def reference_rows(dataset: str) -> list[dict]:
    """The published rows that report a number for ``dataset``."""
    return [{"method": r.method, "source": r.source, "values": r.values[dataset]}
            for r in PUBLISHED if dataset in r.values]


def write_results(output_dir: Path, results: dict) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md``; returns both paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "results.json", output_dir / "results.md"
    json_path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    md_path.write_text(markdown_report(results))
    return json_path, md_path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_per_image_csv(path: Path, rows: list[dict]) -> Path:
    """One line per evaluated image: sample id, valid pixel count, alignment and every metric."""
    columns = ["sample_id", "valid_pixels", "scale", "shift", *DEPTH_METRICS]
    columns += [c for c in ("boundary_f1",) if any(c in r for r in rows)]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _colour(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spectral colours ``[3,H,W]`` of values in [0,1] (0 = red); black where ``mask`` is False."""
    import torch

    from fiffdepth_core.method import colorize

    rgb = colorize(torch.from_numpy(np.nan_to_num(values).astype(np.float32))[None])[0].numpy()  # [3,H,W]
    return rgb * mask[None]


def render_case(rgb: np.ndarray, gt: np.ndarray, aligned: np.ndarray, valid: np.ndarray,
                max_error: float = 0.5) -> np.ndarray:
    """A ``[3,H,4W]`` strip: image | GT | aligned prediction (same colour range) | AbsRel error (red = large)."""
    lo, hi = (np.percentile(gt[valid], [2, 98]) if valid.any() else (0.0, 1.0))
    span = max(float(hi - lo), 1e-9)
    gt_c = _colour(np.clip((gt - lo) / span, 0, 1), valid)
    pred_c = _colour(np.clip((aligned - lo) / span, 0, 1), np.ones_like(valid))
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.where(valid, np.abs(aligned - gt) / gt, 0.0)
    err_c = _colour(1.0 - np.clip(error / max_error, 0, 1), valid)
    return np.concatenate([np.clip(rgb, 0, 1), gt_c, pred_c, err_c], axis=2)  # [3,H,4W]


def flat_name(sample_id: str) -> str:
    """A file name for a sample id (folders joined by ``__``)."""
    return sample_id.replace("/", "__")
