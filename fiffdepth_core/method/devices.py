"""Device and precision choices for entry points (the CLI, evaluation, benchmarks, the WebUI's standalone route).

The core never picks a device or dtype itself: it takes them as arguments (docs/architecture.md). Entry points call
these helpers; the ComfyUI nodes ask ComfyUI's model management instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = ("auto", *DTYPES)  # what a user may ask an entry point for; auto = the host's or the device's choice


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"`device` must be auto, cpu, cuda, cuda:N or mps, got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {name!r} was asked for but this torch build sees no CUDA device")
    return device


def resolve_dtypes(name: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(UNet dtype, VAE dtype). ``auto``: fp32 on the CPU; bf16 where the GPU has it, else fp16 UNet + fp32 VAE.

    The SD VAE overflows in fp16, so an fp16 request keeps the VAE in bf16 (if supported) or fp32.
    """
    if name != "auto" and name not in DTYPES:
        raise ValueError(f"`dtype` must be one of auto, {', '.join(DTYPES)}, got {name!r}")
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if name == "auto":
        if device.type == "cpu":
            return torch.float32, torch.float32
        name = "bf16" if bf16_ok else "fp16"
    unet = DTYPES[name]
    vae = unet if unet != torch.float16 else (torch.bfloat16 if bf16_ok else torch.float32)
    return unet, vae


def free_memory(device: torch.device) -> int | None:
    """Bytes available for tensors on ``device``, or None when it cannot be known (MPS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.is_file():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        try:
            import psutil
        except ImportError:
            return None
        return int(psutil.virtual_memory().available)
    return None
