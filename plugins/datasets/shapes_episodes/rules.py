"""Hidden rules of Shapes episodes: how a scene named in a caption is drawn (docs/in_context.md).

Each episode follows one rule, stored with its records for the oracle:

- `identity`: drawn as named;
- `colour`: every object named `source` (a colour) is drawn `target`;
- `shape`: every object named `source` (a shape) is drawn as a `target`;
- `shift`: every object moves by (dx, dy) cells (one of right, left, down, up), keeping its jitter.

Scenes of an episode are drawn so the rule shows and can be undone: under a
colour or shape rule every scene holds an object named `source` and none named
`target` (so a drawn `target` always means a named `source`); under a shift
every object can move (no object on the edge it moves towards).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from ..shapes.render import place, sample_scene
from ..shapes.scene import Scene
from ..shapes.spec import CELLS, COLOURS, GRID, SHAPES, all_pairs, cell_row_column

KINDS = ("identity", "colour", "shape", "shift")
SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (dx, dy) in cells: right, left, down, up
MAX_TRIES = 1000  # scene draws per pair before a shift rule gives up (each succeeds with chance >= 1/9)


@attrs.frozen(kw_only=True)
class Rule:
    """One episode's rule; `source` / `target` name a colour or a shape, `dx` / `dy` a shift in cells."""

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    source: str = ""
    target: str = ""
    dx: int = 0
    dy: int = 0

    def __attrs_post_init__(self) -> None:
        values = {"colour": COLOURS, "shape": SHAPES}.get(self.kind)
        if values is not None and (
            self.source not in values or self.target not in values or self.source == self.target
        ):
            raise ValueError(
                f"a {self.kind} rule maps one {self.kind} to another, got {self.source!r} -> {self.target!r}"
            )
        if self.kind == "shift" and (self.dx, self.dy) not in SHIFTS:
            raise ValueError(f"a shift rule moves by one of {SHIFTS}, got ({self.dx}, {self.dy})")

    def to_json(self) -> dict[str, Any]:
        if self.kind in ("colour", "shape"):
            return {"kind": self.kind, "from": self.source, "to": self.target}
        if self.kind == "shift":
            return {"kind": self.kind, "dx": self.dx, "dy": self.dy}
        return {"kind": self.kind}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        return cls(
            kind=data["kind"],
            source=data.get("from", ""),
            target=data.get("to", ""),
            dx=int(data.get("dx", 0)),
            dy=int(data.get("dy", 0)),
        )

    def __str__(self) -> str:
        if self.kind in ("colour", "shape"):
            return f"{self.kind} {self.source}->{self.target}"
        if self.kind == "shift":
            return f"shift {self.dx:+d},{self.dy:+d}"
        return "identity"


def draw_rule(rng: np.random.Generator, kinds: tuple[str, ...] = KINDS) -> Rule:
    """A rule of one of `kinds`, uniformly, with its values uniform too."""
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind in ("colour", "shape"):
        values = COLOURS if kind == "colour" else SHAPES
        source, target = rng.choice(len(values), size=2, replace=False)
        return Rule(kind=kind, source=values[int(source)], target=values[int(target)])
    if kind == "shift":
        dx, dy = SHIFTS[int(rng.integers(len(SHIFTS)))]
        return Rule(kind=kind, dx=dx, dy=dy)
    return Rule(kind=kind)


def shifted_cell(cell: str, dx: int, dy: int) -> str | None:
    """The cell (dx, dy) cells away; None off the grid."""
    row, column = cell_row_column(cell)
    row, column = row + dy, column + dx
    if not (0 <= row < GRID and 0 <= column < GRID):
        return None
    return CELLS[row * GRID + column]


def shows_rule(scene: Scene, rule: Rule) -> bool:
    """Whether `scene` can carry `rule` visibly and undoably (see the module docstring)."""
    specs = scene.specs
    if rule.kind in ("colour", "shape"):
        named = [getattr(s, rule.kind) for s in specs]
        return rule.source in named and rule.target not in named
    if rule.kind == "shift":
        return all(shifted_cell(s.cell, rule.dx, rule.dy) is not None for s in specs)
    return True


def sample_named_scene(rng: np.random.Generator, rule: Rule, *, size: int, max_objects: int) -> Scene:
    """A scene as a caption names it, drawn so that `rule` shows in it."""
    if rule.kind in ("colour", "shape"):
        slot = 0 if rule.kind == "colour" else 1
        allowed = [p for p in all_pairs() if p[slot] != rule.target]
        required = [p for p in allowed if p[slot] == rule.source]
        return sample_scene(rng, size=size, max_objects=max_objects, allowed_pairs=allowed, required_pairs=required)
    for _ in range(MAX_TRIES):
        scene = sample_scene(rng, size=size, max_objects=max_objects)
        if shows_rule(scene, rule):
            return scene
    raise RuntimeError(f"no scene for rule {rule} in {MAX_TRIES} draws")


def apply_rule(scene: Scene, rule: Rule) -> Scene:
    """The scene as drawn under `rule`: attributes remapped, or objects moved by whole cells."""
    if rule.kind == "identity":
        return scene
    step = scene.size / GRID
    objects = []
    for obj in scene.objects:
        spec, center = obj.spec, obj.center
        if rule.kind == "colour" and spec.colour == rule.source:
            spec = attrs.evolve(spec, colour=rule.target)
        elif rule.kind == "shape" and spec.shape == rule.source:
            spec = attrs.evolve(spec, shape=rule.target)
        elif rule.kind == "shift":
            cell = shifted_cell(spec.cell, rule.dx, rule.dy)
            if cell is None:
                raise ValueError(f"rule {rule} moves the object in the {spec.cell} off the canvas")
            spec = attrs.evolve(spec, cell=cell)
            center = (center[0] + rule.dx * step, center[1] + rule.dy * step)
        objects.append(place(spec, center, scene.size))
    return Scene(size=scene.size, objects=tuple(objects))
