"""Timing, memory and FLOP measurement for the benchmark harness.

* :class:`StageClock` times named stages inside one run: CUDA events on a GPU (no synchronisation inside the run,
  so the end-to-end time is not disturbed), ``perf_counter`` elsewhere.
* :class:`MemoryProbe` gives the peak memory of one run: ``max_memory_allocated`` on CUDA, the kernel's peak RSS
  (VmHWM, reset through ``/proc/self/clear_refs``) on the CPU.
* :func:`count_flops` counts FLOPs per stage with ``FlopCounterMode`` on meta-device models (no compute, no memory).
* :func:`matmul_tflops` measures the device's dense matrix rate, the yardstick of the FLOP floor.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

STAGES = ("encode", "unet", "decode")
MIB = 2**20


def sync(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class StageClock:
    """Accumulates the time spent in named stages of one run; read :meth:`totals` after the run."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.marks: list[tuple[str, object, object]] = []

    @contextmanager
    def stage(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            sync(self.device)  # MPS: no events here; CPU: free
            start = time.perf_counter()
            yield
            sync(self.device)
            end = time.perf_counter()
        self.marks.append((name, start, end))

    def totals(self) -> dict[str, float]:
        """Seconds per stage name (summed over calls, e.g. over tiles or batch chunks)."""
        if self.cuda:
            sync(self.device)
        out: dict[str, float] = {}
        for name, start, end in self.marks:
            seconds = start.elapsed_time(end) / 1000.0 if self.cuda else end - start
            out[name] = out.get(name, 0.0) + seconds
        return out


class NullClock:
    """A clock that measures nothing (for runs whose stages are not of interest)."""

    @contextmanager
    def stage(self, name: str):
        yield


def timed_run(fn, device: torch.device, cpu_time: dict | None = None) -> tuple[object, float, dict[str, float]]:
    """Run ``fn(clock)`` once: (its output, end-to-end seconds, seconds per stage).

    ``cpu_time["s"]``, when given, receives the process CPU time of the run: with one torch thread it equals the
    wall time on an idle machine and, unlike it, does not grow while other processes hold the cores.
    """
    clock = StageClock(device)
    sync(device)
    cpu_start, start = time.process_time(), time.perf_counter()
    out = fn(clock)
    sync(device)
    total = time.perf_counter() - start
    if cpu_time is not None:
        cpu_time["s"] = time.process_time() - cpu_start
    return out, total, clock.totals()


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- memory -------------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    """Hand freed heap pages back to the kernel so the next run's RSS baseline is honest (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class MemoryProbe:
    """Peak memory of the code run between :meth:`start` and :meth:`stop`, in MiB.

    ``peak_mib`` is the absolute peak (weights included), ``delta_mib`` the peak minus what was in use at
    :meth:`start` (activations and workspaces of that run). ``method`` says what was measured.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0
        self.method = ""

    def start(self) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return
        _malloc_trim()
        if _reset_peak_rss():
            self.method = "peak RSS (VmHWM reset via /proc/self/clear_refs)"
        else:
            self.method = "peak RSS since process start (VmHWM could not be reset: not per configuration)"
        self.base = (_status_kib("VmRSS") or 0) * 1024

    def stop(self) -> dict:
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = (_status_kib("VmHWM") or 0) * 1024
        return {"peak_mib": round(peak / MIB, 1), "base_mib": round(self.base / MIB, 1),
                "delta_mib": round(max(0, peak - self.base) / MIB, 1), "method": self.method}


# --- FLOPs --------------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _meta_models(unet_json: str, vae_json: str):
    import json

    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**json.loads(unet_json)).eval(), AutoencoderKL(**json.loads(vae_json)).eval()


def count_flops(unet_config: dict, vae_config: dict, height: int, width: int, tokens: int = 2) -> dict[str, int]:
    """FLOPs (multiply-add = 2) per image and stage of one FiffDepth pass at ``height`` x ``width`` pixels.

    Runs the models on the meta device under ``FlopCounterMode``: shapes only, no arithmetic. Attention is
    counted through the math decomposition (bmm) that SDPA takes on meta tensors.
    """
    import json

    from torch.utils.flop_counter import FlopCounterMode

    unet, vae = _meta_models(json.dumps(unet_config, sort_keys=True), json.dumps(vae_config, sort_keys=True))
    meta = torch.device("meta")
    rgb = torch.empty(1, 3, height, width, device=meta)  # [1,3,H,W]
    latent = torch.empty(1, vae_config.get("latent_channels", 4), height // 8, width // 8, device=meta)  # [1,4,h,w]
    context = torch.empty(1, tokens, unet_config["cross_attention_dim"], device=meta)  # [1,T,D]
    timestep = torch.zeros(1, dtype=torch.long, device=meta)
    stages = {
        "encode": lambda: vae.quant_conv(vae.encoder(rgb)),
        "unet": lambda: unet(latent, timestep, encoder_hidden_states=context).sample,
        "decode": lambda: vae.decoder(vae.post_quant_conv(latent)),
    }
    out = {}
    with torch.no_grad():
        for name, fn in stages.items():
            with FlopCounterMode(display=False) as counter:
                fn()
            out[name] = int(counter.get_total_flops())
    out["total"] = sum(out[s] for s in STAGES)
    return out


def matmul_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Measured dense matmul rate (TFLOP/s) of ``device`` in ``dtype``: the attainable peak for the floor."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e12
