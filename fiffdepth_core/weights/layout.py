"""The files of a checkpoint: finding weights files, reading them safely, reading configs, one error type.

Shared by the checkpoint loader and the text encoder. Weights are read as plain tensors only: safetensors, or
PyTorch files through ``torch.load(weights_only=True)``; a file holding other Python objects is refused, since
loading those could run code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from ..fileio.errors import UserInputError

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".fp16.safetensors", ".bin", ".bin.index.json",
                   ".fp16.bin")
LAYOUTS = "a diffusers pipeline folder, a folder of single .safetensors files, or one .safetensors bundle"


class CheckpointError(UserInputError):
    """A checkpoint is missing, incomplete, malformed, or not a FiffDepth checkpoint."""

    what = "checkpoint"


def listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:30]) + (" ..." if len(names) > 30 else "") if names else "(empty folder)"


def find_weights(folder: Path, stem: str) -> Path | None:
    for suffix in WEIGHT_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object ({{...}}), got {type(data).__name__}")
    return data


# Config entries diffusers uses as sizes and counts: they must be whole numbers (a float breaks model building).
INT_KEYS = ("in_channels", "out_channels", "latent_channels", "sample_size", "cross_attention_dim",
            "layers_per_block", "norm_num_groups", "attention_head_dim", "num_attention_heads", "block_out_channels",
            "transformer_layers_per_block", "num_class_embeds", "projection_class_embeddings_input_dim")


def check_config_types(config: dict, where, part: str) -> None:
    """Refuse size/count entries that are not integers (or lists of integers) with one clear message."""
    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key in INT_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if not (whole(value) or (isinstance(value, (list, tuple)) and value and all(whole(v) for v in value))):
            raise CheckpointError(f"{where}: `{key}` in the {part} config must be a whole number (or a list of them), "
                                  f"got {value!r}")


def read_safetensors_header(path: Path, shape_of: str | None = None) -> tuple[list[str], dict, list | None]:
    """Keys, metadata and (if ``shape_of`` names a present tensor) that tensor's shape, from one header read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            shape = handle.get_slice(shape_of).get_shape() if shape_of in keys else None
            return keys, dict(handle.metadata() or {}), shape
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable .safetensors file: {err}") from err


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    name = path.name
    if name.endswith(".index.json"):
        weight_map = read_json(path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map or \
                not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path}: `weight_map` must map tensor names to shard file names")
        merged: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if shard in ("", ".", "..") or "/" in shard or "\\" in shard or shard.endswith(".index.json"):
                raise CheckpointError(f"{path}: shard {shard!r} is not a file name in the index's own folder "
                                      "(shard indexes may not point elsewhere)")
            merged.update(load_weights_file(path.parent / shard))
        return merged
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: exactly what must not be done
        raise CheckpointError(f"{path} is not a plain tensor file: it holds Python objects other than tensors, and "
                              "loading those could run code, so it is refused; convert it to .safetensors from a "
                              "source you trust") from None
    except Exception as err:
        raise CheckpointError(f"cannot read weights {path}: {err}") from None
