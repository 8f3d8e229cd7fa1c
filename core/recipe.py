"""Recipes: one YAML file describing a whole experiment as ordered stages.

    name: quickstart
    seed: 0
    tracker: {use: mlflow}
    stages:
      data: {dataset: {use: shapes}}        # stage `use` defaults to its key
      train: {use: train, trainer: {steps: 100}}

`--set train.trainer.steps=200` overrides any value (a leading stage key may omit
`stages.`). Every component is looked up in the registry and its options are
structured strictly before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import attrs
import yaml

from .config import ConfigError, Spec, component, declared_inputs, did_you_mean, structure_attrs, structure_spec, to_data
from .errors import UserError


class RecipeError(UserError, ValueError):
    """A recipe that cannot run, with the file and the YAML path of the problem."""


@attrs.frozen(kw_only=True)
class RecipeHeader:
    name: str
    description: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workdir: str = "runs"
    tracker: Spec = component("trackers", default={"use": "mlflow"})


@attrs.frozen(kw_only=True)
class StageEntry:
    key: str
    spec: Spec


@attrs.frozen(kw_only=True)
class Recipe:
    header: RecipeHeader
    stages: tuple[StageEntry, ...]
    source: Path | None = None

    @property
    def name(self) -> str:
        return self.header.name

    def to_data(self) -> dict[str, Any]:
        """The resolved recipe (every default filled in) as plain data."""
        data = to_data(self.header)
        data["stages"] = {entry.key: to_data(entry.spec) for entry in self.stages}
        return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"--set {text!r}: empty key in {key!r}")
    return parts, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        stages = data.get("stages")
        if parts[0] not in RECIPE_KEYS and isinstance(stages, Mapping) and parts[0] in stages:
            parts = ["stages", *parts]
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(f"--set {text!r}: {where} is {child!r}, not a mapping")
            node = child
        node[parts[-1]] = value
    return data


RECIPE_KEYS = tuple(f.name for f in attrs.fields(RecipeHeader)) + ("stages",)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RecipeError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with `name` and `stages`, got {type(data).__name__}")
    return data


def structure_recipe(data: Mapping[str, Any], *, registry: Any, source: Path | None = None) -> Recipe:
    label = str(source) if source else "<recipe>"
    try:
        stages_data = data.get("stages")
        if not isinstance(stages_data, Mapping) or not stages_data:
            raise ConfigError("stages", "expected a non-empty mapping of stage name -> options")
        header = structure_attrs(RecipeHeader, {k: v for k, v in data.items() if k != "stages"}, registry=registry)
        stages = []
        for key, options in stages_data.items():
            options = dict(options or {})
            options.setdefault("use", key)
            stages.append(StageEntry(key=key, spec=structure_spec("stages", options, path=f"stages.{key}", registry=registry)))
        check_inputs(stages)
    except ConfigError as exc:
        raise RecipeError(f"{label}: {exc}") from None
    return Recipe(header=header, stages=tuple(stages), source=source)


def check_inputs(stages: Sequence[StageEntry]) -> None:
    """Every stage a stage (or a component in it) declares it reads must come earlier in the recipe."""
    earlier: list[str] = []
    for entry in stages:
        for path, key in declared_inputs(entry.spec.config):
            if key not in earlier:
                raise ConfigError(
                    f"stages.{entry.key}.{path}",
                    f"reads stage {key!r}, but no earlier stage is called that{did_you_mean(key, earlier)}"
                    f" (earlier: {', '.join(earlier) or 'none'})",
                )
        earlier += [entry.key, entry.spec.use]


def load_recipe(path: Path | str, *, registry: Any, overrides: Sequence[str] = ()) -> Recipe:
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides)
    return structure_recipe(data, registry=registry, source=path)
