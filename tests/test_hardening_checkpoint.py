"""Hostile checkpoints: damaged or pickled parts, odd configs, FIFOs in the model folder, shard indexes escaping."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading

import pytest
import torch

from fiffdepth_core.weights.checkpoint import find_checkpoints, inspect_checkpoint, load_standalone
from fiffdepth_core.weights.layout import CheckpointError
from fiffdepth_core.weights.text_embed import EMBED_FILE


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    return target


def test_a_corrupt_cached_embedding_is_recomputed_from_the_text_encoder(checkpoint, tiny_backbone):
    (checkpoint / EMBED_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    backbone = load_standalone(checkpoint)
    assert torch.equal(backbone.empty_embed, tiny_backbone.empty_embed)


def test_a_corrupt_cached_embedding_without_a_text_encoder_is_one_clear_error(checkpoint):
    (checkpoint / EMBED_FILE).write_bytes(b"not safetensors")
    shutil.rmtree(checkpoint / "text_encoder")
    with pytest.raises(CheckpointError, match=rf"{EMBED_FILE} \(the cached empty-prompt embedding\) is damaged.*no "
                                              "text encoder"):
        load_standalone(checkpoint)


@pytest.mark.parametrize("content", ["[1, 2, 3]", "\"unet\"", "null"])
def test_a_config_json_that_is_not_an_object_is_named(checkpoint, content):
    (checkpoint / "unet" / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=r"unet/config\.json must hold a JSON object"):
        inspect_checkpoint(checkpoint)


@pytest.mark.parametrize("key, value", [("cross_attention_dim", 32.0), ("block_out_channels", [32.0, 64.0]),
                                        ("sample_size", 8.5), ("layers_per_block", True)])
def test_float_dimensions_in_a_config_are_named(checkpoint, key, value):
    path = checkpoint / "unet" / "config.json"
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"`{key}` in the unet config must be a whole number"):
        load_standalone(checkpoint)


def test_a_pickled_text_encoder_never_runs_code(checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    (checkpoint / EMBED_FILE).unlink(missing_ok=True)
    (checkpoint / "text_encoder" / "model.safetensors").unlink()
    (checkpoint / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is not a plain tensor file: it holds Python objects"):
        load_standalone(checkpoint)
    assert not marker.exists()


def test_a_text_encoder_in_plain_tensor_pickle_format_still_loads(checkpoint, tiny_backbone):
    from safetensors.torch import load_file

    folder = checkpoint / "text_encoder"
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    (checkpoint / EMBED_FILE).unlink(missing_ok=True)
    assert torch.allclose(load_standalone(checkpoint).empty_embed, tiny_backbone.empty_embed)


def _finishes(function, seconds=20):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), result.get("value")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_named_like_a_checkpoint_is_skipped_not_opened(checkpoint, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    os.mkfifo(root / "x.safetensors")
    shutil.copytree(checkpoint, root / "real")
    done, names = _finishes(lambda: find_checkpoints(root))
    if not done:  # unblock the reader so the test process can end
        with open(root / "x.safetensors", "wb"):
            pass
    assert done and names == ["real"]
    with pytest.raises(CheckpointError, match="not a regular file or folder"):
        inspect_checkpoint(root / "x.safetensors")


def test_a_shard_index_may_not_leave_its_folder(checkpoint, tmp_path):
    unet = checkpoint / "unet"
    outside = tmp_path / "somewhere.safetensors"
    shutil.move(unet / "diffusion_pytorch_model.safetensors", outside)
    from safetensors import safe_open

    with safe_open(str(outside), framework="pt") as handle:
        keys = list(handle.keys())
    relative = os.path.relpath(outside, unet)
    assert relative.startswith("..")
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: relative for k in keys}}))
    with pytest.raises(CheckpointError, match="shard indexes may not point elsewhere"):
        load_standalone(checkpoint)
