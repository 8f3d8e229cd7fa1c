"""Trained tokenizers on disk: one folder per modality plus an index in joint-space order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mmgen.api import ArtefactError, atomic_write_text

INDEX_FILE = "tokenizers.json"


class SavedTokenizerError(ArtefactError):
    """A saved tokenizer folder is missing, incomplete or altered."""


def save_tokenizers(tokenizers: Mapping[str, Any], directory: Path | str) -> None:
    """Save each tokenizer under `<directory>/<modality>/`; the index keeps their order.

    The order is the JointTokenSpace order (MAGVLT: image codes first, then text).
    """
    directory = Path(directory)
    entries = []
    for modality, tokenizer in tokenizers.items():
        if not modality or modality in (".", "..") or "/" in modality or "\\" in modality:
            raise ValueError(f"modality {modality!r} cannot name a folder")
        if getattr(tokenizer, "modality", modality) != modality:
            raise ValueError(f"the tokenizer saved as {modality!r} encodes modality {tokenizer.modality!r}")
        tokenizer.save(directory / modality)
        entries.append({"modality": modality, "use": tokenizer.name, "content_hash": tokenizer.content_hash()})
    atomic_write_text(directory / INDEX_FILE, json.dumps({"tokenizers": entries}, indent=2))


def load_saved_tokenizers(directory: Path | str, registry: Any) -> dict[str, Any]:
    """The tokenizers `save_tokenizers` wrote, in order, each checked against its content hash."""
    directory = Path(directory)
    index = directory / INDEX_FILE
    if not index.is_file():
        raise SavedTokenizerError(f"{directory} holds no saved tokenizers ({INDEX_FILE} is missing)")
    loaded: dict[str, Any] = {}
    for entry in json.loads(index.read_text())["tokenizers"]:
        cls = registry.get("tokenizers", entry["use"])
        tokenizer = cls.load(directory / entry["modality"])
        if tokenizer.content_hash() != entry["content_hash"]:
            raise SavedTokenizerError(
                f"{directory / entry['modality']}: content hash {tokenizer.content_hash()} does not match "
                f"the saved {entry['content_hash']}; the files were changed after saving"
            )
        loaded[entry["modality"]] = tokenizer
    return loaded
