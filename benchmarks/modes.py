"""The three measurements: the size x batch grid over paths, large images (tiled VAE), and video batches.

Grid protocol per (size, batch): every path runs ``warmup`` times first (at least once); its first output is
compared with the fp32 reference (:func:`paths.guard`) and a path that fails is not timed. The valid paths then run
``repeats`` rounds, interleaved and in rotating order so that load from other processes spreads evenly over them;
the first round of each path also measures its peak memory. Medians are over the rounds.
"""

from __future__ import annotations

import logging

import torch

from fiffdepth_core.method import MEMORY_HEADROOM, PredictConfig, TileConfig, free_memory, predict_depth, vae_bytes

from .measure import STAGES, MemoryProbe, NullClock, median, timed_run
from .paths import dtype_name, guard, predictor_path, tolerance

log = logging.getLogger(__name__)


def summarize(record: dict, samples: dict[str, list[float]], batch: int, flops: dict | None,
              peaks: dict[str, float] | None) -> None:
    """Fill medians, throughput, achieved TFLOP/s and the fraction of the FLOP floor into ``record``."""
    med = {k: median(v) for k, v in samples.items() if v}
    total = med["total"]
    record["median_ms"] = {k: round(v * 1e3, 3) for k, v in med.items()}
    record["min_ms"] = round(min(samples["total"]) * 1e3, 3)
    record["images_per_s"] = batch / total
    record["ms_per_image"] = total * 1e3 / batch
    if not flops:
        return
    record["tflop"] = flops["total"] * batch / 1e12
    record["achieved_tflops"] = flops["total"] * batch / total / 1e12
    record["stage_tflops"] = {s: flops[s] * batch / med[s] / 1e12 for s in STAGES if med.get(s)}
    dtype_of = {"encode": record["vae_dtype"], "unet": record["unet_dtype"], "decode": record["vae_dtype"]}
    if peaks and all(d in peaks for d in dtype_of.values()):
        floor_s = sum(flops[s] * batch / (peaks[dtype_of[s]] * 1e12) for s in STAGES)
        record["floor_ms"] = floor_s * 1e3
        record["floor_fraction"] = floor_s / total


def run_grid(paths, sizes, batches, device, warmup: int, repeats: int, reference_fn, make_images,
             flops_for, peaks: dict | None, time_invalid: bool = False) -> list[dict]:
    """Time every path at every (size, batch); returns one record per (path, size, batch)."""
    records = []
    for size in sizes:
        flops = flops_for(size)
        for batch in batches:
            images = make_images(batch, size)
            records += run_config(paths, images, device, warmup, repeats, reference_fn, flops, peaks, time_invalid)
    return records


def run_config(paths, images, device, warmup, repeats, reference_fn, flops, peaks,
               time_invalid: bool = False) -> list[dict]:
    """One (size, batch): guard every path, then time the valid ones (all of them with ``time_invalid``)."""
    batch, size = images.shape[0], images.shape[-1]
    reference = reference_fn(images) if reference_fn is not None else None
    records, live = {}, []
    for path in paths:
        rec = {**path.describe(), "size": size, "batch": batch, "warmup": max(1, warmup), "repeats": repeats}
        first = None
        for i in range(max(1, warmup)):
            out, seconds, _ = timed_run(lambda clock: path.run(images, clock), device)
            if first is None:
                first, rec["first_run_ms"] = out, seconds * 1e3
        if reference is None:  # the first path is the fp32 naive pipeline: it is the reference
            reference = first
        rec["guard"] = guard(first, reference, tolerance(path.unet_dtype, path.vae_dtype))
        rec["depth_std"] = float(first.float().std())  # shows the comparison is not between constant maps
        if not rec["guard"]["valid"]:
            log.warning("%s at %d px batch %d disagrees with the reference (max |diff| %.3g > %.3g): %s",
                        path.label, size, batch, rec["guard"]["max_abs_diff"], rec["guard"]["tolerance"],
                        "timed, marked invalid" if time_invalid else "not timed")
        if rec["guard"]["valid"] or time_invalid:
            live.append(path)
        records[path.label] = rec
    samples = {p.label: {"total": [], **{s: [] for s in (*STAGES, "other")}, "cpu": []} for p in live}
    for r in range(repeats):
        shift = r % max(1, len(live))
        for path in live[shift:] + live[:shift]:
            probe = MemoryProbe(device) if r == 0 else None
            if probe:
                probe.start()
            cpu = {}
            _, total, stages = timed_run(lambda clock: path.run(images, clock), device, cpu)
            if probe:
                records[path.label]["memory"] = probe.stop()
            sample = samples[path.label]
            sample["total"].append(total)
            sample["cpu"].append(cpu["s"])
            for s in STAGES:
                sample[s].append(stages.get(s, 0.0))
            sample["other"].append(total - sum(stages.values()))  # pre/post-processing, transfers, overhead
    for path in live:
        rec = records[path.label]
        log.info("%s %d px batch %d: median %.1f ms (max |diff| %.2g)", path.label, size, batch,
                 median(samples[path.label]["total"]) * 1e3, rec["guard"]["max_abs_diff"])
        rec["samples_ms"] = {k: [round(v * 1e3, 3) for v in vals] for k, vals in samples[path.label].items()}
        summarize(rec, samples[path.label], batch, flops, peaks)
    return list(records.values())


def compare(records: list[dict]) -> dict:
    """Throughput of each valid path relative to the naive one, and host / standalone time ratios."""
    speedups, host_ratios = [], []
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["size"], rec["batch"]), []).append(rec)
    for (size, batch), recs in groups.items():
        timed = [r for r in recs if r.get("images_per_s")]  # invalid ones too when --time-invalid timed them
        naive = next((r for r in timed if r["path"] == "naive" and r["guard"]["valid"]), None)
        for rec in timed:
            if naive is not None and rec is not naive and rec["guard"]["valid"]:
                speedups.append({"size": size, "batch": batch, "label": rec["label"],
                                 "vs_naive": rec["images_per_s"] / naive["images_per_s"]})
        for host in (r for r in timed if r["path"] == "host"):
            twin = next((r for r in timed if r["path"] == "standalone" and r["unet_dtype"] == host["unet_dtype"]
                         and r["vae_dtype"] == host["vae_dtype"] and "+" not in r["label"]), None)
            if twin is not None:
                ratio = host["median_ms"]["total"] / twin["median_ms"]["total"]
                host_ratios.append({"size": size, "batch": batch, "host_ms": host["median_ms"]["total"],
                                    "standalone_ms": twin["median_ms"]["total"], "ratio": ratio,
                                    "ratio_min": host["min_ms"] / twin["min_ms"],
                                    "ratio_cpu": host["median_ms"]["cpu"] / twin["median_ms"]["cpu"],
                                    "within_3pct": ratio <= 1.03,
                                    "valid": host["guard"]["valid"] and twin["guard"]["valid"]})
    return {"speedups": speedups, "host_ratios": host_ratios}


# --- large images: tiled VAE --------------------------------------------------------------------------------

def untiled_fits(size: int, vae_config: dict, vae_dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    """Whether an untiled VAE pass at ``size``^2 should fit: the core's estimate (made for SD's 128-channel VAE),
    scaled to this VAE's width, against the share of free memory a run may plan on."""
    width_ratio = vae_config["block_out_channels"][0] / 128
    need = vae_bytes(size, size, 1, vae_dtype) * width_ratio
    free = free_memory(device)
    if free is None:
        return True, "free memory unknown"
    return need <= MEMORY_HEADROOM * free, f"estimated {need / 2**30:.1f} GiB vs {free / 2**30:.1f} GiB free"


def run_large(backbone, vae_config: dict, device, sizes, tiles: TileConfig, untiled: str, make_images,
              flops_for) -> list[dict]:
    """Peak memory and time of one predictor pass at each size, tiled and (where it fits) untiled."""
    out = []
    for size in sizes:
        images = make_images(1, size)
        fits, why = untiled_fits(size, vae_config, backbone.vae_dtype, device)
        modes = [("tiled", tiles)]
        if untiled == "on" or (untiled == "auto" and fits):
            modes.append(("untiled", None))
        rec = {"size": size, "tile_size": tiles.tile_size, "overlap": tiles.overlap, "untiled_estimate": why,
               "unet_dtype": dtype_name(backbone.dtype), "vae_dtype": dtype_name(backbone.vae_dtype)}
        depths = {}
        for name, tile_config in modes:
            path = predictor_path("standalone", name, backbone, backbone.dtype, backbone.vae_dtype,
                                  lambda imgs, t=tile_config: PredictConfig(processing_resolution=size, tiles=t))
            probe = MemoryProbe(device)
            probe.start()
            depth, total, stages = timed_run(lambda clock: path.run(images, clock), device)
            rec[name] = {"memory": probe.stop(), "total_ms": total * 1e3,
                         "stage_ms": {k: v * 1e3 for k, v in stages.items()}}
            depths[name] = depth.cpu()
            log.info("large %d px %s: %.1f s, peak %s MiB", size, name, total, rec[name]["memory"]["peak_mib"])
            del depth
        if "untiled" in depths:
            diff = (depths["tiled"] - depths["untiled"]).abs()
            rec["max_abs_diff"], rec["mean_abs_diff"] = float(diff.max()), float(diff.mean())
        else:
            rec["untiled_skipped"] = f"untiled={untiled}; {why}"
        flops = flops_for(size)
        rec["tflop"] = flops["total"] / 1e12 if flops else None
        out.append(rec)
    return out


# --- video: a long batch of frames ---------------------------------------------------------------------------

def run_video(backbone, device, frames: int, size: int, chunk: int, make_images) -> dict:
    """Frames/s and peak memory for ``frames`` frames of ``size``^2 through the predictor, ``chunk`` per call."""
    images = make_images(frames, size)
    config = PredictConfig(processing_resolution=size, batch_size=chunk)
    path = predictor_path("standalone", "video", backbone, backbone.dtype, backbone.vae_dtype, lambda _: config)
    path.run(images[:chunk], NullClock())  # warm-up on one chunk
    probe = MemoryProbe(device)
    probe.start()
    _, total, stages = timed_run(lambda clock: path.run(images, clock), device)
    return {"frames": frames, "size": size, "chunk": chunk, "total_ms": total * 1e3, "fps": frames / total,
            "ms_per_frame": total * 1e3 / frames, "stage_ms": {k: v * 1e3 for k, v in stages.items()},
            "memory": probe.stop(), "unet_dtype": dtype_name(backbone.dtype),
            "vae_dtype": dtype_name(backbone.vae_dtype)}
