"""Keep memory the process freed for its next allocations (glibc), so each pass does not fault its buffers in anew.

glibc hands large blocks back to the kernel as soon as they are freed (blocks over its mmap threshold, 128 kB to
32 MB, are unmapped; free space at the top of the heap over its trim threshold is released), and the next allocation
of the same size takes fresh pages that the kernel must fault in and zero. A model pass allocates and frees the same
activation sizes layer after layer, so on the CPU a full-size SD2 pass at 256² faulted 0.96 million pages in encode +
UNet + decode (~4 GB zeroed) where the same pass with this setting faults 0.14 million, and took 12.7 s instead of
11.1 s (one thread; ``python benchmarks/bench_process.py`` shows the phases). This is why PyTorch's CPU performance guides
recommend jemalloc or tcmalloc; for the command line this module does the in-process equivalent with glibc's own
``mallopt``: blocks up to 256 MB come from the heap, and up to 1 GB of freed heap stays with the process. The cost is
memory the process keeps after its peak and some fragmentation: at 512² the run took 51 s instead of 59 s and its peak
grew from 5.4 to 6.2 GB.

Nothing changes with ``FIFFDEPTH_MALLOC=system`` (glibc's own behaviour: the least memory), where the user tuned the
allocator already (``MALLOC_*`` variables, ``GLIBC_TUNABLES``, a preloaded allocator) or where the C library is not
glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 256 * 2**20  # the VAE's activations at 512² (128 channels x 512² x 4 bytes = 128 MB) included
FALLBACK_MMAP_THRESHOLD = 32 * 2**20  # the most some glibc versions accept
TRIM_THRESHOLD = 2**30
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (faster passes); True if it was done."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD)
    return bool(mmap_set) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def return_freed_memory() -> bool:
    """The opposite trade, for a process whose peak memory matters more than its speed (fine-tuning on the CPU):
    glibc's mmap threshold fixed at its default 128 kB, so every larger block is mapped on its own and handed back
    the moment it is freed. Left to itself glibc raises the threshold as the process frees large blocks, and then
    keeps what it freed: a real-size SD2 fine-tuning step on the CPU peaked at 11.13 GB with 8-bit AdamW and 10.60 GB
    with the threshold fixed (``python -m benchmarks.train_memory --optimizer adamw8bit``). True if it was done."""
    mallopt = _glibc_mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, 128 * 1024))


def _glibc_mallopt():
    """glibc's ``mallopt``, or None: not Linux, not glibc, ``FIFFDEPTH_MALLOC=system``, or the user's own settings."""
    if (not sys.platform.startswith("linux") or os.environ.get("FIFFDEPTH_MALLOC", "").lower() == "system"
            or any(os.environ.get(name) for name in USER_SETTINGS)):
        return None
    try:
        libc = ctypes.CDLL(None)
        if not libc.gnu_get_libc_version:  # glibc only: musl's mallopt does nothing
            return None
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt
