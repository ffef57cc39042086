"""Safetensors files written one tensor at a time, straight from the tensors' memory.

``safetensors.torch.save_file`` turns every tensor into a ``bytes`` object before it writes, so saving a model
costs a second copy of it in memory (3.5 GB for SD2's UNet, 7 GB for its AdamW states). Here the header is written
from the names, shapes and dtypes alone, then each tensor is produced (converted, merged, moved to the CPU) only
when its turn comes and written from its own buffer: the extra memory is one tensor, whatever the file's size.
The files are ordinary safetensors files that every reader opens.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .writers import write_atomic

DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a file to be written: its name, shape and dtype up front, its values from ``produce()``."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * torch.empty((), dtype=self.dtype).element_size()


def tensor_entry(name: str, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> TensorEntry:
    """An entry that writes ``tensor`` as it is at write time (cast to ``dtype`` when given and floating)."""
    target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
    return TensorEntry(name, tuple(tensor.shape), target, lambda: tensor.detach().to(target))


def _raw_bytes(tensor: torch.Tensor):
    """A zero-copy byte view of a CPU tensor (copied only if it is not contiguous)."""
    flat = tensor.contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(torch.uint8).numpy().data  # memoryview over the tensor's own buffer


def write_tensors(path: str | Path, entries: Iterable[TensorEntry], metadata: dict[str, str] | None = None,
                  overwrite: bool = False) -> Path:
    """Write ``entries`` as a safetensors file at ``path`` (atomically: a temporary file moved into place)."""
    entries = list(entries)
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"`entries` must have unique names; repeated: {repeated}")
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for entry in entries:
        if entry.dtype not in DTYPE_CODES:
            raise TypeError(f"{entry.name}: dtype {entry.dtype} cannot be stored in a safetensors file")
        header[entry.name] = {"dtype": DTYPE_CODES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors' own writer does

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)))
            handle.write(encoded)
            for entry in entries:
                tensor = entry.produce().detach()
                if tuple(tensor.shape) != entry.shape or tensor.dtype != entry.dtype:
                    raise ValueError(f"{entry.name}: produced {tuple(tensor.shape)} {tensor.dtype}, announced "
                                     f"{entry.shape} {entry.dtype}")
                handle.write(_raw_bytes(tensor.cpu()))
                del tensor

    return write_atomic(Path(path), write, overwrite)


def write_state_dict(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                     overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
    """``safetensors.torch.save_file`` without the in-memory copy: each tensor is written from its own buffer
    (cast to ``dtype`` one at a time when given)."""
    return write_tensors(path, [tensor_entry(k, v, dtype) for k, v in tensors.items()], metadata, overwrite)


CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
MAX_HEADER = 100_000_000  # safetensors' own limit on the header's size


class TensorFileReader:
    """Reads single tensors of a safetensors file with ordinary reads into a fresh tensor: no memory map, so a
    file read one tensor at a time never holds more than that tensor in the process's resident memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= MAX_HEADER:
                raise ValueError(f"{self.path} is not a safetensors file (header size {size})")
            try:
                header = json.loads(handle.read(size))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{self.path} is not a safetensors file (header: {err})") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self.start = 8 + size
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        total = self.path.stat().st_size - self.start
        for name, info in header.items():
            try:
                dtype, shape = CODE_DTYPES[info["dtype"]], tuple(int(s) for s in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{self.path}: tensor {name!r} has a malformed header entry") from None
            count = 1
            for s in shape:
                count *= s
            if end - begin != count * torch.empty((), dtype=dtype).element_size() or begin < 0 or end > total:
                raise ValueError(f"{self.path}: tensor {name!r} has data offsets that do not fit its shape or the file")
            self.entries[name] = (dtype, shape, begin, end)

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> torch.Tensor:
        dtype, shape, begin, end = self.entries[name]
        tensor = torch.empty(shape, dtype=dtype)
        if end > begin:
            view = tensor.reshape(-1).view(torch.uint8).numpy()
            with open(self.path, "rb") as handle:
                handle.seek(self.start + begin)
                if handle.readinto(memoryview(view)) != end - begin:
                    raise ValueError(f"{self.path}: tensor {name!r} is cut short (truncated file)")
        return tensor

    def entry(self, name: str, rename: str | None = None) -> TensorEntry:
        """A :class:`TensorEntry` that reads ``name`` when it is written (stored dtype and shape)."""
        dtype, shape, _, _ = self.entries[name]
        return TensorEntry(rename or name, shape, dtype, lambda: self.get(name))
