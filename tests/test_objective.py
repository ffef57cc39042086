"""FiffDepthObjective itself: which UNet call gets what, which output meets which target, the weighted total.

A recording wrapper around a tiny diffusers UNet keeps every call's input, timestep and output; each loss term
is then recomputed by hand from the recorded tensors (diffusers' own scheduler for the noising maths, a loop-by-loop
gradient matching) and compared with what the objective returned.
"""

from __future__ import annotations

import pytest
import torch
from test_losses import naive_gradient_matching

from fiffdepth_core.method.losses import LossWeights, sd2_alphas_cumprod
from fiffdepth_testkit.models import TINY_UNET_CONFIG, TINY_VAE_CONFIG, random_unet, random_vae
from train.objective import FiffDepthObjective

WEIGHTS = LossWeights(mae=0.7, gm=0.3, keep=0.11, gamma=0.25, gm_scales=2)  # none equal: a swap would show


class RecordingUNet(torch.nn.Module):
    """Forwards to ``module`` and records ``(sample, timestep, context, output)`` for every call, in order.

    ``module`` is the attribute name DDP uses, so the backbone reads the inner UNet's config through it.
    """

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.module = unet
        self.calls: list[dict] = []

    def forward(self, sample, timestep, encoder_hidden_states):
        out = self.module(sample, timestep, encoder_hidden_states=encoder_hidden_states)
        self.calls.append({"sample": sample, "t": timestep.clone(), "context": encoder_hidden_states,
                           "out": out.sample})
        return out


def make_objective(detach: bool = False, weights: LossWeights = WEIGHTS):
    unet = RecordingUNet(random_unet(dict(TINY_UNET_CONFIG), seed=0).train())
    vae = random_vae(dict(TINY_VAE_CONFIG), seed=1)
    embed = torch.randn(1, 2, TINY_UNET_CONFIG["cross_attention_dim"], generator=torch.Generator().manual_seed(2))
    return FiffDepthObjective(unet, vae, embed, sd2_alphas_cumprod(), weights, detach_filter_input=detach), unet


def make_batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 4, 8, 8)  # [B,C,h,w]
    mask0 = torch.ones(shape, dtype=torch.bool)
    mask0[0, :, :3, :] = False  # an invalid region (e.g. sky without GT) in the first synthetic sample
    mask_real = torch.ones(shape, dtype=torch.bool)
    mask_real[1, :, :, 5:] = False
    return {"x0": torch.randn(shape, generator=gen), "d0_target": torch.randn(shape, generator=gen),
            "mask0": mask0, "x0_real": torch.randn(shape, generator=gen),
            "dm1_target": torch.randn(shape, generator=gen), "mask_real": mask_real,
            "timesteps": torch.tensor([17, 803]), "noise": torch.randn(shape, generator=gen)}


def hand_mae(pred, target, mask) -> float:
    diffs = [abs(float(p) - float(t)) for p, t, m in zip(pred.flatten(), target.flatten(), mask.flatten()) if m]
    return sum(diffs) / len(diffs)


def hand_mse(pred, target, mask) -> float:
    diffs = [(float(p) - float(t)) ** 2 for p, t, m in zip(pred.flatten(), target.flatten(), mask.flatten()) if m]
    return sum(diffs) / len(diffs)


def test_each_unet_call_gets_the_right_input_timestep_and_prompt():
    objective, unet = make_objective()
    batch = make_batch()
    objective(batch)
    assert len(unet.calls) == 4
    synthetic, keep, real, filtered = unet.calls
    embed = objective.empty_embed.expand(2, -1, -1)
    for call in unet.calls:
        assert torch.equal(call["context"], embed)  # the unpadded empty prompt, every time
        assert call["t"].dtype == torch.int64
    # 1. d0 = UNet(x0, 0) on the synthetic latents.
    assert torch.equal(synthetic["sample"], batch["x0"]) and synthetic["t"].tolist() == [0, 0]
    # 2. Trajectory keeping: b_t = sqrt(a) b0 + sqrt(1-a) eps with b0 = g x0 + (1-g) d0*, at the batch's t.
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    blend = 0.25 * batch["x0"] + 0.75 * batch["d0_target"]
    assert torch.allclose(keep["sample"], scheduler.add_noise(blend, batch["noise"], batch["timesteps"]), atol=1e-6)
    assert keep["t"].tolist() == [17, 803]
    # 3. d0 on the real photos at t = 0; 4. the filter pass on exactly that output at t = -1.
    assert torch.equal(real["sample"], batch["x0_real"]) and real["t"].tolist() == [0, 0]
    assert torch.equal(filtered["sample"], real["out"]) and filtered["t"].tolist() == [-1, -1]


def test_each_output_is_compared_with_its_target_and_the_total_is_weighted():
    objective, unet = make_objective()
    batch = make_batch(1)
    out = objective(batch)
    synthetic, keep, real, filtered = (c["out"].detach() for c in unet.calls)
    # t = 0 branch: d0 against d0*, over the synthetic mask.
    assert out["d0_mae"].item() == pytest.approx(hand_mae(synthetic, batch["d0_target"], batch["mask0"]), rel=1e-5)
    assert out["d0_gm"].item() == pytest.approx(
        naive_gradient_matching(synthetic, batch["d0_target"], batch["mask0"], 2), rel=1e-5)
    # Trajectory keeping: the v target, over the valid synthetic cells only.
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    blend = 0.25 * batch["x0"] + 0.75 * batch["d0_target"]
    velocity = scheduler.get_velocity(blend, batch["noise"], batch["timesteps"])
    assert out["keep"].item() == pytest.approx(hand_mse(keep, velocity, batch["mask0"]), rel=1e-5)
    everywhere = torch.nn.functional.mse_loss(keep, velocity).item()
    assert abs(out["keep"].item() - everywhere) > 1e-4  # the invalid region really is left out
    # t = -1 branch: d-1 against d-1*, over the real mask.
    assert out["dm1_mae"].item() == pytest.approx(hand_mae(filtered, batch["dm1_target"], batch["mask_real"]),
                                                  rel=1e-5)
    assert out["dm1_gm"].item() == pytest.approx(
        naive_gradient_matching(filtered, batch["dm1_target"], batch["mask_real"], 2), rel=1e-5)
    # L = sum over both branches of (mae MAE + gm GM) + keep L_k.
    terms = {k: out[k].item() for k in ("d0_mae", "d0_gm", "keep", "dm1_mae", "dm1_gm")}
    expected = (0.7 * terms["d0_mae"] + 0.3 * terms["d0_gm"] + 0.7 * terms["dm1_mae"] + 0.3 * terms["dm1_gm"]
                + 0.11 * terms["keep"])
    assert out["total"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_the_filter_pass_sees_d0_with_gradients_unless_detached(detach):
    objective, unet = make_objective(detach)
    out = objective(make_batch(2))
    real, filtered = unet.calls[2], unet.calls[3]
    assert filtered["sample"].requires_grad is (not detach)
    # The filter loss reaches the real branch's d0 (and so the t = 0 pass) only without the flag.
    grad, = torch.autograd.grad(out["dm1_mae"], real["out"], retain_graph=True, allow_unused=True)
    if detach:
        assert grad is None
    else:
        assert grad is not None and grad.abs().sum() > 0
    # Either way the UNet parameters get the filter loss's gradient through the t = -1 pass itself.
    params = [p for p in unet.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out["dm1_mae"], params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_detaching_changes_only_the_gradient_not_the_losses():
    attached, _ = make_objective(False)
    detached, _ = make_objective(True)
    batch = make_batch(3)
    a, b = attached(batch), detached(batch)
    for key in a:
        assert torch.equal(a[key], b[key])
    ga = torch.autograd.grad(a["dm1_mae"], list(attached.unet.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b["dm1_mae"], list(detached.unet.parameters()), allow_unused=True)
    differ = [not torch.allclose(x, y) for x, y in zip(ga, gb) if x is not None and y is not None]
    assert any(differ)
