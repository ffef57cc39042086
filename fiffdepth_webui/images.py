"""WebUI images in, ControlNet hint out: the conversions around :func:`fiffdepth_core.predict_depth`.

WebUIs hand preprocessors ``H x W x C`` numpy arrays (uint8 RGB from the UI; the API may deliver grey, RGBA or
16-bit images) and expect an ``H x W x 3`` uint8 RGB hint of the same size back.
"""

from __future__ import annotations

import numpy as np
import torch

from fiffdepth_core.method import DEFAULT_PROCESSING_RESOLUTION, controlnet_depth

MIN_SIDE = 64  # px: below this the model sees almost nothing of the scene
RESOLUTION_MIN, RESOLUTION_MAX = 64, 4096  # sd-webui-controlnet's preprocessor slider range
RESOLUTION_DEFAULT = DEFAULT_PROCESSING_RESOLUTION


def image_tensor(image) -> torch.Tensor:
    """An ``H x W`` (grey) or ``H x W x C`` (C = 1..4) image -> float32 ``[1,C,H,W]`` in [0,1].

    uint8 is divided by 255, uint16 (and wider integer arrays holding values above 255, as Pillow returns 16-bit
    PNGs) by 65535; float images must already lie in [0,1]. Alpha is dropped later by the predictor.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]  # [H,W,1]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"`input_image` must be an H x W grey or H x W x C image with C in 1..4, "
                         f"got shape {tuple(array.shape)}")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"`input_image` must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {width} x {height}")
    if array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.integer):
        wide = array.dtype == np.uint16 or int(array.max()) > 255
        values = array.astype(np.float32) / (65535.0 if wide else 255.0)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
    else:
        raise ValueError(f"`input_image` must hold integers or floats, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(values)).permute(2, 0, 1)[None].contiguous()  # [1,C,H,W]


def check_resolution(value) -> int:
    """The resolution slider's value as an int in range; a missing value (None, -1: the API's "unset") gives the
    default."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == -1):
        return RESOLUTION_DEFAULT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"`resolution` must be a whole number of pixels between {RESOLUTION_MIN} and "
                         f"{RESOLUTION_MAX} (-1 = default {RESOLUTION_DEFAULT}), got {value!r}")
    if not RESOLUTION_MIN <= int(value) <= RESOLUTION_MAX:
        raise ValueError(f"`resolution` must be between {RESOLUTION_MIN} and {RESOLUTION_MAX} px (-1 = default "
                         f"{RESOLUTION_DEFAULT}), got {int(value)}")
    return int(value)


def hint_image(depth: torch.Tensor) -> np.ndarray:
    """Raw depth ``[1,H,W]`` (0 = near) -> the ControlNet hint: ``H x W x 3`` uint8, near = white, normalised as
    :func:`fiffdepth_core.method.postprocess.controlnet_depth` does."""
    control = controlnet_depth(depth.float().cpu())[0]  # [H,W] in [0,1]
    grey = (control * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()  # [H,W]
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))  # [H,W,3]
