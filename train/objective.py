"""One FiffDepth training step's forward: every UNet call of the paper's objective inside one module.

All UNet passes of a step (d0 on synthetic, the trajectory pass, d0 and d-1 on real) run inside one
``forward`` so that DistributedDataParallel sees one forward per backward (a parameter used several times in one
forward is fine for DDP; several forwards before one backward are not). The UNet is called through the
standalone backbone's ``denoise`` verb: training and inference share one UNet call.

Shape letters: B per-process sub-batch, C latent channels, h x w latent cells.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from fiffdepth_core.method import (
    LossWeights,
    StandaloneBackbone,
    depth_loss,
    masked_mse,
    total_loss,
    training_family,
    trajectory_targets,
    unwrap_module,
)


@contextlib.contextmanager
def own_leaves(module: torch.nn.Module):
    """For one pass of ``module``: each trainable parameter is replaced by a new leaf on the same storage, whose
    gradient is added to the parameter's ``.grad`` the moment autograd has accumulated it, and then dropped.

    The objective runs the UNet four times per micro-step, so in one backward pass every weight receives four
    gradients, and autograd gathers them in a buffer per weight until the last has arrived: 1.7 GB (bf16, through
    autocast's cached weight casts) or 3.5 GB (fp32) for SD2, on top of the gradients themselves. With a leaf per
    pass each gradient goes into ``.grad`` as it comes (measured on SD2's UNet, 4 checkpointed passes at 128²: the
    backward's peak +1.37 GB against +2.90 GB). Autocast's weight cache must be off (it would keep a bf16 copy per
    leaf); gradient checkpointing recomputes with the parameters themselves, which hold the same values. Only in a
    single process: DistributedDataParallel counts the gradients arriving on the parameters themselves.
    """
    slots = []
    for owner in module.modules():
        for name, param in list(owner._parameters.items()):
            if param is None or not param.requires_grad:
                continue
            leaf = param.detach().requires_grad_()
            leaf.register_post_accumulate_grad_hook(functools.partial(_add_grad, param))
            slots.append((owner, name, param))
            owner._parameters[name] = leaf
    try:
        yield
    finally:
        for owner, name, param in slots:
            owner._parameters[name] = param


def _add_grad(param: torch.Tensor, leaf: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = leaf.grad
    else:
        param.grad.add_(leaf.grad)
    leaf.grad = None


class FiffDepthObjective(torch.nn.Module):
    """``forward(batch) -> dict`` of scalar loss terms; ``total`` is the one to backpropagate."""

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, empty_embed: torch.Tensor,
                 alphas_cumprod: torch.Tensor, weights: LossWeights, detach_filter_input: bool = False,
                 leaf_per_pass: bool = False):
        super().__init__()
        self.leaf_per_pass = leaf_per_pass  # see own_leaves (single-process runs)
        self.unet = unet  # the only registered (trainable) module
        self._vae = [vae]  # a list, so the frozen VAE is not a submodule (no DDP sync, not in state_dict)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self.register_buffer("empty_embed", empty_embed.float(), persistent=False)  # [1,T,D]
        self.weights = weights
        self.detach_filter_input = detach_filter_input
        self._backbone: StandaloneBackbone | None = None

    def backbone(self) -> StandaloneBackbone:
        """The standalone backbone over this objective's UNet and the frozen VAE (made once, on first use, after
        the objective has been moved to its device)."""
        if self._backbone is None or self._backbone.device != self.empty_embed.device:
            family = training_family(unwrap_module(self.unet).config)  # Lotus-D: its depth label on every call
            self._backbone = StandaloneBackbone(self.unet, self._vae[0], self.empty_embed, family=family)
        return self._backbone

    def denoise(self, x: torch.Tensor, timestep) -> torch.Tensor:
        """One UNet pass through the backbone (on leaves of its own when ``leaf_per_pass`` and gradients are on)."""
        if not (self.leaf_per_pass and torch.is_grad_enabled()):
            return self.backbone().denoise(x, timestep)
        with own_leaves(unwrap_module(self.unet)):
            return self.backbone().denoise(x, timestep)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """``batch``: ``x0``/``d0_target``/``mask0`` (synthetic latents), ``x0_real``/``dm1_target``/``mask_real``,
        ``timesteps`` ``[B]`` int64 in [0, 999] and ``noise`` ``[B,C,h,w]`` for the trajectory term."""
        w = self.weights
        # t = 0 on synthetic images: d0 = UNet(x0, 0) against the GT depth latent.
        d0 = self.denoise(batch["x0"], 0)  # [B,C,h,w]
        synthetic = depth_loss(d0, batch["d0_target"], batch["mask0"], w)
        # Trajectory keeping: v-prediction on the noised blend of image and depth latents, over the valid cells
        # of the t = 0 mask (the blend carries d0*, which is meaningless where the GT is invalid).
        b_t, v_t = trajectory_targets(batch["x0"], batch["d0_target"], batch["timesteps"], batch["noise"],
                                      self.alphas_cumprod, w.gamma)
        keep = masked_mse(self.denoise(b_t, batch["timesteps"]), v_t, batch["mask0"])
        # t = -1 filter on real photos: d-1 = UNet(UNet(x0, 0), -1) against the teacher's target latent.
        d0_real = self.denoise(batch["x0_real"], 0)  # [B,C,h,w]
        if self.detach_filter_input:
            d0_real = d0_real.detach()
        real = depth_loss(self.denoise(d0_real, -1), batch["dm1_target"], batch["mask_real"], w)
        total = total_loss(synthetic, real, keep, w)
        return {"total": total, "d0_mae": synthetic["mae"], "d0_gm": synthetic["gm"], "keep": keep,
                "dm1_mae": real["mae"], "dm1_gm": real["gm"]}


@torch.no_grad()
def encode_batch(backbone: StandaloneBackbone, synthetic: dict, real: dict, generator: torch.Generator,
                 num_timesteps: int = 1000) -> dict:
    """Frozen-VAE encodings, latent masks and the step's random trajectory inputs (from ``generator``).

    ``synthetic``/``real`` are collated dataset batches: ``rgb`` ``[B,3,H,W]`` and ``depth`` ``[B,1,H,W]`` in
    [-1,1], ``valid`` ``[B,1,H,W]``. Depth is replicated to 3 channels and encoded like an image (posterior mean).
    """
    from fiffdepth_core.method import latent_valid_mask

    device = backbone.device

    def enc(images: torch.Tensor) -> torch.Tensor:
        return backbone.encode(images.to(device))  # [B,C,h,w]

    x0 = enc(synthetic["rgb"])
    batch = {"x0": x0, "d0_target": enc(synthetic["depth"].expand(-1, 3, -1, -1)),
             "mask0": latent_valid_mask(synthetic["valid"].to(device), x0.shape[1]),
             "x0_real": enc(real["rgb"]), "dm1_target": enc(real["depth"].expand(-1, 3, -1, -1)),
             "mask_real": latent_valid_mask(real["valid"].to(device), x0.shape[1])}
    size = x0.shape[0]
    batch["timesteps"] = torch.randint(0, num_timesteps, (size,), generator=generator).to(device)
    batch["noise"] = torch.randn(x0.shape, generator=generator).to(device, x0.dtype)
    return batch
