"""docs/plugins.md documents every hook, every kind's deps and protocol, and its examples work.

The checks read the hook specs, `DEPS` and the protocols themselves, so a hook,
dependency or protocol member added to the core fails here until the guide
describes it. The checker is also run on a hand-made guide, complete and then
with one thing missing, so it cannot pass by finding nothing to check.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmgen.api as api
from mmgen import hookspecs

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
KIND_PROTOCOLS = {
    "tokenizers": "Tokenizer",
    "models": "Model",
    "objectives": "Objective",
    "samplers": "Sampler",
    "tasks": "GenerationTask",
    "rerankers": "Reranker",
    "refiners": "Refiner",
    "datasets": "Dataset",
    "metrics": "Metric",
    "trackers": "Tracker",
    "stages": "Stage",
}


# ---- what the core defines ------------------------------------------------------------------


def hooks() -> list[str]:
    """Every hook spec as its heading: `register_samplers(register)`, ..., `register_commands(cli)`."""
    specs = [(name, f) for name, f in vars(hookspecs).items() if hasattr(f, f"{hookspecs.PROJECT}_spec")]
    return [f"{name}{inspect.signature(f)}" for name, f in specs]


def protocol_names() -> list[str]:
    return [name for name in api.__all__ if getattr(getattr(api, name), "_is_protocol", False)]


def members(protocol: type) -> list[str]:
    """A protocol's own members: annotated attributes, methods and properties (`__call__` included)."""
    names = list(vars(protocol).get("__annotations__", {}))
    names += [n for n, v in vars(protocol).items() if callable(v) or isinstance(v, property)]
    return [n for n in dict.fromkeys(names) if not n.startswith("_") or n == "__call__"]


# ---- reading the guide ----------------------------------------------------------------------


def sections(markdown: str) -> dict[str, str]:
    """Text under each `## ` heading (up to the next one), by heading; fenced code is not parsed for headings."""
    found: dict[str, list[str]] = {}
    current, fenced = None, False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            current = line[3:].strip()
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return {heading: "\n".join(lines) for heading, lines in found.items()}


def kind_section(markdown: str, kind: str) -> str | None:
    return next((text for heading, text in sections(markdown).items() if heading.startswith(f"register_{kind}(")), None)


def named(text: str, name: str) -> bool:
    """`name` in code style: `name` or `name(...)`."""
    return re.search(rf"`{re.escape(name)}[`(]", text) is not None


def deps_line(section: str) -> list[str] | None:
    """The deps a section's `**Deps**:` line lists (before any remark in brackets); None without one."""
    match = re.search(r"^\*\*Deps\*\*: (.*)$", section, re.M)
    if match is None:
        return None
    listed = match.group(1).split(" (")[0].rstrip(".:")
    return [] if listed.startswith("none") else re.findall(r"`(\w+)`", listed)


def mmgen_imports(code: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "mmgen":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "mmgen"]
    return found


# ---- the checks: each returns what is missing or wrong ----------------------------------------


def missing_hooks(markdown: str) -> list[str]:
    headings = set(sections(markdown))
    return [f"no heading `## {hook}`" for hook in hooks() if hook not in headings]


def wrong_deps(markdown: str) -> list[str]:
    problems = []
    for kind, deps in api.DEPS.items():
        section = kind_section(markdown, kind)
        if section is None:
            problems.append(f"{kind}: no section")
            continue
        listed = deps_line(section)
        if listed is None:
            problems.append(f"{kind}: no **Deps** line")
        elif sorted(listed) != sorted(deps):
            problems.append(f"{kind}: **Deps** lists {listed}, DEPS has {list(deps)}")
        problems += [f"{kind}: dep `{dep}` not named" for dep in deps if not named(section, dep)]
    return problems


def missing_protocols(markdown: str) -> list[str]:
    return [f"protocol `{name}` not mentioned" for name in protocol_names() if not named(markdown, name)]


def missing_members(markdown: str) -> list[str]:
    problems = []
    for kind, protocol in KIND_PROTOCOLS.items():
        section = kind_section(markdown, kind) or ""
        problems += [f"{kind}: `{protocol}.{m}` not named" for m in members(getattr(api, protocol)) if not named(section, m)]
    return problems


def bad_code(markdown: str) -> list[str]:
    problems = []
    for index, code in enumerate(PYTHON_BLOCK.findall(markdown)):
        try:
            compile(code, f"<python block {index}>", "exec")
        except SyntaxError as error:
            problems.append(f"python block {index} does not compile: {error}")
            continue
        problems += [f"python block {index} imports {m}, not mmgen.api" for m in mmgen_imports(code) if m != "mmgen.api"]
    return problems


def problems(markdown: str) -> list[str]:
    return missing_hooks(markdown) + wrong_deps(markdown) + missing_protocols(markdown) + missing_members(markdown) + bad_code(markdown)


# ---- the guide ------------------------------------------------------------------------------

GUIDE_TEXT = GUIDE.read_text(encoding="utf-8")


def test_every_hook_has_its_section():
    assert len(hooks()) == len(api.DEPS) + 1  # register_<kind> for every kind, and register_commands
    assert missing_hooks(GUIDE_TEXT) == []


def test_every_kind_section_lists_exactly_its_deps():
    assert wrong_deps(GUIDE_TEXT) == []


def test_every_protocol_and_its_members_are_documented():
    assert set(KIND_PROTOCOLS.values()) <= set(protocol_names())
    assert missing_protocols(GUIDE_TEXT) == []
    assert missing_members(GUIDE_TEXT) == []


def test_every_name_of_the_api_is_listed():
    assert [name for name in api.__all__ if not named(GUIDE_TEXT, name)] == []


def test_every_python_block_compiles_and_imports_only_the_api():
    assert len(PYTHON_BLOCK.findall(GUIDE_TEXT)) >= len(KIND_PROTOCOLS)
    assert bad_code(GUIDE_TEXT) == []


# ---- the checker itself ---------------------------------------------------------------------


def complete_guide() -> str:
    """The least guide that passes every check: built from the specs, as the real one must be."""
    parts = ["# Plugins", " ".join(f"`{name}`" for name in protocol_names())]
    for hook in hooks():
        parts.append(f"## {hook}")
        kind = hook.split("(")[0].removeprefix("register_")
        if kind in api.DEPS:
            parts.append("**Deps**: " + (", ".join(f"`{d}`" for d in api.DEPS[kind]) or "none") + ".")
            parts.append(" ".join(f"`{m}`" for m in members(getattr(api, KIND_PROTOCOLS[kind]))))
    parts.append("```python\nfrom mmgen.api import hookimpl\n```")
    return "\n\n".join(parts) + "\n"


def test_the_checker_passes_a_complete_guide():
    assert problems(complete_guide()) == []


@pytest.mark.parametrize(
    "old, new, problem",
    [
        ("## register_samplers(register)\n", "## Samplers\n", "no heading `## register_samplers(register)`"),
        ("## register_commands(cli)\n", "", "no heading `## register_commands(cli)`"),
        ("**Deps**: `inputs`, `device`.", "**Deps**: `inputs`.", "metrics: **Deps** lists ['inputs'], DEPS has ['inputs', 'device']"),
        ("**Deps**: `model`, `tokenizers`, `inputs`, `device`.", "**Deps**: none.", "rerankers: **Deps** lists [], DEPS has"),
        ("`GenerationTask`", "GenerationTask", "protocol `GenerationTask` not mentioned"),
        ("`refines`", "refines", "refiners: `Refiner.refines` not named"),
        ("`__call__`", "call", "models: `Model.__call__` not named"),
        ("from mmgen.api import hookimpl", "from mmgen.batch import Segment", "python block 0 imports mmgen.batch, not mmgen.api"),
        ("from mmgen.api import hookimpl", "def broken(:", "python block 0 does not compile"),
    ],
)
def test_the_checker_finds_what_is_missing(old, new, problem):
    guide = complete_guide()
    assert old in guide
    found = problems(guide.replace(old, new, 1))
    assert any(p.startswith(problem) for p in found), found


# ---- the examples work as plugins -----------------------------------------------------------


def complete_examples(markdown: str) -> list[str]:
    """Blocks that are whole plugin modules: they import hookimpl from mmgen.api, implement a hook, import nothing relative."""
    return [
        code
        for code in PYTHON_BLOCK.findall(markdown)
        if re.search(r"^from mmgen\.api import .*\bhookimpl\b", code, re.M)
        and "\n@hookimpl\n" in code
        and not re.search(r"^\s*from \.", code, re.M)
    ]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> tuple[Path, list[str]]:
    """Every complete example written out as a module `doc_example_<n>` (the folder, the module names)."""
    folder = tmp_path_factory.mktemp("doc_examples")
    modules = []
    for index, code in enumerate(complete_examples(GUIDE_TEXT)):
        modules.append(f"doc_example_{index}")
        (folder / f"{modules[-1]}.py").write_text(code, encoding="utf-8")
    return folder, modules


def examples_env(folder: Path, modules: list[str]) -> dict[str, str]:
    env = {**os.environ, "MMGEN_PLUGINS": ",".join(modules), "PYTHONPATH": str(folder), "MMGEN_STRICT_PLUGINS": "1"}
    return {**env, "OMP_NUM_THREADS": "1"}  # one torch thread, as tests/conftest.py sets for this process


def registered_by_examples(folder: Path, modules: list[str]) -> dict[str, list[str]]:
    """`mmgen plugins` with the examples loaded: the component names each example module registers."""
    listing = subprocess.run(
        [sys.executable, "-m", "mmgen.cli", "plugins"],
        env=examples_env(folder, modules),
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "failed:" not in listing, listing
    rows = [line.split() for line in listing.splitlines() if line.startswith("  ")]
    return {module: [row[0] for row in rows if f"[{module}]" in row] for module in modules}


def test_each_kind_has_a_complete_example_and_each_example_registers(examples):
    folder, modules = examples
    hooks_used = {hook for code in complete_examples(GUIDE_TEXT) for hook in re.findall(r"^def (register_\w+)\(", code, re.M)}
    assert hooks_used == {f"register_{kind}" for kind in api.DEPS} | {"register_commands"}
    registered = registered_by_examples(folder, modules)
    commands_only = [m for m, names in registered.items() if not names]
    assert all("def register_commands(" in (folder / f"{m}.py").read_text() for m in commands_only), registered


def test_the_contract_tests_pass_over_the_examples(examples):
    folder, modules = examples
    names = [name for found in registered_by_examples(folder, modules).values() for name in found]
    selected = " or ".join([*names, "test_component_shape", "test_from_config_takes_the_kinds_deps_by_keyword"])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/test_contracts.py", "-k", selected],
        env=examples_env(folder, modules),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert " failed" not in result.stdout and " skipped" not in result.stdout, result.stdout[-4000:]


def test_the_command_example_adds_a_working_command(examples):
    import click

    folder, modules = examples
    adding = [m for m in modules if "def register_commands(" in (folder / f"{m}.py").read_text()]
    assert adding
    for module_name in adding:
        spec = importlib.util.spec_from_file_location(module_name, folder / f"{module_name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        group = click.Group("mmgen")
        module.register_commands(cli=group)
        assert group.commands, module_name
        for name in group.commands:
            result = CliRunner().invoke(group, [name])
            assert result.exit_code == 0, result.output
