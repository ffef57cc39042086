"""The options for smaller cards on tiny models: LoRA (with its LoRA-file and merged exports), 8-bit AdamW states,
the EMA kept on the CPU; the memory budget the trainer logs and the per-phase peaks it measures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import load_standalone
from train.finetune import main
from train.memory import PhaseMeter, memory_budget, optimizer_state_bytes, trace_activations
from train.random_models import TINY_UNET_CONFIG, TINY_VAE_CONFIG, random_unet, random_vae

DEBUG = str(Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml")
FAST = ["model.vae_warmup.steps=0", "data.size=[32,32]", "train.batch_size=2", "validation.max_images=2",
        "validation.every=2", "train.checkpoint_every=2", "train.trackers=[]", "export.single_file=false"]
LORA = ["train.lora.enabled=true", "train.lora.rank=4", "train.lora.alpha=8", "optim.lr=1.0e-2"]


def run(out: Path, steps: int, *extra: str, resume: bool = False) -> dict:
    argv = ["--config", DEBUG, "--output-dir", str(out), "--log-level", "WARNING"]
    argv += [f"--set={s}" for s in FAST + [f"train.max_steps={steps}", *extra]]
    return main(argv + (["--resume", "latest"] if resume else []))


def kohya_merge(base: dict, lora: dict) -> dict:
    """What a kohya-layout LoRA loader computes: W + alpha / rank * up @ down for each adapted layer (a
    reimplementation of the formula, independent of peft)."""
    merged = dict(base)
    for key in [k for k in lora if k.endswith(".lora_down.weight")]:
        stem = key[: -len(".lora_down.weight")]
        down, up, alpha = lora[key], lora[f"{stem}.lora_up.weight"], lora[f"{stem}.alpha"].item()
        target = next(k for k in base if "lora_unet_" + k[: -len(".weight")].replace(".", "_") == stem)
        delta = (up.flatten(1).double() @ down.flatten(1).double()) * (alpha / down.shape[0])
        merged[target] = (base[target].double() + delta.reshape(base[target].shape)).float()
    return merged


@pytest.mark.slow
def test_lora_run_exports_a_kohya_lora_and_the_merged_model_it_makes(tmp_path):
    run(tmp_path / "run", 2, *LORA)
    base = load_file(str(tmp_path / "run" / "base_model" / "unet" / "diffusion_pytorch_model.safetensors"))
    merged = load_file(str(tmp_path / "run" / "export" / "unet" / "diffusion_pytorch_model.safetensors"))
    lora = load_file(str(tmp_path / "run" / "export" / "fiffdepth_lora.safetensors"))
    assert sorted(merged) == sorted(base)  # plain diffusers keys: no base_layer / lora_ names
    downs = [k for k in lora if k.endswith(".lora_down.weight")]
    assert downs and all(lora[k].shape[0] == 4 for k in downs)
    assert all(lora[k.replace("lora_down.weight", "alpha")].item() == 8.0 for k in downs)
    assert {k.split(".")[0].rsplit("_", 1)[-1] for k in downs} == {"q", "k", "v", "0"}  # to_q/k/v, to_out.0
    expected = kohya_merge(base, lora)
    changed = 0
    for key, value in merged.items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
        changed += not torch.equal(value, base[key])
    assert changed == len(downs)  # exactly the adapted layers moved: the base is frozen
    backbone = load_standalone(tmp_path / "run" / "export")
    with torch.inference_mode():
        depth = predict_depth(backbone, torch.rand(1, 3, 32, 32), PredictConfig(processing_resolution=0))
    assert torch.isfinite(depth).all()
    assert (tmp_path / "run" / "best" / "fiffdepth_lora.safetensors").is_file()


@pytest.mark.slow
def test_lora_checkpoints_hold_the_adapters_only_and_resume_exactly(tmp_path):
    full = run(tmp_path / "full", 4, *LORA)["losses"]
    run(tmp_path / "split", 2, *LORA)
    state = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000002" / "model.safetensors"))
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
    second = run(tmp_path / "split", 4, *LORA, resume=True)["losses"]
    assert second == full[2:]


@pytest.mark.slow
def test_8bit_adamw_trains_keeps_8bit_states_and_resumes_exactly(tmp_path):
    pytest.importorskip("bitsandbytes")
    full = run(tmp_path / "full", 4, "train.optimizer=adamw8bit")["losses"]
    first = run(tmp_path / "split", 2, "train.optimizer=adamw8bit")["losses"]
    states = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000002" / "optimizer.safetensors"))
    codes = [v for k, v in states.items() if k.endswith((".state1", ".state2")) and v.numel() >= 4096]
    assert codes and all(v.dtype == torch.uint8 for v in codes)  # 1 byte per value (bitsandbytes keeps fp32 states
    # for tensors under 4096 values)
    second = run(tmp_path / "split", 4, "train.optimizer=adamw8bit", resume=True)["losses"]
    assert first + second == full
    assert full[-1] != run(tmp_path / "fp32", 4)["losses"][-1]  # another optimizer: other updates


@pytest.mark.slow
def test_ema_on_the_cpu_computes_the_same_ema_as_on_the_device(tmp_path):
    ema = ["train.ema.enabled=true", "train.ema.decay=0.5"]
    run(tmp_path / "device", 3, *ema)
    run(tmp_path / "cpu", 3, *ema, "train.ema.on_cpu=true")
    a, b = (load_standalone(tmp_path / name / "export").unet for name in ("device", "cpu"))
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


def test_budget_components_follow_from_the_parameter_counts():
    unet, vae = random_unet(dict(TINY_UNET_CONFIG), seed=0), random_vae(dict(TINY_VAE_CONFIG), seed=1)
    params = list(unet.parameters())
    n = sum(p.numel() for p in params)
    config = {"train": {"vae_dtype": "fp32", "grad_accum": 1, "optimizer": "adamw", "batch_size": 2,
                        "mixed_precision": "bf16", "gradient_checkpointing": True,
                        "ema": {"enabled": True, "on_cpu": True}}}
    def budget(leaf_per_pass: bool) -> dict:
        return {line.component.split(" (")[0]: line for line in
                memory_budget(unet, vae, config, params, torch.device("cpu"), {"synthetic": (4, 4), "real": (4, 4)},
                              leaf_per_pass=leaf_per_pass)}

    lines = budget(leaf_per_pass=False)  # several processes: autocast's cache, and the backward's buffers
    assert lines["UNet weights, trained"].device_bytes == 4 * n
    assert lines["gradients"].device_bytes == 4 * n
    assert lines["optimizer states"].device_bytes == 8 * n
    assert lines["EMA weights"].device_bytes == 0 and lines["EMA weights"].host_bytes == 4 * n
    assert lines["autocast bf16 weight copies"].device_bytes == 2 * n
    assert lines["backward buffers of the four passes' gradients"].device_bytes == 2 * n
    assert lines["activations"].device_bytes > 0
    single = budget(leaf_per_pass=True)  # one process: a leaf per pass, no cache, no buffers
    assert single["autocast bf16 weight copies"].device_bytes == 2 * max(p.numel() for p in params)
    assert "backward buffers of the four passes' gradients" not in single
    big = [p for p in params if p.numel() >= 4096]
    small = [p for p in params if p.numel() < 4096]
    expected = sum(2 * p.numel() + 8 * -(-p.numel() // 256) for p in big) + sum(8 * p.numel() for p in small)
    assert optimizer_state_bytes(params, "adamw8bit") == expected


def test_activation_count_grows_with_the_crop_and_shrinks_with_checkpointing():
    config = dict(TINY_UNET_CONFIG)
    small, _ = trace_activations(config, 1, (4, 4), torch.bfloat16, False)
    large, _ = trace_activations(config, 1, (8, 8), torch.bfloat16, False)
    kept, transient = trace_activations(config, 1, (8, 8), torch.bfloat16, True)
    assert 3 * small < large  # 4x the latent cells
    assert 0 < kept < large and transient > 0
    # a lower bound by hand: conv_in saves its bf16 input [1,4,8,8] and its output [1,32,8,8] feeds saved ops
    assert large >= (4 + 32) * 8 * 8 * 2


PHASES = """
import json, torch
from train.memory import PhaseMeter
meter = PhaseMeter(torch.device("cpu"))
with meter.phase("big"):
    block = torch.ones(100_000_000)  # 400 MB touched
    del block
with meter.phase("small"):
    torch.ones(10)
print(json.dumps({"resettable": meter.resettable, **meter.summary()}))
"""


def test_phase_meter_charges_each_phase_its_own_peak():
    # In a fresh process: the suite's own process may hold freed memory that a new block reuses.
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", PHASES], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["resettable"]:
        pytest.skip("the platform cannot reset the peak resident size")
    peaks = result["peak_resident_gb"]
    assert peaks["big"] - peaks["small"] > 0.3, peaks


@pytest.mark.slow
def test_the_trainer_logs_its_budget_and_phase_peaks(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="train.memory")
    result = run(tmp_path / "run", 2)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for part in ("memory budget", "UNet weights, trained", "gradients", "optimizer states (adamw)", "activations",
                 "memory by phase"):
        assert part in text
    assert set(result["memory"]["peak_resident_gb"]) == {"load", "train", "validate", "checkpoint", "export"}


def test_runs_in_one_process_may_choose_different_mixed_precision(tmp_path):
    """accelerate keeps the mixed precision process-wide; a second run choosing another one (a notebook, the real-size
    test after a tiny one on a CPU with bf16 kernels) used to fail with 'AcceleratorState has already been
    initialized'."""
    first = run(tmp_path / "fp32", 1, 'train.mixed_precision="no"', "validation.every=1", "train.checkpoint_every=1")
    second = run(tmp_path / "bf16", 1, "train.mixed_precision=bf16", "validation.every=1", "train.checkpoint_every=1")
    assert len(first["losses"]) == len(second["losses"]) == 1
