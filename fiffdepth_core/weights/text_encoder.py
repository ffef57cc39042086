"""Loading and writing the CLIP text encoder so that every supported transformers version reads every checkpoint.

transformers 5 saves ``CLIPTextModel`` weights without the ``text_model.`` key prefix; transformers 4 expects the
prefix, finds none of its weights in such a file and silently keeps a randomly initialised encoder (an empty-prompt
embedding from it is meaningless). So weights are never handed to ``from_pretrained`` here: the file's keys are
mapped onto whatever layout the installed transformers builds, every parameter must be found, and anything else is
refused with the counts. Exports write the prefixed layout, which transformers 4 and 5 both read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PREFIX = "text_model."
# Keys that differ between transformers versions without carrying weights: the position-id buffer (persistent in
# transformers < 4.31) and the parts of a full CLIP checkpoint a text-only encoder has no use for.
OPTIONAL = ("embeddings.position_ids",)
IGNORED = ("text_projection.weight", "logit_scale")
WEIGHT_STEMS = ("model", "pytorch_model")


def _bare(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def weights_file(folder: Path) -> Path:
    from .layout import CheckpointError, find_weights

    for stem in WEIGHT_STEMS:
        found = find_weights(folder, stem)
        if found is not None:
            return found
    raise CheckpointError(f"{folder}: no text encoder weights (expected model.safetensors or pytorch_model.bin)")


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The text encoder weights of ``folder`` with bare keys (``embeddings.*``, ``encoder.*``,
    ``final_layer_norm.*``), whichever transformers version wrote them; non-text CLIP keys are dropped."""
    from .layout import load_weights_file

    state_dict = load_weights_file(weights_file(Path(folder)))
    return {_bare(k): v for k, v in state_dict.items()
            if not k.startswith(("vision_model.", "visual_projection.")) and _bare(k) not in IGNORED}


def fit_state_dict(expected: list[str], weights: dict[str, torch.Tensor], where) -> dict[str, torch.Tensor]:
    """``weights`` (bare keys) renamed to the ``expected`` keys of the installed ``CLIPTextModel``; a
    CheckpointError unless every expected parameter is present (optional buffers aside) and nothing is left over."""
    from .layout import CheckpointError

    by_bare = {_bare(k): k for k in expected}
    fitted = {by_bare[k]: v for k, v in weights.items() if k in by_bare}
    missing = sorted(k for k in expected if k not in fitted and not _bare(k).endswith(OPTIONAL))
    unexpected = sorted(k for k in weights if k not in by_bare and not k.endswith(OPTIONAL))
    if missing or unexpected:
        found = len(fitted)
        raise CheckpointError(
            f"{where}: the text encoder weights do not fit CLIPTextModel ({found} of {len(expected)} tensors "
            f"matched, {len(missing)} missing e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. "
            f"{unexpected[:3]}); refusing to compute the empty-prompt embedding from a partly random encoder")
    return fitted


def load_text_encoder(folder: str | Path, dtype: torch.dtype = torch.float32):
    """A ``CLIPTextModel`` from ``folder`` (``config.json`` + weights) with every weight checked, in eval mode."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    config = CLIPTextConfig.from_pretrained(str(folder))
    model = CLIPTextModel(config)
    expected = list(model.state_dict())
    fitted = fit_state_dict(expected, read_state_dict(folder), folder)
    model.load_state_dict(fitted, strict=False)
    return model.to(dtype).eval()


def write_text_encoder(source: str | Path, target: str | Path, overwrite: bool = False) -> Path:
    """Copy a text encoder folder as ``config.json`` + ``model.safetensors`` in the prefixed layout that
    transformers 4 and 5 both read (a checkpoint saved by either version goes in)."""
    from safetensors.torch import save_file

    from ..fileio.writers import write_atomic

    source, target = Path(source), Path(target)
    config = json.loads((source / "config.json").read_text())
    weights = {PREFIX + k: v.detach().cpu().contiguous() for k, v in read_state_dict(source).items()
               if not k.endswith(OPTIONAL)}
    target.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(config, indent=2)
    write_atomic(target / "config.json", lambda tmp: tmp.write_text(config_text), overwrite)
    write_atomic(target / "model.safetensors", lambda tmp: save_file(weights, str(tmp), metadata={"format": "pt"}),
                 overwrite)
    return target
