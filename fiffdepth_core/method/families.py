"""One-step depth model families: FiffDepth and the public models built like it, as data.

Lotus-D, GenPercept and Marigold-E2E-FT are, like FiffDepth, a Stable Diffusion 2 UNet run once at a fixed
timestep on the RGB latent (posterior mean x scale, conditioned on the unpadded empty-prompt embedding), its output
decoded by the VAE as depth. What differs is described by one frozen :class:`Family` record per family:

| field | meaning |
| --- | --- |
| ``name``, ``title`` | the id used by ``--family`` / the loader's ``family`` option, and a display name |
| ``timestep`` | the integer timestep of the depth pass (FiffDepth 0, Lotus-D 999, GenPercept 1, E2E-FT 999) |
| ``concat_zeros`` | the UNet input is ``cat([rgb_latent, zeros])`` (8 channels, in that order; E2E-FT) |
| ``class_angles`` | if set, the UNet gets ``class_labels = [[sin a..., cos a...]]`` through its projection class embedding (Lotus' task switcher; depth = angles (1, 0)) |
| ``prediction`` | ``"sample"``: the output is the depth latent as is; ``"v_prediction"``: ``x0 = sqrt(ab_t) x_t - sqrt(1 - ab_t) v`` |
| ``v_input`` | the ``x_t`` of that conversion: ``"zeros"`` (E2E-FT's zero latent) or ``"rgb"`` (GenPercept's RGB latent) |
| ``betas`` | (beta_start, beta_end, schedule, train steps) giving ``ab_t`` (scaled-linear SD2 betas; GenPercept: all 1) |
| ``decode`` | ``"mean_clip"``: channel mean, clip to [-1, 1], (x + 1) / 2; ``"clip_mean"``: clamp(x / 2 + 0.5, 0, 1) per channel, then the mean (Lotus) |
| ``min_max`` | the decoded depth is stretched to [0, 1] per image before resizing back (E2E-FT) |
| ``disparity`` | the model predicts disparity (1 = near); the predictor returns ``1 - x`` so depth is always 0 = near |
| ``resize_back`` | interpolation back to the input size: ``"bilinear"`` (antialiased) or ``"nearest-exact"`` (Lotus) |
| ``filter_pass`` | the t = -1 filter pass exists (FiffDepth only) |

:func:`detect_family` reads the record from a checkpoint's UNet config, scheduler config, ``model_index.json`` and
folder names; an explicit name overrides it. Backbones use :meth:`Family.unet_inputs` to build the UNet call and the
predictor uses the rest; nothing else in the pack knows which family it runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

log = logging.getLogger(__name__)

SD2_BETAS = (0.00085, 0.012, "scaled_linear", 1000)


class FamilyError(ValueError):
    """A checkpoint's family cannot be recognised, or an explicit family does not fit the checkpoint."""


@dataclass(frozen=True)
class Family:
    """How one family runs its single UNet pass and reads the result (fields: see the module docstring)."""

    name: str
    title: str
    timestep: int
    concat_zeros: bool = False
    class_angles: tuple[float, ...] | None = None
    prediction: str = "sample"
    v_input: str = "zeros"
    betas: tuple = SD2_BETAS
    decode: str = "mean_clip"
    min_max: bool = False
    disparity: bool = False
    resize_back: str = "bilinear"
    filter_pass: bool = False

    @property
    def in_channels(self) -> int:
        return 8 if self.concat_zeros else 4

    @property
    def class_dim(self) -> int | None:
        return None if self.class_angles is None else 2 * len(self.class_angles)

    def class_labels(self, batch: int, device, dtype) -> torch.Tensor | None:
        """``[B, 2n]`` = [sin a..., cos a...] computed in fp32 as Lotus does, or None."""
        if self.class_angles is None:
            return None
        angles = torch.tensor(self.class_angles, dtype=torch.float32)
        label = torch.cat([torch.sin(angles), torch.cos(angles)])[None]  # [1,2n]
        return label.to(device, dtype).expand(batch, -1)  # [B,2n]

    def unet_inputs(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(UNet input ``[B,C,h,w]``, class labels ``[B,2n]`` or None) for a scaled RGB (or depth) latent."""
        x = torch.cat([latent, torch.zeros_like(latent)], dim=1) if self.concat_zeros else latent  # [B,4|8,h,w]
        return x, self.class_labels(latent.shape[0], latent.device, latent.dtype)

    def v_coefficients(self, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(ab_t), sqrt(1 - ab_t)) as fp32 0-d tensors, computed the way diffusers' schedulers compute them."""
        start, end, schedule, steps = self.betas
        if schedule == "scaled_linear":
            betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float32) ** 2
        elif schedule == "linear":
            betas = torch.linspace(start, end, steps, dtype=torch.float32)
        else:
            raise FamilyError(f"beta schedule {schedule!r} is not supported (scaled_linear or linear)")
        alpha_prod = torch.cumprod(1.0 - betas, dim=0)[timestep]
        return alpha_prod ** 0.5, (1 - alpha_prod) ** 0.5

    def depth_latent(self, output: torch.Tensor, latent: torch.Tensor, timestep: int) -> torch.Tensor:
        """The depth latent from the raw UNet ``output`` of a call on ``latent`` at ``timestep``."""
        if self.prediction == "sample" or timestep != self.timestep:
            return output  # the filter pass (t = -1) is FiffDepth's and returns a latent as is
        a, b = (c.to(output.device) for c in self.v_coefficients(timestep))
        noisy = torch.zeros_like(output) if self.v_input == "zeros" else latent.to(output.dtype)  # [B,4,h,w]
        return a * noisy - b * output  # [B,4,h,w]

    def depth_from_decoded(self, decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded ``[B,3,H,W]`` -> (``[B,1,H,W]`` in [0,1], 0-d finite flag) by this family's decode rule."""
        if self.decode == "clip_mean":
            per_channel = (decoded / 2 + 0.5).clamp(0.0, 1.0)  # [B,3,H,W]
            return per_channel.mean(dim=1, keepdim=True), torch.isfinite(decoded).all()
        mean = decoded.mean(dim=1, keepdim=True)  # [B,1,H,W]
        return (mean.clamp(-1.0, 1.0) + 1.0) / 2.0, torch.isfinite(mean).all()

    def stretch(self, depth: torch.Tensor) -> torch.Tensor:
        """Per-image min-max to [0, 1] for families that ask for it (a constant map becomes zeros)."""
        if not self.min_max:
            return depth
        low = depth.amin(dim=(1, 2, 3), keepdim=True)  # [B,1,1,1]
        high = depth.amax(dim=(1, 2, 3), keepdim=True)
        span = high - low
        return torch.where(span > 0, (depth - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(depth))

    def as_depth(self, values: torch.Tensor) -> torch.Tensor:
        """Depth with 0 = near: disparity maps (1 = near) are flipped as ``1 - x``."""
        return 1.0 - values if self.disparity else values


FIFFDEPTH = Family("fiffdepth", "FiffDepth", timestep=0, filter_pass=True)
LOTUS_D = Family("lotus-d", "Lotus-D", timestep=999, class_angles=(1.0, 0.0), decode="clip_mean",
                 resize_back="nearest-exact")
LOTUS_D_DISPARITY = replace(LOTUS_D, name="lotus-d-disparity", title="Lotus-D (disparity)", disparity=True)
GENPERCEPT = Family("genpercept", "GenPercept", timestep=1, prediction="v_prediction", v_input="rgb",
                    betas=(1.0, 1.0, "scaled_linear", 1000))
GENPERCEPT_DISPARITY = replace(GENPERCEPT, name="genpercept-disparity", title="GenPercept (disparity)",
                               disparity=True)
MARIGOLD_E2E_FT = Family("marigold-e2e-ft", "Marigold-E2E-FT", timestep=999, concat_zeros=True,
                         prediction="v_prediction", v_input="zeros", min_max=True)

# A Lotus-D UNet fine-tuned with FiffDepth's objective (train/finetune.py): FiffDepth's passes (t = 0, t = -1) and
# decode, with Lotus' depth label given to the UNet on every call (its class embedding is part of the time embedding).
FIFFDEPTH_LOTUS = replace(FIFFDEPTH, name="fiffdepth-lotus", title="FiffDepth (from Lotus-D)",
                          class_angles=LOTUS_D.class_angles)

FAMILIES = {f.name: f for f in (FIFFDEPTH, LOTUS_D, LOTUS_D_DISPARITY, GENPERCEPT, GENPERCEPT_DISPARITY,
                                MARIGOLD_E2E_FT, FIFFDEPTH_LOTUS)}
FAMILY_CHOICES = ("auto", *FAMILIES)


def get_family(name: str) -> Family:
    """The record called ``name`` (one of :data:`FAMILIES`)."""
    if name not in FAMILIES:
        raise FamilyError(f"`family` must be one of {', '.join(FAMILY_CHOICES)}, got {name!r}")
    return FAMILIES[name]


OTHER_TASKS = {"normal", "normals", "seg", "matting", "dis", "reconstruction"}  # non-depth siblings of these models


def describe(unet_config: dict, scheduler: dict | None, model_index: dict | None) -> str:
    """What detection looked at, for error messages."""
    parts = [f"UNet in_channels={unet_config.get('in_channels', 4)}, out_channels={unet_config.get('out_channels', 4)}"]
    for key in ("class_embed_type", "projection_class_embeddings_input_dim", "num_class_embeds",
                "addition_embed_type"):
        if unet_config.get(key) is not None:
            parts.append(f"{key}={unet_config[key]!r}")
    if scheduler:
        parts.append(f"scheduler {scheduler.get('_class_name', '?')} (timestep_spacing="
                     f"{scheduler.get('timestep_spacing', 'leading')!r}, prediction_type="
                     f"{scheduler.get('prediction_type', 'epsilon')!r}, betas {scheduler.get('beta_start')}-"
                     f"{scheduler.get('beta_end')})")
    else:
        parts.append("no scheduler config")
    if model_index:
        parts.append(f"model_index _class_name={model_index.get('_class_name')!r}")
    return ", ".join(parts)


def _tokens(names) -> set[str]:
    import re

    return {t for name in names for t in re.split(r"[^a-z0-9]+", str(name).lower()) if t}


def _with_schedule(family: Family, scheduler: dict | None) -> Family:
    """E2E-FT reads its betas from the checkpoint's scheduler (trailing, one step: t = train steps - 1)."""
    if family.name != MARIGOLD_E2E_FT.name or not scheduler:
        return family
    if scheduler.get("trained_betas") is not None:
        raise FamilyError("the scheduler config lists `trained_betas`; only beta_start/beta_end schedules are "
                          "supported")
    steps = int(scheduler.get("num_train_timesteps", 1000))
    betas = (float(scheduler.get("beta_start", 0.00085)), float(scheduler.get("beta_end", 0.012)),
             scheduler.get("beta_schedule", "scaled_linear"), steps)
    return replace(family, betas=betas, timestep=steps - 1)


def _check_fits(family: Family, unet_config: dict, where) -> None:
    in_ch = unet_config.get("in_channels", 4)
    if in_ch != family.in_channels or unet_config.get("out_channels", 4) != 4:
        raise FamilyError(f"{where}: family {family.name!r} needs a UNet with {family.in_channels} input and 4 output "
                          f"channels, this one maps {in_ch} -> {unet_config.get('out_channels', 4)}")
    has_class = unet_config.get("class_embed_type") is not None
    if family.class_dim is None and has_class:
        raise FamilyError(f"{where}: family {family.name!r} takes no class label, but this UNet has class_embed_type="
                          f"{unet_config['class_embed_type']!r} (a Lotus UNet: use family 'lotus-d')")
    if family.class_dim is not None and (unet_config.get("class_embed_type") != "projection" or
                                         unet_config.get("projection_class_embeddings_input_dim") != family.class_dim):
        raise FamilyError(f"{where}: family {family.name!r} needs a UNet with class_embed_type='projection' and "
                          f"projection_class_embeddings_input_dim={family.class_dim}, found "
                          f"{unet_config.get('class_embed_type')!r} / "
                          f"{unet_config.get('projection_class_embeddings_input_dim')!r}")


def detect_family(unet_config: dict, scheduler: dict | None = None, model_index: dict | None = None,
                  names=(), where="checkpoint", override: str = "auto") -> Family:
    """The family of a checkpoint, from its configs and folder ``names``; ``override`` (a family name) wins.

    Raises :class:`FamilyError` naming what was found when the UNet fits no family, is ambiguous, or belongs to a
    model that is not a one-pass depth estimator (multi-step Marigold, Lotus-G, normals/segmentation siblings).
    """
    if override != "auto":
        family = get_family(override)
        _check_fits(family, unet_config, where)
        return _with_schedule(family, scheduler)
    found = describe(unet_config, scheduler, model_index)
    hint = f"; if you know which family it is, pass it explicitly (family = one of {', '.join(FAMILIES)})"
    pipeline = (model_index or {}).get("_class_name")
    tokens = _tokens(names)
    in_ch, out_ch = unet_config.get("in_channels", 4), unet_config.get("out_channels", 4)

    def other_task(family: Family) -> None:
        task = sorted(tokens & OTHER_TASKS)
        if task:
            raise FamilyError(f"{where} looks like a {family.title} '{task[0]}' checkpoint (from its name), not a "
                              f"depth one; only depth checkpoints are supported ({found}){hint}")

    if pipeline == "LotusGPipeline":
        raise FamilyError(f"{where} is Lotus-G, the generative (noise-sampling, multi-step) Lotus: it is not a "
                          f"one-pass model; use a Lotus-D checkpoint ({found})")
    if out_ch != 4 or in_ch not in (4, 8) or unet_config.get("addition_embed_type") is not None \
            or unet_config.get("num_class_embeds") is not None:
        raise FamilyError(f"{where} is not a checkpoint of any supported family (FiffDepth, Lotus-D, GenPercept, "
                          f"Marigold-E2E-FT): found {found}{hint}")
    if unet_config.get("class_embed_type") is not None:
        if unet_config.get("class_embed_type") == "projection" and in_ch == 4 \
                and unet_config.get("projection_class_embeddings_input_dim") == LOTUS_D.class_dim:
            if pipeline == "FiffDepthPipeline":  # exported by train/finetune.py after FiffDepth's objective
                return FIFFDEPTH_LOTUS
            other_task(LOTUS_D)
            return LOTUS_D_DISPARITY if "disparity" in tokens else LOTUS_D
        raise FamilyError(f"{where} is not a checkpoint of any supported family: its UNet has a class embedding "
                          f"(class_embed_type) that is not Lotus-D's 4-wide projection; found {found}{hint}")
    if in_ch == 8:
        sched = scheduler or {}
        steps = (model_index or {}).get("default_denoising_steps")
        if sched.get("timestep_spacing") == "trailing" and sched.get("prediction_type") == "v_prediction" \
                and steps in (None, 1):
            other_task(MARIGOLD_E2E_FT)
            return _with_schedule(MARIGOLD_E2E_FT, sched)
        raise FamilyError(
            f"{where} is not a FiffDepth checkpoint: its UNet takes 8 input channels (RGB latent + a noisy depth "
            f"latent, as in Marigold) but it is not Marigold-E2E-FT (which ships a DDIM scheduler with "
            f"timestep_spacing 'trailing' and v_prediction, run once from zeros): multi-step Marigold is not a "
            f"one-pass model and is not supported. Found {found}{hint}")
    if pipeline == "GenPerceptPipeline" or (scheduler and scheduler.get("beta_start") == 1.0
                                            and scheduler.get("beta_end") == 1.0):
        other_task(GENPERCEPT)
        return GENPERCEPT_DISPARITY if "disparity" in tokens else GENPERCEPT
    if pipeline in ("LotusDPipeline", "MarigoldPipeline", "MarigoldDepthPipeline"):
        raise FamilyError(f"{where}: model_index.json names {pipeline!r}, but the UNet does not fit it; found "
                          f"{found}{hint}")
    return FIFFDEPTH


def training_family(unet_config: dict, where="checkpoint") -> Family:
    """The record FiffDepth's objective trains a UNet of this config under (train/finetune.py).

    The objective calls the UNet on one 4-channel latent at t = 0, t = -1 and the trajectory timesteps, so a 4-channel
    UNet fits: plain (SD2, GenPercept, FiffDepth) or with Lotus' class embedding, which then gets Lotus' depth label
    on every call. The result is a FiffDepth model (t = 0), exported as such. An 8-channel UNet does not fit.
    """
    if unet_config.get("in_channels", 4) != 4 or unet_config.get("out_channels", 4) != 4:
        raise FamilyError(
            f"{where}: FiffDepth's objective cannot start from a UNet with {unet_config.get('in_channels')} input "
            "channels (Marigold or Marigold-E2E-FT: it expects [RGB latent, second latent]); the objective feeds one "
            "4-channel latent at t = 0, t = -1 and the trajectory steps. Start from SD2, Lotus-D or GenPercept")
    if unet_config.get("class_embed_type") is None and unet_config.get("addition_embed_type") is None:
        return FIFFDEPTH
    _check_fits(LOTUS_D, unet_config, where)  # only Lotus' 4-wide projection label is known
    return FIFFDEPTH_LOTUS
