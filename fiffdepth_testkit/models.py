"""Seeded random-weight models of FiffDepth's shape, and complete checkpoints written from them.

The trainer owns these (``train/random_models.py``: its ``model.random_geometry`` stand-in for Stable Diffusion 2);
tests and benchmarks reuse them from here. ``tiny`` runs in milliseconds on a CPU; ``sd2`` is the full geometry,
for honest timings and real-size training runs. Everything is built from config: nothing is downloaded.
"""

from __future__ import annotations

from train.random_models import (
    GEOMETRIES,
    TINY_TEXT_CONFIG,
    TINY_UNET_CONFIG,
    TINY_VAE_CONFIG,
    geometry_configs,
    random_text_encoder,
    random_unet,
    random_vae,
    write_clip_tokenizer,
    write_random_pipeline,
)

write_minimal_clip_tokenizer = write_clip_tokenizer  # the name the tests use for a small vocabulary

__all__ = ["GEOMETRIES", "TINY_TEXT_CONFIG", "TINY_UNET_CONFIG", "TINY_VAE_CONFIG", "geometry_configs",
           "random_text_encoder", "random_unet", "random_vae", "write_clip_tokenizer", "write_minimal_clip_tokenizer",
           "write_random_pipeline"]
