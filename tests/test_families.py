"""Lotus-D, GenPercept and Marigold-E2E-FT through the FiffDepth predictor, against their official inference.

The references (tests/family_reference.py) are written from the authors' code directly on diffusers; the checkpoints
(tests/family_checkpoints.py) are tiny seeded models in the layouts the authors publish.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from family_checkpoints import MARIGOLD_V1_SCHEDULER, write_e2e_ft, write_genpercept, write_lotus
from family_reference import genpercept, lotus_d, marigold_e2e_ft

from fiffdepth_core.method.families import FAMILIES, get_family
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import inspect_checkpoint, load_standalone
from fiffdepth_core.weights.layout import CheckpointError
from fiffdepth_testkit.images import seeded_images

TOL = 1e-5


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {"lotus": write_lotus(root / "lotus-depth-d-v1-0"),
            "e2e": write_e2e_ft(root / "marigold-e2e-ft-depth"),
            "genpercept": write_genpercept(root / "genpercept-models", unets=("unet_depth_v2", "unet_normal_v2"))}


def uint8_images(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return (seeded_images(batch, height, width, seed=seed) * 255).round().to(torch.uint8)  # [B,3,H,W]


def ours(path, images_uint8, family="auto", batch_size=1):
    """One image per model call, as the official scripts run (batched CPU kernels round differently, ~1e-5)."""
    backbone = load_standalone(path, family=family)
    config = PredictConfig(processing_resolution=0, batch_size=batch_size)
    return predict_depth(backbone, images_uint8.float() / 255.0, config), backbone


def check_parity(mine, ref):
    assert mine.shape == ref.shape
    assert (mine - ref).abs().max().item() <= TOL
    assert ref.std() > 0.01  # not two constant maps


def test_lotus_d_matches_official_inference(family_dirs):
    images = uint8_images(2, 64, 128, seed=1)
    mine, backbone = ours(family_dirs["lotus"], images)
    assert backbone.family.name == "lotus-d"
    check_parity(mine, lotus_d(family_dirs["lotus"], images))


def test_marigold_e2e_ft_matches_official_inference(family_dirs):
    images = uint8_images(2, 64, 64, seed=2)
    mine, backbone = ours(family_dirs["e2e"], images)
    assert backbone.family.name == "marigold-e2e-ft" and backbone.family.timestep == 999
    ref = marigold_e2e_ft(family_dirs["e2e"], images)
    check_parity(mine, ref)
    batched, _ = ours(family_dirs["e2e"], images, batch_size=2)  # the min-max stays per image in a batch
    assert batched.amin(dim=(1, 2)).tolist() == [0.0, 0.0] and batched.amax(dim=(1, 2)).tolist() == [1.0, 1.0]
    assert (batched - ref).abs().max().item() <= 1e-4


def test_genpercept_matches_official_inference(family_dirs):
    images = uint8_images(2, 128, 64, seed=3)
    mine, backbone = ours(family_dirs["genpercept"], images)  # the depth UNet is picked beside the normal one
    assert backbone.family.name == "genpercept" and backbone.family.timestep == 1
    check_parity(mine, genpercept(family_dirs["genpercept"], images))


def test_v_coefficients_are_the_schedulers(family_dirs):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_pretrained(family_dirs["e2e"] / "scheduler")
    a, b = get_family("marigold-e2e-ft").v_coefficients(999)
    alpha_prod = sched.alphas_cumprod[999]  # the fp32 value DDIMScheduler.step uses
    assert torch.equal(a, alpha_prod ** 0.5) and torch.equal(b, (1 - alpha_prod) ** 0.5)
    assert alpha_prod.item() == pytest.approx(0.0046601, rel=1e-4)
    a, b = get_family("genpercept").v_coefficients(1)
    assert (a.item(), b.item()) == (0.0, 1.0)


def test_disparity_checkpoints_are_returned_as_depth(family_dirs, tmp_path):
    images = uint8_images(1, 64, 64, seed=4)
    disparity_dir = tmp_path / "lotus-depth-d-v2-0-disparity"
    shutil.copytree(family_dirs["lotus"], disparity_dir)
    mine, backbone = ours(disparity_dir, images)
    assert backbone.family.name == "lotus-d-disparity"
    official = lotus_d(disparity_dir, images)  # the official output is disparity, 1 = near
    assert (mine - (1 - official)).abs().max().item() <= TOL
    forced, backbone = ours(disparity_dir, images, family="lotus-d")  # the override wins over the name
    assert backbone.family.name == "lotus-d" and (forced - official).abs().max().item() <= TOL


def test_genpercept_unet_folder_can_be_named_directly(family_dirs, tmp_path):
    root = write_genpercept(tmp_path / "gp", unets=("unet_disparity_v2",), with_index=False, with_scheduler=True)
    info = inspect_checkpoint(root / "unet_disparity_v2")  # detected from the beta-1 scheduler alone
    assert info.family.name == "genpercept-disparity" and info.path == root
    assert inspect_checkpoint(root).family.name == "genpercept-disparity"  # the only UNet is taken


def test_lotus_resizes_back_with_nearest(family_dirs):
    """96x160 at processing resolution 128 runs at 77x128; Lotus returns to the input size by nearest-exact."""
    images = seeded_images(1, 96, 160, seed=5)
    backbone = load_standalone(family_dirs["lotus"])
    small = torch.nn.functional.interpolate(images, size=(77, 128), mode="bilinear", antialias=True)
    at_processing_size = predict_depth(backbone, small, PredictConfig(processing_resolution=0))  # [1,77,128]
    resized = predict_depth(backbone, images, PredictConfig(processing_resolution=128))
    expected = torch.nn.functional.interpolate(at_processing_size[:, None], size=(96, 160), mode="nearest-exact")
    assert (resized - expected[:, 0]).abs().max().item() <= TOL


def test_filtered_pass_is_fiffdepth_only(family_dirs):
    backbone = load_standalone(family_dirs["lotus"])
    with pytest.raises(ValueError, match="'filtered'.*only for FiffDepth"):
        predict_depth(backbone, seeded_images(1, 64, 64), PredictConfig(depth_pass="filtered"))


# --- detection -------------------------------------------------------------------------------------------------


def _edit(folder, relative, **changes):
    path = folder / relative
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_each_layout_is_recognised(family_dirs, tiny_checkpoint):
    assert inspect_checkpoint(tiny_checkpoint).family.name == "fiffdepth"
    assert inspect_checkpoint(family_dirs["lotus"]).family.name == "lotus-d"
    assert inspect_checkpoint(family_dirs["e2e"]).family.name == "marigold-e2e-ft"
    info = inspect_checkpoint(family_dirs["genpercept"])
    assert info.family.name == "genpercept" and info.weights["unet"].parent.name == "unet_depth_v2"


def test_multi_step_marigold_is_refused(family_dirs, tmp_path):
    copy = tmp_path / "marigold-depth-v1-0"
    shutil.copytree(family_dirs["e2e"], copy)
    (copy / "scheduler" / "scheduler_config.json").write_text(json.dumps(MARIGOLD_V1_SCHEDULER))
    with pytest.raises(CheckpointError, match="multi-step Marigold is not a one-pass model") as err:
        inspect_checkpoint(copy)
    assert "timestep_spacing='leading'" in str(err.value) and "family" in str(err.value)
    (copy / "scheduler" / "scheduler_config.json").write_text(json.dumps({**MARIGOLD_V1_SCHEDULER,
                                                                          "timestep_spacing": "trailing"}))
    _edit(copy, "model_index.json", _class_name="MarigoldDepthPipeline", default_denoising_steps=4)
    with pytest.raises(CheckpointError, match="multi-step Marigold"):  # Marigold v1-1: trailing, but 4 steps
        inspect_checkpoint(copy)
    assert inspect_checkpoint(copy, family="marigold-e2e-ft").family.name == "marigold-e2e-ft"  # the override


def test_unknown_and_mismatched_unets_name_what_was_found(family_dirs, tiny_checkpoint, tmp_path):
    copy = tmp_path / "odd"
    shutil.copytree(family_dirs["lotus"], copy)
    _edit(copy, "unet/config.json", projection_class_embeddings_input_dim=8)
    with pytest.raises(CheckpointError, match="projection_class_embeddings_input_dim=8.*family = one of fiffdepth"):
        inspect_checkpoint(copy)
    with pytest.raises(CheckpointError, match="family 'lotus-d' needs a UNet with class_embed_type='projection'"):
        inspect_checkpoint(tiny_checkpoint, family="lotus-d")
    with pytest.raises(CheckpointError, match="family 'marigold-e2e-ft' needs a UNet with 8 input"):
        inspect_checkpoint(family_dirs["lotus"], family="marigold-e2e-ft")
    with pytest.raises(CheckpointError, match="`family` must be one of auto, fiffdepth"):
        inspect_checkpoint(tiny_checkpoint, family="lotus")


def test_eight_channels_without_a_scheduler_are_ambiguous(family_dirs, tmp_path):
    from fiffdepth_core.weights.export import export_single_files

    backbone = load_standalone(family_dirs["e2e"])
    folder = export_single_files(tmp_path / "single", backbone.unet, backbone.vae, backbone.empty_embed)
    with pytest.raises(CheckpointError, match="no scheduler config.*pass it explicitly"):
        inspect_checkpoint(folder)
    assert inspect_checkpoint(folder, family="marigold-e2e-ft").family.timestep == 999


def test_listing_offers_each_unet_of_a_genpercept_folder(family_dirs, tmp_path):
    from fiffdepth_core.weights.checkpoint import find_checkpoints

    root = family_dirs["genpercept"].parent
    names = find_checkpoints(root)
    assert {"genpercept-models", "genpercept-models/unet_depth_v2", "genpercept-models/unet_normal_v2"} <= set(names)
    assert "lotus-depth-d-v1-0/unet" not in names  # a single UNet is not listed twice


def test_generative_and_other_task_siblings_are_refused(family_dirs, tmp_path):
    lotus_g = tmp_path / "lotus-g"
    shutil.copytree(family_dirs["lotus"], lotus_g)
    _edit(lotus_g, "model_index.json", _class_name="LotusGPipeline")
    with pytest.raises(CheckpointError, match="Lotus-G.*not a one-pass model"):
        inspect_checkpoint(lotus_g)
    normals = write_genpercept(tmp_path / "gp", unets=("unet_normal_v2",))
    with pytest.raises(CheckpointError, match="'normal' checkpoint"):
        inspect_checkpoint(normals)
    several = write_genpercept(tmp_path / "gp2", unets=("unet_normal_v2", "unet_seg_v2"))
    with pytest.raises(CheckpointError, match="several UNets.*unet_normal_v2, unet_seg_v2"):
        inspect_checkpoint(several)


def test_family_names_are_the_cli_and_loader_choices():
    from fiffdepth_core.app.cli import build_parser

    args = build_parser().parse_args(["predict", "x.png", "--checkpoint", "c", "--family", "genpercept"])
    assert args.family == "genpercept" and set(FAMILIES) >= {"fiffdepth", "lotus-d", "genpercept", "marigold-e2e-ft"}


def test_cli_runs_a_family_checkpoint_and_honours_the_override(family_dirs, tmp_path, caplog):
    import numpy as np
    from PIL import Image

    from fiffdepth_core.app.cli import main

    images = uint8_images(1, 64, 64, seed=6)
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "photo.png"), "--checkpoint", str(family_dirs["e2e"]),
                 "--processing-resolution", "0", "--format", "npy", "--output-dir", str(out), "-q"])
    assert code == 0
    written = torch.from_numpy(np.load(out / "photo.npy"))[None]
    assert (written - marigold_e2e_ft(family_dirs["e2e"], images)).abs().max().item() <= TOL
    code = main(["predict", str(tmp_path / "photo.png"), "--checkpoint", str(family_dirs["e2e"]), "--family",
                 "lotus-d", "--output-dir", str(tmp_path / "out2"), "-q"])
    assert code == 2 and "family 'lotus-d' needs a UNet with 4 input" in caplog.text
