"""Deterministic, resumable batching over several datasets (whole batches from one dataset, as Marigold mixes).

Step ``k`` of process ``rank`` always yields the same keys, whatever happened before: the dataset of a step is a
pure function of ``(seed, k)`` (the same on every rank, so all ranks run the same resolution in a step), and the
indices and augmentation seeds are pure functions of ``(seed, k, rank)``. Indices walk through a fresh
permutation of each dataset per epoch (no repeats within an epoch). A run resumed at ``start_step = k`` therefore
sees exactly the batches an uninterrupted run sees from step ``k`` on.

One sampler step is one micro-batch: with gradient accumulation, resume at the number of micro-batches done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_BLOCK = 4096  # steps whose dataset choice comes from one random draw block
_MAX_SEED = 2 ** 31 - 1


def _check_probabilities(sizes: Sequence[int], probabilities: Sequence[float]) -> np.ndarray:
    if len(sizes) == 0 or len(sizes) != len(probabilities):
        raise ValueError(f"`probabilities` must give one weight per dataset ({len(sizes)}), got {list(probabilities)}")
    if any(int(n) < 1 for n in sizes):
        raise ValueError(f"every dataset must hold at least one sample, got sizes {list(sizes)}")
    weights = np.asarray(probabilities, dtype=np.float64)
    if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"`probabilities` must be non-negative with a positive sum, got {list(probabilities)}")
    return weights / weights.sum()


class StepBatchSampler(Sampler):
    """A ``batch_sampler`` yielding, for steps ``start_step .. num_steps - 1``, lists of keys
    ``(dataset_id, index, aug_seed)`` for ``KeyedConcat``.

    ``dataset_sizes``: number of samples of each dataset; ``probabilities``: chance that a step draws its batch
    from each (normalised); ``batch_size``: samples per process per step; ``rank``/``world_size``: this process
    among the data-parallel ones (each gets a disjoint slice of the step's draws).
    """

    def __init__(self, dataset_sizes: Sequence[int], probabilities: Sequence[float], batch_size: int, seed: int,
                 num_steps: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        self.probabilities = _check_probabilities(dataset_sizes, probabilities)
        self.sizes = [int(n) for n in dataset_sizes]
        for name, value, low in (("batch_size", batch_size, 1), ("num_steps", num_steps, 0),
                                 ("world_size", world_size, 1), ("start_step", start_step, 0), ("rank", rank, 0)):
            if int(value) < low:
                raise ValueError(f"`{name}` must be >= {low}, got {value}")
        if not start_step <= num_steps:
            raise ValueError(f"`start_step` must be in [0, num_steps={num_steps}], got {start_step}")
        if not rank < world_size:
            raise ValueError(f"`rank` must be in [0, {world_size - 1}], got {rank}")
        self.batch_size, self.seed, self.num_steps = int(batch_size), int(seed), int(num_steps)
        self.start_step, self.rank, self.world_size = int(start_step), int(rank), int(world_size)
        self.choices = self._choose_datasets()  # [num_steps]
        counts = np.zeros((len(self.sizes), self.num_steps + 1), dtype=np.int64)
        for d in range(len(self.sizes)):
            counts[d, 1:] = np.cumsum(self.choices == d)
        self.steps_before = counts  # steps_before[d, k] = steps < k that drew from dataset d
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _choose_datasets(self) -> np.ndarray:
        cdf = np.cumsum(self.probabilities)
        blocks = [np.random.default_rng([self.seed, 0, b]).random(_BLOCK)
                  for b in range((self.num_steps + _BLOCK - 1) // _BLOCK)]
        draws = np.concatenate(blocks)[: self.num_steps] if blocks else np.zeros(0)
        return np.minimum(np.searchsorted(cdf, draws, side="right"), len(cdf) - 1)

    def _permutation(self, dataset: int, epoch: int) -> np.ndarray:
        """The order of ``dataset``'s samples in ``epoch`` (cached: consecutive steps reuse it)."""
        key = (dataset, epoch)
        if key not in self._perms:
            if len(self._perms) >= 2 * len(self.sizes):
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, 1, dataset, epoch]).permutation(self.sizes[dataset])
        return self._perms[key]

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        """The batch of step ``step`` for this rank: ``batch_size`` keys ``(dataset_id, index, aug_seed)``."""
        if not 0 <= step < self.num_steps:
            raise IndexError(f"`step` must be in [0, {self.num_steps - 1}], got {step}")
        dataset = int(self.choices[step])
        size = self.sizes[dataset]
        per_step = self.batch_size * self.world_size
        first = int(self.steps_before[dataset, step]) * per_step + self.rank * self.batch_size
        aug = np.random.default_rng([self.seed, 2, step, self.rank]).integers(0, _MAX_SEED, self.batch_size)
        keys = []
        for i in range(self.batch_size):
            draw = first + i  # the draw-th sample taken from this dataset over the whole run
            index = int(self._permutation(dataset, draw // size)[draw % size])
            keys.append((dataset, index, int(aug[i])))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start_step, self.num_steps):
            yield self.keys(step)

    def __len__(self) -> int:
        return self.num_steps - self.start_step


class KeyedConcat(Dataset):
    """Dispatches ``(dataset_id, index, aug_seed)`` to ``datasets[dataset_id][(index, aug_seed)]``."""

    def __init__(self, datasets: Sequence[Dataset]):
        if len(datasets) == 0:
            raise ValueError("`datasets` must hold at least one dataset, got none")
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key) -> dict:
        dataset_id, index, aug_seed = key
        if not 0 <= int(dataset_id) < len(self.datasets):
            raise IndexError(f"dataset_id must be in [0, {len(self.datasets) - 1}], got {dataset_id}")
        return self.datasets[int(dataset_id)][(int(index), int(aug_seed))]


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode and resize; many threads per worker only contend


def build_loader(datasets: Sequence[Dataset], probabilities: Sequence[float], batch_size: int, seed: int,
                 num_steps: int, start_step: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False, prefetch_factor: int | None = None) -> DataLoader:
    """A DataLoader over ``datasets`` yielding one collated batch per step ``start_step .. num_steps - 1``.

    Batches are dicts: ``rgb [B,3,H,W]``, ``depth [B,1,H,W]``, ``valid [B,1,H,W]``, ``name`` (list of str),
    ``skipped`` (``[B]`` int64). Works with ``num_workers > 0`` (samples are pure functions of their keys).
    """
    if int(num_workers) < 0:
        raise ValueError(f"`num_workers` must be >= 0, got {num_workers}")
    sampler = StepBatchSampler([len(d) for d in datasets], probabilities, batch_size, seed, num_steps,
                               start_step, rank, world_size)
    extra = {"prefetch_factor": prefetch_factor} if num_workers > 0 and prefetch_factor else {}
    return DataLoader(KeyedConcat(datasets), batch_sampler=sampler, num_workers=int(num_workers),
                      pin_memory=bool(pin_memory), worker_init_fn=_worker_init if num_workers > 0 else None,
                      persistent_workers=False, **extra)
