"""Tiled VAE encode/decode with feathered blending, for images too large to pass through the VAE at once.

Only the VAE is tiled: the UNet still sees the whole latent, so depth stays globally consistent. Tiles overlap
by ``overlap`` pixels and are blended with linear ramps across each overlap; image borders get full weight.
The VAE's GroupNorm and mid-block attention see one tile at a time, so tiled output differs slightly from
untiled output (tests/test_tiling.py bounds the difference on the tiny model; benchmarks/ measures full size).

Shape letters: B batch, H x W pixels (multiples of 8), h x w latent cells (H/8 x W/8).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

VAE_FACTOR = 8  # SD VAEs downsample by 8
DEFAULT_TILE_SIZE = 1024  # px; with the default overlap of 128 px


@dataclass(frozen=True)
class TileConfig:
    """Tile geometry in pixels. ``tile_size`` and ``overlap`` are multiples of 8, overlap < tile_size / 2."""

    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = 128

    def __post_init__(self):
        for name in ("tile_size", "overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value % VAE_FACTOR:
                raise ValueError(f"`{name}` must be an integer multiple of {VAE_FACTOR}, got {value!r}")
        if self.tile_size < 64:
            raise ValueError(f"`tile_size` must be at least 64 px, got {self.tile_size}")
        if not 0 < self.overlap <= self.tile_size // 2:
            raise ValueError(f"`overlap` must be between 8 and tile_size/2 = {self.tile_size // 2}, got {self.overlap}")

    @classmethod
    def for_size(cls, tile_size: int) -> "TileConfig":
        """Tiles of ``tile_size`` px overlapping by an eighth of that (rounded to 8 px)."""
        return cls(tile_size=tile_size, overlap=max(VAE_FACTOR, tile_size // 64 * 8))

    def applies(self, size: tuple[int, int]) -> bool:
        """Whether an image of ``size`` = (H, W) pixels needs more than one tile."""
        return max(size) > self.tile_size


def plan_tiles(length: int, tile: int, overlap: int, align: int = 1) -> tuple[int, list[int]]:
    """(tile length, start offsets) covering ``[0, length)`` with as few tiles of at most ``tile`` as overlap
    ``overlap`` allows, each shrunk to the same size so that no more area than needed goes through the VAE
    (1024 px tiles on 2048 px: 3 tiles of 736 px, not 3 of 1024). Starts are multiples of ``align``."""
    if length <= tile:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, -(-math.ceil((length + (count - 1) * overlap) / count) // align) * align)
    stride = (length - size) / (count - 1)
    starts = [int(i * stride) // align * align for i in range(count - 1)] + [length - size]
    return size, starts


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool, device) -> torch.Tensor:
    """1-D blend weights: linear ramps over ``overlap`` cells at the sides that meet a neighbour."""
    w = torch.ones(length, device=device)
    ramp = (torch.arange(overlap, device=device, dtype=torch.float32) + 0.5) / overlap  # (0,1)
    if ramp_start:
        w[:overlap] = torch.minimum(w[:overlap], ramp)
    if ramp_end:
        w[length - overlap:] = torch.minimum(w[length - overlap:], ramp.flip(0))
    return w


def _blend(run: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor, tile: int, overlap: int,
           scale_out: float) -> torch.Tensor:
    """Run ``run`` on overlapping tiles of ``source`` ``[B,C,S1,S2]`` and blend the outputs.

    ``tile`` and ``overlap`` are in source cells; outputs are ``scale_out`` times larger per side.
    """
    batch, _, size_h, size_w = source.shape
    out_h, out_w = round(size_h * scale_out), round(size_w * scale_out)
    acc = None  # [B,C',S1*s,S2*s], allocated once the first tile tells C'
    weight = torch.zeros((1, 1, out_h, out_w), dtype=torch.float32, device=source.device)
    align = VAE_FACTOR if scale_out < 1 else 1  # pixel tiles start on latent cells
    tile_h, starts_h = plan_tiles(size_h, tile, overlap, align)
    tile_w, starts_w = plan_tiles(size_w, tile, overlap, align)
    o_out = round(overlap * scale_out)
    for y in starts_h:
        for x in starts_w:
            piece = source[:, :, y:y + tile_h, x:x + tile_w]  # [B,C,th,tw]
            result = run(piece).float().to(source.device)  # [B,C',t*s,t*s]
            rh, rw = result.shape[-2:]
            oy, ox = round(y * scale_out), round(x * scale_out)
            wy = _ramp(rh, min(o_out, rh), y > 0, y + tile_h < size_h, source.device)
            wx = _ramp(rw, min(o_out, rw), x > 0, x + tile_w < size_w, source.device)
            w = (wy[:, None] * wx[None, :])[None, None]  # [1,1,t*s,t*s]
            if acc is None:
                acc = torch.zeros((batch, result.shape[1], out_h, out_w), dtype=torch.float32, device=source.device)
            acc[:, :, oy:oy + rh, ox:ox + rw] += result * w
            weight[:, :, oy:oy + rh, ox:ox + rw] += w
    return acc / weight  # [B,C',S1*s,S2*s]


def tiled_encode(encode: Callable[[torch.Tensor], torch.Tensor], rgb: torch.Tensor,
                 tiles: TileConfig) -> torch.Tensor:
    """``encode`` (a backbone verb) over overlapping pixel tiles of ``rgb`` ``[B,3,H,W]`` -> ``[B,4,h,w]``."""
    return _blend(encode, rgb, tiles.tile_size, tiles.overlap, 1.0 / VAE_FACTOR)


def tiled_decode(decode: Callable[[torch.Tensor], torch.Tensor], latent: torch.Tensor,
                 tiles: TileConfig) -> torch.Tensor:
    """``decode`` (a backbone verb) over overlapping latent tiles of ``[B,4,h,w]`` -> ``[B,3,H,W]``."""
    return _blend(decode, latent, tiles.tile_size // VAE_FACTOR, tiles.overlap // VAE_FACTOR, float(VAE_FACTOR))
