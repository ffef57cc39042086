"""The EMA of the trained weights: updated after each optimizer step, swapped in for validation and export.

The EMA is diffusers' ``EMAModel`` (its decay schedule and state). With ``train.ema.on_cpu`` its shadow weights stay
in host memory: the update then copies one parameter at a time to the CPU, so the GPU never holds the EMA, at the
price of one device-to-host copy of the trained weights per optimizer step. Both places compute the same update.
"""

from __future__ import annotations

import contextlib

import torch


@torch.no_grad()
def ema_step(ema, params: list[torch.nn.Parameter], on_cpu: bool = False) -> None:
    """One EMA update from ``params`` (the trained parameters, in the order the EMA was made with); ``on_cpu``:
    the EMA is held on the CPU, each parameter is brought to it in turn."""
    if not on_cpu:
        ema.step(params)
        return
    ema.optimization_step += 1  # what EMAModel.step does, one parameter at a time across devices
    decay = ema.get_decay(ema.optimization_step)
    ema.cur_decay_value = decay
    one_minus_decay = 1 - decay
    for shadow, param in zip(ema.shadow_params, params):
        value = param.detach().to(shadow.device)
        if param.requires_grad:
            shadow.sub_(one_minus_decay * (shadow - value))
        else:
            shadow.copy_(value)
        del value


@torch.no_grad()
def _swap(shadow_params: list[torch.Tensor], params: list[torch.nn.Parameter]) -> None:
    """Exchange the EMA's and the parameters' values: by reference on one device, one tensor at a time across."""
    for shadow, param in zip(shadow_params, params):
        if shadow.device == param.device and shadow.dtype == param.dtype:
            live = param.data
            param.data = shadow.data
            shadow.data = live
        else:
            live = param.detach().to(shadow.device, copy=True)
            param.copy_(shadow)
            shadow.copy_(live)
            del live


@contextlib.contextmanager
def ema_weights(ema, params: list[torch.nn.Parameter]):
    """The EMA weights in ``params`` for the duration (a no-op without EMA); no copy of the model is made."""
    if ema is None:
        yield
        return
    _swap(ema.shadow_params, params)
    try:
        yield
    finally:
        _swap(ema.shadow_params, params)
