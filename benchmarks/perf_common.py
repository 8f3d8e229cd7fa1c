"""What the CPU performance benchmarks (perf_train.py, perf_sample.py, perf_data.py) share.

- `matmul_rate`: this machine's fp32 GEMM rate in the same run (square GEMMs sized like the
  model's, median of repeats), the yardstick every achieved FLOP/s is divided by;
- `machine`: CPU model and vector flags, torch version and threads, load average;
- `interleaved`: cases timed in rounds, each round in a rotated order, so a neighbour's load
  (the machine is shared) falls on every case alike; warm-up rounds are discarded;
- `peak_rss_growth`: peak resident memory of a piece of work over the process before it;
- `write_results`: the JSON and the Markdown table, side by side under benchmarks/results.

Ratios within one run are what to read: absolute seconds change with the CPU (AVX2 vs AVX-512)
and with whatever else runs.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mmgen.atomic import atomic_write_text

NOT_INSTALLED = "not installed"
BENCH_EXTRA = 'pip install -e ".[bench]"'


def cpu_description() -> dict[str, Any]:
    """CPU model and the vector flags that pick torch's float kernels (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "cpus": os.cpu_count()}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        **cpu_description(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def machine_line(described: Mapping[str, Any]) -> str:
    flags = "AVX-512" if described["avx512f"] else ("AVX2" if described["avx2"] else "no AVX2")
    return (
        f"{described['cpu']} ({flags}), {described['threads']} torch thread(s), torch {described['torch']},"
        f" load average at start {described['load_average'][0]:.1f}"
    )


def matmul_rate(sizes: Sequence[int], *, repeats: int = 5) -> dict[str, Any]:
    """fp32 FLOP/s of square n x n GEMMs, median of `repeats` after one warm-up; `best` is the highest over sizes.

    Each size runs enough back-to-back GEMMs to last ~50 ms, so timer and call overhead stay small.
    """
    by_size = {}
    for n in sorted(set(sizes)):
        a, b = torch.randn(n, n), torch.randn(n, n)
        flops = 2.0 * n**3
        for _ in range(3):  # the first calls pay for kernel selection and thread start-up
            torch.mm(a, b)
        start = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        calls = max(1, int(0.05 * 3 / max(time.perf_counter() - start, 1e-9)))
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            rates.append(calls * flops / (time.perf_counter() - start))
        by_size[str(n)] = statistics.median(rates)
    return {"by_size": by_size, "best": max(by_size.values()), "repeats": repeats}


def interleaved(
    cases: Mapping[str, Callable[[int], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each case per round: `case(round_index)` called once per round, the order rotated each round.

    Rotating (A B C, B C A, C A B, ...) keeps any case from always running first or right after
    another; the first `warmup` rounds (allocator, kernel selection, caches) are dropped.
    """
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            cases[name](index)
            elapsed = time.perf_counter() - start
            if index >= warmup:
                times[name].append(elapsed)
        if on_round is not None:
            on_round(index + 1)
    return times


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of the per-round ratio (each pair ran back to back, so their load was alike)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def _release_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed pages: give them back before a baseline
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_growth(work: Callable[[], Any]) -> float | None:
    """MiB by which the process's peak resident memory (VmHWM) rose above its size before `work`.

    The peak is reset first (writing 5 to /proc/self/clear_refs, Linux >= 4.0); None where that
    is not possible (another OS, a locked-down /proc).
    """
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    work()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 1024


def peer_version(distribution: str, module: str) -> str | None:
    """The version of a peer package (the `bench` extra) that imports as `module`, or None."""
    try:
        importlib.import_module(module)
        return importlib.metadata.version(distribution)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return None


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def number(value: Any, digits: int = 3) -> str:
    """A table cell: a float to `digits` significant digits, anything else as text."""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(number(cell) for cell in row) + " |" for row in rows]
    return lines


def write_results(out: Path, stem: str, result: Mapping[str, Any], lines: Sequence[str]) -> tuple[Path, Path]:
    """`<out>/<stem>.json` and `<out>/<stem>.md`; prints the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return json_path, md_path


def add_common_options(parser: Any, *, stem: str) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 timed round: checks the script end to end")
    # --quick checks the script, on whatever else runs: 1 thread never waits on a starved second one.
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and .md")
    parser.add_argument("--stem", default=None, help=f"file name without suffix (default {stem}_<threads>threads)")


def threads(args: Any) -> int:
    """--threads, or its default: 2 for a measurement, 1 for --quick."""
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    return args.threads


def result_stem(args: Any, stem: str) -> str:
    return args.stem or f"{stem}{'_quick' if args.quick else ''}_{args.threads}threads"
