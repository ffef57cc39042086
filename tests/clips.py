"""Small videos for tests (needs PyAV: ``pytest.importorskip("av")`` first)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_flat_clip(path: Path, frames: int = 3, size: tuple[int, int] = (40, 56), fps: int = 12) -> Path:
    """A short video of flat grey frames of ``size`` = (H, W), brighter each frame."""
    from fiffdepth_core.app.video import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, Fraction(fps)) as out:
        for k in range(frames):
            out.write(np.full((*size, 3), 40 * k, dtype=np.uint8))
    return path
