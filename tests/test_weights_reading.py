"""Reading weights into aligned storage: the same tensors safetensors reads, each on a 64-byte boundary, so two loads
of one checkpoint compute bit-identical depth without a second copy of every weight."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from fiffdepth_testkit.images import seeded_images

from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import ALIGNMENT, instantiate, load_standalone
from fiffdepth_core.weights.layout import CheckpointError, read_safetensors


def depth_of(backbone, images):
    return predict_depth(backbone, images, PredictConfig(processing_resolution=0))


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {
        "f32": torch.randn(3, 5, generator=g), "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "f16": torch.randn(2, 3, 4, generator=g).half(), "i64": torch.arange(5), "u8": torch.arange(9, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
        "unet.conv_in.weight": torch.randn(4, 3, generator=g), "vae.x": torch.randn(6, generator=g),
    }
    return out


def test_reads_what_safetensors_reads_into_aligned_storage(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "w.safetensors"
    save_file(tensors(), str(path), metadata={"format": "pt"})
    expected, ours = load_file(str(path)), read_safetensors(path)
    assert ours.keys() == expected.keys()
    for name, tensor in expected.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert torch.equal(ours[name], tensor), name
        if tensor.numel():
            assert ours[name].data_ptr() % ALIGNMENT == 0, name
    assert read_safetensors(path, prefix="unet.").keys() == {"conv_in.weight"}


def test_loaded_models_sit_on_aligned_storage_and_two_loads_agree_bit_for_bit(tiny_checkpoint):
    images = seeded_images(1, 64, 96, seed=5)
    first, second = load_standalone(tiny_checkpoint), load_standalone(tiny_checkpoint)
    for backbone in (first, second):
        for module in (backbone.unet, backbone.vae):
            misaligned = [n for n, p in module.state_dict().items() if p.numel() and p.data_ptr() % ALIGNMENT]
            assert misaligned == []
    assert torch.equal(depth_of(first, images), depth_of(second, images))


def test_misaligned_or_cast_weights_are_copied_to_aligned_storage(tiny_backbone):
    from diffusers import AutoencoderKL

    state = tiny_backbone.vae.state_dict()
    # every tensor packed into one buffer 4 bytes past an aligned start: what slicing a file buffer gives
    total = sum(t.numel() for t in state.values())
    buffer = torch.empty(total + 1)
    shared, at = {}, 1
    for name, t in state.items():
        shared[name] = buffer[at:at + t.numel()].view(t.shape).copy_(t)
        at += t.numel()
    assert any(t.data_ptr() % ALIGNMENT for t in shared.values())
    vae = instantiate(AutoencoderKL, dict(tiny_backbone.vae.config), shared, "test")
    assert [n for n, p in vae.state_dict().items() if p.data_ptr() % ALIGNMENT] == []
    assert all(torch.equal(vae.state_dict()[n], t) for n, t in state.items())
    half = instantiate(AutoencoderKL, dict(tiny_backbone.vae.config), state, "test", dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}


def with_header(header: str, rest: bytes) -> bytes:
    return len(header.encode()).to_bytes(8, "little") + header.encode() + rest


# what each damage is refused for: every check of the reader is reached by one case
REASONS = {"truncated data": "does not fit bytes", "header length past the end": "header length",
           "header not JSON": "header is not JSON", "offsets past the end": "does not fit bytes",
           "shape that does not fit": r"\[3, 6\]\) does not fit", "unknown dtype": "is not a tensor description",
           "too short for a header": "header length -1"}


def damaged_files(data: bytes) -> dict[str, bytes]:
    length = int.from_bytes(data[:8], "little")
    header = data[8:8 + length].decode()
    return {
        "truncated data": data[:-10],
        "header length past the end": (len(data) + 5).to_bytes(8, "little") + data[8:],
        "header not JSON": data[:8] + b"{" * length + data[8 + length:],
        "offsets past the end": with_header(header.replace('"data_offsets":[0,', '"data_offsets":[9999999,', 1),
                                            data[8 + length:]),
        "shape that does not fit": data[:8] + header.replace('"shape":[3,5]', '"shape":[3,6]', 1).encode()
        + data[8 + length:],
        "unknown dtype": data[:8] + header.replace('"F32"', '"Q32"', 1).encode() + data[8 + length:],
        "too short for a header": data[:5],
    }


@pytest.mark.parametrize("case", list(damaged_files(b"\0" * 16)))
def test_damaged_files_are_refused_naming_the_file(tmp_path, case):
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({"f32": torch.randn(3, 5), "b": torch.ones(2)}, str(good))
    bad = tmp_path / "bad.safetensors"
    damaged = damaged_files(good.read_bytes())[case]
    assert damaged != good.read_bytes()
    bad.write_bytes(damaged)
    with pytest.raises(CheckpointError, match=str(bad)) as caught:
        read_safetensors(bad)
    assert re.search(REASONS[case], str(caught.value)), str(caught.value)


def save_with_data_at(path, state: dict, remainder: int) -> int:
    """Save ``state`` with the header padded so that the data starts ``remainder`` bytes past a 64-byte boundary."""
    from safetensors.torch import save_file

    for pad in range(0, 64, 8):
        save_file(state, str(path), metadata={"pad": "x" * pad})
        base = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        if base % 64 == remainder:
            return base
    raise AssertionError(f"no padding puts the data at {remainder} mod 64")


def mapped_from(tensor: torch.Tensor, path) -> bool:
    """Whether ``tensor``'s data lies in a mapping of ``path`` (from the kernel's list of this process's mappings)."""
    for line in open("/proc/self/maps"):
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].strip() == str(path):
            start, end = (int(n, 16) for n in fields[0].split("-"))
            if start <= tensor.data_ptr() < end:
                return True
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_mapped_read_copies_matrices_and_maps_the_rest_without_writing_the_file(tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "w.safetensors"
    save_with_data_at(path, tensors(), 24)
    before = path.read_bytes()
    expected, ours = load_file(str(path)), read_safetensors(path, mapped=True)
    assert ours.keys() == expected.keys()
    for name, tensor in expected.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert torch.equal(ours[name], tensor), name
        assert mapped_from(ours[name], path) == (tensor.ndim != 2 and tensor.numel() > 0), name
        if tensor.ndim == 2 and tensor.numel():
            assert ours[name].data_ptr() % ALIGNMENT == 0, name
    assert any(t.data_ptr() % ALIGNMENT for t in ours.values() if t.numel())  # mapped where the file puts them
    ours["f16"].add_(1)  # copy-on-write: the file stays as it was
    assert path.read_bytes() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_mapped_load_computes_what_a_copied_load_computes_bit_for_bit(tmp_path):
    """The file's data 24 bytes past a 64-byte boundary: were the matrices mapped there too, depth would differ
    (3.5e-6 on these models); the convolutions, biases and norms mapped there do not change a bit."""
    import shutil

    from safetensors.torch import load_file

    from fiffdepth_testkit.models import write_random_pipeline

    checkpoint = write_random_pipeline(tmp_path / "tiny", geometry="tiny", seed=0)
    for part in ("unet", "vae"):
        weights = next((checkpoint / part).glob("*.safetensors"))
        save_with_data_at(weights, load_file(str(weights)), 24)
    images = seeded_images(1, 64, 96, seed=5)
    copied, mapped = load_standalone(checkpoint), load_standalone(checkpoint, mapped=True)
    unet_file = next((checkpoint / "unet").glob("*.safetensors"))
    assert any(mapped_from(p, unet_file) for p in mapped.unet.parameters())
    assert not any(mapped_from(p, unet_file) for p in copied.unet.parameters())
    depth = depth_of(copied, images)
    assert torch.equal(depth_of(mapped, images), depth)
    assert torch.equal(depth_of(load_standalone(checkpoint, mapped=True), images), depth)
    del mapped
    shutil.rmtree(checkpoint)  # nothing holds the files open once the models are gone (on Linux, never a problem)
