"""Citations of the docs in source files point at headings that exist.

Source files cite a measurement or an explanation as
`docs/results/<file>.md, "<Heading text>"` (or `docs/<file>.md, "<Heading>"`).
The cited file must exist and hold a Markdown heading with exactly that text
(after dropping `*`, backticks and surrounding whitespace). A citation may
wrap onto the next line of a docstring or a `#` comment. The legacy form
`README, "<Heading>"` fails: the README is a user guide now, and the
measurement history lives in docs/results/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PY_DIRS = ("core", "plugins", "objectives", "samplers", "tokenizers", "benchmarks")
YAML_DIRS = ("recipes",)

# A line break inside a citation, with the indentation and `#` of a continued comment line.
_WRAP = r"[ \t]*\n[ \t]*#*[ \t]*"
CITATION = re.compile(
    r"(?<![\w/.-])(README|docs/[\w./-]+\.md),?(?:[ \t]+|" + _WRAP + r')"'
    r'([^"\n]+(?:' + _WRAP + r'[^"\n]+){0,3})"'
)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


class Citation(NamedTuple):
    source: str  # path relative to the root
    line: int
    target: str  # "README" or "docs/....md"
    heading: str  # whitespace-normalised


def _clean(text: str) -> str:
    return " ".join(text.replace("*", "").replace("`", "").split())


def headings(markdown: Path) -> set[str]:
    """The text of every ATX heading outside fenced code blocks."""
    found, fenced = set(), False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            found.add(_clean(match.group(1)))
    return found


def source_files(root: Path) -> list[Path]:
    files = [p for d in PY_DIRS for p in (root / d).rglob("*.py")]
    files += [p for d in YAML_DIRS for pattern in ("*.yaml", "*.yml") for p in (root / d).rglob(pattern)]
    return sorted(files)


def find_citations(root: Path) -> list[Citation]:
    found = []
    for path in source_files(root):
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            heading = re.sub(_WRAP, " ", match.group(2))
            found.append(Citation(path.relative_to(root).as_posix(), line, match.group(1), _clean(heading)))
    return found


def check_citations(root: Path) -> tuple[list[Citation], list[str]]:
    """Every citation under `root`, and one error message per citation that does not resolve."""
    citations, errors, cache = find_citations(root), [], {}
    for c in citations:
        where = f'{c.source}:{c.line}: {c.target}, "{c.heading}"'
        if c.target == "README":
            errors.append(f"{where}: the README is no place to cite; cite docs/results/<file>.md and its heading instead")
            continue
        doc = root / c.target
        if not doc.is_file():
            errors.append(f"{where}: {c.target} does not exist")
            continue
        if doc not in cache:
            cache[doc] = headings(doc)
        if c.heading not in cache[doc]:
            errors.append(f"{where}: {c.target} has no heading {c.heading!r}")
    return citations, errors


def test_doc_citations_resolve() -> None:
    citations, errors = check_citations(ROOT)
    assert citations, "no doc citations found: is the scan looking in the right place?"
    assert not errors, "unresolved doc citations:\n" + "\n".join(errors)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


DOC = """# Results

## `recipes/x.yaml` end to end

```bash
# Not a heading
```

### **One caption** template
"""


def test_checker_accepts_good_citations(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "docs/results/x.md": DOC,
            "core/a.py": '"""Measured (docs/results/x.md, "recipes/x.yaml end to end")."""\n',
            # Wrapped over a comment line, and over a docstring line.
            "recipes/r.yaml": '# the full template (docs/results/x.md,\n#   "One caption template").\nname: r\n',
            "plugins/b.py": '"""As measured (docs/results/x.md, "One caption\n    template")."""\n',
        },
    )
    citations, errors = check_citations(root)
    assert errors == []
    assert [(c.source, c.line, c.heading) for c in citations] == [
        ("core/a.py", 1, "recipes/x.yaml end to end"),
        ("plugins/b.py", 1, "One caption template"),
        ("recipes/r.yaml", 1, "One caption template"),
    ]


def test_checker_rejects_bad_citations(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "docs/results/x.md": DOC,
            "core/a.py": '# (docs/results/x.md, "No such heading")\n',
            "core/b.py": '# (docs/results/missing.md, "Results")\n',
            "benchmarks/c.py": '"""See README, "One caption template"."""\n',
            "objectives/d.py": '# (docs/results/x.md, "Not a heading")\n',  # only inside a code fence
            "samplers/e.py": '# (docs/results/x.md, "one caption template")\n',  # case matters
        },
    )
    citations, errors = check_citations(root)
    assert len(citations) == 5
    assert len(errors) == 5
    by_source = {e.split(":")[0]: e for e in errors}
    assert "has no heading 'No such heading'" in by_source["core/a.py"]
    assert "docs/results/missing.md does not exist" in by_source["core/b.py"]
    assert "cite docs/results" in by_source["benchmarks/c.py"]
    assert "has no heading" in by_source["objectives/d.py"]
    assert "has no heading" in by_source["samplers/e.py"]


def test_checker_ignores_files_outside_the_scanned_folders(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"tests/t.py": '# README, "Gone"\n', "core/notes.md": 'README, "Gone"\n'})
    assert check_citations(root) == ([], [])
