"""The catalogue: the public weights the pack runs, one frozen record per model.

Each record pins a Hugging Face repository to one commit and lists the few files the one-step pass needs (UNet and
VAE weights and configs, the scheduler config where the family is read from it, ``model_index.json`` where detection
reads the pipeline class). Text encoders are never fetched: every family conditions on the SD2 empty-prompt
embedding, which ships with the package (:mod:`fiffdepth_core.weights.text_embed`).

Sizes are what a download costs, for display and a first disk check; the download itself checks the free space and
every file against the sizes and sha256 the hub announces for the pinned commit (:mod:`.download`). Where a file's
exact size was not published on a page we could read, the size is the rounded figure the hub shows (``exact_size``
is False). Where each pin and size came from is in ``docs/models.md``.

A second kind of record, :data:`COMFY_CORE_FILES`, lists single files that ComfyUI core's own loaders read (the
``UNETLoader`` + ``VAELoader`` route of core's Lotus template), with the folder each goes in: bundled workflows carry
them as the frontend's model metadata, so its missing-models dialog can fetch them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..fileio.errors import UserInputError

GB, MB = 1000**3, 1000**2

HUB = "https://huggingface.co"

# Lotus' diffusers pipeline folders: what the pass reads, nothing else (no text_encoder/, tokenizer/, assets/).
PIPELINE_FILES = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                  "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                  "vae/diffusion_pytorch_model.safetensors")


@dataclass(frozen=True)
class CatalogueModel:
    """One downloadable model (see the module docstring)."""

    id: str  # the folder name it installs as, and the name users type
    title: str
    family: str  # a name from fiffdepth_core.method.families.FAMILIES
    repo: str  # Hugging Face repository id
    revision: str  # the pinned commit (40 hex digits)
    files: tuple[str, ...]  # repository paths to fetch
    licence: str
    permissive: bool  # usable commercially without asking
    size: int  # bytes downloaded (sum of the files)
    exact_size: bool
    weights_dtype: str  # how the published weights are stored (fp16 / fp32, per part where they differ)
    note: str = ""  # one line shown by `python -m fiffdepth_core models`
    variant: str | None = None  # a published lower-precision variant (diffusers' `variant=`): fetched unless fp32

    def url(self, path: str) -> str:
        """The pinned download URL of one of ``files`` on the public hub."""
        return f"{HUB}/{self.repo}/resolve/{self.revision}/{path}"

    def files_for(self, fp32: bool = False) -> tuple[str, ...]:
        """The files to fetch: with a published ``variant``, its ``.<variant>.`` weights unless ``fp32`` is asked."""
        if self.variant is None or fp32:
            return self.files
        return tuple(re.sub(r"\.(safetensors|bin)$", rf".{self.variant}.\1", f) if _is_weights(f) else f
                     for f in self.files)

    @property
    def label(self) -> str:
        """How host menus list the model while it is not installed: ``<id> (download 1.9 GB)``."""
        return f"{self.id} (download {human_size(self.size)})"


def _is_weights(path: str) -> bool:
    return path.endswith((".safetensors", ".bin"))


CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel(
        id="lotus-depth-d-v2-0-disparity", title="Lotus-D v2.0 (disparity)", family="lotus-d-disparity",
        repo="jingheya/lotus-depth-d-v2-0-disparity", revision="ddc9f4aee19e11612a2961f8efc4b3c21d657fcb",
        files=PIPELINE_FILES, licence="apache-2.0", permissive=True, size=3_638_000_000, exact_size=False,
        weights_dtype="fp16 VAE; UNet not listed on any page read (fp32, 3.47 GB, like its g-v2-0 sibling's, assumed)",
        note="the Lotus authors' latest depth model (their demo and evaluation script use it); default"),
    CatalogueModel(
        id="lotus-depth-d-v1-1", title="Lotus-D v1.1", family="lotus-d",
        repo="jingheya/lotus-depth-d-v1-1", revision="18f3f52f495ac63934a7c07f4286fce663fbadf4",
        files=PIPELINE_FILES, licence="apache-2.0", permissive=True, size=1_902_000_000, exact_size=False,
        weights_dtype="fp16", note="the smallest download; the model ComfyUI core's Lotus template runs"),
    CatalogueModel(
        id="lotus-depth-d-v1-0", title="Lotus-D v1.0", family="lotus-d",
        repo="jingheya/lotus-depth-d-v1-0", revision="9b858ffdbec93117d50de899e8bccf64345d8f3b",
        files=PIPELINE_FILES, licence="apache-2.0", permissive=True, size=3_805_000_000, exact_size=False,
        weights_dtype="fp32", note="the model of the Lotus paper's tables (NYUv2 AbsRel 5.1, KITTI 8.1)"),
    CatalogueModel(
        id="marigold-e2e-ft-depth", title="Marigold + E2E-FT (depth)", family="marigold-e2e-ft",
        repo="GonzaloMG/marigold-e2e-ft-depth", revision="ce2c7c0bd752148f48673606c564fa356fad0abf",
        files=PIPELINE_FILES, licence="apache-2.0", permissive=True, size=3_799_000_000, exact_size=False,
        weights_dtype="fp32", note="end-to-end fine-tuned Marigold, one step (NYUv2 AbsRel 5.2, KITTI 9.6)"),
    CatalogueModel(
        id="genpercept-depth", title="GenPercept (depth)", family="genpercept",
        repo="guangkaixu/genpercept-depth", revision="434835369bd0c2182ed2ad9b7578d262a6457dda",
        files=("model_index.json", "LICENSE.txt", "unet_depth_v2/config.json",
               "unet_depth_v2/diffusion_pytorch_model.safetensors", "vae/config.json",
               "vae/diffusion_pytorch_model.safetensors"),
        licence="BSD-2-Clause for non-commercial academic use (commercial use: ask the authors)", permissive=False,
        size=3_631_000_000, exact_size=False, weights_dtype="fp32 UNet, fp16 VAE",
        note="non-commercial use only (NYUv2 AbsRel 5.6, KITTI 9.9)"),
)

# The default where nothing is installed: the best published accuracy under a permissive licence. The Lotus authors
# announce their v2.0 disparity models as better than v1.0, whose published figures already lead the permissive
# models here (Lotus-D v1.0: NYUv2 AbsRel 5.1 / KITTI 8.1; E2E-FT: 5.2 / 9.6); GenPercept is non-commercial.
DEFAULT_ID = "lotus-depth-d-v2-0-disparity"


@dataclass(frozen=True)
class CoreFile:
    """A single file for ComfyUI core's loaders: where it comes from and the models folder it belongs in."""

    name: str  # file name in the folder
    directory: str  # ComfyUI models sub-folder: "diffusion_models", "vae"
    repo: str
    revision: str  # a commit, or "main" where no commit could be pinned (see `pinned`)
    path: str
    size: int
    licence: str
    pinned: bool
    sha256: str | None = None

    @property
    def url(self) -> str:
        return f"{HUB}/{self.repo}/resolve/{self.revision}/{self.path}"


# Core's "Image to Depth Map (Lotus)" route: Comfy-Org's single-file Lotus-D v1.1 UNet and the SD VAE core's template
# pairs with it. Comfy-Org/lotus shows no full commit hash on any page we could read, so that file stays on `main`
# (its expected size is known: 1,735,197,352 bytes, the same as the fp16 Lotus-D v1.1 UNet Kijai re-hosted).
COMFY_CORE_FILES: dict[str, tuple[CoreFile, ...]] = {
    "lotus-depth-d-v1-1": (
        CoreFile("lotus-depth-d-v1-1.safetensors", "diffusion_models", "Comfy-Org/lotus", "main",
                 "lotus-depth-d-v1-1.safetensors", 1_735_197_352, "apache-2.0 (upstream; not declared on the repo)",
                 pinned=False),
        CoreFile("vae-ft-mse-840000-ema-pruned.safetensors", "vae", "stabilityai/sd-vae-ft-mse-original",
                 "629b3ad3030ce36e15e70c5db7d91df0d60c627f", "vae-ft-mse-840000-ema-pruned.safetensors", 334_641_190,
                 "mit", pinned=True, sha256="735e4c3a447a3255760d7f86845f09f937809baa529c17370d83e4c3758f3c75"),
    ),
}


class UnknownModelError(UserInputError):
    """A name that is neither a catalogue id nor a catalogue model's repository."""

    what = "model"


def get_model(name: str) -> CatalogueModel:
    """The record for a catalogue id (``lotus-depth-d-v1-1``), its menu label (``... (download 1.9 GB)``) or its
    Hugging Face repository id (``jingheya/lotus-depth-d-v1-1``, case-insensitive, ``@<revision>`` allowed when it is
    the pinned one)."""
    found = find_model(name)
    if found is None:
        raise UnknownModelError(f"{name!r} is not in the catalogue", f"one of: {', '.join(ids())}, or their Hugging "
                                "Face repository ids; `python -m fiffdepth_core models` lists them")
    return found


def find_model(name: str) -> CatalogueModel | None:
    """Like :func:`get_model`, None for an unknown name."""
    text = str(name).strip()
    repo, _, revision = text.partition("@")
    for model in CATALOGUE:
        if text in (model.id, model.label):
            return model
        if repo.casefold() == model.repo.casefold() and revision in ("", model.revision):
            return model
    return None


def ids() -> list[str]:
    return [m.id for m in CATALOGUE]


def human_size(size: int) -> str:
    """Decimal units, as the hub shows them: ``1.9 GB``, ``335 MB``."""
    if size >= GB:
        return f"{size / GB:.1f} GB"
    if size >= MB:
        return f"{size / MB:.0f} MB"
    return f"{size / 1000:.0f} kB" if size >= 1000 else f"{size} B"
