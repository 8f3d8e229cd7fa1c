"""mmgen.api: everything a plugin author needs, from one light module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mmgen.api as api

ROOT = Path(__file__).resolve().parents[1]


def test_every_exported_name_resolves():
    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert missing == []
    assert sorted(dir(api)) == sorted(api.__all__)
    with pytest.raises(AttributeError, match="mmgen.api has no 'Nope'"):
        api.Nope  # noqa: B018


def test_importing_the_api_and_hookimpl_loads_no_torch():
    code = "import sys, mmgen.api; from mmgen.api import hookimpl; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_api_holds_what_each_kind_of_plugin_uses():
    # The protocols of every kind, the configs' helpers, the data and the errors.
    for name in (
        "hookimpl", "Tokenizer", "Model", "Objective", "Sampler", "GenerationTask", "Reranker", "Refiner",
        "Dataset", "Metric", "Tracker", "Stage", "StageContext", "StageInputs", "Spec", "component",
        "components", "upstream", "positive", "probability", "Record", "Segment", "TokenBatch", "Generation",
        "TokenSpace", "JointTokenSpace", "GenerationRequest", "RequestSegment", "Prompt", "ConfigError",
        "PluginError", "TrackerUnavailable", "Trainer", "TrainerConfig", "StepResult",
    ):  # fmt: skip
        assert name in api.__all__, name


def mmgen_imports(path: Path) -> list[str]:
    """Every module a file imports from mmgen (`import mmgen.x`, `from mmgen.x import y`, `from mmgen import y`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mmgen":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "mmgen"]
    return found


def test_example_plugin_packages_import_only_the_api():
    packages = [
        ROOT / "tests" / "plugin_pkg",
        *sorted((ROOT / "examples" / "plugins").glob("*")),
        *sorted((ROOT / "packages").glob("*")),  # the packages of this repository (mmgen-audio)
    ]
    checked = 0
    for package in packages:
        for path in package.rglob("*.py"):
            modules = mmgen_imports(path)
            assert all(m == "mmgen.api" for m in modules), (path, modules)
            checked += len(modules)
    assert checked >= 2
