"""Data-parallel folder jobs: which inputs each process owns, one progress count for all, gathers to the main one.

Launch a job with ``torchrun`` or ``accelerate launch``; they set ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the
rendezvous address (``MASTER_ADDR``/``MASTER_PORT``). Without them a job runs in one process exactly as before and
nothing here touches ``torch.distributed``.

* :func:`from_env` reads the launcher's variables; :meth:`Processes.shard` is a deterministic split of an input
  list into contiguous blocks (consecutive same-size images stay together, so batching inside a shard works as in
  one process);
* :class:`ProcessGroup` joins the launcher's rendezvous (gloo on CPUs, NCCL on CUDA), counts finished work across
  processes through the rendezvous store (no collective per batch, so shards of different lengths never wait on
  each other) and gathers Python objects to every process at the end.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..fileio.errors import UserInputError

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
DEFAULT_TIMEOUT = timedelta(minutes=30)


class WorkerFailedError(RuntimeError):
    """Another process of the job failed; its own log names the cause."""


@dataclass(frozen=True)
class Processes:
    """This process's place in a data-parallel job (``world_size`` 1: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence, align: int = 1) -> list:
        """This process's contiguous block of ``items``: the items are cut into runs of ``align`` (the last may be
        shorter), the runs are dealt out in blocks whose sizes differ by at most one run (earlier ranks get the
        extra ones), and the blocks in rank order are ``items`` again. With ``align`` = the batch size, a list of
        same-size images is batched exactly as one process batches it."""
        runs = -(-len(items) // align)  # ceil
        size, extra = divmod(runs, self.world_size)
        start = self.rank * size + min(self.rank, extra)
        stop = start + size + (self.rank < extra)
        return list(items[start * align:stop * align])

    def device(self, requested: str = "auto") -> str:
        """The device this process should use: with several processes, ``auto`` and a bare ``cuda`` become
        ``cuda:LOCAL_RANK`` (one GPU per process); an explicit index is kept as given."""
        if self.distributed and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested


def _env_int(environ: Mapping[str, str], name: str, default: int, low: int) -> int:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise UserInputError(f"{name}={text}", f"a whole number >= {low}", what="environment variable")
    return value


def from_env(environ: Mapping[str, str] | None = None) -> Processes:
    """The job layout the launcher (torchrun, ``accelerate launch``) put in the environment."""
    environ = os.environ if environ is None else environ
    world = _env_int(environ, "WORLD_SIZE", 1, 1)
    rank = _env_int(environ, "RANK", 0, 0)
    if rank >= world:
        raise UserInputError(f"RANK={rank}", f"a whole number below WORLD_SIZE={world}", what="environment variable")
    local_rank = _env_int(environ, "LOCAL_RANK", rank, 0)
    local_world = _env_int(environ, "LOCAL_WORLD_SIZE", world, 1)
    return Processes(rank, world, local_rank, local_world)


class ProcessGroup:
    """The job's process group for one run: ``with ProcessGroup(processes, device) as group: ...``.

    A no-op for one process. With several, it joins the launcher's rendezvous; leaving the ``with`` block waits
    (without a time limit) until every process has left it, then leaves the group. If this process fails inside the
    block, the others stop at their next progress update or wait, with :class:`WorkerFailedError`.
    """

    def __init__(self, processes: Processes, device: torch.device | str = "cpu",
                 timeout: timedelta = DEFAULT_TIMEOUT):
        self.processes = processes
        self.device = torch.device(device)
        self.timeout = timeout
        self.store = None
        self._prefix = ""
        self._owned = False
        self._local: dict[str, int] = {}  # the counters of a one-process run
        self._counters = 0

    # -- joining and leaving --------------------------------------------------------------------------------------
    def __enter__(self) -> "ProcessGroup":
        if not self.processes.distributed:
            return self
        import torch.distributed as dist

        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if dist.is_initialized():  # a caller (a training script) already set one up
            from torch.distributed import distributed_c10d

            self.store = distributed_c10d._get_default_store()
        else:
            store, rank, world = next(dist.rendezvous("env://", timeout=self.timeout))
            store.set_timeout(self.timeout)
            dist.init_process_group(backend, store=dist.PrefixStore("fiffdepth_pg", store), rank=rank,
                                    world_size=world, timeout=self.timeout)
            self.store, self._owned = store, True
        token = [uuid.uuid4().hex if self.processes.is_main else None]
        dist.broadcast_object_list(token, src=0, device=self._collective_device())
        self._prefix = f"fiffdepth/{token[0]}/"  # keys of this run only (a launcher's store outlives restarts)
        log.info("process %d of %d (%s)", self.processes.rank, self.processes.world_size, backend)
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if self.store is None:
            return False
        try:
            if error is not None:
                self.store.set(self._prefix + "failed", str(self.processes.rank))
            elif self._owned:  # nobody leaves (and takes the rendezvous store away) before all are done
                self._wait_for("finished", self.processes.world_size, add=1)
        finally:
            if self._owned:
                import torch.distributed as dist

                dist.destroy_process_group()
        return False

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # -- counting work across processes ---------------------------------------------------------------------------
    def add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the job-wide counter ``key``; returns its new value (one process: a local count)."""
        if self.store is None:
            self._local[key] = self._local.get(key, 0) + amount
            return self._local[key]
        return int(self.store.add(self._prefix + key, amount))

    def _check_failed(self) -> None:
        if self.store is not None and self.store.check([self._prefix + "failed"]):
            rank = self.store.get(self._prefix + "failed").decode()
            raise WorkerFailedError(f"process {rank} of the job failed (its log says why); this process stops too")

    def _wait_for(self, key: str, target: int, add: int = 0, on_change=None) -> None:
        value = self.add(key, add)
        while value < target:
            self._check_failed()
            time.sleep(POLL_SECONDS)
            new = self.add(key, 0)
            if new != value and on_change is not None:
                on_change(new)
            value = new
        if on_change is not None:
            on_change(value)

    def progress(self, total: int, bar) -> "SharedProgress":
        """A progress counter over all processes' work: each process's ``update(n)`` counts towards ``total`` (the
        job-wide sum, see :meth:`sum`); the main process's ``bar`` (tqdm-like: ``n``, ``refresh``) shows it."""
        return SharedProgress(self, total, bar)

    # -- collectives (every process must call them, in the same order) ---------------------------------------------
    def gather(self, value) -> list:
        """``[value of rank 0, value of rank 1, ...]`` on every process (``[value]`` for one process)."""
        if self.store is None:
            return [value]
        import torch.distributed as dist

        out = [None] * self.processes.world_size
        dist.all_gather_object(out, value)
        return out

    def sum(self, value: int) -> int:
        return sum(self.gather(int(value)))

    def barrier(self) -> None:
        """Wait until every process gets here."""
        self.gather(None)


def gather_bounds(group: ProcessGroup, depths: list[torch.Tensor], low: float = 0.02,
                  high: float = 0.98) -> torch.Tensor | None:
    """:func:`~fiffdepth_core.method.postprocess.whole_run_bounds` over every process's depth maps (a collective): the
    same two values one process would get from all the maps. None when no process has a map."""
    import numpy as np

    from ..method.postprocess import whole_run_bounds

    flat = [d.reshape(-1).float().cpu() for d in depths]
    mine = torch.cat(flat).numpy() if flat else np.zeros(0, dtype=np.float32)
    values = [torch.from_numpy(v) for v in group.gather(mine) if v.size]
    return whole_run_bounds(values, low, high) if values else None


class SharedProgress:
    """Counts finished items of the whole job; only the main process draws the bar."""

    def __init__(self, group: ProcessGroup, total: int, bar):
        self.group, self.total, self.bar = group, total, bar
        group._counters += 1  # every process makes its counters in the same order: the same keys
        self.key, self._shown = f"progress{group._counters}", 0

    def update(self, n: int) -> None:
        done = self.group.add(self.key, n)
        if self.group.processes.is_main and self.bar is not None:
            self._show(done)
        self.group._check_failed()

    def _show(self, done: int) -> None:
        if hasattr(self.bar, "n") and hasattr(self.bar, "refresh"):
            self.bar.n = done
            self.bar.refresh()
        else:
            self.bar.update(done - self._shown)
            self._shown = done

    def close(self) -> None:
        """Wait until every process's work is counted (the main process draws the bar up to the end), then close
        the bar. Every process waits, so the collectives that follow never time out on a slower process."""
        if self.group.processes.distributed:
            show = self._show if self.group.processes.is_main and self.bar is not None else None
            self.group._wait_for(self.key, self.total, on_change=show)
        if self.bar is not None:
            self.bar.close()
