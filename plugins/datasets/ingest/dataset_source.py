"""Ingest source: any registered dataset plugin (`shapes`, ...), one split at a time."""

from __future__ import annotations

from typing import Any, Iterator

from .candidate import Candidate
from .caption_text import clean_captions


def dataset_candidates(dataset: Any, split: str) -> Iterator[Candidate]:
    """The split's records as candidates; a repeated key is skipped as a duplicate."""
    seen: set[str] = set()
    for position, record in enumerate(dataset.records(split)):
        source = f"{dataset.name}:{split}[{position}]"
        if record.key in seen:
            problem = f"duplicate id: {record.key!r} came earlier in the split"
            yield Candidate(key=f"{record.key}@{position}", problems=[problem], source=source)
            continue
        seen.add(record.key)
        clean = clean_captions(record.captions)
        yield Candidate(
            key=record.key,
            modality=record.modality,
            data=record.data,
            more=record.more,
            captions=clean.captions,
            meta=record.meta,
            problems=() if clean.captions else ("no usable caption",),
            fixes=clean.fixes,
            source=source,
        )


def split_size(dataset: Any, split: str) -> int | None:
    """The split's record count, if the dataset says it cheaply."""
    count = getattr(dataset, "count", None)
    return count(split) if callable(count) else None
