"""A stage's output folder: `<workdir>/artefacts/<stage key>-<hash>/`, finished once `DONE.json` is in it.

The one module that knows this layout: the runner marks folders done (DONE.json
records the sha256 of every file, checked by `verify` before anyone reads the
folder), one process at a time writes a folder (`writer_lock`), and
`mmgen generate --run DIR` finds the newest finished folder of a stage here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from .atomic import atomic_write_text
from .errors import ArtefactError, UserError
from .integrity import check_manifest, make_manifest, manifest_files

log = logging.getLogger(__name__)

DONE_FILE = "DONE.json"
ARTEFACTS = "artefacts"
REMEDY = "re-run its stage with `mmgen run RECIPE --force` (or delete the folder), or restore the file"


class StageBusy(UserError):
    """Another process is writing the stage folder."""


def folder(workdir: Path | str, key: str, digest: str) -> Path:
    return Path(workdir) / ARTEFACTS / f"{key}-{digest}"


def is_done(directory: Path) -> bool:
    return (Path(directory) / DONE_FILE).is_file()


def mark_done(directory: Path, *, key: str, use: str, digest: str, seconds: float) -> None:
    """Written last and atomically: a folder is either finished or resumable, never half-marked.

    It records the sha256 of every file the stage wrote, so a later reader finds any change.
    """
    files = make_manifest(Path(directory), skip=frozenset({DONE_FILE}))
    done = {"stage": key, "use": use, "hash": digest, "seconds": round(seconds, 3), "files": files}
    atomic_write_text(Path(directory) / DONE_FILE, json.dumps(done, indent=2))


def read_done(directory: Path) -> dict[str, Any]:
    """The DONE record of a finished folder: its stage key, the stage plugin (`use`), hash, seconds and files."""
    path = Path(directory) / DONE_FILE
    if not path.is_file():
        raise ArtefactError(f"{directory} is not a finished stage folder ({DONE_FILE} is missing)")
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{path}: unreadable ({exc}); {REMEDY}") from None
    if not isinstance(done, dict) or not {"stage", "use", "hash"} <= done.keys():
        raise ArtefactError(f"{path}: not a stage record (needs stage, use and hash); {REMEDY}")
    return done


_verified: dict[Path, tuple[Any, ...]] = {}


def verify(directory: Path) -> dict[str, Any]:
    """Check every file of a finished folder against the hashes in its DONE record; returns the record.

    A folder is hashed once per process while its files keep their size and mtime.
    """
    directory = Path(directory)
    done = read_done(directory)
    files = done.get("files")
    if not isinstance(files, dict):
        raise ArtefactError(
            f"{directory}: finished without content hashes (an mmgen before 0.3), so it cannot be verified; "
            f"if you trust it, record them with `mmgen verify --record {directory}`, else re-run its stage"
        )
    stamp = _stamp(directory, files)
    if _verified.get(directory.resolve()) != stamp:
        check_manifest(directory, files, remedy=REMEDY)
        _verified[directory.resolve()] = stamp
    return done


def record_hashes(directory: Path) -> dict[str, Any]:
    """Add content hashes to a finished folder that has none (made before they existed)."""
    directory = Path(directory)
    done = read_done(directory)
    if isinstance(done.get("files"), dict):
        raise UserError(f"{directory}: already has content hashes; `mmgen verify` checks them")
    done["files"] = make_manifest(directory, skip=frozenset({DONE_FILE}))
    atomic_write_text(directory / DONE_FILE, json.dumps(done, indent=2))
    return done


def _stamp(directory: Path, files: dict[str, str]) -> tuple[Any, ...]:
    stamps = []
    for relative in sorted(files):
        try:
            stat = (directory / relative).stat()
        except OSError:
            return ()
        stamps.append((relative, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def unrecorded_files(directory: Path, done: dict[str, Any]) -> list[str]:
    """Files in a finished folder that its DONE record does not list (added after it finished)."""
    recorded = set(done.get("files") or {})
    found = (p.relative_to(directory).as_posix() for p in manifest_files(Path(directory), skip=frozenset({DONE_FILE})))
    return [name for name in found if name not in recorded]


@contextlib.contextmanager
def writer_lock(directory: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the advisory lock that makes this process the one writer of a stage folder.

    The lock is `flock` on a hidden file beside the folder, holding the writer's
    PID. The kernel drops it when its holder dies, so a lock left by a killed
    process is taken over (and said so); a live holder gets StageBusy naming it,
    or, with `wait` (a sweep's variants sharing a stage), is waited for: the
    caller then finds the folder finished.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.with_name(f".{directory.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _take_lock(fd, directory, wait=wait)
        previous = _read_pid(fd)
        if previous:
            log.warning("%s: taking over the lock of PID %s, which stopped without releasing it", directory, previous)
        _write_pid(fd, str(os.getpid()))
        try:
            yield
        finally:
            _write_pid(fd, "")  # released cleanly: the next writer has nothing to take over
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _take_lock(fd: int, directory: Path, *, wait: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = _read_pid(fd) or "unknown"
    if not wait:
        raise StageBusy(
            f"{directory}: another process (PID {holder}) is running this stage; wait for it to finish, "
            f"or stop it (`kill {holder}`) and run again to resume"
        )
    log.info("%s: waiting for PID %s, which is running this stage", directory, holder)
    fcntl.flock(fd, fcntl.LOCK_EX)


def _read_pid(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64).decode("ascii", "replace").strip()


def _write_pid(fd: int, pid: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, pid.encode("ascii"))


def newest_finished(workdir: Path | str, key: str) -> Path:
    """The most recently finished `<workdir>/artefacts/<key>-<hash>` folder."""
    root = Path(workdir) / ARTEFACTS
    done = sorted(root.glob(f"{key}-*/{DONE_FILE}"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise ArtefactError(f"no finished {key!r} stage under {root}")
    return done[-1].parent


def newest_model(workdir: Path | str, *, registry: Any) -> Path:
    """The most recently finished folder of a stage that makes a model (its class sets `makes_model = True`:
    train, finetune, ...), so a run whose model was fine-tuned generates with the fine-tuned one."""
    root = Path(workdir) / ARTEFACTS
    done = sorted(root.glob(f"*/{DONE_FILE}"), key=lambda p: p.stat().st_mtime)
    kinds = set(registry.names("stages"))
    uses = [read_done(p.parent).get("use") for p in done]
    models = [
        p.parent
        for p, use in zip(done, uses)
        if use in kinds and getattr(registry.get("stages", use), "makes_model", False)
    ]
    if not models:
        raise ArtefactError(f"no finished stage under {root} makes a model (train, finetune, ...)")
    return models[-1]
