"""The models a run trains from: a Stable Diffusion 2 pipeline (local folder or hub id) or random weights.

Loading goes through the core checkpoint loader (the same validation and weight handling the node and the CLI
use). The trainable UNet stays in fp32 (autocast runs it in bf16/fp16); the frozen VAE is cast to
``train.vae_dtype``; the text encoder runs once, for the empty-prompt embedding, and is dropped.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from fiffdepth_core.method import DTYPES, training_family
from fiffdepth_core.weights import empty_embedding, inspect_checkpoint, instantiate, load_state_dict

from .random_models import write_random_pipeline

log = logging.getLogger(__name__)

HUB_FILES = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
             "tokenizer/*"]


def fit_stand_in_vae(folder: Path, warmup: dict, size) -> None:
    """Turn a random VAE into a working autoencoder of procedural RGB and depth images (debug runs only).

    SD2's VAE reconstructs images and depth maps well; a random one reconstructs nothing, so decoded depth would
    carry no information and validation could not improve. A short L1 reconstruction fit on the posterior mean
    (the only latent FiffDepth uses) stands in for the pretrained VAE. Deterministic; runs once per run folder.
    """
    from diffusers import AutoencoderKL

    from train.datasets.procedural import ProceduralDataset

    torch.manual_seed(warmup.get("seed", 0))
    vae = AutoencoderKL.from_pretrained(folder / "vae").train()
    data = ProceduralDataset(size=tuple(size), hflip=True, length=100_000, seed=int(warmup.get("seed", 0)) + 77)
    optimizer = torch.optim.Adam(vae.parameters(), lr=float(warmup.get("lr", 2e-3)))
    batch = int(warmup.get("batch_size", 4))
    steps = int(warmup["steps"])
    log.info("stand-in VAE fit: %d steps, once per run folder (debug runs only)", steps)
    bar = progress_bar(steps, "stand-in VAE fit")
    for step in range(steps):
        images = []
        for j in range(batch):
            sample = data[(step * batch + j, step * batch + j)]
            images += [sample["rgb"], sample["depth"].expand(3, -1, -1)]  # [3,H,W] each
        x = torch.stack(images)  # [2b,3,H,W]
        loss = (vae.decode(vae.encode(x).latent_dist.mean).sample - x).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if bar is not None:
            bar.set_postfix(L1=f"{loss.item():.4f}", refresh=False)
            bar.update(1)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.info("stand-in VAE fit: step %d/%d, L1 %.4f", step + 1, steps, loss.item())
    if bar is not None:
        bar.close()
    vae.eval().save_pretrained(folder / "vae")


def progress_bar(total: int, desc: str):
    """A tqdm bar with a total (None when tqdm is missing: the counted log lines still say how far it is)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


def resolve_base(config: dict, run_path: Path, accelerator) -> Path:
    """A local folder holding the base pipeline: the configured folder, a hub download, or random weights."""
    model = config["model"]
    if model["random_geometry"]:
        base = run_path / "base_model"
        recipe = json.dumps({k: model[k] for k in ("random_geometry", "seed", "vae_warmup")} |
                            {"size": config["data"]["size"]}, sort_keys=True)
        made = base / "recipe.json"
        stale = made.is_file() and made.read_text() != recipe  # left by a start that failed with other settings
        if accelerator.is_main_process and (stale or not (base / "model_index.json").is_file()):
            partial = run_path / "base_model.partial"  # renamed when complete: an interrupted build is redone
            shutil.rmtree(partial, ignore_errors=True)
            write_random_pipeline(partial, geometry=model["random_geometry"], seed=model["seed"])
            if model["vae_warmup"]["steps"] > 0:
                fit_stand_in_vae(partial, model["vae_warmup"], config["data"]["size"])
            (partial / "recipe.json").write_text(recipe)
            if stale:
                shutil.rmtree(base)
            partial.rename(base)
        accelerator.wait_for_everyone()
        return base
    local = Path(model["pretrained"]).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    try:
        with accelerator.main_process_first():  # one download; the other ranks then find it in the cache
            return Path(snapshot_download(model["pretrained"], allow_patterns=HUB_FILES))
    except Exception as err:  # offline, unknown repo, gated...
        raise FileNotFoundError(f"`model.pretrained` {model['pretrained']!r} is neither a local folder nor a "
                                f"downloadable hub repo ({err})") from err


def build_models(config: dict, run_path: Path, accelerator):
    """(unet fp32, vae in train.vae_dtype, empty-prompt embedding [1,2,D], base folder)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    base = resolve_base(config, run_path, accelerator)
    info = inspect_checkpoint(base)
    trained_as = training_family(info.unet_config, base)  # refuses UNets the objective cannot feed (8 channels)
    if info.family.name != trained_as.name:
        log.info("starting from a %s checkpoint: training it with FiffDepth's objective makes it a %s model "
                 "(t = 0 depth pass)", info.family.title, trained_as.title)
    with accelerator.main_process_first():  # rank 0 runs the text encoder once and caches the embedding
        embed = empty_embedding(inspect_checkpoint(base))
    unet = instantiate(UNet2DConditionModel, info.unet_config, load_state_dict(info, "unet"), f"{base} (unet)",
                       torch.float32)
    vae = instantiate(AutoencoderKL, info.vae_config, load_state_dict(info, "vae"), f"{base} (vae)",
                      DTYPES[config["train"]["vae_dtype"]])
    vae.requires_grad_(False)
    log.info("base model %s: UNet %.0fM parameters, embedding %s", base,
             sum(p.numel() for p in unet.parameters()) / 1e6, tuple(embed.shape))
    return unet, vae, embed, base


def trainable_setup(unet: torch.nn.Module, train: dict, accelerator) -> tuple[list[torch.nn.Parameter], object]:
    """Train mode, LoRA adapters when asked, gradient checkpointing, TF32 matmuls on CUDA, and the optional EMA;
    returns (the trained parameters, the EMA or None)."""
    unet.train()
    if train["lora"]["enabled"]:
        from .lora import apply_lora

        frozen = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train["mixed_precision"], torch.float32)
        trainable = apply_lora(unet, train["lora"], frozen)
        log.info("LoRA rank %d on %s: %.2fM trained parameters, the %.0fM of the base UNet frozen in %s",
                 train["lora"]["rank"], ", ".join(train["lora"]["target_modules"]),
                 sum(p.numel() for p in trainable) / 1e6,
                 sum(p.numel() for p in unet.parameters() if not p.requires_grad) / 1e6, frozen)
    else:
        unet.requires_grad_(True)
        trainable = list(unet.parameters())
    if train["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if not train["ema"]["enabled"]:
        return trainable, None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(trainable, decay=train["ema"]["decay"])
    ema.to("cpu" if train["ema"]["on_cpu"] else accelerator.device)
    return trainable, ema


def make_optimizer(trainable: list[torch.nn.Parameter], optim: dict, kind: str) -> torch.optim.Optimizer:
    """torch's AdamW, or bitsandbytes' 8-bit AdamW (``adamw8bit``: blockwise 8-bit moment estimates, a quarter of
    AdamW's state memory; bitsandbytes is imported only when chosen)."""
    settings = {"lr": optim["lr"], "betas": tuple(optim["betas"]), "eps": optim["eps"],
                "weight_decay": optim["weight_decay"]}
    if kind == "adamw":
        return torch.optim.AdamW(trainable, **settings)
    try:
        import bitsandbytes
    except ImportError as err:
        raise ImportError("`train.optimizer: adamw8bit` needs bitsandbytes (pip install bitsandbytes, or the "
                          f"`train` extra): {err}") from None
    return bitsandbytes.optim.AdamW8bit(trainable, **settings)
