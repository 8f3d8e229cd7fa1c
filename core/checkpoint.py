"""Training checkpoints: atomic files with a content hash beside each, keep-last-K, discovery of the latest.

A checkpoint holds only tensors, plain containers and python scalars so that it
loads with `torch.load(weights_only=True)`: no pickled objects can run code on
load. Files are named `step-00001234.pt` by the number of finished steps; each
has a `step-00001234.pt.sha256` written before it, so a complete checkpoint
always has its hash and `load` refuses one whose bytes changed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .atomic import atomic_write_bytes, atomic_writer
from .errors import ArtefactError
from .integrity import SIDECAR_SUFFIX, check_sidecar, sidecar_path, write_sidecar

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{8,})\.pt$")
_TEMP_PREFIX = ".tmp-"
_SET_ASIDE_PREFIX = ".corrupt-"
REMEDY = "delete it to resume from the previous checkpoint, or restore it"


def write_atomic(path: Path, state: Mapping[str, Any]) -> None:
    """Write `state` to `path` so that a reader sees the old file or the whole new one, its hash first."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getbuffer()
    sidecar = sidecar_path(path)
    previous = sidecar.read_bytes() if sidecar.is_file() else None
    write_sidecar(path, hashlib.sha256(data).hexdigest())
    try:
        with atomic_writer(path, prefix=_TEMP_PREFIX, suffix=".pt") as handle:
            handle.write(data)
    except BaseException:  # the old file (if any) stays: so must its hash
        if previous is None:
            sidecar.unlink(missing_ok=True)
        else:
            atomic_write_bytes(sidecar, previous)
        raise


def load(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at `path`, after checking it against its `.sha256`; ArtefactError if it does not match."""
    check_sidecar(path, remedy=REMEDY)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # the hash matched, so the file was written this way: say so rather than crash
        raise ArtefactError(f"{path}: matches its hash but cannot be loaded ({type(exc).__name__}: {exc})") from None


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


class CheckpointDir:
    """The checkpoints of one run: `save` adds one and prunes to the newest `keep_last`."""

    def __init__(self, directory: Path, *, keep_last: int | None) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None (keep all), got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        """Finished-step counts of the complete checkpoints here, ascending."""
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, step: int) -> Path:
        return self.directory / checkpoint_name(step)

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save(self, step: int, state: Mapping[str, Any]) -> Path:
        path = self.path(step)
        write_atomic(path, state)
        self._prune()
        return path

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files left by a writer that was killed mid-write, and hashes of checkpoints
        that were never written."""
        if not self.directory.is_dir():
            return []
        stale = [p for p in self.directory.iterdir() if p.name.startswith(_TEMP_PREFIX)]
        stale += [
            p
            for p in self.directory.glob(f"step-*.pt{SIDECAR_SUFFIX}")
            if not p.with_name(p.name.removesuffix(SIDECAR_SUFFIX)).exists()
        ]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def set_aside_corrupt(self) -> list[Path]:
        """Check the checkpoints newest first until one matches its hash; each corrupt one on the way is
        renamed `.corrupt-step-....pt` (kept for inspection) with a warning, so `latest()` is a good one.

        A flipped byte costs the steps since the checkpoint before it, not the run.
        """
        aside = []
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                check_sidecar(path, remedy=REMEDY)
                break
            except ArtefactError as exc:
                target = path.with_name(_SET_ASIDE_PREFIX + path.name)
                path.replace(target)
                sidecar_path(path).unlink(missing_ok=True)
                aside.append(target)
                log.warning("%s; set aside as %s, resuming from the checkpoint before it", exc, target.name)
        return aside

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        for step in self.steps()[: -self.keep_last]:
            self.path(step).unlink(missing_ok=True)
            sidecar_path(self.path(step)).unlink(missing_ok=True)


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a training step draws from, as tensors and scalars.

    torch (CPU and CUDA: dropout), numpy, python `random`, and the trainer's own
    generator that objectives draw masks from.
    """
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64), "gauss": py_gauss},
        "generator": generator.get_state(),
    }


def restore_rng(state: Mapping[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss"]))
    generator.set_state(state["generator"])
