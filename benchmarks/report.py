"""Writing results: one JSON file with every number, and a markdown file with the tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fiffdepth_core.fileio import json_safe

from .measure import STAGES

METHOD_TFLOP_512 = {"encode": 1.12, "unet": 0.80, "decode": 2.52, "total": 4.43}  # docs/method.md, per 512^2 image


def _num(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _dtypes(rec: dict) -> str:
    return rec["unet_dtype"] if rec["unet_dtype"] == rec["vae_dtype"] else f"{rec['unet_dtype']}/{rec['vae_dtype']}"


def grid_table(records: list[dict], speedups: list[dict]) -> list[str]:
    gain = {(s["size"], s["batch"], s["label"]): s["vs_naive"] for s in speedups}
    rows = []
    for rec in records:
        g, med = rec["guard"], rec.get("median_ms")
        valid = "yes" if g["valid"] else ("**NO** (time not valid)" if med else "**NO** (not timed)")
        mem = rec.get("memory", {})
        stage = [_num(med.get(s), 1) if med else "-" for s in (*STAGES, "other")]
        rows.append([rec["label"], _dtypes(rec), f"{rec['size']}²", str(rec["batch"]), *stage,
                     _num(med.get("total"), 1) if med else "-", _num(rec.get("ms_per_image"), 1),
                     _num(rec.get("images_per_s"), 2), _num(gain.get((rec["size"], rec["batch"], rec["label"])), 2),
                     f"{_num(mem.get('peak_mib'), 0)} ({_num(mem.get('delta_mib'), 0)})" if mem else "-",
                     _num(rec.get("achieved_tflops"), 3), _num(100 * rec["floor_fraction"], 1)
                     if rec.get("floor_fraction") is not None else "-",
                     f"{g['max_abs_diff']:.2e} / {g['tolerance']:.3g}", valid])
    header = ["path", "dtype", "size", "batch", "encode ms", "UNet ms", "decode ms", "other ms", "total ms",
              "ms/img", "img/s", "× naive", "peak MiB (Δ run)", "TFLOP/s", "floor %", "max Δ / tol", "valid"]
    return _table(header, rows)


def host_table(ratios: list[dict]) -> list[str]:
    rows = [[f"{r['size']}²", str(r["batch"]), _num(r["standalone_ms"], 1), _num(r["host_ms"], 1),
             f"{r['ratio']:.3f}", f"{r['ratio_min']:.3f}", f"{r['ratio_cpu']:.3f}",
             "yes" if r["within_3pct"] else "no", "yes" if r["valid"] else "**NO**"] for r in ratios]
    header = ["size", "batch", "standalone ms", "host ms", "host / standalone (median)", "(min)", "(CPU time)",
              "median ≤ 1.03", "guard"]
    return _table(header, rows)


def flops_table(flops: dict[str, dict]) -> list[str]:
    rows = []
    for size, f in flops.items():
        rows.append([size, *[_num(f[s] / 1e12, 3) for s in (*STAGES, "total")]])
    lines = _table(["size (per image)", "encode TFLOP", "UNet TFLOP", "decode TFLOP", "total TFLOP"], rows)
    return lines + ["", "Expected at 512² (docs/method.md): encode 1.12, UNet 0.80, decode 2.52, total 4.43 TFLOP."]


def large_table(records: list[dict]) -> list[str]:
    rows = []
    for rec in records:
        tiled, untiled = rec["tiled"], rec.get("untiled")
        rows.append([f"{rec['size']}²", f"{rec['tile_size']}/{rec['overlap']}",
                     _num(tiled["memory"]["peak_mib"], 0), _num(tiled["memory"]["delta_mib"], 0),
                     _num(tiled["total_ms"] / 1e3, 2),
                     _num(untiled["memory"]["peak_mib"], 0) if untiled else "-",
                     _num(untiled["memory"]["delta_mib"], 0) if untiled else "-",
                     _num(untiled["total_ms"] / 1e3, 2) if untiled else "-",
                     f"{rec['max_abs_diff']:.2e}" if "max_abs_diff" in rec else "-",
                     f"{rec['mean_abs_diff']:.2e}" if "mean_abs_diff" in rec else "-",
                     rec.get("untiled_skipped", rec["untiled_estimate"])])
    header = ["size", "tile/overlap", "tiled peak MiB", "tiled Δ MiB", "tiled s", "untiled peak MiB",
              "untiled Δ MiB", "untiled s", "max abs diff", "mean abs diff", "untiled note"]
    return _table(header, rows)


def video_table(rec: dict) -> list[str]:
    stages = rec["stage_ms"]
    row = [str(rec["frames"]), f"{rec['size']}²", str(rec["chunk"]), _dtypes(rec), _num(rec["fps"], 2),
           _num(rec["ms_per_frame"], 1), *[_num(stages.get(s), 0) for s in STAGES],
           _num(rec["memory"]["peak_mib"], 0), _num(rec["memory"]["delta_mib"], 0)]
    header = ["frames", "size", "chunk", "dtype", "frames/s", "ms/frame", "encode ms", "UNet ms", "decode ms",
              "peak MiB", "Δ MiB"]
    return _table(header, [row])


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# FiffDepth inference benchmark ({meta['geometry']} geometry, {meta['device_name']})", "",
             f"`{meta['command']}`", "",
             f"torch {meta['torch']}, diffusers {meta['diffusers']}, {meta['threads']} threads, inputs on "
             f"{meta['inputs_on']}; ComfyUI: {meta.get('comfyui') or 'not used'}. Random weights. "
             f"Load average (1 min) at start / end: {meta.get('load_start', '-')} / {meta.get('load_end', '-')}.",
             f"Peak matmul rate (the FLOP floor's yardstick): "
             + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in meta["peak_tflops"].items())
             + f" ({meta['peak_source']}). Memory: {meta['memory_method']}.", ""]
    if "grid" in results:
        lines += ["## Paths", "", f"Medians over {meta['repeats']} interleaved rounds after {meta['warmup']} "
                  "warm-up run(s). `other` = pre/post-processing and transfers. `Δ run` = peak minus memory in use "
                  "before the run (activations). `max Δ` = max |depth − fp32 naive reference|.", ""]
        lines += grid_table(results["grid"], results["comparisons"]["speedups"]) + [""]
        if results["comparisons"]["host_ratios"]:
            lines += ["## ComfyUI host vs standalone (target on CPU: ≤ 1.03)", "",
                      "Ratios of wall-time medians, of wall-time minima, and of process-CPU-time medians (with one "
                      "thread, CPU time does not count the time other processes held the cores).", ""]
            lines += host_table(results["comparisons"]["host_ratios"]) + [""]
        elif results.get("host_skipped"):
            lines += [f"Host path not measured: {results['host_skipped']}", ""]
        lines += ["## FLOPs (FlopCounterMode on meta tensors)", ""] + flops_table(results["flops"]) + [""]
    if results.get("large"):
        lines += ["## Large images: tiled vs untiled VAE (one run each)", ""] + large_table(results["large"]) + [""]
    if results.get("video"):
        lines += ["## Video batch", ""] + video_table(results["video"]) + [""]
    return "\n".join(lines)


def write(results: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(json_safe(results), indent=1, default=str, allow_nan=False))
    md_path.write_text(markdown(results) + "\n")
    return json_path, md_path
