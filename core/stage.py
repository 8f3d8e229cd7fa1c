"""Recipe stages: the steps of an experiment, each a registered plugin.

A stage writes its artefacts into `ctx.out_dir`, a folder keyed by a content hash
of its config and of every earlier stage's hash; the runner marks it done
atomically, so a re-run skips finished stages and never reads a stale one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, runtime_checkable

import attrs


@attrs.frozen(kw_only=True)
class StageContext:
    """What a running stage may use.

    `artefacts` maps each earlier stage's name to its finished output folder.
    `registry` builds components (`registry.build(kind, spec, **deps)`).
    """

    out_dir: Path
    artefacts: Mapping[str, Path]
    registry: Any
    tracker: Any
    seed: int
    device: str = "cpu"

    def artefact(self, stage_name: str) -> Path:
        try:
            return self.artefacts[stage_name]
        except KeyError:
            raise KeyError(
                f"this stage needs the output of an earlier {stage_name!r} stage; the recipe has {sorted(self.artefacts)}"
            ) from None


@runtime_checkable
class Stage(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type]

    def run(self, ctx: StageContext) -> None: ...
