"""Figures the documentation quotes, each measured by one function here; results go to benchmarks/measured/.

    python benchmarks/doc_figures.py padding tiny_sizes          # seconds on a CPU
    COMFYUI_PATH=~/ComfyUI ~/ComfyUI/venv/bin/python benchmarks/doc_figures.py lotus_heads   # ~8 GB of memory

* ``padding``: how much the pack's padding to multiples of 64 changes raw depth against the official pipeline,
  which runs the size as it is (docs/method.md, "Output conventions"): the tiny random model of the tests, a
  96×136 input (padded to 128×192), seeds 0-2; mean and max |difference| and the maps' own spread.
* ``tiny_sizes``: the file sizes of the tiny test checkpoint (docs/testing.md).
* ``lotus_heads``: what ComfyUI's own loading of a diffusers Lotus-D UNet does to its output when it builds a
  constant number of attention heads where SD2 has 64-wide ones (docs/checkpoints.md): one random SD2-geometry Lotus-D
  UNet run both ways on the same weights and input (a 256² image's latent, t = 999, Lotus' depth label). The head
  count is the one the running ComfyUI's detection gives (``COMFYUI_PATH``); without ComfyUI it is 8, what 0.3.64
  built. Needs the full-size UNet in memory.

Each figure is written to ``benchmarks/measured/doc_figures.json`` (merged with what is there) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: drop benchmarks/ from sys.path, reach the repo root (last)
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.append(str(_here.parent))

import torch  # noqa: E402

OUT = Path(__file__).resolve().parent / "measured" / "doc_figures.json"


def padding() -> dict:
    import tempfile

    import torch.nn.functional as F

    from fiffdepth_core.method import PredictConfig, predict_depth
    from fiffdepth_core.weights import load_standalone
    from fiffdepth_testkit.images import seeded_images
    from fiffdepth_testkit.models import write_random_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        backbone = load_standalone(write_random_pipeline(Path(tmp) / "tiny", geometry="tiny", seed=0))
        rows = []
        for seed in range(3):
            images = seeded_images(1, 96, 136, seed=seed)
            with torch.inference_mode():
                ours = predict_depth(backbone, images, PredictConfig(processing_resolution=0))
                # the official pipeline: no padding, the same steps (posterior mean, t = 0, channel mean, clip)
                latent = backbone.vae.encode(images * 2 - 1).latent_dist.mean * backbone.latent_scale
                pred = backbone.unet(latent, 0, encoder_hidden_states=backbone.empty_embed).sample
                decoded = backbone.vae.decode(pred / backbone.latent_scale).sample
                official = ((decoded.mean(1).clamp(-1, 1) + 1) / 2)  # [1,H,W]
                official = F.interpolate(official[None], size=(96, 136), mode="bilinear")[0] \
                    if official.shape[-2:] != (96, 136) else official
            diff = (ours - official).abs()
            rows.append({"seed": seed, "mean_abs_difference": diff.mean().item(), "max_abs_difference": diff.max().item(),
                         "std_ours": ours.std().item(), "std_official": official.std().item()})
    return {"what": "raw depth, padded (this pack) vs unpadded (official), tiny random model, 96x136", "rows": rows}


def tiny_sizes() -> dict:
    import tempfile

    from fiffdepth_testkit.models import write_random_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_random_pipeline(Path(tmp) / "tiny", geometry="tiny", seed=0)
        return {"what": "bytes per file of the tiny test checkpoint (tests/conftest.py: tiny_checkpoint)",
                "files": {p.relative_to(folder).as_posix(): p.stat().st_size
                          for p in sorted(folder.rglob("*")) if p.is_file()}}


def lotus_heads() -> dict:
    from diffusers import UNet2DConditionModel

    from fiffdepth_core.method import LOTUS_D
    from fiffdepth_core.weights import SD2_UNET_CONFIG

    config = dict(SD2_UNET_CONFIG, class_embed_type="projection", projection_class_embeddings_input_dim=4)
    torch.manual_seed(0)
    reference = UNet2DConditionModel(**config).eval()  # SD2's heads: attention_head_dim [5,10,20,20] = 64 wide
    state = reference.state_dict()
    heads, source = 8, "ComfyUI 0.3.64's detection (not run here: COMFYUI_PATH unset)"
    if os.environ.get("COMFYUI_PATH"):
        root = str(Path(os.environ["COMFYUI_PATH"]).resolve())
        sys.path.insert(0, root)
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        import comfy.model_detection

        detected = comfy.model_detection.unet_config_from_diffusers_unet(state)
        heads = detected.get("num_heads", -1)
        version = (Path(root) / "comfyui_version.py").read_text().split('"')[1]
        source = (f"the running ComfyUI {version}: num_heads {heads}, num_head_channels "
                  f"{detected.get('num_head_channels')}")
    out = {"what": "Lotus-D UNet output, constant head count vs SD2's 64-wide heads, random SD2 weights",
           "heads": source}
    if heads is None or heads <= 0:
        out["result"] = "this ComfyUI builds 64-wide heads: no difference"
        return out
    constant = UNet2DConditionModel(**dict(config, attention_head_dim=heads)).eval()
    constant.load_state_dict(state, assign=True)  # the same tensors, another head split
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 4, 32, 32, generator=g)  # a 256x256 image's latent
    embed = torch.randn(1, 2, 1024, generator=g)
    label = LOTUS_D.class_labels(1, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        a = reference(latent, 999, encoder_hidden_states=embed, class_labels=label).sample
        b = constant(latent, 999, encoder_hidden_states=embed, class_labels=label).sample
    out.update(max_abs_difference=(a - b).abs().max().item(), mean_abs_difference=(a - b).abs().mean().item(),
               output_std=a.std().item())
    return out


FIGURES = {"padding": padding, "tiny_sizes": tiny_sizes, "lotus_heads": lotus_heads}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("figures", nargs="+", choices=sorted(FIGURES))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.figures:
        results[name] = {**FIGURES[name](), "torch": torch.__version__, "python": platform.python_version()}
        print(name, json.dumps(results[name], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
