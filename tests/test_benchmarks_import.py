"""Every benchmark still runs: `python benchmarks/X.py --help` imports it and prints its usage.

Benchmarks are not run by the suite (they take minutes to hours), so a refactor
could break one silently. Each file under benchmarks/ is executed as a script
with `--help`, as `python benchmarks/X.py --help` would run it (its folder first
on sys.path, `__name__ == "__main__"`): a script must exit 0 with its usage, a
helper module (no `__main__` block) must import cleanly.

All run in ONE subprocess: torch and mmgen are imported once, not once per
file (one process per file took ~47 s for 12 files on the 2 shared cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
FILES = sorted(BENCHMARKS.glob("*.py"))
MAIN_GUARD = 'if __name__ == "__main__":'

# Runs in the subprocess: each file as `python FILE --help` would run it; one JSON report on the last line.
RUNNER = r"""
import contextlib, io, json, runpy, sys, traceback
from pathlib import Path

folder = Path(sys.argv[1])
sys.path.insert(0, str(folder))  # what `python benchmarks/X.py` puts first
report = {}
for path in sorted(folder.glob("*.py")):
    out, err, error, code = io.StringIO(), io.StringIO(), None, 0
    sys.argv = [str(path), "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:
        error, code = traceback.format_exc(), 1
    report[path.name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "error": error}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report() -> dict[str, dict]:
    env = {**os.environ, "MMGEN_NO_PROGRESS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(BENCHMARKS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the benchmark runner failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_benchmarks_folder_has_scripts() -> None:
    scripts = [p for p in FILES if MAIN_GUARD in p.read_text(encoding="utf-8")]
    assert len(scripts) >= 5, f"expected the benchmark scripts under {BENCHMARKS}, found {[p.name for p in FILES]}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_benchmark_runs_with_help(report: dict[str, dict], path: Path) -> None:
    result = report[path.name]
    assert result["error"] is None, f"{path.name} --help raised:\n{result['error']}"
    assert result["code"] == 0, f"{path.name} --help exited {result['code']}:\n{result['stderr'][-4000:]}"
    if MAIN_GUARD in path.read_text(encoding="utf-8"):
        assert f"usage: {path.name}" in result["stdout"], f"{path.name} --help printed no usage:\n{result['stdout']}"
