"""Checkpoint layouts, the empty-prompt embedding, and the errors for malformed or foreign checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import find_checkpoints, inspect_checkpoint, load_standalone
from fiffdepth_core.weights.export import export_bundle, export_single_files
from fiffdepth_core.weights.layout import CheckpointError
from fiffdepth_core.weights.text_embed import EMBED_FILE, compute_empty_embedding, read_embedding
from fiffdepth_testkit.images import seeded_images


def depth_of(backbone, images):
    with torch.inference_mode():
        return predict_depth(backbone, images, PredictConfig(processing_resolution=0))


@pytest.fixture
def fresh_checkpoint(tiny_checkpoint, tmp_path):
    """A private copy of the tiny checkpoint without a cached embedding."""
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    (copy / EMBED_FILE).unlink(missing_ok=True)
    return copy


def test_embedding_is_the_unpadded_text_encoder_output_and_is_cached(fresh_checkpoint, monkeypatch):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(fresh_checkpoint / "tokenizer")
    ids = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids
    assert ids.tolist() == [[tokenizer.bos_token_id, tokenizer.eos_token_id]]
    with torch.no_grad():
        expected = CLIPTextModel.from_pretrained(fresh_checkpoint / "text_encoder")(ids).last_hidden_state
    backbone = load_standalone(fresh_checkpoint)
    assert backbone.empty_embed.shape == (1, 2, 32)
    assert torch.equal(backbone.empty_embed, expected.float())
    assert torch.equal(read_embedding(fresh_checkpoint / EMBED_FILE), expected.float())
    # A second load reuses the cache: the text encoder is not run again.
    monkeypatch.setattr("fiffdepth_core.weights.checkpoint.compute_empty_embedding",
                        lambda *a: pytest.fail("the cached embedding was not reused"))
    assert torch.equal(load_standalone(fresh_checkpoint).empty_embed, expected.float())


def test_padded_77_token_embedding_differs(fresh_checkpoint):
    """Why the unpadded form matters: the 77-token encoding's first two rows match, the rest change attention."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(fresh_checkpoint / "tokenizer")
    padded = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        long = CLIPTextModel.from_pretrained(fresh_checkpoint / "text_encoder")(padded).last_hidden_state
    short = compute_empty_embedding(fresh_checkpoint / "text_encoder", fresh_checkpoint / "tokenizer")
    assert long.shape == (1, 77, 32)
    assert torch.allclose(long[:, :2], short, atol=1e-6)  # causal encoder: BOS/EOS never see the padding


def test_read_only_checkpoint_still_loads(fresh_checkpoint):
    fresh_checkpoint.chmod(0o555)
    try:
        assert load_standalone(fresh_checkpoint).empty_embed.shape == (1, 2, 32)
    finally:
        fresh_checkpoint.chmod(0o755)


def test_three_layouts_give_the_same_depth(tiny_checkpoint, tiny_backbone, tmp_path):
    images = seeded_images(1, 64, 64, seed=3)
    expected = depth_of(tiny_backbone, images)
    single = export_single_files(tmp_path / "single", tiny_backbone.unet, tiny_backbone.vae, tiny_backbone.empty_embed)
    bundle = export_bundle(tmp_path / "one.safetensors", tiny_backbone.unet, tiny_backbone.vae,
                           tiny_backbone.empty_embed)
    for path, layout in ((tiny_checkpoint, "diffusers"), (single, "single_files"), (bundle, "bundle")):
        assert inspect_checkpoint(path).layout == layout
        assert torch.equal(depth_of(load_standalone(path), images), expected)
    assert set(find_checkpoints(tmp_path)) == {"single", "one.safetensors"}


def test_bin_weights_and_fp16_variant_load(tiny_checkpoint, tiny_backbone, tmp_path):
    from safetensors.torch import load_file

    copy = tmp_path / "bin"
    shutil.copytree(tiny_checkpoint, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), copy / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    vae = copy / "vae" / "diffusion_pytorch_model.safetensors"
    vae.rename(copy / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    images = seeded_images(1, 64, 64, seed=4)
    assert torch.equal(depth_of(load_standalone(copy), images), depth_of(tiny_backbone, images))


def test_missing_parts_are_listed(tiny_checkpoint, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, copy)
    shutil.rmtree(copy / "vae")
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(copy / "text_encoder")
    (copy / EMBED_FILE).unlink(missing_ok=True)
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(copy)
    message = str(err.value)
    for expected in ("missing vae/config.json", "missing unet/diffusion_pytorch_model.safetensors",
                     "empty-prompt embedding", "found: model_index.json, tokenizer/, unet/", "expected one of"):
        assert expected in message


def test_not_a_checkpoint_and_not_found(tmp_path):
    (tmp_path / "random_folder").mkdir()
    (tmp_path / "random_folder" / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="notes.txt"):
        inspect_checkpoint(tmp_path / "random_folder")
    with pytest.raises(CheckpointError, match="not found"):
        inspect_checkpoint(tmp_path / "nowhere")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable"):
        inspect_checkpoint(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("edit, load, message", [
    ({"in_channels": 8}, load_standalone, "not a FiffDepth checkpoint: its UNet takes 8 input channels"),  # Marigold
    ({"class_embed_type": "projection"}, inspect_checkpoint, "class_embed_type"),  # Lotus
    ({"block_out_channels": [64, 64]}, load_standalone, "do not fit the config"),  # weights of another geometry
], ids=["marigold_style_unet", "lotus_style_class_embedding", "weights_that_do_not_fit_the_config"])
def test_foreign_unet_configs_are_refused_with_a_reason(tiny_checkpoint, tmp_path, edit, load, message):
    copy = tmp_path / "edited"
    shutil.copytree(tiny_checkpoint, copy)
    config = json.loads((copy / "unet" / "config.json").read_text())
    config.update(edit)
    (copy / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load(copy)


def test_ldm_keyed_single_file_is_explained(tiny_backbone, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "ldm"
    export_single_files(folder, tiny_backbone.unet, tiny_backbone.vae, tiny_backbone.empty_embed)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(folder / "unet.safetensors"))
    with pytest.raises(CheckpointError, match="LDM key layout"):
        inspect_checkpoint(folder)


def test_bundle_without_embedding_is_refused(tiny_backbone, tmp_path):
    from safetensors.torch import load_file, save_file

    bundle = export_bundle(tmp_path / "b.safetensors", tiny_backbone.unet, tiny_backbone.vae, tiny_backbone.empty_embed)
    tensors = load_file(str(bundle))
    del tensors["empty_text_embed"]
    save_file(tensors, str(tmp_path / "no_embed.safetensors"))
    with pytest.raises(CheckpointError, match="empty_text_embed"):
        inspect_checkpoint(tmp_path / "no_embed.safetensors")
