"""The CPU performance benchmarks run end to end with --quick and write the JSON and Markdown they promise.

No timing is asserted (speed lives in the benchmarks' own tables): only that every script finishes,
the files have their rows and columns, every measured number and ratio is finite and positive, and
the counted work is what the samplers must do (MAGVLT: one forward per maskgit step, plus the
length pass for captions; ARGVLT: one per generated token).

The scripts run in ONE subprocess (torch and mmgen imported once), with the peers (the `bench`
extra) hidden, as on a machine without it: their rows must say "not installed". A second test runs
perf_sample with the peers where they are installed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PEER_MODULES = ("muse_maskgit_pytorch", "x_transformers")

# Runs in the subprocess: argv[1] the output folder, argv[2] "hide" or "show" the peers, then script names.
RUNNER = r"""
import importlib.abc, runpy, sys
from pathlib import Path

out, peers, scripts = sys.argv[1], sys.argv[2], sys.argv[3:]
folder = Path("benchmarks")
# As `python benchmarks/X.py`: its folder first, not the repo root (whose tokenizers/ would shadow
# Hugging Face's, which muse imports through transformers).
sys.path[:] = [str(folder)] + [p for p in sys.path if p not in ("", ".")]

class HidePeers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("muse_maskgit_pytorch", "x_transformers"):
            raise ImportError(f"{name} hidden by the test")
        return None

if peers == "hide":
    sys.meta_path.insert(0, HidePeers())
for script in scripts:
    sys.argv = [str(folder / script), "--quick", "--out", out]
    runpy.run_path(str(folder / script), run_name="__main__")
"""


def run_scripts(out: Path, peers: str, *scripts: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMGEN_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(out), peers, *scripts],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"the benchmarks failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, str]]:
    out = tmp_path_factory.mktemp("perf")
    run_scripts(out, "hide", "perf_train.py", "perf_sample.py", "perf_data.py")
    found = {}
    for name in ("perf_train", "perf_sample", "perf_data"):
        stem = out / f"{name}_quick_1threads"
        found[name] = (json.loads(stem.with_suffix(".json").read_text()), stem.with_suffix(".md").read_text())
    return found


def positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_memory(value: float | None) -> None:
    assert value is None or (math.isfinite(value) and value >= 0), value


def check_machine(result: dict) -> None:
    described = result["machine"]
    assert described["threads"] == 1
    assert isinstance(described["avx2"], bool) and isinstance(described["avx512f"], bool)
    assert described["torch"] and described["cpu"]


def test_train_rows_cover_every_case_with_positive_rates(results: dict) -> None:
    result, markdown = results["perf_train"]
    check_machine(result)
    assert result["peers"] == {"muse-maskgit-pytorch": "not installed"}
    rows = {row["case"]: row for row in result["rows"]}
    assert list(rows) == ["MAGVLT, paper objectives", "MAGVLT, mask objective", "ARGVLT, causal_lm"]
    assert positive(result["matmul_rate"]["quick"]["best"])
    assert {row["tokens_per_step"] for row in rows.values()} == {rows["ARGVLT, causal_lm"]["tokens_per_step"]}
    for row in rows.values():
        assert row["preset"] == "quick" and row["batch"] == 4 and row["rounds"] == 1
        for key in ("seconds_per_step", "tokens_per_s", "counted_flops_per_step", "achieved_flops_per_s"):
            assert positive(row[key]), (row["case"], key, row[key])
        assert positive(row["fraction_of_matmul_rate"])
        check_memory(row["first_step_peak_rss_growth_mib"])
    # The paper's objectives run three forward-backward passes (mask, UnrollMask, MixSel) to mask's one.
    paper, mask = rows["MAGVLT, paper objectives"], rows["MAGVLT, mask objective"]
    assert paper["counted_flops_per_step"] > 2 * mask["counted_flops_per_step"]
    assert "| quick | muse MaskGit (peer) | not installed |" in markdown
    assert "| preset | case | params (M) | batch | tokens/step | s/step | tokens/s |" in markdown
    assert "| quick MAGVLT, mask objective: achieved / matmul rate |" in markdown


def test_sample_rows_count_the_samplers_work(results: dict) -> None:
    result, markdown = results["perf_sample"]
    check_machine(result)
    assert result["paper_steps"] == {"t2i": 10, "i2t": 12}
    assert result["peers"] == {"muse-maskgit-pytorch": "not installed", "x-transformers": "not installed"}
    rows = {(r["task"], r["batch"], r["who"]): r for r in result["rows"]}
    assert sorted(rows) == sorted((t, b, w) for t in ("t2i", "i2t") for b in (1, 32) for w in ("MAGVLT", "ARGVLT"))
    # quick sizes: 4x4 image tokens, captions of 8 (every caption full length).
    expected_calls = {("t2i", "MAGVLT"): 10, ("i2t", "MAGVLT"): 1 + 12, ("t2i", "ARGVLT"): 16, ("i2t", "ARGVLT"): 8}
    for (task, batch, who), row in rows.items():
        assert row["generated_tokens"] == (16 if task == "t2i" else 8)
        assert row["forward_calls"] == expected_calls[(task, who)], (task, batch, who)
        for key in ("seconds_per_sample", "seconds_per_token", "flops_per_sample", "bytes_per_sample", "vs_argvlt"):
            assert positive(row[key]), (task, batch, who, key)
        assert positive(row["achieved_fraction_of_matmul_rate"])
        check_memory(row["peak_rss_growth_mib"])
        if who == "MAGVLT":
            assert row["vs_magvlt"] == 1.0
    # Weights are read once per forward call and shared by the batch.
    one, many = rows[("t2i", 1, "MAGVLT")], rows[("t2i", 32, "MAGVLT")]
    assert one["bytes_per_sample"] == pytest.approx(32 * many["bytes_per_sample"])
    assert "| | | | muse-maskgit-pytorch: not installed |" in markdown
    assert "| | | | x-transformers: not installed |" in markdown
    assert "| quick t2i batch 1: ARGVLT time / MAGVLT time (FLOPs " in markdown


def test_data_rows_read_with_and_without_workers(results: dict) -> None:
    result, markdown = results["perf_data"]
    check_machine(result)
    assert [(r["preset"], r["workers"], r["batch"]) for r in result["rows"]] == [("quick", 0, 4), ("quick", 2, 4)]
    for row in result["rows"]:
        assert positive(row["samples_per_s"]) and row["batches_per_s"] == pytest.approx(row["samples_per_s"] / 4)
        assert row["tokens_per_sample"] == 16 + 8
        check_memory(row["peak_rss_growth_mib"])
    assert "| quick | 4 | 0 |" in markdown and "| quick | 4 | 2 |" in markdown


def peers_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in PEER_MODULES)


@pytest.mark.skipif(
    not peers_installed(), reason="the bench extra (muse-maskgit-pytorch, x-transformers) is not installed"
)
def test_sample_times_the_peers_where_installed(tmp_path: Path) -> None:
    run_scripts(tmp_path, "show", "perf_sample.py")
    result = json.loads((tmp_path / "perf_sample_quick_1threads.json").read_text())
    assert "not installed" not in result["peers"].values()
    peers = [r for r in result["rows"] if r["who"] in ("muse", "x-transformers")]
    assert sorted((r["task"], r["batch"], r["who"]) for r in peers) == sorted(
        (t, b, w) for t in ("t2i", "i2t") for b in (1, 32) for w in ("muse", "x-transformers")
    )
    for row in peers:
        assert positive(row["seconds_per_sample"]) and positive(row["flops_per_sample"]) and positive(row["vs_magvlt"])
    # muse fills square grids (4x4 image tokens for T2I, 3x3 >= 8 caption tokens for I2T), one forward per step.
    muse = {(r["task"], r["batch"]): r for r in peers if r["who"] == "muse"}
    assert {key: (r["generated_tokens"], r["forward_calls"]) for key, r in muse.items()} == {
        ("t2i", 1): (16, 10),
        ("t2i", 32): (16, 10),
        ("i2t", 1): (9, 12),
        ("i2t", 32): (9, 12),
    }
    # x-transformers: one forward per generated token, as ARGVLT.
    decoder = {(r["task"], r["batch"]): r for r in peers if r["who"] == "x-transformers"}
    assert {key: (r["generated_tokens"], r["forward_calls"]) for key, r in decoder.items()} == {
        ("t2i", 1): (16, 16),
        ("t2i", 32): (16, 16),
        ("i2t", 1): (8, 8),
        ("i2t", 32): (8, 8),
    }
