"""Sampler settings against Shapes accuracy, on one trained model: no training, only generation.

Generates T2I (or I2T) for the first `--prompts` records of the held-out `--split`
(val by default: settings are tuned on val, the final evaluation reads test) with each `--variant` of the maskgit sampler (one candidate, no
reranking, the same seed) and judges them with the `shapes_accuracy` metric.
A variant is a YAML flow mapping of `maskgit` sampler options, read with
`yaml.safe_load`, e.g. `{fixed: {gumbel_start: 1.0, gumbel_end: 0.1}}`; the
first row is always the sampler's defaults, so each variant is compared with
a baseline run in the same process on the same prompts.

    python benchmarks/maskgit_sampler_sweep.py --model runs/artefacts/train-<hash> \\
        --tokenizers runs/artefacts/tokenizers-<hash> --data runs/artefacts/data-<hash> \\
        --task t2i --prompts 128 --variant '{fixed: {guidance: {scale: 1.0}}}'
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml

from generation_run import add_split_option, build_task, read_records, task_prompts

from mmgen.atomic import atomic_write_text
from mmgen.config import structure_attrs, to_data
from mmgen.generation.pipeline import GenerationPipeline
from mmgen.plugins.datasets.shapes.metric import ShapesAccuracy
from mmgen.plugins.models.saved import load_trained_model
from mmgen.registry import load_registry
from mmgen.samplers.maskgit import MaskGitSampler
from mmgen.tokenizers.saved import load_saved_tokenizers

SHOWN = ("accuracy", "objects_1", "objects_2", "parsed", "count", "cell", "colour", "shape", "size")


def variant_config(text: str) -> MaskGitSampler.Config:
    data = yaml.safe_load(text) or {}
    return structure_attrs(MaskGitSampler.Config, data, path="--variant")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a train stage's artefact folder")
    parser.add_argument("--tokenizers", type=Path, required=True, help="the tokenizers stage's artefact folder")
    parser.add_argument("--data", type=Path, required=True, help="the data stage's artefact folder")
    parser.add_argument("--task", choices=("t2i", "i2t"), default="t2i")
    parser.add_argument("--prompts", type=int, default=128)
    add_split_option(parser)
    parser.add_argument("--variant", action="append", default=[], help="maskgit options as a YAML flow mapping")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="maskgit_sampler_sweep")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    tokenizers = load_saved_tokenizers(args.tokenizers, registry)
    model = load_trained_model(args.model, registry).eval()
    task = build_task(args.task, registry)
    records = read_records(args.data, args.split, limit=args.prompts)
    prompts = task_prompts(task, records, tokenizers)
    metric = ShapesAccuracy()
    rows = []
    for text in ["{}", *args.variant]:
        config = variant_config(text)
        pipeline = GenerationPipeline(model=model, tokenizers=tokenizers, sampler=MaskGitSampler.from_config(config))
        started = time.perf_counter()
        generations = pipeline.run(task, prompts, seed=args.seed, batch_size=64)
        seconds = time.perf_counter() - started
        prefix = f"{args.task}/"
        scores = {k.removeprefix(prefix): v for k, v in metric.compute(generations).items() if k.startswith(prefix)}
        rows.append({"variant": text, "options": to_data(config), "seconds": seconds, **scores})
        print(text, {k: round(scores[k], 3) for k in SHOWN if k in scores}, f"{seconds:.0f} s", flush=True)
    result = {
        "benchmark": "maskgit_sampler_sweep",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.name}_{args.task}_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2))
    shown = [k for k in SHOWN if k in rows[0]]
    lines = [
        f"maskgit sampler sweep, {args.task}, model `{args.model}`, {args.prompts} {args.split} prompts,"
        f" one candidate, seed {args.seed}, {args.threads} threads",
        "",
        "| variant | " + " | ".join(shown) + " | seconds |",
        "|---|" + "---|" * len(shown) + "---|",
    ]
    for row in rows:
        label = "defaults (baseline)" if row["variant"] == "{}" else f"`{row['variant']}`"
        lines.append(f"| {label} | " + " | ".join(f"{row[k]:.3f}" for k in shown) + f" | {row['seconds']:.0f} |")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
