"""train/pseudo_labels.py offline, with a tiny randomly initialised Depth Anything model saved to a temp folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures_train import make_shards, random_rgb, write_rgb, write_tiny_depth_anything
from train.datasets.image_sources import index_images, label_path, load_label
from train.datasets.real_photos import RealPhotosDataset
from train.pseudo_labels import load_teacher, main, make_labels


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    return write_tiny_depth_anything(tmp_path_factory.mktemp("teacher") / "tiny-da")


def test_folder_labels_written_then_skipped(tmp_path, tiny_teacher):
    photos, labels = tmp_path / "photos", tmp_path / "labels"
    write_rgb(photos / "a.png", random_rgb(30, 50, 0))
    write_rgb(photos / "nested/b.jpg", random_rgb(41, 23, 1))
    write_rgb(photos / "c.jpg", random_rgb(30, 50, 2))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    stats = main(["--images", str(photos), "--out", str(labels), "--model", str(tiny_teacher), "--batch-size", "2",
                  "--device", "cpu"])
    assert stats == {"written": 3, "existing": 0, "corrupt": 1}
    for name, shape in (("a", (30, 50)), ("nested/b", (41, 23)), ("c", (30, 50))):
        label = np.load(labels / f"{name}.npy")
        assert label.dtype == np.float16 and label.shape == shape and np.isfinite(label).all()
    again = make_labels(photos, labels, str(tiny_teacher), batch_size=2, device="cpu")
    assert again == {"written": 0, "existing": 3, "corrupt": 1}


def test_labels_match_the_teacher(tmp_path, tiny_teacher):
    photos, labels = tmp_path / "photos", tmp_path / "labels"
    image = random_rgb(28, 42, 3)
    write_rgb(photos / "x.png", image)
    make_labels(photos, labels, str(tiny_teacher), batch_size=4, device="cpu", dtype="float32")
    processor, network = load_teacher(str(tiny_teacher), torch.device("cpu"), torch.float32)
    with torch.no_grad():
        predicted = network(**processor(images=image, return_tensors="pt")).predicted_depth  # [1,h,w]
    expected = torch.nn.functional.interpolate(predicted[None], size=(28, 42), mode="bilinear", align_corners=False)
    assert np.allclose(np.load(labels / "x.npy").astype(np.float32), expected[0, 0].numpy(), rtol=2e-3, atol=1e-3)


def test_shards_feed_the_real_photo_reader(tmp_path, tiny_teacher):
    ids = make_shards(tmp_path / "shards", [[(32, 48), (32, 48)], [(40, 24)]])
    labels = tmp_path / "labels"
    stats = make_labels(tmp_path / "shards", labels, str(tiny_teacher), batch_size=3, device="cpu")
    assert stats["written"] == 3
    refs = index_images(tmp_path / "shards")
    assert [ref.id for ref in refs] == ids
    assert load_label(label_path(labels, refs[2])).shape == (1, 40, 24)
    sample = RealPhotosDataset(tmp_path / "shards", labels, size=(16, 16))[(2, 1)]
    assert sample["skipped"] == 0 and sample["depth"].shape == (1, 16, 16)


def test_bad_arguments(tmp_path, tiny_teacher):
    with pytest.raises(ValueError, match="nothing_here"):
        make_labels(tmp_path / "nothing_here", tmp_path / "labels", str(tiny_teacher))
    write_rgb(tmp_path / "p/a.png", random_rgb(8, 8, 0))
    with pytest.raises(ValueError, match="batch-size"):
        make_labels(tmp_path / "p", tmp_path / "labels", str(tiny_teacher), batch_size=0)
