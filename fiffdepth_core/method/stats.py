"""Robust statistics shared by the output conventions (ControlNet normalisation) and the training targets."""

from __future__ import annotations

import numpy as np
import torch

TORCH_QUANTILE_LIMIT = 2**24  # torch.quantile refuses larger inputs


def quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Linear-interpolated quantiles of a flat tensor (``torch.quantile``'s definition, without its size cap)."""
    values = values.reshape(-1).float()
    if values.device.type == "cpu":  # numpy selects instead of sorting: several times faster on the CPU
        return torch.from_numpy(np.quantile(values.numpy(), qs).astype(np.float32))
    if values.numel() <= TORCH_QUANTILE_LIMIT:
        return torch.quantile(values, torch.tensor(qs, dtype=values.dtype, device=values.device))
    n, out = values.numel(), []
    for q in qs:  # exact order statistics without sorting everything
        pos = q * (n - 1)
        lower = int(pos)
        low = values.kthvalue(lower + 1).values
        high = values.kthvalue(min(lower + 2, n)).values
        out.append(low + (high - low) * (pos - lower))
    return torch.stack(out)
