"""Run inside a Forge environment (FORGE_PYTHON, cwd FORGE_PATH): FiffDepth on Forge's backend vs the standalone
predictor, raw depth. Usage: forge_raw_depth.py CHECKPOINT [Forge flags...]; prints one JSON line."""

import json
import os
import sys

root, pack = os.getcwd(), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [root, os.path.join(root, "packages_3rdparty"), os.path.join(root, "repositories", "huggingface_guess"),
                pack]
checkpoint, sys.argv = sys.argv[1], [sys.argv[0], *sys.argv[2:]]  # Forge's backend parses its flags from argv

import torch  # noqa: E402

from fiffdepth_core.method.predictor import PredictConfig, predict_depth  # noqa: E402
from fiffdepth_core.weights.checkpoint import load_standalone  # noqa: E402
from fiffdepth_webui.forge_backbone import ForgeBackbone  # noqa: E402

torch.manual_seed(0)
images = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8), size=(100, 150), mode="bilinear")  # [1,3,H,W]
forge = ForgeBackbone.load(checkpoint, "auto")
reference = load_standalone(checkpoint, dtype=torch.float32)
exact = load_standalone(checkpoint, dtype=torch.float64)  # the same function, evaluated with 29 more mantissa bits
out = {"storage_dtype": str(forge.patcher.model.storage_dtype), "computation_dtype": str(forge.dtype),
       "vae_dtype": str(forge.vae_dtype), "family": forge.family.name}
for depth_pass in ("detailed", "filtered") if forge.family.filter_pass else ("detailed",):
    config = PredictConfig(processing_resolution=128, depth_pass=depth_pass)
    ours, theirs = predict_depth(forge, images, config), predict_depth(reference, images, config)
    truth = predict_depth(exact, images.double(), config)
    out[depth_pass] = float((ours - theirs).abs().max())  # Forge vs standalone, both fp32
    out[depth_pass + "_forge_error"] = float((ours.double() - truth).abs().max())  # each against fp64
    out[depth_pass + "_standalone_error"] = float((theirs.double() - truth).abs().max())
    out[depth_pass + "_std"] = float(theirs.std())
print(json.dumps(out))
