"""docs/method.md stays true to the code: every reference resolves and no MAGVLT concept is dropped.

A reference is `path/to/file.py::Name`, a top-level `def` or `class` of that
file (relative to the repository root), or `path/to/file.py::Class.member`, a
method, nested class or attribute that the class defines. Read with `ast`, so
nothing is imported.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "method.md"

REFERENCE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.py)::([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?")
CODE_SPAN = re.compile(r"`([^`\n]+)`")

# Concepts the doc must keep naming (case-insensitive), so a rewrite cannot silently drop one.
CONCEPTS = (
    "joint token space",
    "BOC",
    "BOG",
    "BEGIN_",
    "MASK_",
    "position table",
    "bidirectional",
    "output head",
    "tied",
    "target length",
    "371.5M",
    "preset",
    "p_tau",
    "T2I",
    "I2T",
    "IT2IT",
    "mask_context",
    "cosine",
    "linear",
    "per-sample r",
    "L_mask",
    "label smoothing 0.1",
    "L_TL",
    "0.01",
    "UnrollMask",
    "L_UM",
    "MixSel",
    "L_MS",
    "BOG_LEFT",
    "BOG_RIGHT",
    "BOG_TOP",
    "BOG_BOTTOM",
    "resize",
    "crop",
    "separator",
    "L = L_mask + 0.01 L_TL + 1.0 L_UM + 0.5 L_MS",
    "AdamW",
    "warmup",
    "EMA",
    "checkpoint",
    "DDP",
    "FSDP2",
    "VQ-GAN",
    "taming",
    "patch",
    "BPE-dropout",
    "MaskGIT",
    "temperature",
    "Gumbel",
    "guidance",
    "condition dropout",
    "Muse",
    "CLIP",
    "cycle reranker",
    "caption refinement",
    "code-vector init",
    "9b68954",
    "mmgen extension",
    "kakaobrain/magvlt",
)
TASKS = ("t2i", "i2t", "inpaint", "outpaint", "t2t", "it2i", "it2t", "t2it", "unconditional")


@dataclass(frozen=True)
class Reference:
    path: str
    name: str
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}::{self.name}" + (f".{self.member}" if self.member else "")


def find_references(markdown: str) -> list[Reference]:
    """Every `file.py::Name[.member]` in the text, first occurrence order, without repeats."""
    found = (Reference(m.group(1), m.group(2), m.group(3)) for m in REFERENCE.finditer(markdown))
    return list(dict.fromkeys(found))


def malformed_spans(markdown: str) -> list[str]:
    """Code spans that use `::` but are not exactly one reference (a typo would otherwise go unchecked)."""
    return [span for span in CODE_SPAN.findall(markdown) if "::" in span and not REFERENCE.fullmatch(span)]


def top_level_definitions(tree: ast.Module) -> dict[str, ast.AST]:
    return {
        node.name: node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }


def _target_names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    else:
        return set()
    names = set()
    for target in targets:
        for item in target.elts if isinstance(target, ast.Tuple) else [target]:
            if isinstance(item, ast.Name):
                names.add(item.id)
    return names


def class_members(cls: ast.ClassDef) -> set[str]:
    """Methods, nested classes and class-body attributes, plus `self.x = ...` in its methods."""
    members: set[str] = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            members.add(node.name)
        members |= _target_names(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Assign):
                    targets = inner.targets
                elif isinstance(inner, (ast.AnnAssign, ast.AugAssign)):
                    targets = [inner.target]
                else:
                    continue
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                    ):
                        members.add(target.attr)
    return members


def problem(root: Path, ref: Reference) -> str | None:
    """Why `ref` does not resolve under `root`, or None when it does."""
    path = root / ref.path
    if not path.is_file():
        return f"{ref}: no file {ref.path}"
    definitions = top_level_definitions(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    node = definitions.get(ref.name)
    if node is None:
        return f"{ref}: {ref.path} defines no top-level def or class {ref.name!r}"
    if ref.member is None:
        return None
    if not isinstance(node, ast.ClassDef):
        return f"{ref}: {ref.name!r} is a function, not a class with a member {ref.member!r}"
    if ref.member not in class_members(node):
        return f"{ref}: class {ref.name!r} defines no method or attribute {ref.member!r}"
    return None


# ---- the doc --------------------------------------------------------------------

DOC_TEXT = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
DOC_REFERENCES = find_references(DOC_TEXT)


def test_the_doc_exists_and_cites_code():
    assert DOC.is_file(), f"{DOC} is missing"
    assert len(DOC_REFERENCES) >= 80, f"only {len(DOC_REFERENCES)} code references found in {DOC.name}"


# Ids with one colon: pytest node ids split on "::".
@pytest.mark.parametrize("ref", DOC_REFERENCES, ids=[str(r).replace("::", ":") for r in DOC_REFERENCES])
def test_reference_resolves(ref):
    assert problem(ROOT, ref) is None, problem(ROOT, ref)


def test_every_double_colon_span_is_a_reference():
    assert malformed_spans(DOC_TEXT) == []


@pytest.mark.parametrize("concept", CONCEPTS)
def test_the_doc_names_the_concept(concept):
    assert concept.casefold() in DOC_TEXT.casefold(), f"docs/method.md no longer mentions {concept!r}"


@pytest.mark.parametrize("task", TASKS)
def test_the_doc_names_the_generation_task(task):
    assert f"`{task}`" in DOC_TEXT, f"docs/method.md does not name the generation task `{task}`"


# ---- the checker itself, on a hand-made tree ----------------------------------------

SOURCE = '''
import os
from typing import ClassVar
from elsewhere import Imported

CONSTANT = 3


def helper(x):
    def nested():
        return x
    return nested


class Thing:
    name: ClassVar[str] = "thing"
    plain = 1

    class Config:
        weight: float = 1.0

    def __init__(self):
        self.made_here = 2

    @property
    def size(self):
        return 0

    def _private(self):
        return 1
'''

MARKDOWN = """
# A tiny doc
Good: `pkg/mod.py::helper`, `pkg/mod.py::Thing`, `pkg/mod.py::Thing.size` and
`pkg/mod.py::Thing._private`; attributes `pkg/mod.py::Thing.name`,
`pkg/mod.py::Thing.plain`, `pkg/mod.py::Thing.Config`, `pkg/mod.py::Thing.made_here`.
Repeated: `pkg/mod.py::helper`. Bare in prose: pkg/mod.py::Thing.size.
Bad: `pkg/mod.py::missing`, `pkg/gone.py::Thing`, `pkg/mod.py::Thing.absent`,
`pkg/mod.py::helper.nested`, `pkg/mod.py::nested`, `pkg/mod.py::CONSTANT`,
`pkg/mod.py::Imported`, `pkg/mod.py::os`.
A typo: `pkg/mod.py:Thing` is not a reference, `pkg/mod.py::Thing extra` is malformed.
"""


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(SOURCE)
    return tmp_path


def test_parser_finds_each_reference_once_in_order():
    found = [str(r) for r in find_references(MARKDOWN)]
    assert found == [
        "pkg/mod.py::helper",
        "pkg/mod.py::Thing",
        "pkg/mod.py::Thing.size",
        "pkg/mod.py::Thing._private",
        "pkg/mod.py::Thing.name",
        "pkg/mod.py::Thing.plain",
        "pkg/mod.py::Thing.Config",
        "pkg/mod.py::Thing.made_here",
        "pkg/mod.py::missing",
        "pkg/gone.py::Thing",
        "pkg/mod.py::Thing.absent",
        "pkg/mod.py::helper.nested",
        "pkg/mod.py::nested",
        "pkg/mod.py::CONSTANT",
        "pkg/mod.py::Imported",
        "pkg/mod.py::os",
    ]


def test_good_references_resolve(tree):
    good = find_references(MARKDOWN)[:8]  # the function, the class and six members above
    assert [problem(tree, r) for r in good] == [None] * 8


@pytest.mark.parametrize(
    "text, reason",
    [
        ("pkg/mod.py::missing", "defines no top-level def or class 'missing'"),
        ("pkg/gone.py::Thing", "no file pkg/gone.py"),
        ("pkg/mod.py::Thing.absent", "class 'Thing' defines no method or attribute 'absent'"),
        ("pkg/mod.py::helper.nested", "'helper' is a function, not a class"),
        ("pkg/mod.py::nested", "no top-level def or class 'nested'"),
        ("pkg/mod.py::CONSTANT", "no top-level def or class 'CONSTANT'"),
        ("pkg/mod.py::Imported", "no top-level def or class 'Imported'"),
        ("pkg/mod.py::os", "no top-level def or class 'os'"),
    ],
)
def test_bad_references_fail_with_a_reason(tree, text, reason):
    (ref,) = find_references(f"`{text}`")
    found = problem(tree, ref)
    assert found is not None and reason in found


def test_malformed_spans_are_reported():
    assert malformed_spans(MARKDOWN) == ["pkg/mod.py::Thing extra"]
    assert malformed_spans("`a.py::B` and `a.py::B.c`") == []
