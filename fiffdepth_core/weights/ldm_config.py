"""Diffusers ``UNet2DConditionModel`` config -> the original LDM ``UNetModel`` arguments.

FiffDepth checkpoints describe their UNet with a diffusers ``config.json``. Hosts that run the UNet on their own
LDM-style classes (ComfyUI's ``comfy.ldm`` UNet, Forge's ``IntegratedUNet2DConditionModel``) need the same geometry
in LDM terms. This translation is pure data (no host imports), shared by every host adapter; each adapter adds
the keys only its own class knows.
"""

from __future__ import annotations

SUPPORTED_DOWN = ("CrossAttnDownBlock2D", "DownBlock2D")
SUPPORTED_UP = ("CrossAttnUpBlock2D", "UpBlock2D")


def _per_level(value, levels: int, name: str) -> list[int]:
    values = [value] * levels if isinstance(value, int) else list(value)
    if len(values) != levels:
        raise ValueError(f"UNet config `{name}` must have {levels} entries, got {values}")
    return values


def _heads(config: dict, channels: list[int]) -> dict:
    """Diffusers' ``attention_head_dim`` is (historically) the head *count*; LDM wants a count or a width."""
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    heads = _per_level(heads, len(channels), "attention_head_dim")
    widths = {c // h for c, h in zip(channels, heads)}
    if len(widths) == 1:
        return {"num_heads": -1, "num_head_channels": widths.pop()}
    if len(set(heads)) == 1:
        return {"num_heads": heads[0], "num_head_channels": -1}
    raise ValueError(f"UNet attention heads {heads} over channels {channels} have neither a constant count nor a "
                     "constant width; the LDM UNet cannot express this")


def _class_embedding(config: dict) -> dict:
    """Diffusers' projection class embedding (Lotus' task switcher) is LDM's sequential ADM embedding."""
    if config.get("addition_embed_type") is not None or config.get("num_class_embeds") is not None:
        raise ValueError(f"UNet conditioning addition_embed_type={config.get('addition_embed_type')!r} / "
                         f"num_class_embeds={config.get('num_class_embeds')!r} is not supported")
    kind = config.get("class_embed_type")
    if kind is None:
        return {"adm_in_channels": None}
    if kind != "projection" or not config.get("projection_class_embeddings_input_dim"):
        raise ValueError(f"UNet class_embed_type {kind!r} is not supported (only 'projection' with "
                         "projection_class_embeddings_input_dim, as in Lotus)")
    return {"num_classes": "sequential", "adm_in_channels": int(config["projection_class_embeddings_input_dim"])}


def ldm_unet_config(config: dict) -> dict:
    """Translate a diffusers ``UNet2DConditionModel`` config (SD2-family blocks) into LDM ``UNetModel`` arguments.

    A projection class embedding (Lotus) becomes the LDM label embedding (``num_classes="sequential"``, its width as
    ``adm_in_channels``), fed through the ADM input ``y``. Raises ValueError naming the config entry when the UNet
    is not expressible as an SD2-family LDM UNet.
    """
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    if any(t not in SUPPORTED_DOWN for t in down) or any(t not in SUPPORTED_UP for t in up):
        raise ValueError(f"UNet blocks {down} / {up} are not SD2-family blocks {SUPPORTED_DOWN} / {SUPPORTED_UP}")
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"UNet mid block {config.get('mid_block_type')!r} is not SD2's UNetMidBlock2DCrossAttn")
    if not config.get("flip_sin_to_cos", True) or config.get("freq_shift", 0) != 0:
        raise ValueError("UNet timestep embedding must be SD2's (flip_sin_to_cos=True, freq_shift=0)")
    channels = list(config["block_out_channels"])
    base, levels = channels[0], len(channels)
    if any(c % base for c in channels):
        raise ValueError(f"UNet block_out_channels {channels} must be multiples of the first")
    layers = _per_level(config.get("layers_per_block", 2), levels, "layers_per_block")
    depth = _per_level(config.get("transformer_layers_per_block", 1), levels, "transformer_layers_per_block")
    transformer_depth, transformer_depth_output = [], []
    for level in range(levels):  # both lists run from the highest-resolution level down
        transformer_depth += [depth[level] if "CrossAttn" in down[level] else 0] * layers[level]
        up_type = up[levels - 1 - level]
        transformer_depth_output += [depth[level] if "CrossAttn" in up_type else 0] * (layers[level] + 1)
    return {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        **_class_embedding(config), "in_channels": config.get("in_channels", 4),
        "out_channels": config.get("out_channels", 4), "model_channels": base, "num_res_blocks": layers,
        "channel_mult": [c // base for c in channels], "transformer_depth": transformer_depth,
        "transformer_depth_output": transformer_depth_output, "transformer_depth_middle": depth[-1],
        "context_dim": config["cross_attention_dim"],
        "use_linear_in_transformer": bool(config.get("use_linear_projection", False)),
        **_heads(config, channels),
    }
