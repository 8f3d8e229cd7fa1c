"""The layering, as a checked contract: the core never imports a plugin; plugins use only mmgen.api.

import-linter reads the contracts from pyproject.toml. The editable install maps
folders to packages (core/ -> mmgen, plugins/ -> mmgen.plugins, ...), which
import-linter cannot walk, so the test lays the package out as a wheel would
(the same mapping as setup.py) in a temporary folder and lints that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "core": "mmgen",
    "plugins": "mmgen/plugins",
    "tokenizers": "mmgen/tokenizers",
    "objectives": "mmgen/objectives",
    "samplers": "mmgen/samplers",
}


def lay_out(target: Path, extra: dict[str, str] | None = None) -> Path:
    """The package tree of a wheel under `target`, plus `extra` files (relative path -> text)."""
    for folder, package in FOLDERS.items():
        for source in (ROOT / folder).rglob("*.py"):
            destination = target / package / source.relative_to(ROOT / folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
    for relative, text in (extra or {}).items():
        (target / relative).write_text(text)
    shutil.copyfile(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def lint(tree: Path) -> subprocess.CompletedProcess:
    linter = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(linter), "--no-cache", "pyproject.toml"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_contracts_hold(tmp_path):
    result = lint(lay_out(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    "relative, text, broken",
    [
        ("mmgen/plugins/tasks/sneaky.py", "from mmgen.batch import Segment\n", "Plugins import the core only through mmgen.api"),
        ("mmgen/sneaky.py", "from mmgen.plugins.tasks import builtin\n", "The core never imports a plugin"),
    ],
)
def test_a_violation_is_caught(tmp_path, relative, text, broken):
    tree = lay_out(tmp_path, {relative: text})
    if relative == "mmgen/sneaky.py":  # a new core module is under contract once listed (the next test insists)
        (tree / "pyproject.toml").write_text(_toml_with(tree / "pyproject.toml", "mmgen.version", "mmgen.sneaky"))
    result = lint(tree)
    assert result.returncode == 1 and f"{broken} BROKEN" in result.stdout, result.stdout


def _toml_with(path: Path, after: str, added: str) -> str:
    """pyproject.toml with `added` listed right after the first `after` entry (the core-module list)."""
    return path.read_text().replace(f'  "{after}",\n', f'  "{after}",\n  "{added}",\n', 1)


def test_every_core_module_is_under_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = next(c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "core-imports-no-plugin")
    modules = {f"mmgen.{p.stem}" for p in (ROOT / "core").glob("*.py") if p.stem != "__init__"}
    modules |= {f"mmgen.{p.name}" for p in (ROOT / "core").iterdir() if (p / "__init__.py").is_file()}
    assert set(listed["source_modules"]) == modules
    api = next(c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "plugins-use-the-api")
    assert set(api["forbidden_modules"]) == modules - {"mmgen.api"}
