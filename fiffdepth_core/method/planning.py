"""Run planning before any work: memory estimates, VAE tiling, automatic batch size, and the memory check.

The CLI, the ComfyUI node and the WebUI make these choices the same way, each from a free-memory figure it measures
itself (``fiffdepth_core.method.devices.free_memory``, or the host's own).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..fileio.headers import ImageHeader
from .image import processing_size
from .tiling import DEFAULT_TILE_SIZE, TileConfig

log = logging.getLogger(__name__)

# Peak VAE activation bytes per pixel per image, per byte of dtype, for SD's 128-channel VAE (the constants
# ComfyUI's model management uses; they overestimate smaller VAEs, which only makes tiling start earlier).
VAE_ENCODE_BYTES_PER_PIXEL = 1767
VAE_DECODE_BYTES_PER_PIXEL = 2178
# SD2 UNet activations per latent cell per byte of dtype (ComfyUI's estimate with memory-efficient attention).
UNET_BYTES_PER_LATENT_CELL = 0.01 * 2**20
# Share of the free memory a plan (VAE tiles, automatic batch size) may use: the estimates are rough, and the host
# and allocator need room too. check_memory refuses a run only when it cannot fit in all of the free memory.
MEMORY_HEADROOM = 0.8


class InsufficientMemoryError(MemoryError):
    """A run would not fit in the memory available: ``value`` says how much it needs and has, ``allowed`` what to
    change; the message is both."""

    def __init__(self, value: str, allowed: str):
        self.value, self.allowed = value, allowed
        super().__init__(f"{value}: {allowed}")


def vae_bytes(height: int, width: int, batch: int, dtype: torch.dtype) -> int:
    """Estimated peak VAE memory for a ``batch`` of padded ``height`` x ``width`` images."""
    per_pixel = max(VAE_ENCODE_BYTES_PER_PIXEL, VAE_DECODE_BYTES_PER_PIXEL)
    return per_pixel * height * width * batch * torch.finfo(dtype).bits // 8


def unet_bytes(height: int, width: int, batch: int, dtype: torch.dtype) -> int:
    """Estimated UNet activation memory for a ``batch`` of padded ``height`` x ``width`` images (whole latent)."""
    cells = (height // 8) * (width // 8) * batch
    return int(cells * UNET_BYTES_PER_LATENT_CELL * torch.finfo(dtype).bits // 8)


def padded_size(batch_shape, config) -> tuple[int, int]:
    """The size the model sees for images of ``batch_shape`` under ``config`` (resized, padded)."""
    height, width = processing_size(batch_shape[-2], batch_shape[-1], config.processing_resolution)
    multiple = config.pad_multiple
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def choose_tiles(mode: str, tile_size: int, batch_shape, config, free_bytes: int | None,
                 vae_dtype: torch.dtype) -> TileConfig | None:
    """Tiles for ``mode`` on/off/auto. ``auto`` tiles when the untiled VAE would need more than ``MEMORY_HEADROOM``
    of ``free_bytes`` (the caller's measure of free memory on the VAE's device; None = unknown, no tiling)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"`vae_tiling` must be auto, on or off, got {mode!r}")
    if mode == "off":
        return None
    tiles = TileConfig.for_size(tile_size)
    if mode == "on":
        return tiles
    height, width = padded_size(batch_shape, config)
    need = vae_bytes(height, width, min(config.batch_size, batch_shape[0]), vae_dtype)
    if free_bytes is None or need <= MEMORY_HEADROOM * free_bytes or not tiles.applies((height, width)):
        return None
    log.info("VAE needs about %.1f GiB for %dx%d but %.1f GiB is free: using %d px tiles",
             need / 2**30, height, width, free_bytes / 2**30, tile_size)
    return tiles


def check_memory(batch_shape, config, free_bytes: int | None, unet_dtype: torch.dtype,
                 vae_dtype: torch.dtype) -> None:
    """Refuse, before any work, a run whose estimated peak exceeds ``free_bytes`` (None: cannot know, pass).

    The VAE part is the largest tile's when ``config.tiles`` applies; the UNet always sees the whole latent.
    """
    if free_bytes is None:
        return
    height, width = padded_size(batch_shape, config)
    batch = min(config.batch_size, batch_shape[0])
    tiles = config.tiles
    vae_h, vae_w = (min(height, tiles.tile_size), min(width, tiles.tile_size)) if tiles else (height, width)
    need_vae, need_unet = vae_bytes(vae_h, vae_w, batch, vae_dtype), unet_bytes(height, width, batch, unet_dtype)
    # The input itself: a float32 RGB copy at full resolution on the device, and the depth map returned there.
    need_input = batch * 4 * batch_shape[-2] * batch_shape[-1] * 4
    if max(need_vae, need_unet) + need_input <= free_bytes:
        return
    advice = "lower the processing resolution"
    if tiles is None and need_vae >= need_unet:
        advice += " or turn VAE tiling on"
    if batch > 1:
        advice += f" or use a batch size below {batch}"
    raise InsufficientMemoryError(
        f"a {width}x{height} pass (batch {batch}) needs about {(max(need_vae, need_unet) + need_input) / 2**30:.1f} "
        f"GiB (VAE {need_vae / 2**30:.1f} GiB, UNet {need_unet / 2**30:.1f} GiB, input {need_input / 2**30:.1f} GiB) "
        f"but {free_bytes / 2**30:.1f} GiB is free", advice)


def auto_batch_size(batch_shape, config, free_bytes: int | None, unet_dtype: torch.dtype, vae_dtype: torch.dtype,
                    limit: int = 64) -> int:
    """The largest batch (at most the number of images and ``limit``) whose estimated peak fits in
    ``MEMORY_HEADROOM`` of ``free_bytes``; 1 when free memory is unknown."""
    if free_bytes is None:
        return 1
    height, width = padded_size(batch_shape, config)
    tiles = config.tiles
    vae_h, vae_w = (min(height, tiles.tile_size), min(width, tiles.tile_size)) if tiles else (height, width)
    best = 1
    for batch in range(1, min(batch_shape[0], limit) + 1):
        need = max(vae_bytes(vae_h, vae_w, batch, vae_dtype), unet_bytes(height, width, batch, unet_dtype))
        if need > MEMORY_HEADROOM * free_bytes:
            break
        best = batch
    return best


def plan_config(config, batch_shape, free_bytes: int | None, unet_dtype: torch.dtype, vae_dtype: torch.dtype,
                vae_tiling: str = "auto", tile_size: int = DEFAULT_TILE_SIZE, auto_batch: bool = False):
    """``config`` with VAE tiles chosen for ``vae_tiling`` and, if ``auto_batch``, the batch size that fits
    ``free_bytes``: the run-time choices the CLI and the ComfyUI node make the same way."""
    config = replace(config, tiles=choose_tiles(vae_tiling, tile_size, batch_shape, config, free_bytes, vae_dtype))
    if auto_batch:
        config = replace(config, batch_size=auto_batch_size(batch_shape, config, free_bytes, unet_dtype, vae_dtype))
    return config


def check_decode(header: ImageHeader, free_bytes: int | None, what) -> None:
    """Refuse to decode an image whose decoded arrays alone would not fit in ``free_bytes`` (None: unknown)."""
    need = header.decode_bytes()
    if free_bytes is not None and need > free_bytes:
        raise InsufficientMemoryError(
            f"{what}: decoding this {header.width}x{header.height} image needs about {need / 2**30:.1f} GiB of "
            f"memory but {free_bytes / 2**30:.1f} GiB is free", "downscale it first or free memory")
