"""Independent, hand-written versions of each family's official inference, for parity tests.

Written from the authors' code (Lotus @ b737e12 ``pipeline.py`` ``LotusDPipeline.__call__`` and ``infer.py``;
GenPercept @ 7cff083 ``genpercept/genpercept_pipeline.py`` and ``hf_configs/scheduler_beta_1.0_1.0``;
diffusion-e2e-ft @ 4ff5aad ``Marigold/marigold/marigold_pipeline.py`` and ``Marigold/run.py``) directly on diffusers'
``UNet2DConditionModel``, ``AutoencoderKL`` and ``DDIMScheduler``, loaded with ``from_pretrained`` from the checkpoint
folder; nothing here calls this project's loader, backbone or predictor. At native resolution (no resize), one image
per call as the official scripts run. The only departure is Lotus' latent: the posterior mean instead of a sample.

Each function takes uint8 images ``[B,3,H,W]`` and returns what the official code returns: depth (GenPercept,
E2E-FT, Lotus v1) or disparity (Lotus v2 "disparity" checkpoints), ``[B,H,W]`` float32.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _models(folder: Path, unet_dir: str = "unet"):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / unet_dir).eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    ids = tokenizer("", padding="do_not_pad", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        embed = text_encoder(ids)[0]  # [1,2,D]
    return unet, vae, embed


@torch.no_grad()
def lotus_d(folder, images_uint8: torch.Tensor) -> torch.Tensor:
    unet, vae, embed = _models(folder)
    outs = []
    for image in images_uint8:
        rgb = image[None].float() / 127.5 - 1.0  # infer.py
        latent = vae.encode(rgb).latent_dist.mean * vae.config.scaling_factor  # official: .sample()
        t = torch.tensor([999], device=rgb.device).long()[0]
        task_emb = torch.tensor([1, 0]).float().unsqueeze(0).repeat(1, 1)
        task_emb = torch.cat([torch.sin(task_emb), torch.cos(task_emb)], dim=-1).repeat(1, 1)
        pred = unet(latent, t, encoder_hidden_states=embed, return_dict=False, class_labels=task_emb)[0]
        decoded = vae.decode(pred / vae.config.scaling_factor, return_dict=False)[0]
        decoded = (decoded / 2 + 0.5).clamp(0, 1)  # VaeImageProcessor.postprocess(output_type="np")
        array = decoded.permute(0, 2, 3, 1).numpy()  # [1,H,W,3]
        outs.append(torch.from_numpy(array[0].mean(axis=-1)))  # infer.py: pred.mean(axis=-1)
    return torch.stack(outs)


@torch.no_grad()
def genpercept(folder, images_uint8: torch.Tensor, unet_dir: str = "unet_depth_v2") -> torch.Tensor:
    from diffusers import DDIMScheduler

    from family_checkpoints import GENPERCEPT_SCHEDULER

    unet, vae, embed = _models(folder, unet_dir)
    scheduler = DDIMScheduler.from_config(GENPERCEPT_SCHEDULER)  # the repository's hf_configs/scheduler_beta_1.0_1.0
    outs = []
    for image in images_uint8:
        rgb = image[None].float() / 255.0 * 2.0 - 1.0
        moments = vae.quant_conv(vae.encoder(rgb))
        mean, _ = torch.chunk(moments, 2, dim=1)
        rgb_latent = mean * 0.18215
        scheduler.set_timesteps(1)
        t = scheduler.timesteps[0]
        noise_pred = unet(rgb_latent, t, encoder_hidden_states=embed).sample
        pred_latent = scheduler.step(noise_pred, t, rgb_latent).pred_original_sample
        stacked = vae.decoder(vae.post_quant_conv(pred_latent / 0.18215)).mean(dim=1, keepdim=True)
        pred = (torch.clip(stacked, -1.0, 1.0) + 1.0) / 2.0
        outs.append(pred.squeeze().clip(0, 1))
    return torch.stack(outs)


@torch.no_grad()
def marigold_e2e_ft(folder, images_uint8: torch.Tensor) -> torch.Tensor:
    from diffusers import DDIMScheduler

    unet, vae, embed = _models(folder)
    scheduler = DDIMScheduler.from_pretrained(Path(folder) / "scheduler", timestep_spacing="trailing")  # run.py
    outs = []
    for image in images_uint8:
        rgb = image[None].float() / 255.0 * 2.0 - 1.0
        moments = vae.quant_conv(vae.encoder(rgb))
        mean, _ = torch.chunk(moments, 2, dim=1)
        rgb_latent = mean * 0.18215
        scheduler.set_timesteps(1)
        latent = torch.zeros_like(rgb_latent)  # --noise zeros
        for i, t in enumerate(scheduler.timesteps):
            noise_pred = unet(torch.cat([rgb_latent, latent], dim=1), t, encoder_hidden_states=embed).sample
            step = scheduler.step(noise_pred, t, latent)
            latent = step.prev_sample
            if i == len(scheduler.timesteps) - 1:
                latent = step.pred_original_sample
        depth = vae.decoder(vae.post_quant_conv(latent / 0.18215)).mean(dim=1, keepdim=True)
        depth = (torch.clip(depth, -1.0, 1.0) + 1.0) / 2.0
        pred = depth.squeeze()
        low, high = torch.min(pred), torch.max(pred)
        pred = torch.zeros_like(pred) if high == low else (pred - low) / (high - low)
        outs.append(pred.clip(0, 1))
    return torch.stack(outs)
