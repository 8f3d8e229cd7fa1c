"""A token cache read as episodes: `pairs` consecutive records make one training example.

A dataset whose records come in episodes (shapes_episodes: record `i` is pair
`i % pairs` of episode `i // pairs`) is cached record by record as any other
(same integrity checks, same resume); this view gives the trainer one episode
per item and collates a batch of them into a TokenBatch of pair 0's segments,
then pair 1's, and so on (each pair's modalities in the cache's order). It
knows no modality. Records saying which episode and pair they are (meta
`episode`, `pair`) are checked against that layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmgen.api import ArtefactError, TokenBatch


class EpisodeDataset:
    """Episode `e` = records e * pairs .. e * pairs + pairs - 1 of `dataset` (a TokenCacheDataset or a view of it)."""

    def __init__(self, dataset: Any, *, pairs: int) -> None:
        if pairs < 1:
            raise ValueError(f"pairs must be >= 1, got {pairs}")
        if len(dataset) % pairs:
            raise ArtefactError(f"{dataset.path}: {len(dataset)} records do not make episodes of {pairs} pairs")
        self.dataset = dataset
        self.pairs = pairs
        self.check_layout()

    def check_layout(self) -> None:
        """Every record that names its episode and pair sits where this view reads it."""
        for index in range(len(self.dataset)):
            key, meta = self.dataset.record_info(index)
            expected = (index // self.pairs, index % self.pairs)
            found = (meta.get("episode", expected[0]), meta.get("pair", expected[1]))
            if tuple(found) != expected:
                raise ArtefactError(
                    f"{self.dataset.path}: record {index} ({key}) is episode {found[0]} pair {found[1]}, expected"
                    f" episode {expected[0]} pair {expected[1]} for episodes of {self.pairs} pairs"
                )

    def __len__(self) -> int:
        return len(self.dataset) // self.pairs

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, episode: int) -> list[Any]:
        return self.__getitems__([episode])[0]

    def __getitems__(self, episodes: Sequence[int]) -> list[list[Any]]:
        if any(not 0 <= e < len(self) for e in episodes):
            raise IndexError(f"episode outside 0..{len(self) - 1}: {list(episodes)}")
        records = [e * self.pairs + j for e in episodes for j in range(self.pairs)]
        items = self.dataset.__getitems__(records)
        return [items[i * self.pairs : (i + 1) * self.pairs] for i in range(len(episodes))]

    def collate(self, episodes: Sequence[Sequence[Any]]) -> TokenBatch:
        """Pair 0's segments, then pair 1's, ...; a batch extra (MixSel halves) has no place in an episode."""
        segments = []
        for j in range(self.pairs):
            segments.extend(self.dataset.collate([episode[j] for episode in episodes]).segments)
        return TokenBatch(segments=segments)
