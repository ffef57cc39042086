"""The trainer's memory budget for SD2 fine-tuning at any crop and batch, without allocating the models.

    python -m benchmarks.train_budget                        # the paper's crop: 480x640, 2 images per branch
    python -m benchmarks.train_budget --size 352 1216 --batch 2
    python -m benchmarks.train_budget --markdown             # the table of docs/training.md

Builds SD2's UNet and VAE on the meta device (shapes only) and prints, for each memory setting, the budget the
trainer logs at start (``train/memory.py``): weights, gradients, optimizer states, EMA, autocast's weight copies
and the activations the objective keeps (counted on fake tensors with the recipe's bf16 autocast and gradient
checkpointing). These are computed figures; ``benchmarks/train_memory.py`` measures real runs.
"""

from __future__ import annotations

import argparse
import copy
import logging

import torch

from fiffdepth_core.weights import SD2_UNET_CONFIG, SD2_VAE_CONFIG
from train.config import DEFAULTS
from train.memory import GB, memory_budget

SETTINGS = {
    "AdamW (recipe)": {},
    "AdamW + EMA": {"ema": {"enabled": True, "decay": 0.9999, "on_cpu": False}},
    "8-bit AdamW": {"optimizer": "adamw8bit"},
    "8-bit AdamW + EMA on CPU": {"optimizer": "adamw8bit", "ema": {"enabled": True, "decay": 0.9999, "on_cpu": True}},
    "LoRA r32 (attention), AdamW": {"lora": {**DEFAULTS["train"]["lora"], "enabled": True}},
}


def budget(setting: dict, size, batch: int) -> list:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    config = copy.deepcopy(DEFAULTS)
    config["train"].update(copy.deepcopy(setting))
    config["train"]["batch_size"] = batch
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SD2_UNET_CONFIG)
        vae = AutoencoderKL.from_config(SD2_VAE_CONFIG).to(torch.bfloat16)
    if config["train"]["lora"]["enabled"]:
        from train.lora import apply_lora

        trainable = apply_lora(unet, config["train"]["lora"], torch.bfloat16)
    else:
        trainable = list(unet.parameters())
    latent = (size[0] // 8, size[1] // 8)
    return memory_budget(unet, vae, config, trainable, torch.device("cuda"), {"synthetic": latent, "real": latent})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2, help="images per branch per micro-step (train.batch_size)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    results = {name: budget(setting, args.size, args.batch) for name, setting in SETTINGS.items()}
    components = []
    for lines in results.values():
        for line in lines:
            key = line.component.split(" (")[0]
            if key not in components:
                components.append(key)
    header = ["component"] + list(results)
    rows = []
    for key in components:
        cells = []
        for lines in results.values():
            found = [line for line in lines if line.component.split(" (")[0] == key]
            cells.append("–" if not found else f"{found[0].device_bytes / GB:.2f}"
                         + (f" (+{found[0].host_bytes / GB:.2f} host)" if found[0].host_bytes else ""))
        rows.append([key] + cells)
    rows.append(["total on the GPU"] + [f"{sum(x.device_bytes for x in lines) / GB:.2f}"
                                        for lines in results.values()])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        width = max(len(r[0]) for r in rows)
        print(f"SD2 budget at {args.size[0]}x{args.size[1]}, {args.batch} images per branch, bf16 autocast, "
              "gradient checkpointing (GB):")
        for row in [header] + rows:
            print(f"{row[0]:<{width}}  " + "  ".join(f"{c:>26}" for c in row[1:]))
    return {name: {line.component: line.device_bytes for line in lines} for name, lines in results.items()}


if __name__ == "__main__":
    main()
