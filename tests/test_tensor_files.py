"""Streamed safetensors files: what safetensors reads back, written without a copy of the data in memory."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fiffdepth_core.fileio.tensor_files import TensorEntry, TensorFileReader, write_state_dict, write_tensors

ROOT = Path(__file__).resolve().parents[1]


def sample_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=gen),
        "bf16": torch.randn(4, 4, generator=gen).to(torch.bfloat16),
        "f16": torch.randn(7, generator=gen).half(),
        "i64": torch.arange(9).reshape(3, 3),
        "u8": torch.randint(0, 255, (2, 8), dtype=torch.uint8, generator=gen),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "transposed": torch.randn(5, 3, generator=gen).t(),  # not contiguous
    }


def test_safetensors_reads_back_every_tensor_and_the_metadata(tmp_path):
    tensors = sample_tensors()
    path = write_state_dict(tmp_path / "t.safetensors", tensors, metadata={"format": "pt", "note": "x"})
    loaded = load_file(str(path))
    assert sorted(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "note": "x"}
    size = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert size % 8 == 0  # the data starts aligned, as safetensors' own writer leaves it


def test_the_reader_gets_single_tensors_and_refuses_damaged_files(tmp_path):
    tensors = sample_tensors()
    path = write_state_dict(tmp_path / "t.safetensors", tensors)
    reader = TensorFileReader(path)
    assert sorted(reader.keys()) == sorted(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(reader.get(name), tensor)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="do not fit"):
        TensorFileReader(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(ValueError, match="not a safetensors file"):
        TensorFileReader(junk)


def test_entries_are_produced_when_written_and_checked_against_their_announcement(tmp_path):
    produced = []

    def make(value):
        def produce():
            produced.append(value)
            return torch.full((2,), float(value))
        return produce

    entries = [TensorEntry(f"t{i}", (2,), torch.float32, make(i)) for i in range(3)]
    write_tensors(tmp_path / "lazy.safetensors", entries)
    assert produced == [0, 1, 2]
    assert torch.equal(load_file(str(tmp_path / "lazy.safetensors"))["t2"], torch.full((2,), 2.0))
    wrong = [TensorEntry("t", (3,), torch.float32, lambda: torch.zeros(2))]
    with pytest.raises(ValueError, match="announced"):
        write_tensors(tmp_path / "wrong.safetensors", wrong)
    assert not (tmp_path / "wrong.safetensors").exists()  # nothing half-written is left under the name
    with pytest.raises(FileExistsError):
        write_tensors(tmp_path / "lazy.safetensors", entries)


def test_writing_makes_no_python_copy_of_the_data(tmp_path):
    """The tensors' own buffers go to the file: no bytes object of a tensor's size is made (as safetensors'
    save_file did before version 0.6)."""
    tensors = {f"w{i}": torch.ones(4_000_000) for i in range(4)}  # 64 MB
    tracemalloc.start()
    try:
        write_state_dict(tmp_path / "big.safetensors", tensors)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"{peak / 1e6:.1f} MB of Python objects while writing 64 MB"
    assert TensorFileReader(tmp_path / "big.safetensors").entries["w0"][2:] == (0, 16_000_000)


@pytest.mark.slow
def test_exports_and_training_state_add_one_tensor_not_a_model_to_resident_memory(tmp_path):
    """In a fresh process, with a 340 MB UNet and its AdamW states (680 MB): exporting it in fp16 (bundle and
    diffusers folder) and saving the training state keep the peak resident memory within a small margin of the
    memory before (converting or copying the whole model, or its optimizer states, would add hundreds of MB)."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import torch
        from train.random_models import TINY_VAE_CONFIG, random_unet, random_vae
        from train.train_state import save_tensors_state, trained_state
        from fiffdepth_core.fileio import write_state_dict
        from fiffdepth_core.weights import SD2_UNET_CONFIG, export_bundle, export_diffusers

        unet = random_unet({{**SD2_UNET_CONFIG, "block_out_channels": [160, 320, 320, 320],
                            "attention_head_dim": [5, 10, 10, 10]}}, seed=0)
        vae = random_vae(dict(TINY_VAE_CONFIG), seed=1)
        optimizer = torch.optim.AdamW(unet.parameters())
        for p in unet.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        size = sum(p.numel() * p.element_size() for p in unet.parameters())

        def resident(field):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1]) * 1024

        Path("/proc/self/clear_refs").write_text("5")
        before = resident("VmRSS:")
        out = Path(sys.argv[1])
        export_diffusers(out / "folder", unet, vae, torch.zeros(1, 2, 1024), dtype=torch.float16)
        export_bundle(out / "bundle.safetensors", unet, vae, torch.zeros(1, 2, 1024), dtype=torch.float16)
        write_state_dict(out / "model.safetensors", trained_state(unet))
        save_tensors_state(out / "optimizer.safetensors", optimizer.state_dict())
        print(json.dumps({{"size": size, "extra": resident("VmHWM:") - before}}))
    """)
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["size"] > 250e6
    assert figures["extra"] < 0.15 * figures["size"], figures
