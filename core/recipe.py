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

from .config import (
    ConfigError,
    Spec,
    component,
    declared_inputs,
    describe_value,
    did_you_mean,
    registered_names,
    structure_attrs,
    structure_spec,
    to_data,
)
from . import stage_folder
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
    # Stage key -> a finished stage folder made elsewhere (shipped checkpoints, another workdir),
    # in the recipe's place of that stage: it does not run, later stages read it by that key.
    reuse: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ReusedStage:
    """A `reuse:` entry, checked when the recipe loads: a finished folder and the stage plugin that made it."""

    key: str
    folder: Path
    use: str
    digest: str


@attrs.frozen(kw_only=True)
class StageEntry:
    key: str
    spec: Spec


@attrs.frozen(kw_only=True)
class Recipe:
    header: RecipeHeader
    stages: tuple[StageEntry, ...]
    source: Path | None = None
    reused: tuple[ReusedStage, ...] = ()

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
        raise RecipeError(f"--set {text}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"--set {text}: empty key in {key!r}")
    try:
        return parts, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {text}: invalid YAML value: {getattr(exc, 'problem', exc)}") from None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    apply_overrides_traced(data, overrides)
    return data


def apply_overrides_traced(data: dict[str, Any], overrides: Sequence[str]) -> list[tuple[str, str]]:
    """Set each `--set` value in `data`; returns (YAML path, --set text) for each, to blame errors on.

    `--set X.use=other` switches component X to another plugin: X's old options
    belong to the old plugin, so they go (later `--set X.option=...` add new ones).
    """
    applied = []
    for text in overrides:
        parts, value = parse_override(text)
        stages = data.get("stages")
        if parts[0] not in RECIPE_KEYS and isinstance(stages, Mapping) and parts[0] in stages:
            parts = ["stages", *parts]
        owned = len(parts)  # the --set wrote everything from this depth down
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
                owned = min(owned, depth + 1)
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(f"--set {text}: {where} is {child!r}, not a mapping")
            node = child
        if parts[-1] == "use":
            implicit = parts[-2] if len(parts) == 3 and parts[0] == "stages" else None  # a stage's use defaults to its key
            current = node.get("use", implicit)
            if current is not None and current != value:
                node.clear()
                owned = min(owned, len(parts) - 1)
        node[parts[-1]] = value
        applied.append((".".join(parts[:owned]), text))
    return applied


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


def structure_recipe(
    data: Mapping[str, Any], *, registry: Any, source: Path | None = None, overrides: Sequence[tuple[str, str]] = ()
) -> Recipe:
    """The typed recipe, or a RecipeError naming the file (or the `--set` that caused it) and the YAML path."""
    try:
        stages_data = data.get("stages")
        if not isinstance(stages_data, Mapping) or not stages_data:
            got = "" if stages_data is None else f", got {describe_value(stages_data)}"
            raise ConfigError("stages", f"expected a non-empty mapping of stage name -> options (`data: {{...}}`){got}")
        check_header_keys(data, stages_data, registry)
        header = structure_attrs(RecipeHeader, {k: v for k, v in data.items() if k != "stages"}, registry=registry)
        reused = reused_stages(header.reuse, stages_data)
        stages = []
        for key, options in stages_data.items():
            spec = structure_stage(key, options, registry=registry)
            stages.append(StageEntry(key=key, spec=with_seed(spec, header.seed)))
        check_inputs(stages, earlier=[name for r in reused for name in (r.key, r.use)])
    except ConfigError as exc:
        raise RecipeError(f"{blame(exc.path, source, overrides)}: {exc}") from None
    return Recipe(header=header, stages=tuple(stages), source=source, reused=reused)


def reused_stages(reuse: Mapping[str, str], stages_data: Mapping[str, Any]) -> tuple[ReusedStage, ...]:
    """Each `reuse:` folder's record (read now, so a wrong path stops the recipe before anything runs)."""
    found = []
    for key, folder in reuse.items():
        if key in stages_data:
            raise ConfigError(
                f"reuse.{key}", f"stage {key!r} is also under `stages:`; a stage either runs or is reused"
            )
        try:
            done = stage_folder.read_done(Path(folder))
        except UserError as exc:
            raise ConfigError(f"reuse.{key}", str(exc)) from None
        found.append(ReusedStage(key=key, folder=Path(folder), use=done["use"], digest=done["hash"]))
    return tuple(found)


def with_seed(value: Any, seed: int) -> Any:
    """`value` with every `seed` option left unset (None), at any depth, set to the recipe's `seed`.

    Resolved here, before any stage is keyed, so the recipe's seed is part of each stage's config and so of its
    content hash: `--set seed=1` redoes what that seed reaches (tokenizers, training, sampling) and nothing
    that keeps a fixed seed of its own (the data set's).
    """
    if isinstance(value, Spec):
        return attrs.evolve(value, config=with_seed(value.config, seed))
    if not attrs.has(type(value)):
        return value
    changes = {}
    for field in attrs.fields(type(value)):
        if not field.init:
            continue
        current = getattr(value, field.name)
        if field.name == "seed" and current is None:
            changes[field.alias or field.name] = seed
        elif isinstance(current, Spec) or attrs.has(type(current)):
            resolved = with_seed(current, seed)
            if resolved is not current:
                changes[field.alias or field.name] = resolved
    return attrs.evolve(value, **changes) if changes else value


def structure_stage(key: Any, options: Any, *, registry: Any) -> Spec:
    """A stage's options (a mapping, or nothing for the defaults); its `use` defaults to its key."""
    path = f"stages.{key}"
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            path,
            f"expected a mapping of the stage's options (`{key}: {{}}` for the defaults, `{key}: {{use: <stage>, ...}}`"
            f" for another stage plugin), got {describe_value(options)}",
        )
    inner = options.get(key)
    if isinstance(inner, Mapping) and key not in _stage_options(key, options, registry):
        raise ConfigError(
            f"{path}.{key}",
            f"the stage's options are nested one level too deep: write `{key}: {{...}}`, not `{key}: {{{key}: {{...}}}}`",
        )
    return structure_spec("stages", {"use": key, **options}, path=path, registry=registry)


def check_header_keys(data: Mapping[str, Any], stages_data: Mapping[str, Any], registry: Any) -> None:
    """A key at the top that belongs to a stage (`trainer:`), or is a stage written outside `stages:`."""
    for key in data:
        if key in RECIPE_KEYS:
            continue
        if key == "sweep":
            raise ConfigError("sweep", "a sweep recipe: run it with `mmgen run` (docs/sweeps.md), one variant at a time elsewhere")
        owners = [str(name) for name, options in stages_data.items() if key in _stage_options(name, options, registry)]
        if owners:
            hint = f"; it is an option of stage {' and '.join(map(repr, owners))}: put it under `stages.{owners[0]}`"
        elif isinstance(key, str) and key in registered_names(registry, "stages"):
            hint = f"; {key!r} is a stage: put it under `stages:`"
        else:
            hint = did_you_mean(str(key), RECIPE_KEYS)
        raise ConfigError(str(key), f"unknown recipe option{hint} (options: {', '.join(RECIPE_KEYS)})")


def _stage_options(key: Any, options: Any, registry: Any) -> list[str]:
    use = options.get("use", key) if isinstance(options, Mapping) else key
    try:
        config = registry.get("stages", use).Config
    except (KeyError, TypeError, AttributeError):
        return []
    return [f.name for f in attrs.fields(config) if f.init]


def blame(path: str, source: Path | None, overrides: Sequence[tuple[str, str]]) -> str:
    """Who wrote the value at `path`: the `--set` that set it (or a value inside it), else the recipe file."""
    label = str(source) if source else "<recipe>"
    inside = [text for where, text in overrides if _within(path, where)]
    if inside:
        return f"--set {inside[-1]}"
    touched = [text for where, text in overrides if _within(where, path)]
    return f"{label} with --set {touched[-1]}" if touched else label


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith((ancestor + ".", ancestor + "["))


def check_inputs(stages: Sequence[StageEntry], *, earlier: Sequence[str] = ()) -> None:
    """Every stage a stage (or a component in it) declares it reads must come earlier in the recipe
    (or be reused: `earlier` holds their keys and plugin names)."""
    earlier = list(earlier)
    for entry in stages:
        for path, key in declared_inputs(entry.spec.config):
            if key not in earlier:
                raise ConfigError(
                    f"stages.{entry.key}.{path}",
                    f"reads stage {key!r}, but no earlier stage is called that{did_you_mean(key, earlier)}"
                    f" (earlier: {', '.join(dict.fromkeys(earlier)) or 'none'})",
                )
        earlier += [entry.key, entry.spec.use]


def load_recipe(path: Path | str, *, registry: Any, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe at `path` with `overrides` (`--set`) applied, checked whole before anything runs."""
    path = Path(path)
    data = read_yaml(path)
    applied = apply_overrides_traced(data, overrides)
    return structure_recipe(data, registry=registry, source=path, overrides=applied)
