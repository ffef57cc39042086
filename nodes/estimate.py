"""FiffDepthEstimate: one FiffDepth pass on the host's own MODEL and VAE -> ControlNet depth + raw depth."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..fiffdepth_core.method import (
    DEFAULT_PROCESSING_RESOLUTION,
    DEFAULT_TILE_SIZE,
    MAX_PROCESSING_RESOLUTION,
    NORMALIZATIONS,
    PASSES,
    TEMPORAL_MODES,
    PredictConfig,
    controlnet_depth,
    plan_config,
    predict_aligned,
    predict_depth,
)
from . import compat
from .host_backbone import HostBackbone, conditioning_tensor


def empty_prompt_context(model, conditioning=None, clip=None):
    """The unpadded empty-prompt embedding ``[1,T,D]`` from a CONDITIONING or, failing that, an SD2 CLIP."""
    width = model.model.model_config.unet_config.get("context_dim")
    if conditioning is not None:
        context = conditioning_tensor(conditioning)
        if context.ndim != 3 or context.shape[0] != 1 or context.shape[1] >= 77:
            raise ValueError(
                f"`conditioning` must be the unpadded empty-prompt embedding [1,2,{width}] (FiffDepthLoader's "
                f"CONDITIONING or core's LotusConditioning), got shape {tuple(context.shape)}; a 77-token "
                "CLIPTextEncode output changes the model's input: connect the CLIP to `clip` instead")
    elif clip is not None:
        clip = clip.clone()
        clip.layer_idx = None  # the SD2 default (penultimate layer), whatever CLIPSetLastLayer chose upstream
        context = clip.encode_from_tokens(clip.tokenize(""))[:, :2]  # causal encoder: BOS and EOS never see padding
    else:
        raise ValueError("FiffDepthEstimate needs the empty-prompt embedding: connect `conditioning` "
                         "(FiffDepthLoader or LotusConditioning) or an SD2 `clip`")
    if context.shape[-1] != width:
        raise ValueError(f"the empty-prompt embedding has width {context.shape[-1]}, but this UNet's cross-attention "
                         f"expects {width} (is the CLIP an SD2 OpenCLIP-H text encoder?)")
    return context


class FiffDepthEstimate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FiffDepthEstimate",
            display_name="FiffDepth Estimate",
            category=compat.CATEGORY,
            **compat.schema_extras(io.Schema, compat.SEARCH_ALIASES + [
                "controlnet depth", "depth map", "depth estimation", "monocular depth", "video depth", "zdepth"]),
            description="FiffDepth monocular depth in one deterministic UNet pass (t=0) on the connected MODEL and "
                        "VAE. `controlnet` is ready for depth ControlNets (near = white, robustly normalised, input "
                        "size); `depth` is the raw affine-invariant depth in [0,1] (0 = near) for 3D/VFX.",
            inputs=[
                io.Model.Input("model", tooltip="FiffDepth UNet (FiffDepthLoader, or UNETLoader on a FiffDepth UNet)"),
                io.Vae.Input("vae", tooltip="The SD2 VAE the model was trained with"),
                io.Image.Input("image", tooltip="Images (a batch of video frames works too)"),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Empty-prompt embedding [1,2,D]: FiffDepthLoader's output or "
                                              "LotusConditioning. Not a 77-token CLIPTextEncode."),
                io.Clip.Input("clip", optional=True, tooltip="Alternative to `conditioning`: an SD2 CLIP "
                                                             "(the empty prompt is encoded exactly, unpadded)"),
                io.Int.Input("processing_resolution", default=DEFAULT_PROCESSING_RESOLUTION, min=0,
                             max=MAX_PROCESSING_RESOLUTION, step=8,
                             tooltip="Long edge the model sees, in px; aspect ratio kept, output returned at the "
                                     "input size. 0 = native size."),
                io.Int.Input("batch_size", default=1, min=0, max=256,
                             tooltip="Images per model call; 0 = as many as fit in free memory"),
                io.Combo.Input("depth_pass", options=list(PASSES), default="detailed", display_name="pass",
                               tooltip="detailed: t=0, the paper's output. filtered: an extra t=-1 pass, smoother "
                                       "low-frequency depth"),
                io.Combo.Input("normalization", options=list(NORMALIZATIONS), default="per_image",
                               tooltip="ControlNet output: per image, or over the whole batch (no flicker in video)"),
                io.Combo.Input("vae_tiling", options=["auto", "on", "off"], default="auto",
                               tooltip="Tiled VAE for images too large for memory (the UNet always sees the whole "
                                       "image). auto: only when needed"),
                io.Combo.Input("temporal", options=list(TEMPORAL_MODES), default="off", optional=True,
                               tooltip="Video: align treats the batch as consecutive frames (exposure flicker "
                                       "levelled and the noise of still areas averaged out before the model) and "
                                       "maps each frame's depth onto a running reference (robust scale and shift; "
                                       "a scene cut in the pictures restarts it), then rescales the whole clip to "
                                       "[0,1], so depth no longer flickers. stabilize: align, then average each "
                                       "point's small noise-level changes over time, following it along the optical "
                                       "flow of the frames, while larger ones (motion) pass at once: the steadiest "
                                       "video depth. Use with normalization whole_batch. off: each image's own depth "
                                       "(optional, so prompts saved before it existed still run)"),
            ],
            outputs=[
                io.Image.Output(display_name="controlnet", tooltip="3-channel, near = white, for depth ControlNets"),
                io.Mask.Output(display_name="depth",
                               tooltip="Raw depth [B,H,W] float32 in [0,1], 0 = near. With temporal align or stabilize: "
                                       "the clip's depth in one common scale, 0 = its nearest point, 1 = its farthest"),
            ],
        )

    @classmethod
    def execute(cls, model, vae, image, conditioning=None, clip=None, processing_resolution=DEFAULT_PROCESSING_RESOLUTION, batch_size=1,
                depth_pass="detailed", normalization="per_image", vae_tiling="auto",
                temporal="off") -> io.NodeOutput:
        backbone = HostBackbone(model, vae, empty_prompt_context(model, conditioning, clip))
        images = image.movedim(-1, 1)  # [B,H,W,C] -> [B,C,H,W]
        config = PredictConfig(processing_resolution=processing_resolution, batch_size=max(1, batch_size),
                               depth_pass=depth_pass)
        free = compat.free_memory(backbone.patcher, backbone.device)
        config = plan_config(config, images.shape, free, backbone.dtype, vae.vae_dtype, vae_tiling, DEFAULT_TILE_SIZE,
                             auto_batch=batch_size == 0)
        bar, done, current = comfy.utils.ProgressBar(len(images)), [0], [backbone]

        def upcast() -> HostBackbone:  # an fp16 overflow: this chunk and the rest run in fp32
            current[0] = current[0].upcast()
            return current[0]

        def predict(frames: torch.Tensor) -> torch.Tensor:  # [b,C,H,W] -> [b,H,W], progress counted in frames
            depth = predict_depth(current[0], frames, config, interrupt=mm.throw_exception_if_processing_interrupted,
                                  progress=lambda step, steps: bar.update_absolute(
                                      done[0] + len(frames) * step // steps, len(images)),
                                  fallback=upcast if current[0].dtype != torch.float32 else None)
            done[0] += len(frames)
            return depth

        if temporal == "off":
            depth = predict(images)  # [B,H,W]
        else:  # frames of a clip, steadied before the model a chunk at a time (no second copy of the clip), aligned:
            depth, _ = predict_aligned(predict, images, stabilize=temporal == "stabilize",  # [B,H,W] in one scale,
                                       batch_size=config.batch_size)  # spanning [0,1]
        control = controlnet_depth(depth, normalization)[..., None].expand(-1, -1, -1, 3)  # [B,H,W,3]
        out = mm.intermediate_device()
        return io.NodeOutput(control.contiguous().to(out), depth.to(out))
