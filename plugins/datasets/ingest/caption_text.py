"""Caption intake: decode, tidy, and drop what is empty.

Sources are read as UTF-8 with `surrogateescape`, so bytes that are not UTF-8
survive as lone surrogates; such a caption is re-read as cp1252 (or latin-1, which
never fails) and the fix is recorded rather than the caption lost.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

import attrs

WHITESPACE = re.compile(r"\s+")


@attrs.frozen(kw_only=True)
class CleanCaptions:
    captions: tuple[str, ...]
    fixes: tuple[str, ...] = ()


def read_text(data: bytes) -> str:
    """Bytes as text; invalid UTF-8 kept as surrogates for `repair_encoding`."""
    return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def repair_encoding(text: str) -> tuple[str, str | None]:
    """(text, fix) where fix names the re-decoding, if the text was not UTF-8."""
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        raw = text.encode("utf-8", errors="surrogateescape")
    for encoding in ("cp1252", "latin-1"):
        try:
            return raw.decode(encoding), f"caption not UTF-8: decoded as {encoding}"
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def tidy(text: str) -> str:
    """Control characters removed, whitespace collapsed, NFC normalised."""
    kept = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return WHITESPACE.sub(" ", unicodedata.normalize("NFC", kept)).strip()


def clean_captions(raw: Iterable[object]) -> CleanCaptions:
    """Decode and tidy every caption; empty or non-text ones are dropped with a fix noted."""
    captions: list[str] = []
    fixes: list[str] = []
    for value in raw:
        if not isinstance(value, str):
            fixes.append(f"caption dropped: not text ({type(value).__name__})")
            continue
        text, fix = repair_encoding(value)
        if fix:
            fixes.append(fix)
        text = tidy(text)
        if not text:
            fixes.append("caption dropped: empty")
            continue
        captions.append(text)
    return CleanCaptions(captions=tuple(captions), fixes=tuple(fixes))
