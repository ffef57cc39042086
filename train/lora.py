"""LoRA fine-tuning of the UNet through peft, the way diffusers' training scripts do it, and its two exports.

With ``train.lora.enabled`` the base UNet is frozen and stored in the autocast dtype (fp32 without mixed
precision), and low-rank adapters (fp32, trained) are added to ``train.lora.target_modules``. A run then exports:

* ``fiffdepth_lora.safetensors``: the adapter in the kohya layout (``lora_unet_<module>.lora_down/lora_up/alpha``)
  that ComfyUI's core LoRA loaders, the WebUIs and diffusers' ``load_lora_weights`` apply to the base UNet;
* the merged model, a complete FiffDepth checkpoint: each adapted weight is the base weight as stored in the base
  model's files (full precision, not the frozen low-precision copy) plus the adapter's delta, produced one tensor
  at a time while it is written.
"""

from __future__ import annotations

import torch

from fiffdepth_core.fileio import TensorEntry, tensor_entry
from fiffdepth_core.weights import ModelWeights

ADAPTER = "default"
LORA_FILE = "fiffdepth_lora.safetensors"


class LoraConfigError(ValueError):
    """The LoRA settings do not fit the UNet (no module matches ``train.lora.target_modules``)."""


def apply_lora(unet: torch.nn.Module, lora: dict, frozen_dtype: torch.dtype) -> list[torch.nn.Parameter]:
    """Freeze ``unet`` in ``frozen_dtype``, add the adapters, return the trainable (fp32) adapter parameters."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.to(dtype=frozen_dtype)
    config = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], init_lora_weights="gaussian",
                        target_modules=list(lora["target_modules"]))
    try:
        unet.add_adapter(config, adapter_name=ADAPTER)
    except ValueError as err:
        raise LoraConfigError(f"`train.lora.target_modules` {lora['target_modules']!r} matches no layer of the UNet "
                              f"({' '.join(str(err).split())[:200]})") from None
    cast_training_params(unet, dtype=torch.float32)
    return [p for p in unet.parameters() if p.requires_grad]


def adapted_modules(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The UNet's LoRA-wrapped layers by module path (diffusers names, e.g. ``down_blocks.0...attn1.to_q``)."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in unet.named_modules()
            if isinstance(module, LoraLayer) and ADAPTER in module.lora_A}


def lora_entries(unet: torch.nn.Module) -> list[TensorEntry]:
    """The adapter in the kohya layout: per layer ``lora_down`` (A), ``lora_up`` (B) and ``alpha`` such that
    alpha / rank is peft's scaling, so a loader computing ``W + alpha / rank * up @ down`` gets peft's merge."""
    entries = []
    for name, module in adapted_modules(unet).items():
        key = "lora_unet_" + name.replace(".", "_")
        down, up = module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight
        alpha = torch.tensor(float(module.scaling[ADAPTER]) * module.r[ADAPTER], dtype=torch.float32)
        entries += [tensor_entry(f"{key}.lora_down.weight", down, torch.float32),
                    tensor_entry(f"{key}.lora_up.weight", up, torch.float32),
                    tensor_entry(f"{key}.alpha", alpha)]
    return entries


def lora_metadata(unet: torch.nn.Module, lora: dict) -> dict[str, str]:
    return {"format": "fiffdepth-lora", "lora_layout": "kohya", "rank": str(lora["rank"]),
            "alpha": str(lora["alpha"]), "target_modules": ",".join(lora["target_modules"]),
            "layers": str(len(adapted_modules(unet)))}


def merged_weights(unet: torch.nn.Module, base: ModelWeights) -> ModelWeights:
    """The merged UNet: ``base`` (as stored in the base model's files) with each adapted weight replaced, when it
    is written, by base + the adapter's delta (fp32)."""
    modules = adapted_modules(unet)
    entries = []
    for entry in base.entries:
        module_name, _, leaf = entry.name.rpartition(".")
        module = modules.get(module_name) if leaf == "weight" else None
        if module is None:
            entries.append(entry)
            continue

        def produce(entry=entry, module=module) -> torch.Tensor:
            with torch.no_grad():
                delta = module.get_delta_weight(ADAPTER).float().cpu()
                return entry.produce().float().add_(delta.reshape(entry.shape))

        entries.append(TensorEntry(entry.name, entry.shape, torch.float32, produce))
    missing = sorted(set(modules) - {e.name.rpartition(".")[0] for e in base.entries})
    if missing:
        raise ValueError(f"the base UNet's files hold no weight for the adapted layers {missing[:3]}")
    return ModelWeights(base.class_name, base.config, tuple(entries))


def live_base_weights(unet: torch.nn.Module) -> ModelWeights:
    """The frozen base as held in training (its low-precision copy, upcast to fp32): the fallback for base models
    whose weights are not in safetensors files."""
    from fiffdepth_core.weights import model_weights

    live = model_weights(unet)
    entries = tuple(TensorEntry(e.name.replace(".base_layer.", "."), e.shape,
                                torch.float32 if e.dtype.is_floating_point else e.dtype,
                                (lambda e=e: e.produce().float()) if e.dtype.is_floating_point else e.produce)
                    for e in live.entries if ".lora_" not in e.name)
    return ModelWeights(live.class_name, live.config, entries)
