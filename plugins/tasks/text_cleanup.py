"""Post-processing of generated captions, as the MAGVLT authors do for I2T evaluation."""

from __future__ import annotations


def clean_caption(text: str) -> str:
    """Cut at the first period, then drop a word that repeats the one before it."""
    text = text.split(".", 1)[0]
    words: list[str] = []
    for word in text.split():
        if not words or word != words[-1]:
            words.append(word)
    return " ".join(words)
