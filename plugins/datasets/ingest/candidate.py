"""The unit every ingest source yields: one item to store, or to skip with its reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Candidate:
    """One source item before its checks.

    Exactly one of `data` (bytes in hand) or `path` (a file to read) is set,
    unless `problems` already says why the item is skipped. `key` is unique
    within a source, skipped items included, so a resumed ingest recognises
    every item it has already handled. `fixes` are changes made while reading
    the source (a caption re-decoded or dropped). `more` holds the example's
    items of further modalities, checked like the main one.
    """

    key: str
    modality: str = "image"
    data: bytes | None = None
    path: Path | None = None
    more: dict[str, bytes] = attrs.field(factory=dict)  # items of further modalities (Record.more)
    captions: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    meta: dict[str, Any] = attrs.field(factory=dict)
    problems: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    fixes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    source: str = ""
