"""`mmgen serve` under concurrent load from loopback: every request done, none failed or lost.

A smaller count than benchmarks/serve_load.py (200 requests from 8 clients, with latency
percentiles in benchmarks/results/serve_load.md), through the same client code, on a tiny run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from serve_helpers import tiny_run

ROOT = Path(__file__).resolve().parents[1]


def test_concurrent_clients_get_every_request_done(tmp_path_factory):
    from mmgen.plugins.serve.app import create_app
    from mmgen.plugins.serve.background import serving
    from mmgen.plugins.serve.engine import Engine
    from mmgen.registry import load_registry

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from serve_load import load
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    engine = Engine(tiny_run(tmp_path_factory.getbasetemp()), registry=load_registry())
    out_dir = tmp_path_factory.mktemp("serve-load")
    body = {"prompt": "a small red circle in the center", "candidates": 1, "steps": 2}
    with serving(create_app(engine, out_dir=out_dir)) as url:
        result = load(url, requests=24, clients=4, body=body)
    failures = [o for o in result["outcomes"] if o["status"] != "done"]
    assert failures == []
    assert (result["done"], result["failed"], result["lost"], result["distinct_jobs"]) == (24, 0, 0, 24)
    assert all(o["outputs"] == 1 for o in result["outcomes"])
    assert result["retried_503"] == 0  # 4 clients never fill a queue of 8
    assert set(result["latency_s"]) == {"p50", "p90", "p99", "max"}
    assert len(list(out_dir.glob("t2i-*/generations.jsonl"))) == 24  # each job published its outputs


def test_percentiles_by_nearest_rank():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from serve_load import percentile
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
