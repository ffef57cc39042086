"""Stable Diffusion 2's model geometry: the diffusers configs of ``stabilityai/stable-diffusion-2``.

The checkpoint loader falls back on these when single files carry no config of their own; random-weight models of
this geometry (real-size training runs, benchmarks) are built by the trainer (``train/random_models.py``), not here.
"""

from __future__ import annotations

SD2_UNET_CONFIG = {
    "sample_size": 96,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
}

SD2_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "act_fn": "silu",
}

SD2_TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 512,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
