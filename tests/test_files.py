"""Image reading and depth writers: exact round trips, never overwriting, never leaving partial files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth_core.fileio.images import list_images, load_image
from fiffdepth_core.fileio.writers import read_exr, write_exr, write_npy, write_png8, write_png16
from fiffdepth_core.method.postprocess import colorize, controlnet_depth


@pytest.fixture
def depth():
    return torch.rand(37, 53, generator=torch.Generator().manual_seed(0))


def test_png16_round_trip_within_one_level(tmp_path, depth):
    path = write_png16(tmp_path / "d.png", depth)
    back = np.asarray(Image.open(path)).astype(np.float64) / 65535.0
    assert back.shape == (37, 53)
    assert np.abs(back - depth.numpy()).max() <= 1 / 65535  # rounded to the nearest of 65536 levels


def test_npy_is_exact(tmp_path, depth):
    path = write_npy(tmp_path / "d.npy", depth)
    loaded = np.load(path)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, depth.numpy())


def test_exr_is_exact_float32(tmp_path, depth):
    path = write_exr(tmp_path / "d.exr", depth * 123.25)
    assert np.array_equal(read_exr(path), (depth * 123.25).numpy())


def test_writers_never_overwrite_unless_asked(tmp_path, depth):
    target = tmp_path / "d.npy"
    target.write_bytes(b"precious")
    for writer in (write_npy, write_png16, write_exr):
        with pytest.raises(FileExistsError, match="overwrite"):
            writer(target, depth)
    assert target.read_bytes() == b"precious"
    write_npy(target, depth, overwrite=True)
    assert np.array_equal(np.load(target), depth.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy"]  # no temporary files left behind


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        write_npy(tmp_path / "bad.npy", torch.zeros(2, 3, 4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode, array, expected_channels", [
    ("L", np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, 1),
    ("RGBA", np.full((3, 4, 4), 200, dtype=np.uint8), 4),
    ("I;16", np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000, 1),
])
def test_load_image_keeps_channels_and_bit_depth(tmp_path, mode, array, expected_channels):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.fromarray(array).save(path)
    image = load_image(path)
    assert image.shape[0] == expected_channels and image.dtype == torch.float32
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    first = array if array.ndim == 2 else array[..., 0]
    assert torch.allclose(image[0], torch.from_numpy(first.astype(np.float32) / scale))


def test_load_16bit_colour_png_keeps_precision(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb = np.stack([np.full((2, 3), v, dtype=np.uint16) for v in (1000, 30000, 65535)], axis=-1)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    image = load_image(tmp_path / "c16.png")
    assert image.shape == (3, 2, 3)
    assert torch.allclose(image[:, 0, 0], torch.tensor([1000, 30000, 65535]) / 65535.0)


def test_load_image_applies_exif_orientation(tmp_path):
    array = np.zeros((2, 4, 3), dtype=np.uint8)
    array[0, 0] = 255
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "r.jpg").shape[1:] == (4, 2)


def test_unreadable_and_missing_images(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "broken.jpg")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_list_images_from_files_and_folders(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images([tmp_path])] == ["a.jpg", "b.png"]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images([tmp_path / "nope"])


def test_controlnet_depth_is_inverted_and_percentile_normalised():
    ramp = torch.linspace(0, 1, 101).repeat(2, 1)[None]  # [1,2,101]: 0 = near
    cn = controlnet_depth(ramp)
    assert cn[0, 0, 0] == 1.0 and cn[0, 0, -1] == 0.0  # near white, far black
    assert cn[0, 0, 50].item() == pytest.approx(0.5, abs=1e-6)
    assert cn[0, 0, 1].item() == 1.0  # clipped below the 2nd percentile


def test_controlnet_whole_batch_keeps_relative_brightness():
    near, far = torch.full((1, 4, 4), 0.2), torch.full((1, 4, 4), 0.8)
    frames = torch.cat([near, far])
    per_image = controlnet_depth(frames)
    whole = controlnet_depth(frames, normalization="whole_batch")
    assert torch.equal(per_image[0], per_image[1])  # each flat frame on its own is white
    assert whole[0].mean() > whole[1].mean()  # over the batch the near frame stays brighter
    with pytest.raises(ValueError, match="normalization"):
        controlnet_depth(frames, normalization="video")


def test_colorize_uses_spectral_endpoints(tmp_path):
    rgb = colorize(torch.tensor([[[0.0, 1.0]]]))
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([0x9E, 0x01, 0x42]) / 255.0)  # red = near
    assert torch.allclose(rgb[0, :, 0, 1], torch.tensor([0x5E, 0x4F, 0xA2]) / 255.0)  # violet = far
    path = write_png8(tmp_path / "c.png", rgb[0])
    assert np.asarray(Image.open(path)).shape == (1, 2, 3)
