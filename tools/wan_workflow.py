"""Workflow 6 for ``build_workflows.py``: a video's steady FiffDepth drives Wan 2.1 VACE (core nodes only).

Kept apart so that ``build_workflows.py`` stays one screenful of layouts per workflow; ``lib`` is that module.
"""

from __future__ import annotations

WAN_VACE = "wan2.1_vace_1.3B_fp16.safetensors"
WAN_TE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
WAN_REPO = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
MODELS = {
    WAN_VACE: (WAN_REPO + "diffusion_models/" + WAN_VACE, "diffusion_models"),
    WAN_TE: (WAN_REPO + "text_encoders/" + WAN_TE, "text_encoders"),
    WAN_VAE: (WAN_REPO + "vae/" + WAN_VAE, "vae"),
}


def video_controlnet_wan(info: dict, lib) -> dict:
    lib.MODELS.update(MODELS)
    g, models = lib.Graph(info), lib.models
    g.note(lib.depth_note("FiffDepth → Wan 2.1 VACE: video guided by steady depth")
           + "**Wan 2.1 VACE 1.3B** (ComfyUI's own repackaged files):\n"
           f"- `models/diffusion_models/{WAN_VACE}`\n- `models/text_encoders/{WAN_TE}`\n- `models/vae/{WAN_VAE}`\n\n"
           + lib.tree("    ├── diffusion_models/", f"    │   └── {WAN_VACE}", *lib.fiffdepth_tree(last=False),
                      "    ├── text_encoders/",
                      f"    │   └── {WAN_TE}",
                      "    └── vae/", f"        └── {WAN_VAE}") +
           "\n\n**How it flows**: the source video's frames go through **FiffDepth Estimate** with "
           "`temporal = stabilize` (each frame's depth matched in scale and shift to the clip, and each pixel's "
           "small jitter averaged over a few frames, so the depth does not flicker) and `normalization = whole_batch`; the ControlNet-style maps (near = white) are scaled to "
           "832 × 480 and become VACE's `control_video`. VACE generates `length` frames (4n + 1; 49 ≈ 3 s at "
           "16 fps) following that depth; write the prompt for what the new video should show.\n\n"
           "The depth video is saved too (`output/FiffDepth/vace/depth_*`). Long clips: every frame is held in "
           "memory; trim first, or make the depth with the CLI (`--temporal stabilize`) and load its "
           "`_controlnet.mp4`.", [-480, -30], [440, 800])
    video = g.add("LoadVideo", [0, 182], [330, 420], file="example.mp4")
    frames = g.add("GetVideoComponents", [0, 662], [330, 66])
    loader = g.add("FiffDepthLoader", [0, 0], [330, 146], model_name=lib.DEPTH_MODEL, precision="auto")
    est = g.add("FiffDepthEstimate", [400, 0], [330, 258], title="FiffDepth Estimate (steady video depth)",
                batch_size=4, normalization="whole_batch", temporal="stabilize")
    scale = g.add("ImageScale", [400, 318], [330, 130], title="Scale to 832 × 480", upscale_method="bilinear",
                  width=832, height=480, crop="center")
    depth_video = g.add("CreateVideo", [400, 508], [330, 78])
    save_depth = g.add("SaveVideo", [400, 646], [330, 420], filename_prefix="FiffDepth/vace/depth")
    g.link(video, "VIDEO", frames, "video")
    for out, inp in (("MODEL", "model"), ("VAE", "vae"), ("CONDITIONING", "conditioning")):
        g.link(loader, out, est, inp)
    g.link(frames, "images", est, "image")
    g.link(est, "controlnet", scale, "image")
    g.link(scale, "IMAGE", depth_video, "images")
    g.link(frames, "fps", depth_video, "fps")
    g.link(depth_video, "VIDEO", save_depth, "video")

    unet = g.add("UNETLoader", [800, 0], [330, 82], models=models(WAN_VACE), unet_name=WAN_VACE,
                 weight_dtype="default")
    shift = g.add("ModelSamplingSD3", [800, 142], [330, 58], shift=8.0)
    clip = g.add("CLIPLoader", [800, 260], [330, 106], models=models(WAN_TE), clip_name=WAN_TE, type="wan")
    wan_vae = g.add("VAELoader", [800, 426], [330, 58], models=models(WAN_VAE), vae_name=WAN_VAE)
    positive = g.add("CLIPTextEncode", [1190, 0], [400, 150], title="Positive prompt", color="#232",
                     bgcolor="#353", text="a cinematic shot of a cozy wooden cabin interior, warm evening light, "
                                          "detailed, high quality")
    negative = g.add("CLIPTextEncode", [1190, 210], [400, 150], title="Negative prompt", color="#322",
                     bgcolor="#533", text="blurry, low quality, static, deformed, watermark, text, flicker")
    vace = g.add("WanVaceToVideo", [1190, 420], [400, 254], width=832, height=480, length=49, batch_size=1,
                 strength=1.0)
    sampler = g.add("KSampler", [1650, 0], [315, 262], seed=0, steps=20, cfg=6.0, sampler_name="uni_pc",
                    scheduler="simple", denoise=1.0)
    trim = g.add("TrimVideoLatent", [1650, 322], [315, 82])
    decode = g.add("VAEDecode", [1650, 464], [315, 46])
    make = g.add("CreateVideo", [2025, 0], [330, 78])
    save = g.add("SaveVideo", [2025, 138], [420, 480], filename_prefix="FiffDepth/vace/video")
    g.link(unet, "MODEL", shift, "model")
    g.link(clip, "CLIP", positive, "clip")
    g.link(clip, "CLIP", negative, "clip")
    g.link(positive, "CONDITIONING", vace, "positive")
    g.link(negative, "CONDITIONING", vace, "negative")
    g.link(wan_vae, "VAE", vace, "vae")
    g.link(scale, "IMAGE", vace, "control_video")
    g.link(shift, "MODEL", sampler, "model")
    g.link(vace, "positive", sampler, "positive")
    g.link(vace, "negative", sampler, "negative")
    g.link(vace, "latent", sampler, "latent_image")
    g.link(sampler, "LATENT", trim, "samples")
    g.link(vace, "trim_latent", trim, "trim_amount")
    g.link(trim, "LATENT", decode, "samples")
    g.link(wan_vae, "VAE", decode, "vae")
    g.link(decode, "IMAGE", make, "images")
    g.link(frames, "fps", make, "fps")
    g.link(make, "VIDEO", save, "video")
    g.group("FiffDepth: video → steady depth", [loader, video, frames, est, scale, depth_video, save_depth],
            lib.GROUP_COLORS["depth"])
    g.group("Wan 2.1 VACE, guided by the depth video", [unet, shift, clip, wan_vae, positive, negative, vace,
                                                        sampler, trim, decode, make, save],
            lib.GROUP_COLORS["gen"])
    return g.to_json()
