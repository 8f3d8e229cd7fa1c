"""Files a saved tokenizer is made of: JSON written atomically, tensors, and a content hash of both."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from mmgen.api import atomic_write_bytes, atomic_write_text


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; is {Path(path).parent} a saved tokenizer?") from None


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def tensors_digest(hasher: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Feed names, dtypes, shapes and bytes (not the pickle container, which may vary) to `hasher`."""
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        hasher.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def content_hash(config: Any, tensors: Mapping[str, torch.Tensor] | None = None, blobs: Mapping[str, bytes] | None = None) -> str:
    """sha256 over a JSON config, tensors and named byte strings; equal content gives an equal hash."""
    hasher = hashlib.sha256(canonical_json(config).encode("utf-8"))
    tensors_digest(hasher, tensors or {})
    for name in sorted(blobs or {}):
        hasher.update(f"{name}|{len(blobs[name])}|".encode())
        hasher.update(blobs[name])
    return hasher.hexdigest()
