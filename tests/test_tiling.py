"""Tiled VAE: exact blending maths, agreement with untiled processing, and the automatic choice."""

from __future__ import annotations

import pytest
import torch

from fiffdepth_core.method.planning import choose_tiles, vae_bytes
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.method.tiling import TileConfig, plan_tiles, tiled_decode, tiled_encode
from fiffdepth_testkit.images import seeded_images


@pytest.mark.parametrize("length, tile, overlap, align", [(300, 128, 32, 1), (2048, 1024, 128, 8),
                                                          (4096, 1024, 128, 8), (1000, 256, 64, 8), (37, 16, 4, 1)])
def test_tile_plan_covers_with_overlap_and_no_waste(length, tile, overlap, align):
    size, starts = plan_tiles(length, tile, overlap, align)
    assert size <= tile and starts[0] == 0 and starts[-1] + size == length
    assert all(s % align == 0 for s in starts)
    assert all(b - a <= size - overlap + align - 1 for a, b in zip(starts, starts[1:]))  # overlap kept
    fewest = -(-(length - overlap) // (tile - overlap))
    assert len(starts) == fewest and size * len(starts) < length + len(starts) * (overlap + align)


def test_tile_plan_examples():
    assert plan_tiles(100, 128, 16) == (100, [0])
    assert plan_tiles(2048, 1024, 128, 8) == (768, [0, 640, 1280])  # 3 tiles of 768, not 3 of 1024


def test_blending_a_pointwise_function_is_exact():
    """For a per-pixel 'VAE' (no spatial context) tiling must reproduce the untiled result exactly."""
    x = torch.randn(2, 3, 200, 264)
    down = lambda t: t[:, :, ::8, ::8] * 2.0 + 1.0  # noqa: E731  [B,3,H/8,W/8]
    up = lambda z: z.repeat_interleave(8, -1).repeat_interleave(8, -2) - 3.0  # noqa: E731
    tiles = TileConfig(tile_size=64, overlap=16)
    assert torch.allclose(tiled_encode(down, x, tiles), down(x), atol=1e-6)
    z = torch.randn(2, 4, 25, 33)
    assert torch.allclose(tiled_decode(up, z, tiles), up(z), atol=1e-6)


def test_tiled_prediction_agrees_with_untiled(tiny_backbone):
    """The VAE's GroupNorm and mid-block attention see one tile at a time, so tiled output is not the untiled one.

    A random VAE is the worst case (its features have no spatial locality): on the tiny model at 256x384, three
    seeds, 256 px tiles with 64 px overlap gave mean |diff| 0.036-0.049 (max 0.78-0.92, correlation 0.69-0.76)
    against a depth spread (std) of 0.10; 128 px tiles gave mean 0.08-0.09. Trained VAEs are far more local;
    benchmarks/ reports the difference at full SD2 geometry. The UNet always sees the whole latent.
    """
    images = seeded_images(1, 256, 384, seed=9)
    with torch.inference_mode():
        whole = predict_depth(tiny_backbone, images, PredictConfig(processing_resolution=0))
        tiled = predict_depth(tiny_backbone, images, PredictConfig(
            processing_resolution=0, tiles=TileConfig(tile_size=256, overlap=64)))
    diff = (whole - tiled).abs()
    assert 0 < diff.mean().item() < 0.07
    assert torch.corrcoef(torch.stack([whole.flatten(), tiled.flatten()]))[0, 1] > 0.6


def test_small_images_are_never_tiled(tiny_backbone):
    images = seeded_images(1, 64, 64, seed=1)
    with torch.inference_mode():
        plain = predict_depth(tiny_backbone, images, PredictConfig(processing_resolution=0))
        tiled = predict_depth(tiny_backbone, images, PredictConfig(processing_resolution=0,
                                                                   tiles=TileConfig(tile_size=128, overlap=16)))
    assert torch.equal(plain, tiled)


@pytest.mark.parametrize("kwargs", [{"tile_size": 100}, {"tile_size": 32}, {"overlap": 0}, {"overlap": 600}])
def test_bad_tile_config_names_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TileConfig(**kwargs)


def test_auto_tiling_starts_when_memory_runs_short():
    config = PredictConfig(processing_resolution=0)
    shape = (1, 3, 4096, 4096)
    need = vae_bytes(4096, 4096, 1, torch.float32)
    assert need == 2178 * 4096 * 4096 * 4  # SD VAE decode estimate (the constant ComfyUI uses)
    assert choose_tiles("auto", 1024, shape, config, free_bytes=need * 10, vae_dtype=torch.float32) is None
    tiles = choose_tiles("auto", 1024, shape, config, free_bytes=need // 2, vae_dtype=torch.float32)
    assert tiles == TileConfig(tile_size=1024, overlap=128)
    assert choose_tiles("auto", 1024, shape, config, free_bytes=None, vae_dtype=torch.float32) is None
    assert choose_tiles("off", 1024, shape, config, free_bytes=1, vae_dtype=torch.float32) is None
    assert choose_tiles("on", 1024, (1, 3, 64, 64), config, free_bytes=None, vae_dtype=torch.float32) is not None
    with pytest.raises(ValueError, match="vae_tiling"):
        choose_tiles("sometimes", 1024, shape, config, free_bytes=1, vae_dtype=torch.float32)


def test_memory_check_names_what_is_needed_and_what_to_change():
    from fiffdepth_core.method.planning import InsufficientMemoryError, check_memory, unet_bytes

    config = PredictConfig(processing_resolution=0, batch_size=2)
    shape = (2, 3, 8192, 8192)
    assert unet_bytes(8192, 8192, 1, torch.float16) == int(1024 * 1024 * 0.01 * 2**20 * 2)
    check_memory(shape, config, None, torch.float16, torch.bfloat16)  # unknown free memory: no verdict
    with pytest.raises(InsufficientMemoryError, match=r"8192x8192 pass \(batch 2\) needs about .* GiB is free: lower"):
        check_memory(shape, config, 2**30, torch.float16, torch.bfloat16)
    tiled = PredictConfig(processing_resolution=0, tiles=TileConfig(tile_size=1024, overlap=128))
    check_memory((1, 3, 4096, 4096), tiled, 8 * 2**30, torch.float16, torch.bfloat16)  # tiles make it fit


def test_auto_batch_size_fills_free_memory():
    from fiffdepth_core.method.planning import auto_batch_size, vae_bytes

    config = PredictConfig(processing_resolution=512)
    one = vae_bytes(512, 512, 1, torch.bfloat16)  # the VAE dominates at this size
    assert auto_batch_size((16, 3, 512, 512), config, int(one * 4.1 / 0.8), torch.bfloat16, torch.bfloat16) == 4
    assert auto_batch_size((2, 3, 512, 512), config, 10**15, torch.bfloat16, torch.bfloat16) == 2
    assert auto_batch_size((16, 3, 512, 512), config, None, torch.bfloat16, torch.bfloat16) == 1
    assert auto_batch_size((16, 3, 512, 512), config, 1, torch.bfloat16, torch.bfloat16) == 1
