"""A leaf per UNet pass (train/objective.py: own_leaves): the same gradients as one plain backward over the passes,
added into ``.grad`` (accumulation over micro-steps kept), with and without gradient checkpointing and autocast."""

from __future__ import annotations

import pytest
import torch

from train.objective import own_leaves
from train.random_models import geometry_configs, random_unet


def four_passes(unet, leaves: bool, seed: int) -> torch.Tensor:
    """The objective's pattern: two independent passes and a chained pair, summed."""
    g = torch.Generator().manual_seed(seed)
    x, y, z = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    context = torch.randn(1, 2, unet.config.cross_attention_dim, generator=g)

    def run(latent, t):
        if not leaves:
            return unet(latent, t, encoder_hidden_states=context).sample
        with own_leaves(unet):
            return unet(latent, t, encoder_hidden_states=context).sample

    return run(x, 0).square().mean() + run(y, 500).mean() + run(run(z, 0), -1).abs().mean()


@pytest.mark.parametrize("checkpointing,autocast", [(False, False), (True, False), (True, True)])
def test_a_leaf_per_pass_gives_the_plain_gradients_accumulated(checkpointing, autocast):
    grads = {}
    for leaves in (False, True):
        unet = random_unet(geometry_configs("tiny")[0], seed=0)
        unet.train()
        if checkpointing:
            unet.enable_gradient_checkpointing()
        for seed in (1, 2):  # two micro-steps: the second adds to .grad
            with torch.autocast("cpu", torch.bfloat16, enabled=autocast, cache_enabled=not leaves):
                loss = four_passes(unet, leaves, seed)
            loss.backward()
        grads[leaves] = {n: p.grad.clone() for n, p in unet.named_parameters()}
        assert all(isinstance(p, torch.nn.Parameter) for p in unet.parameters())  # the parameters are back
    tolerance = 2e-2 if autocast else 1e-5  # bf16 products summed in another order
    for name, plain in grads[False].items():
        ours = grads[True][name]
        scale = float(plain.abs().max()) or 1.0
        assert float((ours - plain).abs().max()) <= tolerance * scale, name
    assert sum(float(g.abs().sum()) > 0 for g in grads[True].values()) == len(grads[True])
