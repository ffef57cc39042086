"""The shared diffusers -> LDM UNet config translation (ComfyUI's loader and the Forge backbone both use it)."""

from __future__ import annotations

import copy

import pytest

from fiffdepth_core.weights.ldm_config import ldm_unet_config
from fiffdepth_core.weights.sd2_configs import SD2_UNET_CONFIG
from fiffdepth_testkit.models import TINY_UNET_CONFIG

# ComfyUI's own detection result for SD 2.x UNets (comfy/model_detection.py, `SD21`), without its dtype and
# ComfyUI-only keys: the known answer for the SD2 geometry.
SD21_LDM = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
            "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
            "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 1024,
            "num_head_channels": 64, "num_heads": -1,
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}


def test_sd2_geometry_matches_comfyui_detection():
    assert ldm_unet_config(SD2_UNET_CONFIG) == SD21_LDM


def test_sd15_style_constant_head_count():
    config = copy.deepcopy(SD2_UNET_CONFIG)
    config.update(attention_head_dim=8, cross_attention_dim=768, use_linear_projection=False)
    out = ldm_unet_config(config)
    assert (out["num_heads"], out["num_head_channels"]) == (8, -1)  # SD15: 8 heads at every level
    assert out["context_dim"] == 768 and out["use_linear_in_transformer"] is False


def test_tiny_geometry_by_hand():
    # Two levels: [CrossAttnDown, Down] with 1 layer each; up blocks [Up, CrossAttnUp] mirror them.
    out = ldm_unet_config(TINY_UNET_CONFIG)
    assert out["model_channels"] == 32 and out["channel_mult"] == [1, 2] and out["num_res_blocks"] == [1, 1]
    assert out["transformer_depth"] == [1, 0]  # one layer per level, cross-attention on level 0 only
    assert out["transformer_depth_output"] == [1, 1, 0, 0]  # layers + 1 per level on the way up
    assert (out["num_heads"], out["num_head_channels"]) == (2, -1)  # 32/2 != 64/2: constant count, not width
    assert out["transformer_depth_middle"] == 1 and out["context_dim"] == 32


def test_projection_class_embedding_and_concatenated_input():
    """Lotus' task switcher (a projection class embedding of 4 numbers) is LDM's sequential ADM input; E2E-FT's
    8-channel input is just in_channels."""
    lotus = {**copy.deepcopy(SD2_UNET_CONFIG), "class_embed_type": "projection",
             "projection_class_embeddings_input_dim": 4}
    out = ldm_unet_config(lotus)
    assert (out["num_classes"], out["adm_in_channels"]) == ("sequential", 4)
    assert ldm_unet_config({**copy.deepcopy(SD2_UNET_CONFIG), "in_channels": 8})["in_channels"] == 8
    assert "num_classes" not in ldm_unet_config(SD2_UNET_CONFIG)


@pytest.mark.parametrize("change, message", [
    ({"class_embed_type": "timestep"}, "class_embed_type 'timestep' is not supported"),
    ({"addition_embed_type": "text_time"}, "addition_embed_type='text_time'"),
    ({"down_block_types": ["CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"]}, "SD2-family blocks"),
    ({"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}, "mid block"),
    ({"freq_shift": 1}, "timestep embedding"),
    ({"block_out_channels": [32, 48]}, "multiples of the first"),
    ({"layers_per_block": [1, 1, 1]}, "layers_per_block"),
    ({"attention_head_dim": [2, 3]}, "neither a constant count nor a constant width"),
])
def test_refuses_what_ldm_cannot_express(change, message):
    config = {**copy.deepcopy(TINY_UNET_CONFIG), **change}
    with pytest.raises(ValueError, match=message):
        ldm_unet_config(config)
