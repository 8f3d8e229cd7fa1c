"""Valid recipes, broken one way at a time, always fail the same way: exit 2, one line naming where, no work.

Each mutation is invalid by construction (a mapping where a mapping cannot be,
an unknown key, a required key deleted, a stage's options nested one level too
deep...). The command runs in-process; the stages are replaced by a stand-in
that fails loudly, so a mutation that slipped through is caught quickly (exit 1,
an MLflow store left in the working directory) instead of training a model.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from recipe_helpers import TINY

import mmgen.runner
from mmgen.cli import main
from mmgen.config import declared_inputs
from mmgen.recipe import load_recipe
from mmgen.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
BOGUS = "bogus_option"


def _bases() -> dict[str, dict[str, Any]]:
    registry = load_registry()
    tiny = yaml.safe_load(TINY)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.yaml"
        path.write_text(TINY)
        resolved = load_recipe(path, registry=registry).to_data()  # every default written out: more to break
    return {
        "tiny": tiny,
        "tiny-resolved": resolved,
        "quickstart": yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text()),
    }


BASES = _bases()


def _read_stages(data: dict[str, Any]) -> set[str]:
    """The stages some later stage reads: deleting one of them breaks the recipe."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        recipe = load_recipe(path, registry=load_registry())
    return {key for entry in recipe.stages for _, key in declared_inputs(entry.spec.config)}


READ = {name: _read_stages(data) for name, data in BASES.items()}


def nodes(data: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from nodes(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from nodes(value, (*path, index))


def is_number_text(value: Any) -> bool:
    """`2e-3` is a string to PyYAML and a number to a float field."""
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def replacements(value: Any) -> list[tuple[str, Any]]:
    """Values that cannot stand where `value` stands, by what `value` is."""
    if isinstance(value, dict):
        # Not null: a stage's or an option group's `null` means its defaults, like {}.
        return [("mapping->list", ["bogus_item"]), ("mapping->number", 7), ("mapping->string", "bogus_value")]
    if isinstance(value, list):
        return [("list->mapping", {BOGUS: 1}), ("list->string", "bogus_value")]
    # A list of a mapping and a string fits no list field: items are all components, or all scalars.
    changes = [("scalar->mapping", {BOGUS: 1}), ("scalar->list", [{BOGUS: 1}, "bogus_item"])]
    if isinstance(value, (bool, int, float)) or is_number_text(value):
        changes.append(("scalar->other type", "bogus_value"))
    elif isinstance(value, str):
        changes.append(("scalar->other type", 12345))
    return changes


def required_keys(name: str, data: dict[str, Any]) -> list[tuple]:
    """Paths whose deletion must fail: header `name` and `stages`, a component's `use`, required options,
    and stages that later stages read."""
    found = [("name",), ("stages",)]
    found += [("stages", key) for key in data["stages"] if key in READ[name]]
    for path, value in nodes(data["stages"], ("stages",)):
        if isinstance(value, dict) and "use" in value and len(path) > 2:  # a stage's own `use` defaults to its key
            found.append((*path, "use"))
    if "tracker" in data:
        found.append(("tracker", "use"))
    found += [("stages", "data", "dataset"), ("stages", "train", "model"), ("stages", "tokenizers", "tokenizers")]
    return [path for path in found if _get(data, path) is not _MISSING]


_MISSING = object()


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _set(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(data, path[:-1])[path[-1]] = value
    return data


@st.composite
def broken_recipes(draw) -> tuple[str, Any, list[str], str]:
    """(base name, recipe data, --set arguments, what was done)."""
    name = draw(st.sampled_from(sorted(BASES)))
    data = copy.deepcopy(BASES[name])
    kind = draw(st.sampled_from(["replace", "insert", "delete", "nest"]))
    if kind == "delete":
        path = draw(st.sampled_from(required_keys(name, data)))
        del _get(data, path[:-1])[path[-1]]
        return name, data, [], f"delete {'.'.join(map(str, path))}"
    if kind == "nest":
        key = draw(st.sampled_from([k for k, v in data["stages"].items() if isinstance(v, dict)]))
        data["stages"][key] = {key: data["stages"][key]}
        return name, data, [], f"nest stages.{key}"
    if kind == "insert":
        path = draw(st.sampled_from([path for path, value in nodes(data) if isinstance(value, dict)]))
        path, change, new = (*path, BOGUS), "insert", {BOGUS: 1}
    else:
        path, value = draw(st.sampled_from(list(nodes(data))))
        change, new = draw(st.sampled_from(replacements(value)))
    where = ".".join(map(str, path))
    # The same change as a --set on the unchanged file, where a --set can reach (keys only, no list items).
    if path and all(isinstance(p, str) for p in path) and draw(st.booleans()):
        return name, data, [f"--set={where}={json.dumps(new)}"], f"--set {where}={json.dumps(new)}"
    return name, _set(data, path, new), [], f"{change} {where} = {new!r}"


@contextmanager
def fresh_folder() -> Iterator[Path]:
    """An empty working directory with MLflow's default store (which would be created here) and no plugins added."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ):
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.pop("MMGEN_PLUGINS", None)
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def never_run(*_: Any, **__: Any) -> None:
    raise AssertionError("a stage ran: the mutated recipe was accepted")


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_recipes())
def test_a_broken_recipe_fails_before_any_work(case):
    name, data, overrides, change = case
    event(f"{name}: {change.split(' ')[0]}")
    with fresh_folder() as folder, mock.patch.object(mmgen.runner, "_run_stages", never_run):
        path = folder / "recipe.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))  # with --set: the valid base, which the --set breaks
        result = CliRunner().invoke(main, ["run", str(path), *overrides])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2, f"{name}: {change}: exit {result.exit_code}\n{result.output}"
        assert len(lines) == 1 and len(result.stderr.splitlines()) == 1, f"{name}: {change}:\n{result.stderr}"
        # `error: <file or --set>: <yaml path>: <problem>` (the file alone when the whole file is not a mapping)
        source = f"error: {overrides[0].replace('=', ' ', 1)}: " if overrides else f"error: {path}: "
        assert lines[0].startswith(source), f"{name}: {change}: {lines[0]}"
        assert "Traceback" not in result.output
        assert sorted(p.name for p in folder.iterdir()) == ["recipe.yaml"], f"{name}: {change}: work was done"


def test_the_bases_are_valid():
    """Every mutation starts from a recipe that loads: otherwise the fuzz test proves nothing."""
    for name, data in BASES.items():
        with fresh_folder() as folder:
            (folder / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            result = CliRunner().invoke(main, ["run", str(folder / "recipe.yaml"), "--dry-run"])
            assert result.exit_code == 0, f"{name}: {result.output}"
