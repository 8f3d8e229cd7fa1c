"""Recipe stages: the steps of an experiment, each a registered plugin.

A stage writes its artefacts into `ctx.out_dir`, a folder keyed by a content hash
of its config and of every earlier stage's hash; the runner marks it done
atomically, so a re-run skips finished stages and never reads a stale one.

A stage reads only the earlier stages it declares: `upstream("tokenizers")`
fields of its Config (or of components inside it). The runner checks them
before any work and passes them as `ctx.inputs`. A stage whose output others
read offers `load(directory, *, registry, device)`: the one reader of the
layout it writes, so no other module needs to know that layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, runtime_checkable

import attrs


class StageInputs:
    """The finished folders of the earlier stages a stage declared, by stage key, and their loaded outputs.

    `load(key)` calls the producing stage's `load` once and keeps the result, so
    a model or tokenizer is loaded once however many components use it.
    """

    def __init__(
        self,
        folders: Mapping[str, Path],
        *,
        uses: Mapping[str, str],
        registry: Any = None,
        device: str = "cpu",
        reader: str = "this stage",
        loaded: Mapping[str, Any] | None = None,
    ) -> None:
        """`loaded`: outputs already in memory, by key (a notebook's, a test's): `load` returns them as they are."""
        self.folders = {key: Path(path) for key, path in folders.items()}
        self.uses = dict(uses)
        self.registry = registry
        self.device = device
        self.reader = reader
        self._loaded: dict[str, Any] = dict(loaded or {})

    def __contains__(self, key: object) -> bool:
        return key in self.folders or key in self._loaded

    def keys(self) -> list[str]:
        return list(dict.fromkeys([*self.folders, *self._loaded]))

    def path(self, key: str) -> Path:
        """The finished folder of the earlier stage `key`."""
        try:
            return self.folders[key]
        except KeyError:
            raise KeyError(
                f"{self.reader} reads stage {key!r} but does not declare it (declared: {sorted(self.folders) or 'none'}); "
                "name it in an `upstream(...)` config field"
            ) from None

    def load(self, key: str) -> Any:
        """What the stage that made `key` reads back from its folder (its `load` classmethod)."""
        if key not in self._loaded:
            folder = self.path(key)  # an undeclared key fails here
            stage = self.registry.get("stages", self.uses[key])
            if not callable(getattr(stage, "load", None)):
                raise TypeError(f"stage {self.uses[key]!r} offers no `load`: its output ({folder}) cannot be read")
            self._loaded[key] = stage.load(folder, registry=self.registry, device=self.device)
        return self._loaded[key]


@attrs.frozen(kw_only=True)
class StageContext:
    """What a running stage may use: its folder, its declared inputs, the registry, the tracker.

    `registry.build(spec, **deps)` builds a component named in the stage's Config. `seed` is the recipe's
    seed: a stage whose output follows it declares `seed: int | None = None` in its Config and reads that, as
    the recipe sets every unset `seed` before stages are keyed, so a new seed redoes the stage instead of
    reusing its folder.
    """

    out_dir: Path
    inputs: StageInputs
    registry: Any
    tracker: Any
    seed: int
    device: str = "cpu"


@runtime_checkable
class Stage(Protocol):
    """A recipe step. Optional: `load(directory, *, registry, device)` (classmethod) reads its output
    back for later stages; `summary(directory) -> list[str]` gives lines for `mmgen run`'s closing summary."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def run(self, ctx: StageContext) -> None: ...
