"""MAGVLT quality on Shapes against training time: T2I and I2T accuracy by the Shapes oracles.

Runs a recipe's stages up to the token cache (reusing finished artefacts, so
the data and tokenizers are those the recipe itself makes), then trains the
recipe's `train` stage in this process and, every `--eval-every` updates,
generates T2I and I2T for the first `--prompts` records of the held-out `--split`
(val by default: settings are tuned on val, the final evaluation reads test)
with the default maskgit sampler (one candidate, no reranking) and
judges them with the `shapes_accuracy` metric. With `--guidance W` the T2I
prompts are also generated with guidance scale W (`t2i_guided/...`).
Evaluation time is excluded from the training time; the load average is
recorded with every point.

    python benchmarks/magvlt_shapes_quality.py recipes/quickstart.yaml --threads 2 --eval-every 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from conditioning_probe import conditioning_probe
from generation_run import add_split_option, read_records, task_prompts

from mmgen.atomic import atomic_write_text
from mmgen.config import structure_spec, to_data
from mmgen.generation.pipeline import GenerationPipeline
from mmgen.guidance import GuidanceOptions
from mmgen.plugins.datasets.cache_stage import TokenCache
from mmgen.plugins.datasets.shapes.metric import ShapesAccuracy
from mmgen.plugins.stages.train_model import TRAIN_SPLIT, training_from_config
from mmgen.plugins.tasks.builtin import ImageToText, TextToImage
from mmgen.recipe import apply_overrides, read_yaml, structure_recipe
from mmgen.registry import load_registry
from mmgen.runner import run_recipe
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler
from mmgen.tokenizers.saved import load_saved_tokenizers
from mmgen.trainer import Trainer

UPSTREAM_STAGES = ("data", "tokenizers", "cache")
REPORTED = ("t2i/accuracy", "t2i/objects_1", "t2i/objects_2", "i2t/accuracy", "i2t/objects_1", "i2t/objects_2")
GUIDED = ("t2i_guided/accuracy", "t2i_guided/objects_1", "t2i_guided/objects_2", "t2i_guided/colour", "t2i_guided/cell")
PROBE = ("probe/ce_rare", "probe/ce_rare_shuffled", "probe/gap", "probe/rare_recall", "probe/rare_precision")
# Per-check shares, printed too: they move long before whole generations are right.
CHECKS = ("probe/gap", "probe/rare_recall", "probe/rare_precision", "t2i/count", "t2i/colour", "t2i/shape", "t2i/size", "t2i/cell", "i2t/parsed", "i2t/colour", "i2t/cell")


def prepare(recipe_path: Path, overrides: list[str], registry) -> tuple[dict[str, Path], dict]:
    """Run (or reuse) the recipe's data, tokenizers and cache stages; returns their folders and the recipe data."""
    data = apply_overrides(read_yaml(recipe_path), overrides)
    upstream = {**data, "tracker": {"use": "none"}, "stages": {k: data["stages"][k] for k in UPSTREAM_STAGES}}
    results = run_recipe(structure_recipe(upstream, registry=registry, source=recipe_path), registry=registry)
    return {r.key: r.out_dir for r in results}, data


class Evaluation:
    """T2I and I2T on fixed held-out prompts, judged by the Shapes oracles."""

    def __init__(
        self,
        *,
        folders: dict[str, Path],
        tokenizers,
        model,
        registry,
        prompts: int,
        seed: int,
        split: str,
        guidance: float = 0.0,
        sampler_options: dict | None = None,
    ) -> None:
        records = read_records(folders["data"], split, limit=prompts)
        # The same held-out pairs, as cached tokens, for the teacher-forced probe.
        held = TokenCache(folders["cache"]).split(split, seed=seed, tokenizers=tokenizers)
        self.probe_batch = held.collate(held.__getitems__(list(range(min(prompts, len(held))))))
        self.tasks = {"t2i": TextToImage(), "i2t": ImageToText()}
        self.prompts = {name: task_prompts(task, records, tokenizers) for name, task in self.tasks.items()}
        self.tokenizers = tokenizers
        # The model's default sampler (maskgit), with its defaults unless --sampler names options.
        name = getattr(model, "default_sampler", "maskgit")
        spec = structure_spec("samplers", {"use": name, **(sampler_options or {})}, path="--sampler", registry=registry)
        self.sampler = registry.build(spec)
        self.guided = MaskGitSampler(fixed=FixedLengthOptions(guidance=GuidanceOptions(scale=guidance))) if guidance else None
        self.metric = ShapesAccuracy()
        self.seed = seed

    def __call__(self, model) -> dict[str, float]:
        pipeline = GenerationPipeline(model=model, tokenizers=self.tokenizers, sampler=self.sampler, show_progress=False)
        generations = []
        for name, task in self.tasks.items():
            generations += pipeline.run(task, self.prompts[name], seed=self.seed, batch_size=64)
        for generation in [g for g in generations if g.task == "i2t"][:3]:
            print(f"  i2t {generation.key}: {generation.outputs['text']!r}", flush=True)
        metrics = {**self.metric.compute(generations), **conditioning_probe(model, self.probe_batch)}
        if self.guided is not None:
            guided = GenerationPipeline(model=model, tokenizers=self.tokenizers, sampler=self.guided, show_progress=False)
            t2i = self.metric.compute(guided.run(self.tasks["t2i"], self.prompts["t2i"], seed=self.seed, batch_size=64))
            metrics.update({k.replace("t2i/", "t2i_guided/", 1): v for k, v in t2i.items() if k.startswith("t2i/")})
        return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=128, help="held-out records per task")
    add_split_option(parser)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None, help="default: magvlt_shapes_quality_<recipe name>")
    parser.add_argument(
        "--sampler", default="{}", help="options of the model's default sampler, a YAML mapping: '{variable: {temperature: 0.5}}'"
    )
    parser.add_argument("--guidance", type=float, default=0.0, help="also T2I with this guidance scale (0: no)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()

    folders, data = prepare(args.recipe, args.overrides, registry)
    recipe = structure_recipe({**data, "tracker": {"use": "none"}}, registry=registry, source=args.recipe)
    train_spec = next(entry.spec for entry in recipe.stages if entry.key == "train")
    config = train_spec.config
    tokenizers = load_saved_tokenizers(folders["tokenizers"], registry)
    dataset = TokenCache(folders["cache"]).split(
        TRAIN_SPLIT,
        seed=config.trainer.run_seed,
        tokenizers=tokenizers,
        caption_weights=config.caption_weights,
    )
    training = training_from_config(config, registry=registry, tokenizers=tokenizers)
    evaluate = Evaluation(
        folders=folders,
        tokenizers=tokenizers,
        model=training.model,
        registry=registry,
        prompts=args.prompts,
        seed=recipe.header.seed,
        split=args.split,
        guidance=args.guidance,
        sampler_options=yaml.safe_load(args.sampler) or {},
    )
    name = args.name or f"magvlt_shapes_quality_{recipe.name}"
    work = args.out / f"{name}_work"
    if work.exists():
        import shutil

        shutil.rmtree(work)  # a fresh run, not a resume
    trainer = Trainer(config.trainer, out_dir=work, tracker=None)
    started = time.perf_counter()
    evaluating = 0.0
    curve = []

    def on_eval(module, step: int) -> None:
        nonlocal evaluating
        begun = time.perf_counter()
        train_seconds = begun - started - evaluating
        metrics = evaluate(module)
        evaluating += time.perf_counter() - begun
        point = {
            "step": step,
            "train_seconds": train_seconds,
            **metrics,
            "load_average": os.getloadavg()[0],
        }
        curve.append(point)
        shown_keys = (*REPORTED, *CHECKS, *(GUIDED if args.guidance else ()))
        shown = "  ".join(f"{key} {metrics.get(key, float('nan')):.2f}" for key in shown_keys)
        print(f"step {step:5d}  {point['train_seconds']:7.1f}s  {shown}  load {point['load_average']:.1f}", flush=True)

    stream = trainer.make_stream(dataset, collate=dataset.collate)
    trainer.fit(training.model, loss_fn=training.loss, stream=stream, sample_fn=on_eval, sample_every=args.eval_every)
    result = {
        "benchmark": "magvlt_shapes_quality",
        "recipe": str(args.recipe),
        "overrides": args.overrides,
        "train": to_data(config),
        "threads": args.threads,
        "prompts": args.prompts,
        "guidance": args.guidance,
        "sampler": args.sampler,
        "parameters": sum(p.numel() for p in training.model.parameters()),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "curve": curve,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{name}_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2, default=str))
    lines = [
        f"MAGVLT from `{args.recipe}` {' '.join(args.overrides)}: {result['parameters']:,} parameters, {args.threads} thread(s);"
        f" accuracy by the Shapes oracles on {args.prompts} held-out {args.split} prompts per task, sampler options {args.sampler},"
        " one candidate",
        "",
        "| step | train s | " + " | ".join(REPORTED) + " | load avg |",
        "|---|---|" + "---|" * len(REPORTED) + "---|",
    ]
    for p in curve:
        cells = " | ".join(f"{p.get(key, float('nan')):.3f}" for key in REPORTED)
        lines.append(f"| {p['step']} | {p['train_seconds']:.0f} | {cells} | {p['load_average']:.1f} |")
    lines += ["", "Teacher-forced probe (benchmarks/conditioning_probe.py), same prompts:", ""]
    lines += ["| step | " + " | ".join(PROBE) + " |", "|---|" + "---|" * len(PROBE)]
    for p in curve:
        lines.append(f"| {p['step']} | " + " | ".join(f"{p.get(key, float('nan')):.3f}" for key in PROBE) + " |")
    if args.guidance:
        lines += ["", f"T2I with guidance scale {args.guidance}, same prompts, one candidate:", ""]
        lines += ["| step | " + " | ".join(GUIDED) + " |", "|---|" + "---|" * len(GUIDED)]
        for p in curve:
            lines.append(f"| {p['step']} | " + " | ".join(f"{p.get(key, float('nan')):.3f}" for key in GUIDED) + " |")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
