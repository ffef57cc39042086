"""The one checkpoint loader: find, validate and load FiffDepth weights in any supported layout.

Layouts:

* ``diffusers``: the official pipeline folder: ``model_index.json``, ``unet/`` and ``vae/`` (config.json +
  safetensors or .bin weights, sharded or not, optionally the fp16 variant), ``text_encoder/`` and
  ``tokenizer/`` (unneeded once ``empty_text_embed.safetensors`` is cached beside them).
* ``single_files``: a folder with ``unet.safetensors``, ``vae.safetensors`` and
  ``empty_text_embed.safetensors`` (configs in each file's metadata, or ``unet_config.json`` /
  ``vae_config.json``, or else the SD2 geometry).
* ``bundle``: one ``.safetensors`` file holding ``unet.*``, ``vae.*`` and ``empty_text_embed`` (configs in its
  metadata), as written by :func:`fiffdepth_core.weights.export.export_bundle`.

The same diffusers layout holds the other one-step families (:mod:`fiffdepth_core.method.families`): Lotus-D and
Marigold-E2E-FT pipeline folders as published, and GenPercept's folder, whose UNets sit in ``unet_<task>_<version>/``
folders beside ``vae/`` (the folder itself, or one ``unet_*`` folder inside it, is the checkpoint). The family is
detected from the UNet config, ``scheduler/scheduler_config.json``, ``model_index.json`` and the folder names, or
given explicitly.

All weights use diffusers key names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..method.families import FIFFDEPTH, Family, FamilyError, detect_family
from .layout import (
    LAYOUTS,
    CheckpointError,
    check_config_types,
    find_weights,
    listing,
    load_weights_file,
    needs_alignment,
    read_json,
    read_safetensors,
    read_safetensors_header,
)
from .sd2_configs import SD2_UNET_CONFIG, SD2_VAE_CONFIG
from .text_embed import (
    CONSTANT_WIDTH,
    EMBED_FILE,
    EMBED_KEY,
    cache_embedding,
    checked_embedding,
    compute_empty_embedding,
    read_embedding,
    sd2_constant,
)

log = logging.getLogger(__name__)

LAYOUT_LINES = (
    "expected one of:",
    "  - a diffusers pipeline folder: model_index.json, unet/{config.json, diffusion_pytorch_model.safetensors},",
    "    vae/{config.json, diffusion_pytorch_model.safetensors}, and text_encoder/ + tokenizer/ or " + EMBED_FILE,
    f"  - a folder with unet.safetensors, vae.safetensors and {EMBED_FILE}",
    "  - a single .safetensors bundle with unet.*, vae.* and empty_text_embed tensors",
    f"(SD2-width UNets, cross_attention_dim {CONSTANT_WIDTH}, may leave the embedding out: FiffDepth ships SD2's)")


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` found; enough to load every part without looking again."""

    path: Path
    layout: str  # "diffusers" | "single_files" | "bundle"
    unet_config: dict
    vae_config: dict
    weights: dict = field(default_factory=dict)  # component -> weights file (or the bundle)
    embed_file: Path | None = None  # an existing cached embedding (None in a bundle: it is inside)
    text_encoder_dir: Path | None = None
    tokenizer_dir: Path | None = None
    family: Family = FIFFDEPTH  # how the UNet pass runs and is read (detected, or as asked)
    scheduler_config: dict | None = None
    model_index: dict | None = None
    embed_constant: bool = False  # no embedding of its own: the shipped SD2 one (text_embed.sd2_constant)

    @property
    def latent_scale(self) -> float:
        return float(self.vae_config.get("scaling_factor", 0.18215))


def inspect_checkpoint(path: str | Path, family: str = "auto") -> CheckpointInfo:
    """Identify the layout and family of ``path`` and validate it; raises :class:`CheckpointError` listing what is
    wrong. ``family`` is ``"auto"`` (detect) or a name from :data:`fiffdepth_core.method.families.FAMILIES`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path} not found", LAYOUTS, details=LAYOUT_LINES)
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"{path} is not a regular file or folder (a pipe, socket or device?)", LAYOUTS)
    if path.is_file():
        info = _inspect_bundle(path)
    elif (path / "model_index.json").is_file() or (path / "unet").is_dir() or _unet_subfolders(path) \
            or _is_unet_subfolder(path):
        info = _inspect_diffusers(path)
    elif (path / "unet.safetensors").is_file():
        info = _inspect_single_files(path)
    else:
        raise CheckpointError(f"{path} is not a FiffDepth checkpoint folder", LAYOUTS,
                              details=[f"found: {listing(path)}", *LAYOUT_LINES])
    check_config_types(info.unet_config, path, "unet")
    check_config_types(info.vae_config, path, "vae")
    unet_file = info.weights.get("unet")
    names = [info.path.stem, unet_file.parent.name if unet_file is not None and info.layout == "diffusers" else ""]
    try:
        detected = detect_family(info.unet_config, info.scheduler_config, info.model_index, names, path, family)
    except FamilyError as err:
        raise CheckpointError(str(err)) from None
    if detected.name != FIFFDEPTH.name or family != "auto":
        log.info("%s: %s checkpoint (%s)", path, detected.title, "as asked" if family != "auto" else "detected")
    if detected.disparity:
        log.info("%s predicts disparity (1 = near); the depth output is 1 - disparity (0 = near)", detected.title)
    latent = info.vae_config.get("latent_channels", 4)
    if latent * (detected.in_channels // 4) != info.unet_config.get("in_channels", 4):
        raise CheckpointError(f"{path}: the VAE has {latent} latent channels but the UNet takes "
                              f"{info.unet_config.get('in_channels')}")
    return replace(info, family=detected)


def _incomplete(path: Path, problems: list[str]) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is incomplete", LAYOUTS,
                           details=[*(f"- {problem}" for problem in problems), f"found: {listing(path)}",
                                    *LAYOUT_LINES])


def _unet_subfolders(path: Path) -> list[Path]:
    """GenPercept-style ``unet_<task>_<version>/`` folders (config.json inside) of ``path``."""
    return sorted(p for p in path.glob("unet_*") if (p / "config.json").is_file())


def _is_unet_subfolder(path: Path) -> bool:
    return path.name.startswith("unet_") and (path / "config.json").is_file() and (path.parent / "vae").is_dir()


def _unet_folder(path: Path) -> tuple[Path, Path]:
    """(checkpoint root, UNet folder): ``unet/``, or GenPercept's depth ``unet_*`` folder, or ``path`` itself."""
    if _is_unet_subfolder(path):
        return path.parent, path
    candidates = _unet_subfolders(path)
    if (path / "unet").is_dir() or not candidates:
        return path, path / "unet"
    depth = [p for p in candidates if "depth" in p.name.split("_")]
    if len(candidates) == 1 or depth:
        return path, (depth or candidates)[-1]  # the highest version of the depth UNet
    raise CheckpointError(f"{path} holds several UNets ({', '.join(p.name for p in candidates)}) and none is a "
                          f"depth one; give the one to run as the checkpoint, e.g. {candidates[0]}")


def _inspect_diffusers(path: Path) -> CheckpointInfo:
    path, unet_dir = _unet_folder(path)
    problems, configs, weights = [], {}, {}
    for part in ("unet", "vae"):
        folder = unet_dir if part == "unet" else path / part
        if not (folder / "config.json").is_file():
            problems.append(f"missing {folder.relative_to(path)}/config.json")
        else:
            configs[part] = read_json(folder / "config.json")
        found = find_weights(folder, "diffusion_pytorch_model") if folder.is_dir() else None
        if found is None:
            problems.append(f"missing {folder.relative_to(path)}/diffusion_pytorch_model.safetensors (or .bin / "
                            "sharded / .fp16)")
        weights[part] = found
    embed = path / EMBED_FILE
    text_dir, tok_dir = path / "text_encoder", path / "tokenizer"
    has_text = (text_dir / "config.json").is_file() and (
        find_weights(text_dir, "model") or find_weights(text_dir, "pytorch_model")) is not None
    has_tok = (tok_dir / "vocab.json").is_file() and (tok_dir / "merges.txt").is_file()
    constant = not embed.is_file() and not (has_text and has_tok)
    if constant and not _fits_constant(configs.get("unet")):
        problems.append(f"missing the empty-prompt embedding: neither {EMBED_FILE} nor a complete text_encoder/ "
                        "(config.json + model.safetensors) and tokenizer/ (vocab.json + merges.txt)" +
                        _constant_hint(configs.get("unet")))
    if problems:
        raise _incomplete(path, problems)
    optional = {name: read_json(path / name) if (path / name).is_file() else None
                for name in ("scheduler/scheduler_config.json", "model_index.json")}
    return CheckpointInfo(path, "diffusers", configs["unet"], configs["vae"], weights,
                          embed if embed.is_file() else None,
                          text_dir if has_text else None, tok_dir if has_tok else None,
                          scheduler_config=optional["scheduler/scheduler_config.json"],
                          model_index=optional["model_index.json"], embed_constant=constant)


def _fits_constant(unet_config: dict | None) -> bool:
    """Whether the shipped SD2 embedding fits this UNet's cross-attention (unknown config: let the caller decide)."""
    return unet_config is None or unet_config.get("cross_attention_dim", 1280) == CONSTANT_WIDTH  # diffusers: 1280


def _context_width(path: Path, keys: list[str], prefix: str) -> int | None:
    """The cross-attention width of a UNet's weights (from a key's shape: a missing config may not be trusted)."""
    key = next((k for k in keys if k.startswith(prefix) and k.endswith("attn2.to_k.weight")), None)
    return None if key is None else int(read_safetensors_header(path, key)[2][1])


def _constant_hint(unet_config: dict | None) -> str:
    width = (unet_config or {}).get("cross_attention_dim")
    return (f" (the SD2 embedding FiffDepth ships fits cross_attention_dim {CONSTANT_WIDTH} only; this UNet's is "
            f"{width})" if width is not None else "")


def _config_from(metadata: dict, key: str, sidecar: Path | None, default: dict, conv_in_shape) -> dict:
    if key in metadata:
        try:
            config = json.loads(metadata[key])
        except ValueError as err:
            raise CheckpointError(f"the `{key}` metadata entry is not valid JSON: {err}") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"the `{key}` metadata entry must be a JSON object, got {type(config).__name__}")
        return config
    if sidecar is not None and sidecar.is_file():
        return read_json(sidecar)
    config = dict(default)
    if conv_in_shape is not None:
        config["in_channels"] = int(conv_in_shape[1])
    return config


def _check_keys(keys: list[str], prefix: str, where: Path, part: str) -> None:
    names = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    if any(k.startswith(("input_blocks.", "model.diffusion_model.", "diffusion_model.")) for k in names):
        raise CheckpointError(f"{where}: the {part} weights use the original LDM key layout (as ComfyUI or A1111 "
                              "save them); FiffDepth loads diffusers-layout weights (train/finetune.py exports them)")
    anchor = "conv_in.weight" if part == "unet" else "encoder.conv_in.weight"
    if anchor not in names:
        raise CheckpointError(f"{where}: no {part} weights found (expected a `{prefix}{anchor}` tensor)")


def _inspect_bundle(path: Path) -> CheckpointInfo:
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: single-file checkpoints must be .safetensors bundles", LAYOUTS,
                              details=LAYOUT_LINES)
    keys, metadata, conv_in = read_safetensors_header(path, "unet.conv_in.weight")
    _check_keys(keys, "unet.", path, "unet")
    _check_keys(keys, "vae.", path, "vae")
    unet_cfg = _config_from(metadata, "unet_config", None, SD2_UNET_CONFIG, conv_in)
    vae_cfg = _config_from(metadata, "vae_config", None, SD2_VAE_CONFIG, None)
    constant = EMBED_KEY not in keys
    width = {"cross_attention_dim": _context_width(path, keys, "unet.")}
    if constant and not _fits_constant(width):
        raise CheckpointError(f"{path}: the bundle holds no `{EMBED_KEY}` tensor, and a single file carries no "
                              f"text encoder to compute it from{_constant_hint(width)}")
    return CheckpointInfo(path, "bundle", unet_cfg, vae_cfg, {"unet": path, "vae": path},
                          model_index=_exported_index(metadata), embed_constant=constant)


def _inspect_single_files(path: Path) -> CheckpointInfo:
    if not (path / "vae.safetensors").is_file():
        raise _incomplete(path, ["missing vae.safetensors"])
    unet_keys, unet_meta, conv_in = read_safetensors_header(path / "unet.safetensors", "conv_in.weight")
    vae_keys, vae_meta, _ = read_safetensors_header(path / "vae.safetensors")
    _check_keys(unet_keys, "", path / "unet.safetensors", "unet")
    _check_keys(vae_keys, "", path / "vae.safetensors", "vae")
    unet_cfg = _config_from(unet_meta, "config", path / "unet_config.json", SD2_UNET_CONFIG, conv_in)
    vae_cfg = _config_from(vae_meta, "config", path / "vae_config.json", SD2_VAE_CONFIG, None)
    constant = not (path / EMBED_FILE).is_file()
    width = {"cross_attention_dim": _context_width(path / "unet.safetensors", unet_keys, "")}
    if constant and not _fits_constant(width):
        raise _incomplete(path, [f"missing {EMBED_FILE}{_constant_hint(width)}"])
    return CheckpointInfo(path, "single_files", unet_cfg, vae_cfg,
                          {"unet": path / "unet.safetensors", "vae": path / "vae.safetensors"},
                          None if constant else path / EMBED_FILE, model_index=_exported_index(unet_meta),
                          embed_constant=constant)


def _exported_index(metadata: dict) -> dict | None:
    """Files written by :mod:`fiffdepth_core.weights.export` say so in their metadata: they hold FiffDepth models (a
    Lotus-D UNet fine-tuned with FiffDepth's objective keeps its class embedding but runs FiffDepth's pass)."""
    return {"_class_name": "FiffDepthPipeline"} if metadata.get("format", "").startswith("fiffdepth") else None


def load_state_dict(info: CheckpointInfo, part: str, mapped: bool = False) -> dict[str, torch.Tensor]:
    """The ``unet`` or ``vae`` weights of a checkpoint, with diffusers key names (``mapped``: see
    :func:`~fiffdepth_core.weights.layout.read_safetensors`)."""
    if part not in ("unet", "vae"):
        raise ValueError(f"`part` must be 'unet' or 'vae', got {part!r}")
    if info.layout != "bundle":
        return load_weights_file(info.weights[part], mapped)
    return read_safetensors(info.path, prefix=f"{part}.", mapped=mapped)


def empty_embedding(info: CheckpointInfo) -> torch.Tensor:
    """The checkpoint's empty-prompt embedding ``[1, T, D]`` (cached, or computed from its text encoder and cached on
    first use), or, when it has neither, the SD2 embedding shipped with FiffDepth."""
    if info.embed_constant:
        return sd2_constant()
    if info.layout == "bundle":
        from safetensors import safe_open

        try:
            with safe_open(str(info.path), framework="pt") as handle:
                embed = handle.get_tensor(EMBED_KEY)
        except Exception as err:
            raise CheckpointError(f"cannot read `{EMBED_KEY}` from {info.path}: {err}") from None
        return checked_embedding(embed, info.path)
    if info.embed_file is not None:
        try:
            return read_embedding(info.embed_file)
        except ValueError as err:
            if info.text_encoder_dir is None or info.tokenizer_dir is None:
                raise CheckpointError(f"{err}; the checkpoint has no text encoder to recompute it from") from None
            log.warning("%s; recomputing it from %s", err, info.text_encoder_dir)
            return compute_empty_embedding(info.text_encoder_dir, info.tokenizer_dir)
    log.info("computing the empty-prompt embedding from %s (once)", info.text_encoder_dir)
    embed = compute_empty_embedding(info.text_encoder_dir, info.tokenizer_dir)
    cache_embedding(info.path / EMBED_FILE, embed)
    return embed


def instantiate(cls, config: dict, state_dict: dict[str, torch.Tensor], where: str,
                dtype: torch.dtype | None = None):
    """Build a diffusers model from ``config`` on the meta device and adopt ``state_dict`` (strict)."""
    # CPU matrix products round differently on operands that are not 64-byte aligned (outputs then vary by ~1e-6
    # from one load to the next): the readers of layout.py give aligned matrices; anything else (a cast, a tensor
    # sliced out of a shared buffer, a misaligned matrix) becomes a fresh, allocator-aligned copy here.
    state_dict = {k: aligned(v, dtype if dtype is not None and v.is_floating_point() else v.dtype)
                  for k, v in state_dict.items()}
    try:
        with torch.device("meta"):
            model = cls.from_config(config)
    except Exception as err:  # diffusers raises TypeError/ValueError/AttributeError... for configs it cannot build
        raise CheckpointError(f"{where}: cannot build a {cls.__name__} from its config: "
                              f"{' '.join(str(err).split())[:400]}") from None
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{where}: the weights do not fit the config: {str(err)[:800]}") from err
    if missing or unexpected:
        raise CheckpointError(f"{where}: the weights do not fit the config: {len(missing)} missing keys "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    return model.eval()


ALIGNMENT = 64  # bytes: what PyTorch's CPU allocator gives every allocation


def aligned(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype`` on storage of its own, a matrix (2-D) starting on a 64-byte boundary (a copy only if
    needed). Other ranks (convolution kernels, biases, norms) compute bit-identically at any address, so a tensor
    mapped from its file is kept where it is."""
    if (tensor.dtype == dtype and tensor.device.type == "cpu"
            and (not needs_alignment(tensor.ndim) or tensor.data_ptr() % ALIGNMENT == 0)
            and tensor.storage_offset() == 0 and tensor.is_contiguous()
            and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()):
        return tensor
    return tensor.to(dtype=dtype, copy=True)


def load_standalone(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    vae_dtype: torch.dtype | None = None, channels_last: bool = False, family: str = "auto",
                    mapped: bool = False):
    """Load a checkpoint as a :class:`~fiffdepth_core.method.backbone.StandaloneBackbone` (needs diffusers).

    ``family`` is ``"auto"`` (detected from the checkpoint) or a family name (``fiffdepth``, ``lotus-d``, ...).

    ``channels_last`` stores the models and feeds them NHWC tensors (faster convolutions on GPUs and on the CPU;
    results differ from the default layout at fp32 rounding level).

    ``mapped=True`` maps the weights that need no copy from the file instead of reading them first (a faster start
    for a process that loads once, as the command line does; the file stays open while the models live). Results are
    the same either way.
    """
    try:
        from diffusers import AutoencoderKL, UNet2DConditionModel
    except ImportError as err:
        raise ImportError("the standalone backbone needs diffusers: pip install 'fiffdepth[standalone]'") from err
    from ..method.backbone import StandaloneBackbone

    info = inspect_checkpoint(path, family)
    embed = empty_embedding(info)
    if embed.shape[-1] != info.unet_config.get("cross_attention_dim"):
        raise CheckpointError(f"{info.path}: the empty-prompt embedding has width {embed.shape[-1]} but the UNet's "
                              f"cross-attention expects {info.unet_config.get('cross_attention_dim')}")
    unet = instantiate(UNet2DConditionModel, info.unet_config, load_state_dict(info, "unet", mapped),
                       f"{info.path} (unet)", dtype).to(device)
    vae = instantiate(AutoencoderKL, info.vae_config, load_state_dict(info, "vae", mapped), f"{info.path} (vae)",
                      vae_dtype or dtype).to(device)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    return StandaloneBackbone(unet, vae, embed, latent_scale=info.latent_scale, channels_last=channels_last,
                              family=info.family)


def find_checkpoints(root: str | Path, max_depth: int = 2) -> list[str]:
    """Checkpoint names under ``root`` (relative paths, '/'-separated): diffusers folders (and, in a GenPercept
    folder holding several UNets, each ``unet_*`` folder), folders of single files, and ``.safetensors`` bundles
    (files whose header holds ``unet.`` and ``vae.`` tensors). Hidden entries (names starting with a dot, such as
    the staging folder of downloads in progress) are never listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[str] = []

    def visit(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError as err:
            log.warning("cannot list %s: %s", folder, err)
            return
        for entry in entries:
            if entry.name.startswith("."):  # hidden: partial downloads (.fiffdepth-downloads), caches
                continue
            name = entry.relative_to(root).as_posix()
            if entry.is_dir():
                if (entry / "model_index.json").is_file() or (entry / "unet" / "config.json").is_file() \
                        or (entry / "unet.safetensors").is_file():
                    found.append(name)
                    unets = _unet_subfolders(entry)  # GenPercept: each of several UNets can be picked too
                    found.extend(f"{name}/{u.name}" for u in unets if len(unets) > 1)
                elif depth < max_depth:
                    visit(entry, depth + 1)
            elif entry.suffix == ".safetensors" and entry.is_file() and _is_bundle(entry):  # never a FIFO
                found.append(name)

    visit(root, 0)
    return found


def _is_bundle(path: Path) -> bool:
    try:
        keys, _, _ = read_safetensors_header(path)
    except CheckpointError:
        return False
    return "unet.conv_in.weight" in keys and "vae.encoder.conv_in.weight" in keys


def fingerprint(info: CheckpointInfo) -> dict[str, list[int]]:
    """Size and modification time of the UNet and VAE weights files: changes whenever a checkpoint is
    re-exported, so a cache of predictions made from it can tell it is stale. (The cached embedding is left out:
    the first load writes it.)"""
    files = {p for p in info.weights.values() if p is not None}
    root = info.path.parent if info.layout == "bundle" else info.path
    return {str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(files)}
