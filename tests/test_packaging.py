import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"core": "mmgen", "plugins": "mmgen/plugins", "tokenizers": "mmgen/tokenizers", "objectives": "mmgen/objectives", "samplers": "mmgen/samplers"}


def expected_modules() -> set[str]:
    """Every .py file of every package folder, as its path inside the wheel."""
    names = set()
    for folder, prefix in ROOTS.items():
        for source in (REPO / folder).rglob("*.py"):
            if not (source.parent / "__init__.py").exists() or "__pycache__" in source.parts:
                continue
            names.add(f"{prefix}/{source.relative_to(REPO / folder).as_posix()}")
    return names


@pytest.mark.skipif(not (REPO / "pyproject.toml").exists(), reason="needs the source tree")
def test_wheel_contains_every_package_folder(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mmgen-*.whl")
    contents = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected_modules() - contents)
    assert missing == []
    entry_points = next(n for n in contents if n.endswith("entry_points.txt"))
    assert "mmgen = mmgen.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
