"""Sampling speed of MAGVLT against ARGVLT: seconds per sample at batch 1 and batch 32, same process.

Both models come from one `recipes/compare_argvlt.yaml` run (stage folders `magvlt` and
`argvlt`), each with the sampler its recipe stages use (maskgit with the recipe's options;
autoregressive with its defaults and KV cache). One sample per prompt, no reranking: T2I
(256 image tokens) and I2T (captions up to 24 tokens) on the first records of `--split` (val by default). The
ratio ARGVLT / MAGVLT is what to read; absolute seconds depend on the machine.

    python benchmarks/argvlt_vs_magvlt_speed.py --run runs --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from generation_run import add_split_option, build_task, read_records, stage_folder, task_prompts

from mmgen.atomic import atomic_write_text
from mmgen.config import structure_spec
from mmgen.generation.pipeline import GenerationPipeline
from mmgen.plugins.models.saved import load_trained_model
from mmgen.recipe import read_yaml
from mmgen.registry import load_registry
from mmgen.tokenizers.saved import load_saved_tokenizers

MODELS = {"magvlt": "magvlt_one", "argvlt": "argvlt_one"}  # train stage -> the generate stage whose sampler it uses


def seconds_per_sample(pipeline: GenerationPipeline, task, prompts, *, batch_size: int) -> float:
    pipeline.run(task, prompts[:batch_size], seed=0, batch_size=batch_size)  # warm-up: allocations, caches
    start = time.perf_counter()
    pipeline.run(task, prompts, seed=0, batch_size=batch_size)
    return (time.perf_counter() - start) / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs"), help="the compare_argvlt workdir")
    parser.add_argument("--recipe", type=Path, default=Path("recipes/compare_argvlt.yaml"))
    parser.add_argument("--prompts-batch-1", type=int, default=8)
    parser.add_argument("--prompts-batch-32", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    add_split_option(parser)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    stages = read_yaml(args.recipe)["stages"]
    tokenizers = load_saved_tokenizers(stage_folder(None, args.run, "tokenizers"), registry)
    records = read_records(stage_folder(None, args.run, "data"), args.split, limit=args.prompts_batch_32)
    rows = []
    for name, generate_key in MODELS.items():
        model = load_trained_model(stage_folder(None, args.run, name), registry)
        sampler_data = stages[generate_key]["sampler"]
        sampler = registry.build(structure_spec("samplers", sampler_data, path="sampler", registry=registry))
        pipeline = GenerationPipeline(model=model, tokenizers=tokenizers, sampler=sampler, show_progress=False)
        for task_name in ("t2i", "i2t"):
            task = build_task(task_name, registry)
            prompts = task_prompts(task, records, tokenizers)
            one = seconds_per_sample(pipeline, task, prompts[: args.prompts_batch_1], batch_size=1)
            many = seconds_per_sample(pipeline, task, prompts, batch_size=32)
            rows.append({"model": name, "task": task_name, "batch_1_s": one, "batch_32_s": many})
            print(f"{name} {task_name}: {one:.4f} s/sample at batch 1, {many:.4f} at batch 32", flush=True)
    result = {
        "benchmark": "argvlt_vs_magvlt_speed",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "argvlt_vs_magvlt_speed.json", json.dumps(result, indent=2))
    by = {(r["model"], r["task"]): r for r in rows}
    lines = [
        "# Sampling speed: MAGVLT vs ARGVLT (seconds per sample, one sample per prompt)",
        "",
        f"`python benchmarks/argvlt_vs_magvlt_speed.py --run runs` ({result['machine']}).",
        "",
        "| task | batch | MAGVLT s/sample | ARGVLT s/sample | ARGVLT / MAGVLT |",
        "|---|---|---|---|---|",
    ]
    for task_name in ("t2i", "i2t"):
        for column, label in (("batch_1_s", "1"), ("batch_32_s", "32")):
            mag, ar = by[("magvlt", task_name)][column], by[("argvlt", task_name)][column]
            lines.append(f"| {task_name} | {label} | {mag:.4f} | {ar:.4f} | {ar / mag:.2f} |")
    atomic_write_text(args.out / "argvlt_vs_magvlt_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
