"""Content hashes of artefacts on disk, and their checks when an artefact is read.

A finished stage folder records the sha256 of every file in it (its manifest,
in DONE.json); a training checkpoint carries a `.sha256` file beside it. A
reader checks before it loads, so a flipped byte is one clear error naming the
file, never a silent wrong weight or a traceback from deep inside torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Mapping

from .atomic import atomic_write_text
from .errors import ArtefactError

CHUNK = 1 << 20
SIDECAR_SUFFIX = ".sha256"
# Files a reader may rewrite without changing the artefact: LMDB's reader table.
RUNTIME_FILES = frozenset({"lock.mdb"})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_files(directory: Path, *, skip: frozenset[str] = frozenset()) -> Iterator[Path]:
    """The files whose content makes up a folder's artefact: hidden files (locks, temporaries) and LMDB's
    reader table are not part of it."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name in RUNTIME_FILES or name in skip:
                continue
            yield Path(root) / name


def make_manifest(directory: Path, *, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """{path relative to `directory`: sha256} of every artefact file in it."""
    directory = Path(directory)
    return {path.relative_to(directory).as_posix(): file_sha256(path) for path in manifest_files(directory, skip=skip)}


def check_manifest(directory: Path, manifest: Mapping[str, str], *, remedy: str) -> None:
    """Raise ArtefactError naming the first file that is missing or whose content changed."""
    directory = Path(directory)
    for relative, expected in sorted(manifest.items()):
        path = directory / relative
        if not path.is_file():
            raise ArtefactError(f"{path}: missing (it was part of the finished artefact); {remedy}")
        if file_sha256(path) != expected:
            raise ArtefactError(f"{path}: content does not match its recorded sha256 (corrupt or altered); {remedy}")


def write_sidecar(path: Path, digest: str) -> Path:
    """`<path>.sha256` holding `digest`, written atomically."""
    sidecar = sidecar_path(path)
    atomic_write_text(sidecar, f"{digest}  {Path(path).name}\n")
    return sidecar


def sidecar_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def check_sidecar(path: Path, *, remedy: str) -> None:
    """Raise ArtefactError unless `path` matches the digest in its `.sha256` file."""
    sidecar = sidecar_path(path)
    try:
        expected = sidecar.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        raise ArtefactError(f"{path}: no readable content hash beside it ({sidecar.name}); {remedy}") from None
    if file_sha256(path) != expected:
        raise ArtefactError(f"{path}: content does not match {sidecar.name} (corrupt or altered); {remedy}")
