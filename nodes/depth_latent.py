"""FiffDepthDepthLatent: the model's one UNet pass on an encoded LATENT -> the depth LATENT."""

from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io

from ..fiffdepth_core.method import PASSES, predict_depth_latent
from . import compat
from .estimate import empty_prompt_context
from .host_backbone import HostBackbone


class FiffDepthDepthLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FiffDepthDepthLatent",
            display_name="FiffDepth Depth Latent",
            category=compat.CATEGORY,
            **compat.schema_extras(io.Schema, compat.SEARCH_ALIASES + ["depth latent", "lotus"]),
            description="The depth pass in latent space: the connected model's single UNet pass (its family's "
                        "timestep, class label and output conversion) on a VAEEncode latent, returning the depth "
                        "latent; VAEDecode it, or hand it to other latent nodes. The same latent core's Lotus "
                        "workflow (SamplerCustomAdvanced at sigma 999, no noise) produces for Lotus-D.",
            inputs=[
                io.Model.Input("model", tooltip="FiffDepthLoader's MODEL, or UNETLoader on a FiffDepth/Lotus-D UNet"),
                io.Latent.Input("latent", tooltip="VAEEncode of the image (sides multiples of 8; 64 is best)"),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Empty-prompt embedding [1,2,D]: FiffDepthLoader's output or "
                                              "LotusConditioning. Not a 77-token CLIPTextEncode."),
                io.Clip.Input("clip", optional=True, tooltip="Alternative to `conditioning`: an SD2 CLIP"),
                io.Combo.Input("depth_pass", options=list(PASSES), default="detailed", display_name="pass",
                               tooltip="detailed: the model's depth pass. filtered (FiffDepth only): then t=-1"),
            ],
            outputs=[io.Latent.Output(display_name="depth_latent", tooltip="The depth latent (decode with the "
                                                                            "model's VAE)")],
        )

    @classmethod
    def execute(cls, model, latent, conditioning=None, clip=None, depth_pass="detailed") -> io.NodeOutput:
        backbone = HostBackbone(model, None, empty_prompt_context(model, conditioning, clip))
        samples = backbone.latent_format.process_in(latent["samples"].float())  # ComfyUI latents are unscaled
        depth = predict_depth_latent(backbone, samples.to(backbone.device), depth_pass)  # [B,4,h,w]
        out = backbone.latent_format.process_out(depth).to(mm.intermediate_device())
        return io.NodeOutput({"samples": out})
