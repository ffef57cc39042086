"""The text-encoder trap: weights saved by one transformers version must load, checked, in every other.

transformers 5 writes CLIPTextModel keys without ``text_model.``; transformers 4 (Forge pins 4.46, A1111 4.30)
reads such a file as "no weights found" and keeps a random encoder. These tests write both layouts by hand (so they
hold whichever transformers runs them: CI has 5.x, the WebUI venvs 4.x) and compare the empty-prompt embedding with
the one the in-memory encoder computes.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fiffdepth_core.weights.checkpoint import empty_embedding, inspect_checkpoint
from fiffdepth_core.weights.layout import CheckpointError
from fiffdepth_core.weights.text_embed import EMBED_FILE, compute_empty_embedding
from fiffdepth_core.weights.text_encoder import PREFIX, load_text_encoder
from fiffdepth_testkit.models import (
    TINY_TEXT_CONFIG,
    geometry_configs,
    random_text_encoder,
    write_minimal_clip_tokenizer,
    write_random_pipeline,
)


@pytest.fixture(scope="module")
def encoder():
    return random_text_encoder(TINY_TEXT_CONFIG, seed=3)


def reference_embedding(model) -> torch.Tensor:
    ids = torch.tensor([[TINY_TEXT_CONFIG["bos_token_id"], TINY_TEXT_CONFIG["eos_token_id"]]])  # "" unpadded
    with torch.inference_mode():
        return model(ids).last_hidden_state.float()  # [1,2,D]


def bare_state_dict(model) -> dict[str, torch.Tensor]:
    """Keys without ``text_model.`` (transformers 5's layout), whatever version built ``model``."""
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v.contiguous() for k, v in model.state_dict().items()
            if not k.endswith("position_ids")}


def write_encoder(folder, weights: dict, tokenizer: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text_encoder").mkdir(exist_ok=True)
    (folder / "text_encoder" / "config.json").write_text(json.dumps(
        {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **TINY_TEXT_CONFIG}))
    save_file(weights, str(folder / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer:
        write_minimal_clip_tokenizer(folder / "tokenizer", TINY_TEXT_CONFIG["vocab_size"])
    return folder / "text_encoder", folder / "tokenizer"


@pytest.mark.parametrize("prefixed", [False, True], ids=["transformers5-layout", "transformers4-layout"])
def test_both_key_layouts_give_the_encoders_embedding(tmp_path, encoder, prefixed):
    weights = bare_state_dict(encoder)
    if prefixed:
        weights = {PREFIX + k: v for k, v in weights.items()}
    text_dir, tok_dir = write_encoder(tmp_path, weights)
    embed = compute_empty_embedding(text_dir, tok_dir)
    assert torch.equal(embed, reference_embedding(encoder))
    # and not by luck: a differently seeded encoder gives a clearly different embedding
    assert (reference_embedding(random_text_encoder(TINY_TEXT_CONFIG, seed=4)) - embed).abs().max() > 0.1


@pytest.mark.parametrize("damage", ["drop_final_norm", "foreign_keys"])
def test_partial_or_foreign_weights_are_refused(tmp_path, encoder, damage):
    weights = bare_state_dict(encoder)
    if damage == "drop_final_norm":
        weights = {k: v for k, v in weights.items() if not k.startswith("final_layer_norm.")}
        expect = r"2 missing"
    else:
        weights = {"transformer." + k: v for k, v in weights.items()}  # e.g. a Forge/ComfyUI-style CLIP dump
        expect = r"0 of \d+ tensors matched"
    text_dir, tok_dir = write_encoder(tmp_path, weights)
    with pytest.raises(CheckpointError, match=expect) as err:
        compute_empty_embedding(text_dir, tok_dir)
    assert "partly random encoder" in str(err.value)


def test_loader_never_caches_an_embedding_from_a_refused_encoder(tmp_path, encoder):
    root = write_random_pipeline(tmp_path / "ckpt", geometry="tiny", seed=0)
    weights = {k: v for k, v in bare_state_dict(encoder).items() if "layers.1." not in k}
    save_file(weights, str(root / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="text encoder weights do not fit"):
        empty_embedding(inspect_checkpoint(root))
    assert not (root / EMBED_FILE).exists()


def test_export_writes_the_layout_every_version_reads(tmp_path, encoder):
    from fiffdepth_core.weights.export import export_diffusers
    from fiffdepth_testkit.models import random_unet, random_vae

    text_dir, tok_dir = write_encoder(tmp_path / "src", bare_state_dict(encoder))  # transformers 5 layout in
    unet_cfg, vae_cfg, _ = geometry_configs("tiny")
    out = export_diffusers(tmp_path / "out", random_unet(unet_cfg, 0), random_vae(vae_cfg, 1),
                           reference_embedding(encoder), text_dir, tok_dir)
    keys = set(load_file(str(out / "text_encoder" / "model.safetensors")))
    assert keys and all(k.startswith(PREFIX) for k in keys)  # transformers 4 and 5 both read this
    assert (out / EMBED_FILE).is_file()  # the cached embedding travels too
    assert torch.equal(reference_embedding(load_text_encoder(out / "text_encoder")), reference_embedding(encoder))
    shutil.rmtree(out / "text_encoder")  # the bundle's embedding alone is enough to load
    assert torch.equal(empty_embedding(inspect_checkpoint(out)), reference_embedding(encoder))
