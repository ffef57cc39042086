"""Memory you can read before a run starts, and what each phase of the run really used.

:func:`memory_budget` computes, from the models and the config, what training holds: weights, gradients, optimizer
states, the EMA copy, autocast's low-precision weight copies, and the activations the objective keeps for its
backward pass at the configured crop and batch. Activations are counted by running the UNet on fake tensors (shapes
and dtypes only: no memory, no arithmetic) under the run's autocast and gradient-checkpointing settings and adding
up what autograd saves. Exports and checkpoints stream one tensor at a time, so they add the largest tensor.

:class:`PhaseMeter` records the peak resident memory of each phase (load, train, validate, checkpoint, export) and,
on CUDA, the peak allocated device memory. On Linux the process's peak is reset between phases
(``/proc/self/clear_refs``); elsewhere the figures are the process's peak so far.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

GB = 1e9
# bitsandbytes keeps 8-bit states for tensors of at least this many elements (smaller ones stay 32-bit), with one
# fp32 scale per block of this many values.
BNB_MIN_8BIT_SIZE, BNB_BLOCK = 4096, 256


@dataclass(frozen=True)
class BudgetLine:
    component: str
    device_bytes: int
    host_bytes: int = 0
    note: str = ""


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def optimizer_state_bytes(trainable: list[torch.nn.Parameter], kind: str) -> int:
    """AdamW's two moment estimates: fp32 (``adamw``) or 8-bit blockwise with fp32 scales (``adamw8bit``)."""
    if kind == "adamw":
        return sum(2 * 4 * p.numel() for p in trainable)
    total = 0
    for p in trainable:
        n = p.numel()
        total += 2 * (n + 4 * -(-n // BNB_BLOCK)) if n >= BNB_MIN_8BIT_SIZE else 2 * 4 * n
    return total


def trace_activations(unet_config: dict, batch: int, latent_hw: tuple[int, int], autocast_dtype,
                      checkpointing: bool) -> tuple[int, int]:
    """(bytes autograd keeps from one UNet forward until its backward, the largest extra during the backward of
    one checkpointed block) for ``batch`` latents of ``latent_hw``, counted on fake CPU tensors under CPU
    autocast (which casts the same operations to low precision as CUDA's)."""
    from diffusers import UNet2DConditionModel
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class WeightCasts(TorchDispatchMode):
        """Notes autocast's low-precision copies of the weights: autograd saves them too, but they are the
        "weight copies" line of the budget, not activations."""

        def __init__(self, weights: set):
            super().__init__()
            self.weights, self.casts, self.alive = weights, set(), []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default and args[0].untyped_storage()._cdata in self.weights:
                self.casts.add(out.untyped_storage()._cdata)
                self.alive.append(out)  # fake: costs nothing, and its address is not reused while counting
            return out

    with FakeTensorMode(allow_non_fake_inputs=True):
        unet = UNet2DConditionModel.from_config(unet_config).train()
        weights = {p.untyped_storage()._cdata for p in unet.parameters()}
        spy = WeightCasts(weights)
        seen = set(weights)
        blocks: dict[int, int] = {}
        current: list[int] = []
        counted = [0]

        def pack(x: torch.Tensor):
            key = x.untyped_storage()._cdata
            if key not in seen and key not in spy.casts:
                seen.add(key)
                size = x.untyped_storage().nbytes()
                counted[0] += size
                if current:
                    blocks[current[-1]] = blocks.get(current[-1], 0) + size
            return x

        def run(checkpoint: bool) -> int:
            counted[0] = 0
            spy.casts.clear()
            spy.alive.clear()
            if checkpoint:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()
            x = torch.zeros(batch, unet_config.get("in_channels", 4), *latent_hw)  # [B,C,h,w]
            context = torch.zeros(batch, 2, unet_config["cross_attention_dim"])  # [B,T,D]
            cast = torch.autocast("cpu", autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with cast, spy, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
                extra = {}
                if unet_config.get("class_embed_type") == "projection":
                    extra["class_labels"] = torch.zeros(batch, unet_config["projection_class_embeddings_input_dim"])
                out = unet(x, torch.zeros(batch, dtype=torch.long), encoder_hidden_states=context, **extra)
            del out  # the graph (and what it saved) goes only now: no storage is reused while counting
            return counted[0]

        hooks = []
        for module in unet.modules():  # the blocks diffusers checkpoints: resnets and transformer blocks
            if type(module).__name__ in ("ResnetBlock2D", "Transformer2DModel"):
                hooks.append(module.register_forward_pre_hook(lambda m, a: current.append(id(m))))
                hooks.append(module.register_forward_hook(lambda m, a, o: current.pop() and None))
        full = run(False)
        transient = max(blocks.values(), default=full)
        if not checkpointing:
            return full, 0
        seen.clear()
        seen.update(weights)
        return run(True), transient


def memory_budget(unet, vae, config: dict, trainable: list[torch.nn.Parameter], device: torch.device,
                  latent_sizes: dict[str, tuple[int, int]], leaf_per_pass: bool = True) -> list[BudgetLine]:
    """The run's memory by component (see the module docstring). ``latent_sizes``: the largest latent ``(h, w)``
    of each branch (``synthetic``, ``real``). ``leaf_per_pass``: a single-process run (each UNet pass on leaves of
    its own, train/objective.py); several processes gather each weight's four gradients in a backward buffer."""
    train = config["train"]
    ids = {id(p) for p in trainable}
    frozen_unet = [p for p in unet.parameters() if id(p) not in ids]
    lines = [BudgetLine("UNet weights, trained (fp32)", _bytes(trainable))]
    if frozen_unet:
        lines.append(BudgetLine("UNet weights, frozen base", _bytes(frozen_unet), note="LoRA: not trained"))
    lines.append(BudgetLine(f"VAE weights, frozen ({train['vae_dtype']})", _bytes(vae.parameters())))
    lines.append(BudgetLine("gradients", _bytes(trainable), note=f"kept over {train['grad_accum']} micro-steps"))
    kind = train["optimizer"]
    lines.append(BudgetLine(f"optimizer states ({kind})", optimizer_state_bytes(trainable, kind)))
    if train["ema"]["enabled"]:
        on_cpu = train["ema"]["on_cpu"]
        lines.append(BudgetLine("EMA weights", 0 if on_cpu else _bytes(trainable), _bytes(trainable) if on_cpu else 0,
                                "kept on the CPU" if on_cpu else ""))
    precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train["mixed_precision"])
    copies = sum(p.numel() * 2 for p in trainable if p.dtype == torch.float32)
    if precision is not None and leaf_per_pass:
        largest_copy = max((p.numel() * 2 for p in trainable if p.dtype == torch.float32), default=0)
        lines.append(BudgetLine(f"autocast {train['mixed_precision']} weight copies", largest_copy,
                                note="one weight at a time (no cache)"))
    elif precision is not None:
        lines.append(BudgetLine(f"autocast {train['mixed_precision']} weight copies", copies,
                                note="held during each forward"))
    if not leaf_per_pass:
        lines.append(BudgetLine("backward buffers of the four passes' gradients",
                                copies if precision is not None else _bytes(trainable),
                                note="several processes (DDP): gathered per weight"))
    batch = train["batch_size"]
    try:
        from fiffdepth_core.method import unwrap_module

        unet_config = dict(unwrap_module(unet).config)
        kept, transient = 0, 0
        for branch, hw in latent_sizes.items():
            retained, extra = trace_activations(unet_config, batch, hw, precision, train["gradient_checkpointing"])
            kept += 2 * retained  # two UNet passes per branch: d0 and trajectory / d0 and d-1
            transient = max(transient, extra)
        sizes = ", ".join(f"{b} {h * 8}x{w * 8}" for b, (h, w) in latent_sizes.items())
        lines.append(BudgetLine(f"activations ({batch} images per branch, 4 UNet passes, {sizes})",
                                kept + transient, note="counted on fake tensors"))
    except Exception as err:  # an estimate only: never stop a run for it
        lines.append(BudgetLine("activations", 0, note=f"not estimated ({type(err).__name__}: {err})"[:120]))
    largest = max((p.numel() * p.element_size() for p in unet.parameters()), default=0)
    lines.append(BudgetLine("checkpoint and export writes", largest, note="streamed: the largest tensor"))
    return lines


def log_budget(lines: list[BudgetLine], device: torch.device) -> None:
    where = "GPU" if device.type == "cuda" else device.type
    width = max(len(line.component) for line in lines)
    rows = [f"  {line.component:<{width}}  {line.device_bytes / GB:7.2f} GB" +
            (f"  (+{line.host_bytes / GB:.2f} GB host)" if line.host_bytes else "") +
            (f"  {line.note}" if line.note else "") for line in lines]
    device_total = sum(line.device_bytes for line in lines)
    host_extra = sum(line.host_bytes for line in lines)
    rows.append(f"  {'total on the ' + where:<{width}}  {device_total / GB:7.2f} GB"
                + (f"  (+{host_extra / GB:.2f} GB host)" if host_extra else ""))
    log.info("memory budget (computed from the models and the config; the run adds the framework's own "
             "memory):\n%s", "\n".join(rows))


class PhaseMeter:
    """Peak memory per named phase; phases may nest (the inner one's peak is not charged to the outer)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.host: dict[str, float] = {}
        self.cuda: dict[str, float] = {}
        self.stack: list[str] = []
        self.resettable = self._reset_host()

    @contextlib.contextmanager
    def phase(self, name: str):
        self._close()
        self.stack.append(name)
        try:
            yield
        finally:
            self._close()
            self.stack.pop()

    def _close(self) -> None:
        if self.stack:
            name = self.stack[-1]
            self.host[name] = max(self.host.get(name, 0.0), peak_resident_bytes())
            if self.device.type == "cuda":
                self.cuda[name] = max(self.cuda.get(name, 0.0), torch.cuda.max_memory_allocated(self.device))
        self._reset_host()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @staticmethod
    def _reset_host() -> bool:
        """Restart the peak resident size from the current one; False where the platform cannot (or the write
        is accepted but the peak stays where it was, as in some sandboxes)."""
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        status = _status_kb("VmHWM", "VmRSS")
        if len(status) < 2:
            return False
        return status["VmHWM"] <= status["VmRSS"] + 64 * 1024  # within 64 MB: what the reading itself allocates

    def summary(self) -> dict:
        out = {"peak_resident_gb": {k: round(v / GB, 2) for k, v in self.host.items()},
               "per_phase": self.resettable}
        if self.cuda:
            out["peak_cuda_allocated_gb"] = {k: round(v / GB, 2) for k, v in self.cuda.items()}
        return out

    def log(self) -> None:
        kind = "peak resident memory" + ("" if self.resettable else " so far (the platform cannot reset the peak)")
        text = ", ".join(f"{k} {v / GB:.2f} GB" for k, v in self.host.items())
        if self.cuda:
            text += "; peak CUDA allocated: " + ", ".join(f"{k} {v / GB:.2f} GB" for k, v in self.cuda.items())
        log.info("memory by phase (%s): %s", kind, text)


def _status_kb(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status in kB (empty where there is no such file)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in keys:
            found[name] = int(value.split()[0])
    return found


def peak_resident_bytes() -> float:
    """The process's peak resident set since the last reset (Linux: VmHWM), else since it started."""
    hwm = _status_kb("VmHWM").get("VmHWM")
    if hwm is not None:
        return float(hwm) * 1024
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)
