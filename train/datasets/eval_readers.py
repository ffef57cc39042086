"""File decoders and per-dataset readers for the zero-shot evaluation sets (Marigold's tarball layouts).

Each reader takes the bytes of a sample's files and returns ``(rgb [3,H,W] float32 in [0,1], depth [H,W] float32
in metres, mask [H,W] bool or None)``; the mask is the dataset's own crop/validity mask, to be combined with its
valid depth range by :mod:`train.datasets.eval_sets`. Decoding follows Marigold's ``src/dataset/*_dataset.py``:

| set | GT file | decode | mask |
| --- | --- | --- | --- |
| nyuv2 | ``depth_NNNN.png`` uint16 | / 1000 | Eigen crop rows 45:471, cols 41:601 of 480x640 (scaled to the image) |
| kitti | ``proj_depth/groundtruth/...png`` uint16 | / 256 | KB crop to 352x1216 (bottom, centred), Eigen mask |
| eth3d | raw float32 named ``.JPG`` | inf -> 0 | none |
| scannet | ``depth/N.png`` uint16 | / 1000 | none |
| diode | ``*_depth.npy`` | as is | ``*_depth_mask.npy`` |
| ibims | ``depth/NAME.png`` uint16 | x 50 / 65535 | ``mask_invalid/NAME.png`` > 0 |
| sintel | ``.dpt`` | as is | none |

Images are decoded by the project's one image reader (:mod:`fiffdepth_core.fileio.images`) without applying EXIF
orientation (as Marigold's PIL reads do), so RGB and GT rasters agree.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from .common import SampleError

DPT_TAG = 202021.25  # Sintel .dpt header: float32 tag, int32 width, int32 height, then float32 depth row-major
KB_CROP = (352, 1216)  # KITTI benchmark crop (height, width)
NYU_SIZE = (480, 640)
NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows, cols on 480x640
KITTI_EIGEN_MASK = (0.3324324, 0.91351351, 0.0359477, 0.96405229)  # Marigold's "eigen" valid_mask_crop
IBIMS_DEPTH_DIVISOR = 65535.0 / 50.0  # uint16 covers 0..50 m


def _decode(data: bytes, what: str) -> np.ndarray:
    """The image as stored (no EXIF orientation, like Marigold's reads): ``[H,W]`` or ``[H,W,C]`` RGB(A) order, by the
    project's one image reader (header and pixel limit first)."""
    from fiffdepth_core.fileio import ImageInputError, decode_image

    try:
        return decode_image(data, orient=False, what=what, option="FIFFDEPTH_MAX_PIXELS")
    except ImageInputError as err:
        raise SampleError(str(err)) from None


def decode_rgb_array(data: bytes, what: str = "RGB image") -> np.ndarray:
    """An 8/16-bit grey, RGB or RGBA image file -> float32 ``[3,H,W]`` in [0,1] (alpha dropped), as stored."""
    from fiffdepth_core.fileio import ImageInputError, load_image

    try:
        rgb = load_image(data, rgb=True, orient=False, what=what, option="FIFFDEPTH_MAX_PIXELS")  # [3,H,W]
    except ImageInputError as err:
        raise SampleError(str(err)) from None
    return np.ascontiguousarray(rgb.numpy())


def decode_png_depth(data: bytes, divisor: float, what: str = "depth PNG") -> np.ndarray:
    """A single-channel uint16 PNG -> float32 ``[H,W]`` = value / ``divisor``."""
    array = _decode(data, what)
    if array.ndim != 2 or array.dtype != np.uint16:
        raise SampleError(f"{what} must be a single-channel 16-bit PNG, got dtype {array.dtype} shape {array.shape}")
    return (array.astype(np.float64) / divisor).astype(np.float32)


def decode_raw_float32(data: bytes, shape: tuple[int, int], what: str = "raw depth") -> np.ndarray:
    """ETH3D's raw little-endian float32 depth of ``shape`` (H, W); +inf (no measurement) becomes 0."""
    if len(data) != shape[0] * shape[1] * 4:
        raise SampleError(f"{what} holds {len(data)} bytes, but a float32 raster the size of its image "
                          f"{shape[0]}x{shape[1]} needs {shape[0] * shape[1] * 4}")
    depth = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(shape)
    depth[depth == np.inf] = 0.0
    return depth


def decode_npy(data: bytes, what: str = "npy array") -> np.ndarray:
    """A ``.npy`` file -> its array with unit axes removed (DIODE depth is ``[H,W,1]``)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False).squeeze()
    except ValueError as err:
        raise SampleError(f"cannot read {what}: {err}") from err


def decode_dpt(data: bytes, what: str = "Sintel .dpt") -> np.ndarray:
    """A Sintel ``.dpt`` depth file -> float32 ``[H,W]``."""
    if len(data) < 12:
        raise SampleError(f"{what} is too short for a .dpt header ({len(data)} bytes)")
    tag = float(np.frombuffer(data[:4], dtype="<f4")[0])
    width, height = (int(v) for v in np.frombuffer(data[4:12], dtype="<i4"))
    if tag != DPT_TAG:
        raise SampleError(f"{what} is not a .dpt file: its tag is {tag}, expected {DPT_TAG}")
    if width <= 0 or height <= 0 or len(data) != 12 + 4 * width * height:
        raise SampleError(f"{what}: header says {width}x{height} but the file holds {len(data) - 12} data bytes")
    return np.frombuffer(data[12:], dtype="<f4").astype(np.float32).reshape(height, width)


def window_mask(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """A boolean ``[H,W]`` mask that is True on ``rows[0]:rows[1]``, ``cols[0]:cols[1]``."""
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def nyu_eigen_mask(shape: tuple[int, int]) -> np.ndarray:
    """The Eigen crop: rows 45:471, cols 41:601 on 480x640; scaled proportionally on other sizes."""
    sy, sx = shape[0] / NYU_SIZE[0], shape[1] / NYU_SIZE[1]
    r0, r1, c0, c1 = NYU_EIGEN_CROP
    return window_mask(shape, (round(r0 * sy), round(r1 * sy)), (round(c0 * sx), round(c1 * sx)))


def kitti_eigen_mask(shape: tuple[int, int]) -> np.ndarray:
    """Marigold's "eigen" KITTI mask: rows 0.3324-0.9135 H, cols 0.0359-0.9641 W (int-truncated)."""
    h, w = shape
    r0, r1, c0, c1 = KITTI_EIGEN_MASK
    return window_mask(shape, (int(r0 * h), int(r1 * h)), (int(c0 * w), int(c1 * w)))


def kb_crop(array: np.ndarray) -> np.ndarray:
    """Crop the last two axes to KITTI's benchmark 352x1216: the bottom rows, horizontally centred."""
    h, w = array.shape[-2:]
    ch, cw = KB_CROP
    if h < ch or w < cw:
        raise SampleError(f"a KITTI image must be at least {ch}x{cw} for the benchmark crop, got {h}x{w}")
    top, left = h - ch, (w - cw) // 2
    return array[..., top:top + ch, left:left + cw]


Reader = Callable[[list[bytes], list[str]], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def _read_nyuv2(data, names):
    depth = decode_png_depth(data[1], 1000.0, names[1])
    return decode_rgb_array(data[0], names[0]), depth, nyu_eigen_mask(depth.shape)


def _read_kitti(data, names):
    rgb, depth = kb_crop(decode_rgb_array(data[0], names[0])), kb_crop(decode_png_depth(data[1], 256.0, names[1]))
    return rgb, depth, kitti_eigen_mask(depth.shape)


def _read_eth3d(data, names):
    rgb = decode_rgb_array(data[0], names[0])
    return rgb, decode_raw_float32(data[1], rgb.shape[1:], names[1]), None


def _read_scannet(data, names):
    return decode_rgb_array(data[0], names[0]), decode_png_depth(data[1], 1000.0, names[1]), None


def _read_diode(data, names):
    depth = decode_npy(data[1], names[1]).astype(np.float32)
    return decode_rgb_array(data[0], names[0]), depth, decode_npy(data[2], names[2]).astype(bool)


def _read_ibims(data, names):
    depth = decode_png_depth(data[1], IBIMS_DEPTH_DIVISOR, names[1])
    mask = _decode(data[2], names[2])
    return decode_rgb_array(data[0], names[0]), depth, (mask if mask.ndim == 2 else mask[..., 0]) > 0


def _read_sintel(data, names):
    return decode_rgb_array(data[0], names[0]), decode_dpt(data[1], names[1]), None


READERS: dict[str, Reader] = {"nyuv2": _read_nyuv2, "kitti": _read_kitti, "eth3d": _read_eth3d,
                              "scannet": _read_scannet, "diode": _read_diode, "ibims": _read_ibims,
                              "sintel": _read_sintel}


def read_sample(name: str, data: list[bytes], names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode one sample of set ``name``; checks that RGB, depth and mask share one size."""
    rgb, depth, mask = READERS[name](data, names)
    shapes = {"RGB": tuple(rgb.shape[1:]), "depth": tuple(depth.shape)}
    if mask is not None:
        shapes["mask"] = tuple(mask.shape)
    if depth.ndim != 2 or len(set(shapes.values())) != 1:
        raise SampleError(f"sample {names[0]}: RGB, depth and mask sizes differ: {shapes}")
    return rgb, depth, mask
