"""The files of a checkpoint: finding weights files, reading them safely, reading configs, one error type.

Shared by the checkpoint loader and the text encoder. Weights are read as plain tensors only: safetensors, or
PyTorch files through ``torch.load(weights_only=True)``; a file holding other Python objects is refused, since
loading those could run code.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import sys
from pathlib import Path

import torch

from ..fileio.errors import UserInputError

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".fp16.safetensors", ".bin", ".bin.index.json",
                   ".fp16.bin")
LAYOUTS = "a diffusers pipeline folder, a folder of single .safetensors files, or one .safetensors bundle"


class CheckpointError(UserInputError):
    """A checkpoint is missing, incomplete, malformed, or not a FiffDepth checkpoint."""

    what = "checkpoint"


def listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:30]) + (" ..." if len(names) > 30 else "") if names else "(empty folder)"


def find_weights(folder: Path, stem: str) -> Path | None:
    for suffix in WEIGHT_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object ({{...}}), got {type(data).__name__}")
    return data


# Config entries diffusers uses as sizes and counts: they must be whole numbers (a float breaks model building).
INT_KEYS = ("in_channels", "out_channels", "latent_channels", "sample_size", "cross_attention_dim",
            "layers_per_block", "norm_num_groups", "attention_head_dim", "num_attention_heads", "block_out_channels",
            "transformer_layers_per_block", "num_class_embeds", "projection_class_embeddings_input_dim")


def check_config_types(config: dict, where, part: str) -> None:
    """Refuse size/count entries that are not integers (or lists of integers) with one clear message."""
    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key in INT_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if not (whole(value) or (isinstance(value, (list, tuple)) and value and all(whole(v) for v in value))):
            raise CheckpointError(f"{where}: `{key}` in the {part} config must be a whole number (or a list of them), "
                                  f"got {value!r}")


def read_safetensors_header(path: Path, shape_of: str | None = None) -> tuple[list[str], dict, list | None]:
    """Keys, metadata and (if ``shape_of`` names a present tensor) that tensor's shape, from one header read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            shape = handle.get_slice(shape_of).get_shape() if shape_of in keys else None
            return keys, dict(handle.metadata() or {}), shape
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable .safetensors file: {err}") from err


def load_weights_file(path: Path, mapped: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of one weights file (a shard index reads its shards); ``mapped``: see :func:`read_safetensors`."""
    name = path.name
    if name.endswith(".index.json"):
        weight_map = read_json(path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map or \
                not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path}: `weight_map` must map tensor names to shard file names")
        merged: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if shard in ("", ".", "..") or "/" in shard or "\\" in shard or shard.endswith(".index.json"):
                raise CheckpointError(f"{path}: shard {shard!r} is not a file name in the index's own folder "
                                      "(shard indexes may not point elsewhere)")
            merged.update(load_weights_file(path.parent / shard, mapped))
        return merged
    if name.endswith(".safetensors"):
        return read_safetensors(path, mapped=mapped)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: exactly what must not be done
        raise CheckpointError(f"{path} is not a plain tensor file: it holds Python objects other than tensors, and "
                              "loading those could run code, so it is refused; convert it to .safetensors from a "
                              "source you trust") from None
    except Exception as err:
        raise CheckpointError(f"cannot read weights {path}: {err}") from None


# safetensors' dtype names (little-endian data); float8 where this torch has it
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}
SAFETENSORS_DTYPES.update({name: getattr(torch, attr) for name, attr in (("F8_E4M3", "float8_e4m3fn"),
                                                                         ("F8_E5M2", "float8_e5m2"))
                           if hasattr(torch, attr)})
MAX_HEADER = 100 * 2**20  # the limit safetensors itself sets
SAFETENSORS_ALLOWED = "a complete, undamaged .safetensors file"


def needs_alignment(ndim: int) -> bool:
    """Whether a weight of this rank must start on a 64-byte boundary for bit-identical results: matrices (the
    operands of matrix products) do; convolution kernels, biases and norms compute the same at any address."""
    return ndim == 2


def read_safetensors(path: Path, prefix: str = "", mapped: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file whose names start with ``prefix`` (removed from the keys).

    Each tensor is read straight from the file into its own new allocation: one copy from the page cache, and
    storage the allocator aligns (64 bytes). Tensors sliced out of one mapped file buffer (safetensors'
    ``load_file``) sit at whatever offset the file gives them, and CPU kernels round differently on misaligned data,
    so outputs varied by ~1e-6 from one load to the next until each tensor was copied again; reading into aligned
    storage keeps loads identical without that second copy of every weight. Every header entry is checked against
    the file before anything is allocated; a damaged file raises :class:`CheckpointError` naming it.

    ``mapped=True`` copies only the matrices (2-D tensors: the operands of matrix products, the kernels whose
    rounding depends on alignment) and maps every other tensor from the file in place, copy-on-write (the file is
    never written). Convolution kernels, biases and norms compute bit-identically wherever they sit (measured on
    SD2's UNet and VAE), so the models give the same results as a full copy, without copying two thirds of the bytes
    first: the pages come from the page cache as the first pass touches them, as ``from_pretrained`` does. The
    mapping stays open while a tensor uses it.
    """
    if sys.byteorder != "little":  # the data is little-endian: let safetensors convert
        from safetensors.torch import load_file

        try:
            return {k[len(prefix):]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
        except Exception as err:
            raise CheckpointError(f"cannot read weights {path}: {err}") from None
    try:
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            entries, base = _safetensors_entries(handle, size, path)
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if mapped and size else None
            tensors, reads = {}, []
            for name, (dtype, shape, begin, end) in sorted(entries.items(), key=lambda item: item[1][2]):
                if not name.startswith(prefix):
                    continue
                if (mapping is not None and end > begin and not needs_alignment(len(shape))
                        and (base + begin) % dtype.itemsize == 0):
                    tensor = torch.frombuffer(mapping, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                              offset=base + begin).view(shape)
                else:
                    tensor = torch.empty(shape, dtype=dtype)
                    if end > begin:
                        reads.append((base + begin, tensor.reshape(-1).view(torch.uint8).numpy()))
                tensors[name[len(prefix):]] = tensor
            _read_all(handle, reads, path)
            return tensors
    except OSError as err:
        raise CheckpointError(f"cannot read weights {path}: {err}") from None


def _safetensors_entries(handle, size: int, path: Path) -> tuple[dict, int]:
    """{name: (dtype, shape, begin, end)} and the offset of the data, each entry checked against the file."""
    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"cannot read weights {path}: {why}", SAFETENSORS_ALLOWED)

    head = handle.read(8)
    length = int.from_bytes(head, "little") if len(head) == 8 else -1
    if length < 2 or length > min(MAX_HEADER, size - 8):
        raise damaged(f"header length {length} in a file of {size} bytes")
    try:
        header = json.loads(handle.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise damaged(f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise damaged("header is not a JSON object")
    base, entries = 8 + length, {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
            begin, end = (int(n) for n in entry["data_offsets"])
            valid = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                        for n in [*entry["shape"], *entry["data_offsets"]])
        except (KeyError, TypeError, ValueError):
            raise damaged(f"entry {name!r} is not a tensor description: {str(entry)[:200]}") from None
        numel = 1
        for n in shape:
            numel *= n
        if not valid or begin > end or base + end > size or numel * dtype.itemsize != end - begin:
            raise damaged(f"tensor {name!r} ({entry['dtype']} {shape}) does not fit bytes {begin}..{end} of the "
                          f"{size - base} the file holds")
        entries[name] = (dtype, shape, begin, end)
    return entries, base


PARALLEL_READ = 64 * 2**20  # bytes: below this one thread reads it all


def _read_all(handle, reads: list, path: Path) -> None:
    """Fill each ``(offset, buffer)`` from the file. Large reads go to a few threads at once (positioned reads
    release the GIL; most of a read's time is the kernel faulting in and filling the fresh pages)."""
    threads = min(4, os.cpu_count() or 1)
    if threads < 2 or not hasattr(os, "preadv") or sum(len(buffer) for _, buffer in reads) < PARALLEL_READ:
        for offset, buffer in reads:
            _read_exactly(handle, offset, buffer, path)
        return
    from concurrent.futures import ThreadPoolExecutor

    descriptor = handle.fileno()
    with ThreadPoolExecutor(threads, thread_name_prefix="fiffdepth-read") as pool:
        list(pool.map(lambda read: _pread_exactly(descriptor, *read, path), reads))


def _read_exactly(handle, offset: int, buffer, path: Path) -> None:
    view, done = memoryview(buffer).cast("B"), 0
    handle.seek(offset)
    while done < len(view):
        got = handle.readinto(view[done:])
        if not got:
            raise CheckpointError(f"cannot read weights {path}: the file ends early", SAFETENSORS_ALLOWED)
        done += got


def _pread_exactly(descriptor: int, offset: int, buffer, path: Path) -> None:
    view, done = memoryview(buffer).cast("B"), 0
    while done < len(view):
        got = os.preadv(descriptor, [view[done:]], offset + done)
        if not got:
            raise CheckpointError(f"cannot read weights {path}: the file ends early", SAFETENSORS_ALLOWED)
        done += got
