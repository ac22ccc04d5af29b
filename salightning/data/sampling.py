"""The training sample order: :class:`EpochSampler` (resumable, DDP-sharded) and its keys.

The sampler yields ``(item, seed)`` keys; datasets turn a key into an item index and the
random generator of that item's crop and augmentation with :func:`unpack_key`, so an item
depends only on its key, whichever worker or process draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

__all__ = ["EpochSampler", "unpack_key"]


class EpochSampler(DistributedSampler):
    """Yields ``(item, seed)`` pairs: ``length`` items per epoch and a random seed for each.

    Items are visited in rounds of a random permutation, so an epoch longer than the number of
    items repeats them evenly ("enlarge"). The order and the seeds depend only on ``seed`` and
    the epoch, not on the number of workers, so a run is reproducible from ``seed``. Under DDP
    each of ``num_replicas`` processes takes every ``num_replicas``-th pair of the epoch (a
    ``DistributedSampler``, so Lightning leaves it in place).

    **Resumable**: with ``progress`` (a function returning how many samples this process has
    trained on in the whole run so far; the datamodules pass the
    trainer's batch count), each new iterator starts where training stands: epoch
    ``progress() // len(self)``, skipping the pairs already trained on. So the data order is a
    function of the batches trained, whenever the iterator is made (Lightning makes it before
    ``set_epoch``; workers prefetch at once) and however the run was stopped and resumed.
    Without ``progress`` the epoch is the one given to :meth:`set_epoch`, else it counts the
    iterations.

    Args:
        num_items: how many distinct items there are.
        length: samples per epoch (all processes together).
        seed: base seed.
        num_replicas: number of processes (default: the process group's size, else 1).
        rank: this process's rank (default: from the process group, else 0).
        progress: samples this process has consumed so far, or None.
    """

    def __init__(
        self,
        num_items: int,
        length: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        progress: Callable[[], int] | None = None,
    ) -> None:
        # DistributedSampler.__init__ is not called: it needs a dataset and a process group.
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items!r}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length!r}")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}")
        if length < self.num_replicas:
            raise ValueError(f"length={length} samples per epoch cannot be shared by {self.num_replicas} processes")
        self.num_items = num_items
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.progress = progress
        self.num_samples = length // self.num_replicas  # per process; the remainder is dropped
        self.total_size = self.num_samples * self.num_replicas
        self.shuffle, self.drop_last = True, True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def epoch_pairs(self, epoch: int) -> list[tuple[int, int]]:
        """All ``length`` pairs of an epoch, for all processes, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        rounds = math.ceil(self.length / self.num_items)
        order = np.concatenate([rng.permutation(self.num_items) for _ in range(rounds)])[: self.length]
        seeds = rng.integers(0, 2**62, size=self.length)
        return list(zip(order.tolist(), seeds.tolist()))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.progress is not None:
            epoch, offset = divmod(int(self.progress()), self.num_samples)
        else:
            epoch, offset = self.epoch, 0
            self.epoch += 1
        mine = self.epoch_pairs(epoch)[self.rank : self.total_size : self.num_replicas]
        return iter(mine[offset:])


def unpack_key(key: int | tuple[int, int], base_seed: int) -> tuple[int, np.random.Generator]:
    """An item index and its random generator from a dataset key.

    Args:
        key: an ``(index, seed)`` pair from :class:`EpochSampler`, or a plain index.
        base_seed: the dataset's seed, combined with a plain index (``default_rng([base_seed, index])``).

    Example:
        >>> index, rng = unpack_key((3, 42), base_seed=0)
        >>> index, bool(rng.integers(0, 100) == np.random.default_rng(42).integers(0, 100))
        (3, True)
    """
    if isinstance(key, (tuple, list)):
        index, seed = int(key[0]), int(key[1])
        return index, np.random.default_rng(seed)
    return int(key), np.random.default_rng([base_seed, int(key)])

