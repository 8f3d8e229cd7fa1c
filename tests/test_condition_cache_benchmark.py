"""benchmarks/condition_cache.py: --quick runs end to end; --quality puts two runs' evaluate results side by side.

No timing is asserted (speed lives in the benchmark's own tables): only that the script finishes,
its files have their rows, every number is finite and positive, and the counted work is what the
sampler must do (full: one pass per step; own: one condition encoding plus one target pass per step).
"""

from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "condition_cache.py"


def positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_speed_rows_count_the_cached_samplers_work(tmp_path: Path) -> None:
    env = {**os.environ, "MMGEN_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"the benchmark failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    result = json.loads((tmp_path / "condition_cache_quick_1threads.json").read_text())
    markdown = (tmp_path / "condition_cache_quick_1threads.md").read_text()
    assert result["paper_steps"] == {"t2i": 10, "i2t": 12} and result["machine"]["threads"] == 1
    rows = {(r["task"], r["batch"], r["condition_attention"]): r for r in result["rows"]}
    assert sorted(rows) == sorted((t, b, a) for t in ("t2i", "i2t") for b in (1, 32) for a in ("full", "own"))
    # full: one pass per step (+ I2T's length pass); own: the same plus one condition encoding.
    expected_calls = {("t2i", "full"): 10, ("i2t", "full"): 1 + 12, ("t2i", "own"): 1 + 10, ("i2t", "own"): 1 + 1 + 12}
    for (task, batch, attention), row in rows.items():
        assert row["forward_calls"] == expected_calls[(task, attention)], (task, batch, attention)
        for key in ("seconds_per_sample", "flops_per_sample", "vs_full", "achieved_fraction_of_matmul_rate"):
            assert positive(row[key]), (task, batch, attention, key)
        if attention == "full":
            assert row["vs_full"] == 1.0
        else:  # the context runs once instead of at every step
            assert row["flops_per_sample"] < rows[(task, batch, "full")]["flops_per_sample"]
    assert "| quick | t2i | 1 | MAGVLT own, cached condition |" in markdown


def evaluate_folder(workdir: Path, accuracy: float) -> None:
    folder = workdir / "artefacts" / "evaluate-0123456789abcdef"
    folder.mkdir(parents=True)
    metrics = {"one_sample/shapes_accuracy/t2i/all_correct": accuracy, "one_sample/clip_score/t2i": 30.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "timings.json").write_text(json.dumps({"one_sample/time/t2i/seconds_per_output": 0.5}))
    (folder / "DONE.json").write_text("{}")


def test_quality_puts_the_two_runs_side_by_side(tmp_path: Path, monkeypatch) -> None:
    evaluate_folder(tmp_path / "full", 0.56)
    evaluate_folder(tmp_path / "own", 0.5)
    out = tmp_path / "out"
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--quality", str(tmp_path / "full"), str(tmp_path / "own")])
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--out", str(out)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    result = json.loads((out / "condition_cache_quality.json").read_text())
    assert result["rows"] == [
        ["one_sample/shapes_accuracy/t2i/all_correct", 0.56, 0.5],
        ["one_sample/time/t2i/seconds_per_output", 0.5, 0.5],
    ]
    assert (
        "| one_sample/shapes_accuracy/t2i/all_correct | 0.56 | 0.5 |"
        in (out / "condition_cache_quality.md").read_text()
    )
