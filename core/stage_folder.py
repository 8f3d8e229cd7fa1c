"""A stage's output folder: `<workdir>/artefacts/<stage key>-<hash>/`, finished once `DONE.json` is in it.

The one module that knows this layout: the runner marks folders done, and
`mmgen generate --run DIR` finds the newest finished folder of a stage here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

DONE_FILE = "DONE.json"
ARTEFACTS = "artefacts"


def folder(workdir: Path | str, key: str, digest: str) -> Path:
    return Path(workdir) / ARTEFACTS / f"{key}-{digest}"


def is_done(directory: Path) -> bool:
    return (Path(directory) / DONE_FILE).is_file()


def mark_done(directory: Path, *, key: str, use: str, digest: str, seconds: float) -> None:
    """Written last and atomically: a folder is either finished or resumable, never half-marked."""
    done = {"stage": key, "use": use, "hash": digest, "seconds": round(seconds, 3)}
    atomic_write_text(Path(directory) / DONE_FILE, json.dumps(done, indent=2))


def read_done(directory: Path) -> dict[str, Any]:
    """The DONE record of a finished folder: its stage key, the stage plugin (`use`), hash and seconds."""
    path = Path(directory) / DONE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a finished stage folder ({DONE_FILE} is missing)")
    return json.loads(path.read_text(encoding="utf-8"))


def newest_finished(workdir: Path | str, key: str) -> Path:
    """The most recently finished `<workdir>/artefacts/<key>-<hash>` folder."""
    root = Path(workdir) / ARTEFACTS
    done = sorted(root.glob(f"{key}-*/{DONE_FILE}"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise FileNotFoundError(f"no finished {key!r} stage under {root}")
    return done[-1].parent
