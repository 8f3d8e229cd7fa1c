"""benchmarks/gpu_bench.py end to end on the CPU (--smoke: tiny preset, each part once); its refusal without a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_writes_every_part(bench, tmp_path):
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("gpu_bench-cpu-*.json")
    result = json.loads(json_file.read_text())
    assert result["card"].startswith("CPU ")
    assert result["training"]["preset"] == "tiny" and result["training"]["sequence"] == 16 + 8 + 4
    assert result["training"]["steps_timed"] == 2 and result["matmul"]["calls"] == 2
    assert [(r["model"], r["task"], r["batch"]) for r in result["sampling"]] == [
        (model, task, batch) for model in ("magvlt", "argvlt") for task in ("t2i", "i2t") for batch in (1, 32)
    ]
    assert all(r["seconds"] > 0 for r in result["sampling"])
    assert result["mfu_nominal"] is None  # no nominal peak for a CPU
    table = json_file.with_suffix(".md").read_text()
    assert table.startswith(f"# GPU benchmark: {result['card']}\n")
    assert table.count("\n| t2i |") == 2 and table.count("\n| i2t |") == 2 and "skipped" not in table


def test_without_a_gpu_it_says_so_and_exits_2(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().out == (
        "gpu_bench: no CUDA GPU here (torch.cuda.is_available() is False); --smoke runs the CPU check\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_nominal_peaks_by_card_name(bench):
    assert bench.nominal_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.nominal_tflops("NVIDIA H200") == 989.0
    assert bench.nominal_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.nominal_tflops("NVIDIA L4") is None
