"""The one image reader (fiffdepth_core.fileio.images): paths and encoded bytes, EXIF orientation, 16 bits kept, the
header checked first; every other reader in the project goes through it."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from fiffdepth_core.fileio import ImageInputError, decode_image, load_image
from fiffdepth_core.fileio import images as reader

ROOT = Path(__file__).resolve().parents[1]


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def rng_image(height=12, width=20, channels=3, seed=0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_a_path_and_its_bytes_decode_alike(tmp_path, fmt):
    array = rng_image()
    data = encode(array, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    from_path, from_bytes = decode_image(path), decode_image(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # Pillow's own decode
    assert from_path.dtype == np.uint8 and np.array_equal(from_path, from_bytes)
    assert np.array_equal(from_path, expected)


def test_sixteen_bit_colour_and_grey_are_kept(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV writes the 16-bit colour PNG")
    rgb = np.random.default_rng(1).integers(0, 65536, (9, 13, 3), dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", rgb[:, :, ::-1])  # OpenCV stores BGR
    assert ok
    data = encoded.tobytes()
    assert np.array_equal(decode_image(data), rgb)
    (tmp_path / "c.png").write_bytes(data)
    tensor = load_image(tmp_path / "c.png")
    assert tensor.shape == (3, 9, 13) and np.allclose(tensor.numpy(), np.moveaxis(rgb, -1, 0) / 65535.0)
    grey = rgb[:, :, 0]
    assert np.array_equal(decode_image(encode(grey, "PNG")), grey)  # Pillow writes 16-bit grey


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow_turns_it(tmp_path, fmt, orientation):
    array = rng_image(6, 10)
    exif = Image.Exif()
    exif[0x0112] = orientation
    kwargs = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    data = encode(array, fmt, exif=exif.tobytes(), **kwargs)
    stored = array if fmt == "PNG" else np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # as Pillow reads it
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    path = tmp_path / f"o.{fmt.lower()}"
    path.write_bytes(data)
    for source in (data, path):
        assert np.array_equal(decode_image(source), upright), (fmt, orientation)
        assert np.array_equal(decode_image(source, orient=False), stored), (fmt, orientation)
    assert load_image(path).shape[1:] == upright.shape[:2]


def test_channels_and_rgb(tmp_path):
    for channels, expected in ((1, 1), (3, 3), (4, 4)):
        array = rng_image(channels=channels)
        tensor = load_image(encode(array, "PNG"))
        assert tensor.shape[0] == expected and tensor.dtype.is_floating_point
        rgb = load_image(encode(array, "PNG"), rgb=True)
        source = array[:, :, None] if channels == 1 else array
        reference = np.repeat(source[:, :, :1], 3, axis=2) if channels == 1 else source[:, :, :3]
        assert rgb.shape[0] == 3 and np.allclose(rgb.permute(1, 2, 0).numpy(), reference / 255.0)
    palette = Image.fromarray(rng_image(channels=1) % 4, mode="L").convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    expected = np.asarray(palette.convert("RGB")) / 255.0
    assert np.allclose(load_image(buffer.getvalue(), rgb=True).permute(1, 2, 0).numpy(), expected)


def test_the_header_is_checked_before_any_pixel_is_decoded(monkeypatch):
    data = encode(rng_image(40, 50), "PNG")

    def never(*args, **kwargs):
        raise AssertionError("decoded although the header is above the limit")

    monkeypatch.setattr(reader, "_opencv", never)
    monkeypatch.setattr(reader, "_pillow", never)
    with pytest.raises(ImageInputError, match=r"50x40 = 2000 pixels, above the limit of 1000 pixels"):
        decode_image(data, 1000, what="member 7")
    with pytest.raises(ImageInputError, match="member 7: the file is empty"):
        decode_image(b"", what="member 7")
    with pytest.raises(FileNotFoundError):
        decode_image(Path("/nonexistent/x.png"))


def test_a_damaged_file_is_named(tmp_path):
    data = encode(rng_image(), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(data[:40])
    with pytest.raises(ImageInputError, match=r"cannot read image .*cut\.jpg"):
        load_image(tmp_path / "cut.jpg")


def test_training_and_evaluation_readers_give_what_they_gave_before(tmp_path):
    """The wrappers over the one reader return what the readers they replaced returned: OpenCV's decode as stored
    for evaluation, Pillow's RGB with the orientation applied for training photos."""
    cv2 = pytest.importorskip("cv2", reason="the evaluation readers decoded with OpenCV")
    from train.datasets.eval_readers import decode_png_depth, decode_rgb_array
    from train.datasets.raster_io import read_png_units, read_rgb

    photo = encode(rng_image(16, 24, seed=3), "JPEG", quality=90)
    old_eval = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert np.array_equal(decode_rgb_array(photo), np.moveaxis(old_eval, -1, 0).astype(np.float32) / 255.0)
    depth = np.random.default_rng(4).integers(0, 65536, (16, 24), dtype=np.uint16)
    depth_png = encode(depth, "PNG")
    assert np.array_equal(decode_png_depth(depth_png, 1000.0), (depth.astype(np.float64) / 1000.0).astype(np.float32))
    (tmp_path / "d.png").write_bytes(depth_png)
    assert np.array_equal(read_png_units(tmp_path / "d.png")[0].numpy(), depth.astype(np.float32))
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = encode(rng_image(16, 24, seed=5), "JPEG", quality=95, exif=exif.tobytes())
    old_photo = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(turned))).convert("RGB"))
    assert np.array_equal(read_rgb(turned, "member").permute(1, 2, 0).numpy(), old_photo / np.float32(255.0))


DECODERS = {"imread", "imdecode", "open"}  # cv2.imread / cv2.imdecode / PIL.Image.open
READER_MODULES = {"fiffdepth_core/fileio/images.py", "fiffdepth_core/fileio/headers.py"}


def decoder_calls(path: Path) -> list[int]:
    """Lines of ``path`` that call OpenCV's or Pillow's image decoders directly."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DECODERS:
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in ("cv2", "Image"):
                found.append(node.lineno)
    return found


def test_no_other_module_decodes_images():
    """The CLI, training, evaluation and the benchmarks read pictures through the one reader only."""
    offenders = {}
    for folder in ("fiffdepth_core", "train", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative not in READER_MODULES and (lines := decoder_calls(path)):
                offenders[relative] = lines
    assert not offenders, f"image decoding outside fiffdepth_core/fileio/images.py: {offenders}"
