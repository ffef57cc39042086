"""What the shipped SD2 empty-prompt embedding's fp16 rounding does to depth.

The package ships SD2's empty-prompt embedding rounded to fp16 (``fiffdepth_core/weights/data``). A checkpoint that
has no text encoder runs on it instead of the fp32 encoder output it was trained with. This harness runs each family's
pass twice on the same random weights, once with the shipped constant and once with an fp32 reference, and reports
how far the depth moves:

* ``--reference FILE``: a float32 ``[1, 2, 1024]`` embedding computed by the real SD2 text encoder (a safetensors
  file, or a PyTorch tensor file, read with ``weights_only=True``). It must round to the shipped values.
* without it, ``--draws`` synthetic references: the shipped values plus uniform noise inside each value's fp16
  rounding interval, i.e. every fp32 embedding the constant could have been rounded from.

``--geometry sd2`` uses SD2's real UNet and VAE sizes (about 4 GB of fp32 weights per family: run it under the
memory lock); ``tiny`` is the test miniature with SD2's cross-attention width. Figures go in ``docs/models.md``.

    python -m benchmarks.embedding_constant --geometry tiny
    flock /work/locks/bigmem.lock python -m benchmarks.embedding_constant --geometry sd2 --size 256
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from fiffdepth_core.method import FAMILIES, PredictConfig, StandaloneBackbone, predict_depth
from fiffdepth_core.method.postprocess import controlnet_depth
from fiffdepth_core.weights.text_embed import sd2_constant
from fiffdepth_testkit.models import geometry_configs, random_unet, random_vae

FAMILY_NAMES = ("fiffdepth", "lotus-d", "lotus-d-disparity", "genpercept", "marigold-e2e-ft")


def load_reference(path: Path) -> torch.Tensor:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        tensor = tensors.get("empty_text_embed", next(iter(tensors.values())))
    else:
        tensor = torch.load(str(path), map_location="cpu", weights_only=True)
    tensor = tensor.float().reshape(1, -1, 1024)
    constant = sd2_constant()
    if tensor.shape != constant.shape:
        raise SystemExit(f"the reference has shape {tuple(tensor.shape)}, the constant {tuple(constant.shape)}")
    if not torch.equal(tensor.half().float(), constant):
        raise SystemExit("the reference does not round to the shipped constant: it is not the same embedding")
    return tensor


def synthetic_references(draws: int, seed: int) -> list[torch.Tensor]:
    """fp32 embeddings that round to the constant: each value moved uniformly inside its fp16 rounding interval."""
    constant = sd2_constant()
    spacing = (constant.half().float().abs().clamp_min(2.0**-14) * 2.0**-10)  # fp16 step at each value (normal range)
    generator = torch.Generator().manual_seed(seed)
    refs = []
    for _ in range(draws):
        noise = (torch.rand(constant.shape, generator=generator) - 0.5) * spacing * 0.999
        refs.append(constant + noise)
    return refs


def family_configs(geometry: str, family: str) -> tuple[dict, dict]:
    unet, vae, _ = geometry_configs(geometry)
    unet = copy.deepcopy(unet)
    unet["cross_attention_dim"] = 1024
    if family.startswith("lotus-d"):
        unet.update(class_embed_type="projection", projection_class_embeddings_input_dim=4)
    if family == "marigold-e2e-ft":
        unet["in_channels"] = 8
    return unet, vae


def measure(geometry: str, size: int, references: list[torch.Tensor], seed: int) -> list[dict]:
    torch.manual_seed(seed)
    images = torch.rand(1, 3, size, size)  # [1,3,H,W]
    config = PredictConfig(processing_resolution=size)
    constant = sd2_constant()
    rows = []
    for name in FAMILY_NAMES:
        unet_cfg, vae_cfg = family_configs(geometry, name)
        unet, vae = random_unet(unet_cfg, seed), random_vae(vae_cfg, seed + 1)
        start = time.perf_counter()
        with torch.inference_mode():
            base = predict_depth(StandaloneBackbone(unet, vae, constant, family=FAMILIES[name]), images, config)
            diffs, hint_diffs = [], []
            for ref in references:
                other = predict_depth(StandaloneBackbone(unet, vae, ref, family=FAMILIES[name]), images, config)
                diffs.append((other - base).abs())
                hint_diffs.append((controlnet_depth(other) * 255).round().sub(
                    (controlnet_depth(base) * 255).round()).abs().max().item())
        stacked = torch.stack(diffs)
        rows.append({"family": name, "max": stacked.max().item(), "mean": stacked.mean().item(),
                     "png16_levels": stacked.max().item() * 65535, "hint8_levels": max(hint_diffs),
                     "depth_range": (base.max() - base.min()).item(), "seconds": time.perf_counter() - start})
        del unet, vae
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--geometry", default="tiny", choices=("tiny", "sd2"))
    parser.add_argument("--size", type=int, default=64, help="square input size in px (default 64)")
    parser.add_argument("--reference", type=Path, help="an fp32 SD2 empty-prompt embedding to compare with")
    parser.add_argument("--draws", type=int, default=4, help="synthetic references without --reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reference is not None:
        references = [load_reference(args.reference)]
        gap = (references[0] - sd2_constant()).abs()
        source = f"reference {args.reference.name} (|fp32 - constant| max {gap.max():.3g}, mean {gap.mean():.3g})"
    else:
        references = synthetic_references(args.draws, args.seed)
        source = f"{args.draws} synthetic fp32 references inside the fp16 rounding intervals"
    rows = measure(args.geometry, args.size, references, args.seed)
    print(f"geometry {args.geometry}, {args.size}x{args.size} input, {source}, torch {torch.__version__}\n")
    print("| family | max abs depth diff | mean abs | max in 16-bit PNG levels | max in 8-bit hint levels | "
          "depth range | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['family']} | {r['max']:.2e} | {r['mean']:.2e} | {r['png16_levels']:.1f} | {r['hint8_levels']:.0f} "
              f"| {r['depth_range']:.3f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
