"""MAGVLT's cached condition (`condition_attention: own`, issue 22) against the paper's full attention.

(a) Speed, measured here: seconds per sample of MAGVLT maskgit sampling at the paper's step counts
(T2I 10 steps; I2T 12 steps after one length pass), batch 1 and 32, random weights, for
- "full": the paper's model; every step runs the whole sequence;
- "own, cached": the context attends only to itself, so the sampler encodes it once per sample
  (`MagvltModel.encode_condition`) and each step runs only the slots from [BOG] on
  (`forward_target`). The length pass of I2T stays a full pass.
Both are built as the train stage builds them (same seed, so the same weights). Captions are full
length (as in perf_sample.py). Cases are interleaved round by round; "own / full" is the median of
the per-round time ratios (< 1: the cache is faster); GFLOP/sample is counted over one generation
in the warm-up round; the fp32 matmul rate is measured in the same run.

    python benchmarks/condition_cache.py              # shapes (5 rounds), base batch 1 (2 rounds)
    python benchmarks/condition_cache.py --base-batches 1 32   # also base at batch 32 (an hour or more)
    python benchmarks/condition_cache.py --quick      # tiny sizes, 1 round: checks the script

(b) Quality, from two trainings of the same recipe (not run by this script: each is a quickstart,
~5 minutes on 2 cores; the stage hashes differ, so "own" trains anew):

    mmgen run recipes/quickstart.yaml --set tracker.use=none --set workdir=runs/condition_full
    mmgen run recipes/quickstart.yaml --set tracker.use=none --set workdir=runs/condition_own \\
        --set stages.train.model.condition_attention=own
    python benchmarks/condition_cache.py --quality runs/condition_full runs/condition_own

`--quality FULL OWN` reads each workdir's newest evaluate stage (metrics.json, timings.json) and
writes the Shapes accuracy and seconds per output side by side (condition_cache_quality.{json,md}).
The quickstart's I2T accuracy is ~0 even with full attention (docs/results/quickstart.md); to
compare captions, run recipes/shapes.yaml the same way (its caption phase; hours on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from perf_common import (
    add_common_options,
    interleaved,
    machine,
    machine_line,
    markdown_table,
    matmul_rate,
    median,
    paired_ratio,
    result_stem,
    threads,
    write_results,
)
from perf_models import SIZES, Sizes, architecture, build_ours, weight_bytes
from perf_sample import PAPER_STEPS, TASKS, SampleCase, full_length_captions, our_requests, target_shape

from mmgen.api import newest_finished
from mmgen.registry import load_registry
from mmgen.samplers.maskgit import MaskGitSampler

ATTENTIONS = {"full": "MAGVLT full attention", "own": "MAGVLT own, cached condition"}


def build_cases(sizes: Sizes, task: str, batch: int, *, registry: Any) -> list[SampleCase]:
    generated, vocab, _ = target_shape(sizes, task)
    width = architecture(sizes).width
    request = our_requests(sizes, task, batch)
    sampler = MaskGitSampler()  # the paper's step counts
    cases = []
    for attention, label in ATTENTIONS.items():
        model = build_ours("magvlt", "mask", sizes, registry=registry, condition_attention=attention).model
        full_length_captions(model, sizes)
        generator = torch.Generator().manual_seed(0)
        cases.append(
            SampleCase(
                label,
                model,
                lambda model=model, generator=generator: sampler.generate(model, request, generator=generator),
                tokens=generated,
                read_bytes=weight_bytes(model) + 4 * vocab * width,
                kv_bytes=0.0,
            )
        )
    return cases


def measure(preset: str, sizes: Sizes, task: str, batch: int, *, rounds: int, registry: Any) -> list[dict[str, Any]]:
    cases = build_cases(sizes, task, batch, registry=registry)
    times = interleaved({c.label: c for c in cases}, rounds=rounds)
    full = cases[0].label
    return [
        {
            "preset": preset,
            "task": task,
            "batch": batch,
            "case": case.label,
            "condition_attention": attention,
            "rounds": rounds,
            "seconds_per_sample": median(times[case.label]) / batch,
            "seconds_all_rounds": times[case.label],
            "forward_calls": case.calls,  # encode_condition and forward_target count one each
            "flops_per_sample": case.flops / batch,
            "peak_rss_growth_mib": case.memory_mib,
            "vs_full": paired_ratio(times[case.label], times[full]),
        }
        for attention, case in zip(ATTENTIONS, cases)
    ]


def speed(args: argparse.Namespace) -> None:
    torch.set_num_threads(threads(args))
    registry = load_registry()
    described = machine()
    presets = {"quick": SIZES["quick"]} if args.quick else {p: SIZES[p] for p in args.presets}
    rows, rates = [], {}
    for preset, sizes in presets.items():
        width = architecture(sizes).width
        rates[preset] = matmul_rate([width, 4 * width], repeats=2 if args.quick else 5)["best"]
        rounds = args.rounds or (1 if args.quick else 2 if preset == "base" else 5)
        for batch in args.base_batches if preset == "base" else (1, 32):
            for task in TASKS:
                print(f"{preset} {task} batch {batch}: {rounds} round(s) after a warm-up...", flush=True)
                rows += measure(preset, sizes, task, batch, rounds=rounds, registry=registry)
    for row in rows:
        row["achieved_fraction_of_matmul_rate"] = (
            row["flops_per_sample"] / row["seconds_per_sample"] / rates[row["preset"]]
        )
    result = {
        "benchmark": "condition_cache",
        "quick": args.quick,
        "machine": described,
        "matmul_rate": rates,
        "paper_steps": PAPER_STEPS,
        "rows": rows,
    }
    header = ["preset", "task", "batch", "case", "s/sample", "own / full", "forward calls", "GFLOP/sample"]
    header += ["FLOP/s / matmul rate", "peak RSS growth (MiB)"]
    table = [
        [
            r["preset"],
            r["task"],
            r["batch"],
            r["case"],
            r["seconds_per_sample"],
            r["vs_full"],
            r["forward_calls"],
            r["flops_per_sample"] / 1e9,
            r["achieved_fraction_of_matmul_rate"],
            "n/a" if r["peak_rss_growth_mib"] is None else r["peak_rss_growth_mib"],
        ]
        for r in rows
    ]
    lines = [
        "# Sampling speed: MAGVLT full attention vs the cached condition (random weights, full-length outputs)",
        "",
        f"`python benchmarks/condition_cache.py{' --quick' if args.quick else ''}`: {machine_line(described)}.",
        "fp32 matmul rate: " + "; ".join(f"{p} {r / 1e9:.1f} GFLOP/s" for p, r in rates.items()) + ".",
        f"maskgit at the paper's steps: T2I {PAPER_STEPS['t2i']}, I2T {PAPER_STEPS['i2t']} (+1 length pass).",
        "",
        *markdown_table(header, table),
        "",
        "own / full: the case's time over full attention's, median of the per-round ratios (< 1: faster)."
        " Forward calls: full passes, condition encodings and target-only passes alike.",
    ]
    write_results(args.out, result_stem(args, "condition_cache"), result, lines)


def evaluate_results(workdir: Path) -> dict[str, float]:
    """The newest evaluate stage's metrics and seconds per output of a recipe workdir."""
    folder = newest_finished(workdir, "evaluate")
    found = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    timings = folder / "timings.json"
    if timings.is_file():
        found.update(json.loads(timings.read_text(encoding="utf-8")))
    return found


def quality(args: argparse.Namespace) -> None:
    full_dir, own_dir = args.quality
    full, own = evaluate_results(full_dir), evaluate_results(own_dir)
    keys = sorted(k for k in full.keys() | own.keys() if "shapes_accuracy" in k or "seconds_per_output" in k)
    rows = [[key, full.get(key, "n/a"), own.get(key, "n/a")] for key in keys]
    result = {"benchmark": "condition_cache_quality", "full": str(full_dir), "own": str(own_dir), "rows": rows}
    lines = [
        "# Quality: MAGVLT full attention vs own (the cached condition), the same recipe",
        "",
        f"`python benchmarks/condition_cache.py --quality {full_dir} {own_dir}`: each workdir's evaluate stage.",
        "",
        *markdown_table(["metric", "full", "own"], rows),
    ]
    write_results(args.out, args.stem or "condition_cache_quality", result, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, stem="condition_cache")
    parser.add_argument("--presets", nargs="+", default=["shapes", "base"], choices=["shapes", "base"])
    parser.add_argument("--base-batches", nargs="+", type=int, default=[1], help="batch sizes for base (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default shapes 5, base 2)")
    parser.add_argument(
        "--quality", nargs=2, type=Path, metavar=("FULL", "OWN"), help="compare two trained workdirs instead"
    )
    args = parser.parse_args()
    if args.quality:
        quality(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
