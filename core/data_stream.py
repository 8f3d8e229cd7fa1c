"""An endless, resumable, rank-sharded stream of training batches.

Epoch e visits the dataset in a permutation fixed by (seed, e); rank r of W
reads every W-th index of it, so ranks never share an example and the union of
their batches k is the batch k one process would read at W times the batch
size. The stream counts the batches it has handed out, so `state_dict()` after
n batches resumes at batch n + 1 exactly, whatever the workers had prefetched.

Datasets with randomness (augmentation, BPE-dropout) must draw it from
(epoch, index) — `set_epoch(epoch)` is called before each epoch's workers
start — never from a generator that advances across items: then 0 and N
workers, and a resumed stream, all see the same batches.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def epoch_permutation(length: int, *, seed: int, epoch: int) -> np.ndarray:
    """The visiting order of epoch `epoch`: a permutation of range(length)."""
    return np.random.default_rng([seed, epoch]).permutation(length)


def rank_share(order: np.ndarray, *, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
    """Rank `rank`'s indices: every `world_size`-th element of `order`, starting at `rank`.

    With drop_last the tail that does not divide evenly is dropped; without it
    the order wraps around so every rank gets the same count (as DistributedSampler).
    """
    length = len(order)
    if drop_last:
        order = order[: length - length % world_size]
    elif length % world_size:
        padding = world_size - length % world_size
        order = np.concatenate([order, np.resize(order, padding)])
    return order[rank::world_size]


class EpochBatchSampler(Sampler[list[int]]):
    """Index batches of one epoch for one rank, starting at batch `start_batch`."""

    def __init__(
        self,
        *,
        length: int,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        start_batch: int = 0,
    ) -> None:
        order = epoch_permutation(length, seed=seed, epoch=epoch)
        share = rank_share(order, rank=rank, world_size=world_size, drop_last=drop_last)
        stop = len(share) - len(share) % batch_size if drop_last else len(share)
        self._batches = [share[i : i + batch_size].tolist() for i in range(0, stop, batch_size)]
        self._start = start_batch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches[self._start :])

    def __len__(self) -> int:
        return max(0, len(self._batches) - self._start)

    @property
    def batches_per_epoch(self) -> int:
        return len(self._batches)


class BatchStream:
    """Endless iterator of collated batches from a map-style dataset."""

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        collate: Callable[[list[Any]], Any],
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        drop_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate = collate
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self._batches: Iterator[Any] | None = None
        if self._sampler(start_batch=0).batches_per_epoch == 0:
            raise ValueError(
                f"dataset of {len(dataset)} items gives no full batch of {batch_size} per rank"
                f" with {world_size} rank(s); lower batch_size or set drop_last=False"
            )

    def _sampler(self, *, start_batch: int) -> EpochBatchSampler:
        return EpochBatchSampler(
            length=len(self.dataset),
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            start_batch=start_batch,
        )

    @property
    def batches_per_epoch(self) -> int:
        return self._sampler(start_batch=0).batches_per_epoch

    def _start_epoch(self) -> Iterator[Any]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        # A private generator keeps DataLoader from drawing its worker base seed
        # from the global torch RNG, which would shift dropout after a resume.
        loader_seed = int(np.random.SeedSequence([self.seed, self.epoch, 1]).generate_state(1, np.uint64)[0] >> 1)
        loader = DataLoader(
            self.dataset,
            batch_sampler=self._sampler(start_batch=self.position),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(loader_seed),
        )
        return iter(loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        for _ in range(2):
            if self._batches is None:
                self._batches = self._start_epoch()
            try:
                batch = next(self._batches)
            except StopIteration:
                self._batches = None
                self.epoch += 1
                self.position = 0
                continue
            self.position += 1
            return batch
        raise RuntimeError("an epoch yielded no batch")  # unreachable: checked in __init__

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.close()
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])

    def close(self) -> None:
        """Stop the current epoch's workers, if any."""
        self._batches = None
