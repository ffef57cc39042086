"""FiffDepth's training objective in latent space (docs/method.md, "Training objective").

Shape letters: B batch, C latent channels (4), h x w latent cells, H x W pixels (8h x 8w).

* latent validity: a latent cell counts only if all 8x8 pixels under it are valid;
* ``masked_mae`` and ``gradient_matching`` (MiDaS, 4 scales, per channel, no alignment) for d0 and d-1;
* trajectory keeping: blended latents b0 = g x0 + (1-g) d0*, noised on SD2's own schedule, v-prediction MSE
  over the same valid latent cells (an invalid GT region never becomes a target through d0*).

Timesteps for noising are integers in [0, 999] only: ``alphas_cumprod[-1]`` would silently read index 999.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

VAE_FACTOR = 8
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights (docs/method.md): L = sum_t (mae*MAE + gm*GM) + keep*L_k, with b0 = gamma x0 + (1-gamma) d0*."""

    mae: float = 1.0
    gm: float = 0.5
    keep: float = 0.2
    gamma: float = 0.5
    gm_scales: int = 4  # MiDaS uses 4 scales


def latent_valid_mask(valid: torch.Tensor, channels: int = 4) -> torch.Tensor:
    """Pixel mask ``[B,1,H,W]`` -> latent mask ``[B,C,h,w]``: max-pool the invalid mask with kernel 8, stride 8."""
    if valid.ndim != 4 or valid.shape[1] != 1:
        raise ValueError(f"`valid` must have shape [B,1,H,W], got {tuple(valid.shape)}")
    invalid = (~valid.bool()).float()
    pooled = F.max_pool2d(invalid, kernel_size=VAE_FACTOR, stride=VAE_FACTOR)  # [B,1,h,w]
    return (pooled == 0).expand(-1, channels, -1, -1)  # [B,C,h,w]


def _zero(pred: torch.Tensor) -> torch.Tensor:
    return pred.sum() * 0.0  # keeps the graph (and DDP's bookkeeping) intact when nothing is valid


def masked_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over valid cells (all channels); 0 when no cell is valid."""
    count = mask.sum()
    if count == 0:
        return _zero(pred)
    return ((pred - target).abs() * mask).sum() / count


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean (pred - target)^2 over valid cells (all channels); 0 when no cell is valid."""
    count = mask.sum()
    if count == 0:
        return _zero(pred)
    return ((pred - target).square() * mask).sum() / count


def gradient_matching(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """MiDaS multi-scale gradient matching on the residual, per channel, summed over ``scales``.

    At scale k (stride 2**k subsampling of residual and mask) the absolute differences of horizontally and
    vertically adjacent residuals, counted where both cells are valid, are summed and divided by the number of
    valid cells at that scale. Scales with no valid cell contribute 0.
    """
    maskf = mask.to(pred.dtype)
    residual = (pred - target) * maskf  # [B,C,h,w]
    total = _zero(pred)
    for k in range(scales):
        step = 2 ** k
        r = residual[..., ::step, ::step]  # [B,C,h_k,w_k]
        m = maskf[..., ::step, ::step]
        count = m.sum()
        if count == 0:
            continue
        grad_x = (r[..., :, 1:] - r[..., :, :-1]).abs() * (m[..., :, 1:] * m[..., :, :-1])
        grad_y = (r[..., 1:, :] - r[..., :-1, :]).abs() * (m[..., 1:, :] * m[..., :-1, :])
        total = total + (grad_x.sum() + grad_y.sum()) / count
    return total


def sd2_alphas_cumprod(num_steps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = 0.00085,
                       beta_end: float = 0.012) -> torch.Tensor:
    """SD2's cumulative alphas: scaled-linear betas, as shipped (no zero-SNR rescale); float32 ``[T]``."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def check_timesteps(timesteps: torch.Tensor, num_steps: int) -> None:
    """Noising timesteps must be integers in [0, num_steps-1]; -1 would silently index the last step."""
    if timesteps.is_floating_point():
        raise TypeError(f"`timesteps` must be integers in [0, {num_steps - 1}], got dtype {timesteps.dtype}")
    if timesteps.numel() and (timesteps.min() < 0 or timesteps.max() >= num_steps):
        raise ValueError(f"`timesteps` must lie in [0, {num_steps - 1}], got range "
                         f"[{int(timesteps.min())}, {int(timesteps.max())}] (t = -1 is for the filter pass only)")


def trajectory_targets(x0: torch.Tensor, d0_target: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
                       alphas_cumprod: torch.Tensor, gamma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Noised blend b_t and its v target: b0 = g x0 + (1-g) d0*, b_t = sqrt(a) b0 + sqrt(1-a) eps,
    v_t = sqrt(a) eps - sqrt(1-a) b0 with a = alphas_cumprod[t]. Returns ``(b_t, v_t)``, each ``[B,C,h,w]``."""
    check_timesteps(timesteps, alphas_cumprod.shape[0])
    blend = gamma * x0 + (1.0 - gamma) * d0_target  # [B,C,h,w]
    alpha = alphas_cumprod.to(x0.device)[timesteps].to(x0.dtype).view(-1, 1, 1, 1)  # [B,1,1,1]
    b_t = alpha.sqrt() * blend + (1.0 - alpha).sqrt() * noise
    v_t = alpha.sqrt() * noise - (1.0 - alpha).sqrt() * blend
    return b_t, v_t


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """``{"mae", "gm", "total"}`` for one branch (d0 vs d0*, or d-1 vs d-1*)."""
    mae = masked_mae(pred, target, mask)
    gm = gradient_matching(pred, target, mask, weights.gm_scales)
    return {"mae": mae, "gm": gm, "total": weights.mae * mae + weights.gm * gm}


def total_loss(synthetic: dict, real: dict, keep: torch.Tensor, weights: LossWeights = LossWeights()) -> torch.Tensor:
    """L = (t=0 branch) + (t=-1 branch) + keep x L_k, each branch already weighted by :func:`depth_loss`."""
    return synthetic["total"] + real["total"] + weights.keep * keep
