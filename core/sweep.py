"""Sweeps: a recipe's `sweep:` section, expanded into variants and checked whole before any work.

    sweep:
      variants:                         # named variants: recipe keys (`--set` paths) -> values
        mask_only: {stages.train.objectives: [{use: mask}]}
        all_four: {}                    # the recipe as written
      grid:                             # every combination of these values, with each variant
        stages.train.trainer.lr: [1e-3, 2e-3]
      seeds:                            # repeats of every variant, for the spread
        values: [0, 1, 2]
        keys: [stages.train.trainer.seed, stages.generate.seed]   # what one seed sets
      compare: {metrics: ["evaluate/one_sample/*/accuracy"]}      # `mmgen compare` when the sweep ends

Variants x grid points x seeds, in that order. A variant's name is its variant name, its grid values
(`lr=0.001`) and `seed=N`, joined by `/`; its group (what `mmgen compare` averages over seeds) is the
name without the seed. Which stages variants share is not declared: the stages' content hashes decide,
so variants that differ only in the train stage share the data and tokenizer folders, and a seed that
sets only training keys does not retrain the tokenizer.

Every variant is structured as a whole recipe here, so a mistyped key or value in any of them stops the
sweep before anything runs, blamed on its place in the `sweep:` section.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .config import ConfigError, describe_value, did_you_mean
from .recipe import RECIPE_KEYS, Recipe, RecipeError, apply_overrides_traced, read_yaml, structure_recipe

SWEEP_KEY = "sweep"
SWEEP_OPTIONS = ("variants", "grid", "seeds", "compare")
# One parent run, one experiment, one store of artefacts: a variant cannot move them.
FIXED_KEYS = ("name", "workdir", "tracker")


@attrs.frozen(kw_only=True)
class Variant:
    """One run of a sweep: `overrides` (dot path -> value) applied to the recipe give `recipe`."""

    name: str
    group: str
    seed: int | None
    overrides: Mapping[str, Any]
    recipe: Recipe
    # Every key the sweep varies -> this variant's value: its own, else the recipe's (as written, or its default).
    values: Mapping[str, Any]

    def tags(self) -> dict[str, str]:
        """The child run's MLflow tags: what `mmgen compare` groups and labels by."""
        tags = {
            "mmgen.sweep": "variant",
            "mmgen.variant": self.group,
            "mmgen.variant.name": self.name,
            "mmgen.seed": "" if self.seed is None else str(self.seed),
        }
        tags.update({f"mmgen.sweep.key.{key}": json.dumps(value) for key, value in self.values.items()})
        return tags


@attrs.frozen(kw_only=True)
class Sweep:
    """A recipe's variants, each a checked Recipe; `base` is the recipe without its sweep section."""

    base: Recipe
    variants: tuple[Variant, ...]
    keys: tuple[str, ...]  # every key some variant sets, in the order the sweep names them
    definition: Mapping[str, Any]  # the `sweep:` section as written

    @property
    def name(self) -> str:
        return self.base.name

    def digest(self) -> str:
        """Names the sweep's state folder: a changed recipe or sweep is another sweep (and parent run)."""
        payload = {"recipe": self.base.to_data(), "sweep": self.definition}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def has_sweep(data: Mapping[str, Any]) -> bool:
    return SWEEP_KEY in data


def load_sweep(path: Path | str, *, registry: Any, overrides: Sequence[str] = ()) -> Sweep:
    """The sweep recipe at `path`, `--set` overrides applied to every variant (a variant's own values win)."""
    path = Path(path)
    data = read_yaml(path)
    definition = data.pop(SWEEP_KEY)
    applied = apply_overrides_traced(data, overrides)
    return structure_sweep({**data, SWEEP_KEY: definition}, registry=registry, source=path, overrides=applied)


def structure_sweep(
    data: Mapping[str, Any], *, registry: Any, source: Path | None = None, overrides: Sequence[tuple[str, str]] = ()
) -> Sweep:
    """The recipe `data` (with a `sweep:` section) as a Sweep; a RecipeError naming the file and YAML path."""
    label = str(source) if source else "<recipe>"
    definition = data[SWEEP_KEY]
    recipe_data = {k: v for k, v in data.items() if k != SWEEP_KEY}
    base = structure_recipe(recipe_data, registry=registry, source=source, overrides=overrides)
    try:
        points = expand(definition)
    except ConfigError as exc:
        raise RecipeError(f"{label}: {exc}") from None
    keys = tuple(dict.fromkeys(key for *_, values in points for key in values))
    variants = []
    for name, group, seed, where, values in points:
        variant_data = copy.deepcopy(recipe_data)
        for key, value in values.items():
            set_path(variant_data, key, copy.deepcopy(value), where=where[key])
        try:
            recipe = structure_recipe(variant_data, registry=registry, source=source)
        except RecipeError as exc:
            raise RecipeError(f"{label}: {blame_variant(str(exc), values, where, label)} (variant {name})") from None
        # A variant that leaves a varied key alone still has a value there: the table shows it, not a blank.
        shown = {key: value_at(variant_data, recipe.to_data(), key) for key in keys}
        variants.append(Variant(name=name, group=group, seed=seed, overrides=values, recipe=recipe, values=shown))
    check_distinct(variants, registry=registry, label=label)
    return Sweep(base=base, variants=tuple(variants), keys=keys, definition=definition)


def value_at(written: Mapping[str, Any], resolved: Mapping[str, Any], key: str) -> Any:
    """The value at dot path `key` as the recipe writes it, else as loading resolved it (a default)."""
    for data in (written, resolved):
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    return None


def check_distinct(variants: Sequence[Variant], *, registry: Any, label: str) -> None:
    """Two variants with the same stage folders are one run: the second finds every stage done and repeats the
    first's results. A seed axis over the recipe's `seed` alone does that where every stage has a seed of its own."""
    from .runner import stage_folders

    seen: dict[tuple[Path, ...], Variant] = {}
    for variant in variants:
        folders = tuple(stage_folders(variant.recipe, registry=registry).values())
        first = seen.setdefault(folders, variant)
        if first is not variant:
            if first.group == variant.group:
                where = f"{SWEEP_KEY}.seeds.keys"
                hint = " (the recipe's `seed` reaches only seeds left unset): set stage seeds (stages.train.trainer.seed, ...)"
            else:
                where, hint = SWEEP_KEY, ": vary stage options (stages.<stage>.<option>)"
            raise RecipeError(
                f"{label}: {where}: variants {first.name} and {variant.name} run the same stages, so the second would"
                f" only repeat the first's results: what sets them apart is no stage's option{hint}"
            )


def expand(definition: Any) -> list[tuple[str, str, int | None, dict[str, str], dict[str, Any]]]:
    """(name, group, seed, YAML place of each key, key -> value) per variant, in run order."""
    if not isinstance(definition, Mapping) or not definition:
        raise ConfigError(
            SWEEP_KEY, f"expected a mapping with {', '.join(SWEEP_OPTIONS)}, got {describe_value(definition)}"
        )
    for option in definition:
        if option not in SWEEP_OPTIONS:
            raise ConfigError(
                f"{SWEEP_KEY}.{option}",
                f"unknown sweep option{did_you_mean(str(option), SWEEP_OPTIONS)} (options: {', '.join(SWEEP_OPTIONS)})",
            )
    if not any(option in definition for option in SWEEP_OPTIONS[:3]):
        raise ConfigError(SWEEP_KEY, "name what varies: variants, grid or seeds")
    compare_options(definition.get("compare"))
    named = _variants(definition.get("variants"))
    grid = _grid(definition.get("grid"))
    seeds, seed_keys = _seeds(definition.get("seeds"))
    points = []
    for (variant, variant_values), grid_point, seed in itertools.product(named, grid, seeds):
        values, where = {}, {}
        for key, value in variant_values.items():
            values[key], where[key] = value, f"{SWEEP_KEY}.variants.{variant}.{key}"
        for key, value in grid_point:
            _no_clash(key, where, f"{SWEEP_KEY}.grid.{key}")
            values[key], where[key] = value, f"{SWEEP_KEY}.grid.{key}"
        for key in seed_keys if seed is not None else ():
            _no_clash(key, where, f"{SWEEP_KEY}.seeds.keys")
            values[key], where[key] = seed, f"{SWEEP_KEY}.seeds.keys"
        group = "/".join(
            [part for part in [variant] if part] + [f"{short(k, grid)}={_shown(v)}" for k, v in grid_point]
        )
        group = group or "recipe"
        name = group if seed is None else f"{group}/seed={seed}"
        points.append((name, group, seed, where, values))
    return points


def compare_options(data: Any) -> dict[str, Any]:
    """`compare: {metrics: [globs], curve: metric}`: the table `mmgen compare` prints when the sweep ends."""
    where = f"{SWEEP_KEY}.compare"
    if data is None:
        return {}
    if not isinstance(data, Mapping) or set(data) - {"metrics", "curve"}:
        raise ConfigError(where, f"expected {{metrics: [metric globs], curve: metric}}, got {describe_value(data)}")
    metrics, curve = data.get("metrics", []), data.get("curve")
    if not isinstance(metrics, list) or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError(
            f"{where}.metrics", f"expected a list of metric names or globs, got {describe_value(metrics)}"
        )
    if curve is not None and not isinstance(curve, str):
        raise ConfigError(f"{where}.curve", f"expected a metric name, got {describe_value(curve)}")
    return {"metrics": list(metrics), "curve": curve}


def _variants(data: Any) -> list[tuple[str, dict[str, Any]]]:
    if data is None:
        return [("", {})]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"{SWEEP_KEY}.variants", f"expected a mapping of variant name -> {{key: value}}, got {describe_value(data)}"
        )
    variants = []
    for name, values in data.items():
        where = f"{SWEEP_KEY}.variants.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ConfigError(where, "a variant name is letters, digits and _ . + - (it names a run and a folder)")
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(
                where,
                "expected a mapping of recipe key -> value ({}: the recipe as written),"
                f" got {describe_value(values)}",
            )
        variants.append((name, {_checked_key(key, f"{where}.{key}"): value for key, value in values.items()}))
    return variants


def _grid(data: Any) -> list[tuple[tuple[str, Any], ...]]:
    if data is None:
        return [()]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"{SWEEP_KEY}.grid", f"expected a mapping of recipe key -> list of values, got {describe_value(data)}"
        )
    axes = []
    for key, values in data.items():
        where = f"{SWEEP_KEY}.grid.{key}"
        _checked_key(key, where)
        if not isinstance(values, list) or not values:
            raise ConfigError(where, f"expected a non-empty list of values, got {describe_value(values)}")
        axes.append([(key, value) for value in values])
    return list(itertools.product(*axes))


def _seeds(data: Any) -> tuple[list[int | None], list[str]]:
    where = f"{SWEEP_KEY}.seeds"
    if data is None:
        return [None], []
    if not isinstance(data, Mapping) or set(data) - {"values", "keys"}:
        raise ConfigError(
            where, f"expected {{values: [0, 1, 2], keys: [recipe keys one seed sets]}}, got {describe_value(data)}"
        )
    values, keys = data.get("values"), data.get("keys")
    if not isinstance(values, list) or not values or not all(type(v) is int for v in values):
        raise ConfigError(f"{where}.values", f"expected a non-empty list of integers, got {describe_value(values)}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}.values", f"seeds repeat: {values}")
    if not isinstance(keys, list) or not keys:
        raise ConfigError(
            f"{where}.keys",
            "name the recipe keys one seed sets: [stages.train.trainer.seed, stages.generate.seed] trains and samples "
            "anew on shared tokenizers; [seed] sets every seed a stage leaves unset",
        )
    return list(values), [_checked_key(key, f"{where}.keys") for key in keys]


def _checked_key(key: Any, where: str) -> str:
    """A `--set`-style dot path starting at a recipe key (`stages.` may not be left out here: a sweep is read
    before the stages are known to be stages)."""
    if not isinstance(key, str) or not key or not all(key.split(".")):
        raise ConfigError(
            where, f"expected a recipe key as a dot path (stages.train.trainer.lr), got {describe_value(key)}"
        )
    head = key.split(".")[0]
    if head not in RECIPE_KEYS or head == SWEEP_KEY:
        raise ConfigError(
            where,
            f"{key!r} does not start with a recipe key{did_you_mean(head, RECIPE_KEYS)}"
            f" (keys: {', '.join(RECIPE_KEYS)})",
        )
    if head in FIXED_KEYS:
        raise ConfigError(
            where, f"a sweep cannot vary {head!r}: every variant shares the sweep's {', '.join(FIXED_KEYS)}"
        )
    if head == "stages" and key.count(".") < 2:
        raise ConfigError(where, f"{key!r}: vary a stage's options (stages.<stage>.<option>), not a whole stage")
    return key


def _no_clash(key: str, where: Mapping[str, str], here: str) -> None:
    if key in where:
        raise ConfigError(here, f"{key!r} is also set by {where[key]}: one place per key")


def short(key: str, grid: Sequence[Any]) -> str:
    """The last part of a grid key (`stages.train.trainer.lr` -> `lr`) unless two grid keys end alike."""
    keys = {k for point in grid for k, _ in point}
    last = key.split(".")[-1]
    return last if sum(k.split(".")[-1] == last for k in keys) == 1 else key


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def set_path(data: dict[str, Any], key: str, value: Any, *, where: str) -> None:
    """Set `value` at the dot path `key`, creating mappings on the way (as `--set` does)."""
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{where}: {'.'.join(parts[: depth + 1])} is {describe_value(child)}, not a mapping")
        node = child
    node[parts[-1]] = value


def blame_variant(message: str, values: Mapping[str, Any], where: Mapping[str, str], label: str) -> str:
    """A recipe error inside a variant, blamed on the sweep entry that set the value, else on the recipe."""
    text = message[len(label) + 2 :] if message.startswith(f"{label}: ") else message
    path = text.split(":", 1)[0]
    owners = [key for key in values if path == key or path.startswith((key + ".", key + "["))]
    if not owners:  # a key the variant set may have made the error elsewhere (a new stage, a changed use)
        owners = [key for key in values if key.startswith(path + ".")]
    return f"{where[owners[-1]]}: {text}" if owners else text
