"""Statistics shared by the output conventions (ControlNet normalisation), the training targets and the video
filters (neighbourhood means)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


def box_mean(values: torch.Tensor, size: int) -> torch.Tensor:
    """``[H,W]`` mean of ``values`` ``[H,W]`` (float32, >= 0) over the ``size`` x ``size`` pixels around each pixel
    (``size`` odd; fewer at the frame's edges), from running sums: several times faster than pooling on the CPU, and
    a neighbourhood of zeros gives exactly 0."""
    half = size // 2
    sums = values
    for dim in (1, 0):  # along the rows, then the columns
        padding = (half + 1, half) if dim == 1 else (0, 0, half + 1, half)
        running = F.pad(sums, padding).cumsum(dim)
        sums = running.narrow(dim, size, sums.shape[dim]) - running.narrow(dim, 0, sums.shape[dim])
    rows, cols = ((torch.arange(n, device=values.device) + half).clamp(max=n - 1)
                  - (torch.arange(n, device=values.device) - half).clamp(min=0) + 1 for n in values.shape)
    return sums.clamp_(min=0.0).div_(rows[:, None] * cols[None, :])  # (rounding can leave -1e-7 where all is 0)
