"""Load on `mmgen serve` from loopback: N text-to-image requests from C clients, latency percentiles, no loss.

Each client submits a request (POST /api/t2i), polls its job until it is done, then submits the next.
A request counts as failed if any answer is not the one expected (202, then 200s) or its job fails, and
as lost if it never reaches `done`; a 503 (the queue is full) is retried after its Retry-After and
counted apart. Latency is submit to done, as a user waits for it. The model runs one job at a time, so
latency grows with the clients queued ahead: the percentiles are those of a busy server.

    python benchmarks/serve_load.py --run checkpoints/shapes --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.05


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=600) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def one_request(url: str, body: dict[str, Any], outcome: dict[str, Any]) -> None:
    """Submit and poll one job; fills `outcome` (status, seconds, retries, job id, outputs)."""
    start = time.perf_counter()
    while True:
        status, job, headers = post_json(f"{url}/api/t2i", body)
        if status != 503:
            break
        outcome["retries"] += 1
        time.sleep(float(headers.get("Retry-After", "1")))
    if status != 202:
        outcome.update(status="failed", why=f"submit answered {status}: {job.get('detail')}")
        return
    outcome["id"] = job["id"]
    while job["status"] in ("queued", "running"):
        time.sleep(POLL_S)
        status, job = get_json(f"{url}/api/jobs/{outcome['id']}")
        if status != 200:
            outcome.update(status="failed", why=f"poll answered {status}")
            return
    outcome.update(
        status=job["status"], seconds=time.perf_counter() - start, outputs=len((job["result"] or {}).get("files", []))
    )
    if job["status"] != "done":
        outcome["why"] = job["error"]


def load(url: str, *, requests: int, clients: int, body: dict[str, Any]) -> dict[str, Any]:
    """`requests` jobs from `clients` threads; the outcomes and their summary."""
    outcomes = [{"status": "lost", "retries": 0} for _ in range(requests)]
    next_index = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            try:
                one_request(url, body, outcomes[index])
            except Exception as exc:  # a refused connection, a timeout: a failure, never a crash of the test
                outcomes[index].update(status="failed", why=f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"outcomes": outcomes, **summary(outcomes, wall=wall, requests=requests, clients=clients)}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(q / 100 * len(ordered))) - 1)]


def summary(outcomes: list[dict[str, Any]], *, wall: float, requests: int, clients: int) -> dict[str, Any]:
    done = [o["seconds"] for o in outcomes if o["status"] == "done"]
    ids = [o.get("id") for o in outcomes if o.get("id")]
    return {
        "requests": requests,
        "clients": clients,
        "done": len(done),
        "failed": sum(o["status"] == "failed" for o in outcomes),
        "lost": sum(o["status"] not in ("done", "failed") for o in outcomes),
        "distinct_jobs": len(set(ids)),
        "retried_503": sum(o["retries"] for o in outcomes),
        "wall_s": round(wall, 2),
        "jobs_per_s": round(len(done) / wall, 2) if wall else None,
        "latency_s": {f"p{q}": round(percentile(done, q), 3) for q in (50, 90, 99)} | {"max": round(max(done), 3)}
        if done
        else {},
    }


def markdown(result: dict[str, Any], *, command: str) -> str:
    latency = result["latency_s"]
    return "\n".join(
        [
            "# `mmgen serve` under load from loopback",
            "",
            f"{result['requests']} text-to-image requests from {result['clients']} clients, each submitting, polling"
            " its job to the end, then submitting the next (benchmarks/serve_load.py). Latency: submit to done.",
            "",
            f"Run: `{command}`",
            f"Machine: {result['machine']}; model: {result['run']}; request: `{json.dumps(result['body'])}`",
            "",
            "| done | failed | lost | 503 retried | wall s | jobs/s | p50 s | p90 s | p99 s | max s |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {result['done']} | {result['failed']} | {result['lost']} | {result['retried_503']} | {result['wall_s']}"
            f" | {result['jobs_per_s']} | {latency.get('p50')} | {latency.get('p90')} | {latency.get('p99')}"
            f" | {latency.get('max')} |",
            "",
            f"The model runs one job at a time: {result['wall_s'] / max(1, result['done']):.2f} s a job here (wall /"
            f" done), and a request waits behind the other {result['clients'] - 1} clients' jobs, so the median"
            " latency is about the clients times that.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "checkpoints" / "shapes", help="the run to serve")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="refinement steps (default: the run's)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    import tempfile

    import torch

    from mmgen.plugins.serve.app import EXAMPLE_PROMPT, create_app
    from mmgen.plugins.serve.background import serving
    from mmgen.plugins.serve.engine import Engine
    from mmgen.registry import load_registry

    engine = Engine(args.run, registry=load_registry())
    body = {"prompt": EXAMPLE_PROMPT, "candidates": args.candidates, "steps": args.steps}
    with tempfile.TemporaryDirectory() as out_dir, serving(create_app(engine, out_dir=Path(out_dir))) as url:
        result = load(url, requests=args.requests, clients=args.clients, body=body)
    del result["outcomes"]
    result.update(
        run=str(args.run.resolve().relative_to(ROOT) if args.run.resolve().is_relative_to(ROOT) else args.run),
        body=body,
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        f" {torch.get_num_threads()} torch threads",
    )
    threads = os.environ.get("OMP_NUM_THREADS")
    command = f"python benchmarks/serve_load.py --requests {args.requests} --clients {args.clients}"
    command = f"OMP_NUM_THREADS={threads} {command}" if threads else command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve_load.md").write_text(markdown(result, command=command))
    print(markdown(result, command=command))


if __name__ == "__main__":
    main()
