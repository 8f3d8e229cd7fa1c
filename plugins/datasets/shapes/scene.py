"""Scenes: what an image shows, as typed objects and as plain JSON for record metadata."""

from __future__ import annotations

from typing import Any

import attrs

from .spec import CELLS, PALETTE, SHAPES, SIZES


@attrs.frozen(kw_only=True)
class ObjectSpec:
    """The four attributes a caption can state and the image oracle recovers."""

    shape: str = attrs.field(validator=attrs.validators.in_(SHAPES))
    colour: str = attrs.field(validator=attrs.validators.in_(tuple(PALETTE)))
    size: str = attrs.field(validator=attrs.validators.in_(tuple(SIZES)))
    cell: str = attrs.field(validator=attrs.validators.in_(CELLS))


@attrs.frozen(kw_only=True)
class SceneObject:
    """One drawn object: its attributes plus exact geometry.

    `center` is (x, y) in pixel units, where pixel (row i, column j) covers
    [j, j + 1] x [i, i + 1]. `bbox` is [x0, y0, x1, y1], the pixels the object
    touches (x1, y1 exclusive).
    """

    spec: ObjectSpec
    center: tuple[float, float] = attrs.field(converter=tuple)
    bbox: tuple[int, int, int, int] = attrs.field(converter=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": self.spec.shape,
            "colour": self.spec.colour,
            "size": self.spec.size,
            "cell": self.spec.cell,
            "bbox": list(self.bbox),
            "center": list(self.center),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SceneObject:
        spec = ObjectSpec(shape=data["shape"], colour=data["colour"], size=data["size"], cell=data["cell"])
        return cls(spec=spec, center=tuple(data["center"]), bbox=tuple(data["bbox"]))


@attrs.frozen(kw_only=True)
class Scene:
    """A canvas side and its objects (each in its own cell)."""

    size: int
    objects: tuple[SceneObject, ...] = attrs.field(converter=tuple)

    @property
    def specs(self) -> tuple[ObjectSpec, ...]:
        return tuple(o.spec for o in self.objects)

    def to_json(self) -> dict[str, Any]:
        """The record metadata: {"size": S, "objects": [{shape, colour, size, cell, bbox, center}]}."""
        return {"size": self.size, "objects": [o.to_json() for o in self.objects]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        return cls(size=int(data["size"]), objects=tuple(SceneObject.from_json(o) for o in data["objects"]))


def specs_from_json(data: dict[str, Any]) -> tuple[ObjectSpec, ...]:
    """The attributes of a scene JSON's objects (geometry ignored)."""
    return tuple(
        ObjectSpec(shape=o["shape"], colour=o["colour"], size=o["size"], cell=o["cell"]) for o in data["objects"]
    )
