"""The model catalogue: pinned, minimal, licensed records, and the names users may type for them."""

from __future__ import annotations

import re

import pytest

from fiffdepth_core.method.families import FAMILIES
from fiffdepth_core.weights.catalogue import (CATALOGUE, COMFY_CORE_FILES, DEFAULT_ID, UnknownModelError, find_model,
                                              get_model, human_size, ids)

COMMIT = re.compile(r"^[0-9a-f]{40}$")
# The issue's minimum: Lotus-D v1.0, v1.1, v2.0 disparity, Marigold-E2E-FT depth, GenPercept depth.
REQUIRED = {"jingheya/lotus-depth-d-v1-0", "jingheya/lotus-depth-d-v1-1", "jingheya/lotus-depth-d-v2-0-disparity",
            "GonzaloMG/marigold-e2e-ft-depth", "guangkaixu/genpercept-depth"}


def test_the_catalogue_holds_the_models_the_issue_names_each_once():
    assert REQUIRED <= {m.repo for m in CATALOGUE}
    assert len(ids()) == len(set(ids())) == len(CATALOGUE)
    for model in CATALOGUE:
        assert model.id == model.repo.split("/")[1].lower(), "the install folder is named after the repository"


@pytest.mark.parametrize("model", CATALOGUE, ids=lambda m: m.id)
def test_each_record_is_pinned_minimal_and_licensed(model):
    assert COMMIT.match(model.revision), f"{model.id}: a commit hash, not a branch ({model.revision!r})"
    assert model.family in FAMILIES
    unet = [f for f in model.files if f.endswith("diffusion_pytorch_model.safetensors") and not f.startswith("vae/")]
    assert len(unet) == 1 and "vae/diffusion_pytorch_model.safetensors" in model.files
    assert "vae/config.json" in model.files and f"{unet[0].split('/')[0]}/config.json" in model.files
    assert not any(f.startswith(("text_encoder/", "tokenizer/", "feature_extractor/", "assets/")) for f in model.files)
    assert len(set(model.files)) == len(model.files)
    if model.family == "marigold-e2e-ft":  # its family is read from the scheduler (trailing, v-prediction)
        assert "scheduler/scheduler_config.json" in model.files
    if model.family == "genpercept":  # no scheduler in the repository: detection reads model_index.json
        assert "model_index.json" in model.files
    assert model.licence and model.size > 150e6
    assert model.permissive == (model.licence == "apache-2.0")
    assert model.url("vae/config.json") == (f"https://huggingface.co/{model.repo}/resolve/{model.revision}/"
                                            "vae/config.json")


def test_the_default_is_permissive_and_in_the_catalogue():
    default = get_model(DEFAULT_ID)
    assert default.permissive
    assert not get_model("genpercept-depth").permissive  # non-commercial: never a default


@pytest.mark.parametrize("name", ["lotus-depth-d-v1-1", "jingheya/lotus-depth-d-v1-1", "JINGHEYA/Lotus-Depth-D-V1-1",
                                  "jingheya/lotus-depth-d-v1-1@18f3f52f495ac63934a7c07f4286fce663fbadf4",
                                  "lotus-depth-d-v1-1 (download 1.9 GB)", " lotus-depth-d-v1-1 "])
def test_a_model_is_found_by_id_repository_or_menu_label(name):
    assert get_model(name).repo == "jingheya/lotus-depth-d-v1-1"


@pytest.mark.parametrize("name", ["lotus", "jingheya/lotus-depth-d-v1-1@main", "jingheya/lotus-depth-g-v1-0", "",
                                  "./lotus-depth-d-v1-1"])
def test_other_names_are_not_catalogue_models(name):
    assert find_model(name) is None
    with pytest.raises(UnknownModelError, match="not in the catalogue.*lotus-depth-d-v1-0"):
        get_model(name)


def test_labels_carry_the_download_size():
    assert get_model("lotus-depth-d-v1-1").label == "lotus-depth-d-v1-1 (download 1.9 GB)"
    assert [human_size(n) for n in (999, 1000, 335_000_000, 1_902_000_000, 3_805_000_000)] == \
        ["999 B", "1 kB", "335 MB", "1.9 GB", "3.8 GB"]


def test_fp16_variants_are_fetched_unless_fp32_is_asked():
    from dataclasses import replace

    model = replace(get_model("lotus-depth-d-v1-0"), variant="fp16")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in model.files_for()
    assert "unet/config.json" in model.files_for()
    assert model.files_for(fp32=True) == model.files
    assert get_model("lotus-depth-d-v1-0").files_for() == get_model("lotus-depth-d-v1-0").files  # none published


def test_the_comfyui_core_route_lists_files_for_cores_loaders():
    files = COMFY_CORE_FILES["lotus-depth-d-v1-1"]
    assert {f.directory for f in files} == {"diffusion_models", "vae"}
    for f in files:
        assert f.url == f"https://huggingface.co/{f.repo}/resolve/{f.revision}/{f.path}"
        assert f.pinned == bool(COMMIT.match(f.revision)), "a file is pinned exactly when its revision is a commit"
        assert f.size > 100e6
