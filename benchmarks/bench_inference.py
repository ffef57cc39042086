"""Speed and memory of FiffDepth inference: the naive official-style pipeline, the standalone predictor and the
ComfyUI host path, per stage and end to end, on random-weight models of the real SD2 geometry.

    python benchmarks/bench_inference.py                  # the size x batch grid (defaults depend on the device)
    python benchmarks/bench_inference.py --quick          # tiny geometry, one small size: under a minute on a CPU
    python benchmarks/bench_inference.py --large          # tiled vs untiled VAE at 2048^2 / 4096^2
    python benchmarks/bench_inference.py --video          # frames/s for a batch of frames
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_inference.py   # adds the host path

Results go to benchmarks/results/ (git-ignored) as JSON and markdown; ``--out`` picks another folder.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: drop benchmarks/ from sys.path, reach the repo root (last, so
    _here = Path(__file__).resolve().parent  # that ComfyUI's root can go first and its `nodes` module wins)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.append(str(_here.parent))

import torch  # noqa: E402

from benchmarks import measure, models, modes, report  # noqa: E402
from benchmarks.paths import DTYPE_NAMES, dtype_name, naive_depth, naive_path, predictor_path  # noqa: E402
from fiffdepth_core.method import DEFAULT_TILE_SIZE, DTYPES, TileConfig, resolve_device, resolve_dtypes  # noqa: E402  # noqa: E402
from fiffdepth_testkit.images import seeded_images  # noqa: E402

log = logging.getLogger("benchmarks")
RESULTS = Path(__file__).resolve().parent / "results"
# (cuda, cpu) defaults; --quick overrides
DEFAULTS = {"sizes": ("512,768,1024", "128,256"), "batches": ("1,4,8", "1,2"), "repeats": (10, 3),
            "warmup": (3, 1), "video_frames": (64, 8), "video_size": (512, 128), "video_chunk": (8, 4)}
QUICK = {"geometry": "tiny", "sizes": "64", "batches": "1", "repeats": 2, "warmup": 1, "large_sizes": "256",
         "tile_size": 128, "tile_overlap": 16, "video_frames": 4, "video_size": 64, "video_chunk": 2}


def ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--grid", action="store_true", help="run the size x batch grid (default when no mode is named)")
    p.add_argument("--large", action="store_true", help="tiled vs untiled VAE at large sizes")
    p.add_argument("--video", action="store_true", help="frames/s for a batch of frames")
    p.add_argument("--quick", action="store_true", help="tiny geometry, one small size, 2 repeats (< 1 min on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--geometry", default=None, choices=("sd2", "tiny"), help="model geometry (default sd2)")
    p.add_argument("--sizes", help="square processing sizes in px (cuda: 512,768,1024; cpu: 128,256)")
    p.add_argument("--batches", help="batch sizes (cuda: 1,4,8; cpu: 1,2)")
    p.add_argument("--repeats", type=int, help="timed rounds per configuration (cuda: 10; cpu: 3)")
    p.add_argument("--warmup", type=int, help="untimed runs per path first, at least 1 (cuda: 3; cpu: 1)")
    p.add_argument("--paths", default="naive,standalone,host",
                   help="paths to time; host needs COMFYUI_PATH (skipped with a note otherwise)")
    p.add_argument("--standalone", default="auto", help="standalone variants: DTYPE[+cl][+compile], comma "
                   "separated; DTYPE is auto (resolve_dtypes), fp32, fp16 or bf16; cl = channels-last modules")
    p.add_argument("--compile-mode", help="torch.compile mode for +compile variants (default, reduce-overhead = "
                   "CUDA graphs, max-autotune, ...)")
    p.add_argument("--naive-dtype", choices=tuple(DTYPES), help="naive pipeline dtype (official: fp16 on GPU; "
                   "default fp16 on cuda, fp32 elsewhere)")
    p.add_argument("--time-invalid", action="store_true",
                   help="also time paths that fail the correctness guard (reported, marked invalid)")
    p.add_argument("--inputs", choices=("cpu", "device"), default="cpu",
                   help="where input images live (cpu: as ComfyUI and file loaders hand them over)")
    p.add_argument("--peak-tflops", type=float, help="device matmul peak for the FLOP floor (default: measured)")
    p.add_argument("--large-sizes", default="2048,4096", help="sizes for --large")
    p.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                   help=f"tile size in px for --large (default {DEFAULT_TILE_SIZE})")
    p.add_argument("--tile-overlap", type=int, default=128, help="tile overlap in px for --large")
    p.add_argument("--untiled", choices=("auto", "on", "off"), default="auto",
                   help="also run untiled in --large (auto: where the core's memory estimate fits)")
    p.add_argument("--video-frames", type=int, help="frames for --video (cuda: 64; cpu: 8)")
    p.add_argument("--video-size", type=int, help="frame size for --video (cuda: 512; cpu: 128)")
    p.add_argument("--video-chunk", type=int, help="frames per model call for --video (cuda: 8; cpu: 4)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="set torch.backends.cudnn.benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS, help=f"output folder (default {RESULTS})")
    p.add_argument("--name", help="file stem for the JSON/markdown (default: from mode, geometry, time)")
    args = p.parse_args(argv)
    args.device = resolve_device(args.device)
    col = 0 if args.device.type == "cuda" else 1
    for key, values in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[col])
    if args.quick:
        given = sys.argv[1:] if argv is None else argv
        explicit = {a.split("=")[0].lstrip("-").replace("-", "_") for a in given if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    args.geometry = args.geometry or "sd2"
    args.sizes, args.batches, args.large_sizes = ints(args.sizes), ints(args.batches), ints(args.large_sizes)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    args.modes = [m for m in ("grid", "large", "video") if getattr(args, m)] or ["grid"]
    args.warmup = max(1, args.warmup)
    if args.naive_dtype is None:
        args.naive_dtype = "fp16" if args.device.type == "cuda" else "fp32"
    return args


def variant_dtypes(spec: str, device: torch.device) -> tuple[torch.dtype, torch.dtype, set[str]]:
    name, *flags = spec.split("+")
    unet, vae = resolve_dtypes(name, device)
    unknown = set(flags) - {"cl", "compile"}
    if unknown:
        raise ValueError(f"`--standalone` flags must be cl or compile, got {sorted(unknown)} in {spec!r}")
    return unet, vae, set(flags)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device.type.upper()} {cpu} ({os.cpu_count()} cores)"


def build_paths(args, weights, host_modules) -> tuple[list, dict]:
    """The timed paths, naive first; notes on what was skipped."""
    device, notes, paths = args.device, {}, []
    if "naive" in args.paths:
        dt = DTYPES[args.naive_dtype]
        unet, vae = weights.modules(device, dt, dt)
        paths.append(naive_path(unet, vae, weights.embed))
    if "standalone" in args.paths:
        for spec in args.standalone.split(","):
            unet_dt, vae_dt, flags = variant_dtypes(spec.strip(), device)
            backbone = models.standalone_backbone(weights, device, unet_dt, vae_dt, "cl" in flags, "compile" in flags,
                                                  args.compile_mode)
            label = "standalone " + dtype_name(unet_dt) + (f"/{dtype_name(vae_dt)}" if vae_dt != unet_dt else "")
            label += "".join(f"+{f}" for f in sorted(flags))
            paths.append(predictor_path("standalone", label, backbone, unet_dt, vae_dt))
    if "host" in args.paths:
        if host_modules is None:
            notes["host_skipped"] = notes.get("host_skipped", "COMFYUI_PATH is not set")
        else:
            unet_dt, vae_dt = resolve_dtypes("auto", device)
            backbone = models.host_backbone(host_modules, weights, unet_dt, vae_dt)
            label = "host " + dtype_name(unet_dt) + (f"/{dtype_name(vae_dt)}" if vae_dt != unet_dt else "")
            paths.append(predictor_path("host", label, backbone, unet_dt, vae_dt))
    return paths, notes


def reference_fn(args, weights, paths):
    """The fp32 naive pipeline, the guard's reference; None when the first path already is exactly that."""
    if paths and paths[0].name == "naive" and paths[0].unet_dtype == torch.float32:
        return None
    unet, vae = weights.modules(args.device, torch.float32, torch.float32)

    def reference(images):
        parts = [naive_depth(unet, vae, weights.embed, images[i:i + 2], max(images.shape[-2:]), measure.NullClock())
                 for i in range(0, images.shape[0], 2)]
        return torch.cat(parts)

    return reference


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = parse_args(argv)
    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cudnn_benchmark and args.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    host_modules, host_error = None, None
    if "grid" in args.modes and "host" in args.paths and models.comfyui_path():
        try:  # first, so that every path runs under whatever global state ComfyUI sets
            host_modules = models.import_comfy(args.device)
        except Exception as err:  # a broken ComfyUI must not stop the other paths
            host_error = f"ComfyUI import failed: {type(err).__name__}: {err}"
            log.exception("ComfyUI import failed")
    log.info("building %s models (random weights, seed %d)", args.geometry, args.seed)
    weights = models.build_weights(args.geometry, args.seed)
    flops_cache: dict[int, dict] = {}

    def flops_for(size: int) -> dict:
        if size not in flops_cache:
            flops_cache[size] = measure.count_flops(weights.unet_config, weights.vae_config, size, size)
        return flops_cache[size]

    def make_images(batch: int, size: int) -> torch.Tensor:
        images = seeded_images(batch, size, size, seed=args.seed)
        return images.to(args.device) if args.inputs == "device" else images

    command = "python benchmarks/bench_inference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict = {"meta": {
        "command": command.strip(), "argv": list(sys.argv[1:] if argv is None else argv), "modes": args.modes,
        "geometry": args.geometry, "device": str(args.device), "device_name": device_name(args.device),
        "torch": torch.__version__, "diffusers": _version("diffusers"), "python": platform.python_version(),
        "threads": torch.get_num_threads(), "inputs_on": args.inputs, "repeats": args.repeats, "warmup": args.warmup,
        "comfyui": (f"{models.comfy_version()} at {models.comfyui_path()}" if host_modules else None),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_start": _load(),
        "method_tflop_512": report.METHOD_TFLOP_512,
        "tolerances": {n: _tol(d) for d, n in DTYPE_NAMES.items() if d != torch.float64}}}
    dtypes_used = {args.naive_dtype} | {dtype_name(d) for s in ["auto", *args.standalone.split(",")]
                                        for d in variant_dtypes(s.strip(), args.device)[:2]}  # auto: the host's
    if args.peak_tflops:
        peaks, source = {d: args.peak_tflops for d in dtypes_used}, "given with --peak-tflops"
    else:
        peaks = {d: measure.matmul_tflops(args.device, DTYPES[d]) for d in sorted(dtypes_used)}
        source = "measured: best of 5 square matmuls on this device"
    results["meta"].update(peak_tflops=peaks, peak_source=source,
                           memory_method=_memory_method(args.device))

    if "grid" in args.modes:
        paths, notes = build_paths(args, weights, host_modules)
        if host_error:
            notes["host_skipped"] = host_error
        results.update(notes)
        records = modes.run_grid(paths, args.sizes, args.batches, args.device, args.warmup, args.repeats,
                                 reference_fn(args, weights, paths), make_images, flops_for, peaks,
                                 args.time_invalid)
        results["grid"] = records
        results["comparisons"] = modes.compare(records)
        results["flops"] = {f"{s}x{s}": flops_for(s) for s in sorted(set(args.sizes) | {512})}
    if "large" in args.modes or "video" in args.modes:
        unet_dt, vae_dt, _ = variant_dtypes(args.standalone.split(",")[0].split("+")[0], args.device)
        backbone = models.standalone_backbone(weights, args.device, unet_dt, vae_dt)
        if "large" in args.modes:
            tiles = TileConfig(tile_size=args.tile_size, overlap=args.tile_overlap)
            results["large"] = modes.run_large(backbone, weights.vae_config, args.device, args.large_sizes, tiles,
                                               args.untiled, make_images, flops_for)
        if "video" in args.modes:
            results["video"] = modes.run_video(backbone, args.device, args.video_frames, args.video_size,
                                               args.video_chunk, make_images)
    results["meta"]["wall_s"] = round(time.time() - started, 1)
    results["meta"]["load_end"] = _load()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = args.name or f"bench_{'+'.join(args.modes)}_{args.geometry}_{args.device.type}_{stamp}"
    json_path, md_path = report.write(results, args.out, stem)
    log.info("wrote %s and %s", json_path, md_path)
    results["files"] = {"json": str(json_path), "markdown": str(md_path)}
    return results


def _load() -> float | None:
    """The 1-minute load average: CPU timings mean little when other processes share the cores."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _tol(dtype: torch.dtype) -> float:
    from benchmarks.paths import tolerance

    return tolerance(dtype)


def _memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA max_memory_allocated per configuration (peak reset before each)"
    return "process peak RSS (VmHWM), reset through /proc/self/clear_refs before each configuration"


if __name__ == "__main__":
    out = main()
    print(Path(out["files"]["markdown"]).read_text())
