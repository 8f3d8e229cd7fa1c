"""Generated captions as a table (columns of equal length) for a tracker's `log_table`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def writes_text(generations: Sequence[Any]) -> bool:
    return any(isinstance(v, str) for g in generations for v in g.outputs.values())


def caption_table(generations: Sequence[Any]) -> dict[str, list[str]]:
    """One row per generation: its key, the texts it generated, the record's own (its reference), ` | `-joined."""
    return {
        "key": [g.key for g in generations],
        "generated": [" | ".join(v for v in g.outputs.values() if isinstance(v, str)) for g in generations],
        "reference": [" | ".join(str(v) for v in g.reference.values()) for g in generations],
    }
