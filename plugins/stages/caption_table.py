"""Generated captions as a table (columns of equal length) for a tracker's `log_table`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def writes_text(generations: Sequence[Any]) -> bool:
    return any(isinstance(v, str) for g in generations for v in g.outputs.values())


def caption_table(generations: Sequence[Any], *, references: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """One row per generation: its key, the texts it generated (` | `-joined) and the record's own text:
    `references[key]` when given, else the generation's reference values, ` | `-joined."""
    return {
        "key": [g.key for g in generations],
        "generated": [" | ".join(v for v in g.outputs.values() if isinstance(v, str)) for g in generations],
        "reference": [
            references[g.key] if references else " | ".join(str(v) for v in g.reference.values()) for g in generations
        ],
    }
