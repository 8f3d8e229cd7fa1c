"""Accuracy against training time, read back from a finished train stage's kept checkpoints.

`mmgen run` keeps the last `trainer.keep_last` checkpoints of its train stage
(`<train>/trainer/checkpoints/step-N.pt`, each verified against its sha256 when
loaded). This loads each one's EMA weights (or its raw weights when the run
had no EMA) into the stage's model, generates T2I and I2T from ONE sample for
the first `--prompts` records of the held-out `--split` (val by default: the
final evaluation alone reads test) with the recipe's generate-stage sampler
(or `--sampler`), and judges them with the Shapes oracles. Training seconds
per checkpoint come from the stage's training log (`--log`, the runner's
output: its periodic "step N/M" lines) when given, else from the checkpoint
files' times since the first checkpoint.

    python benchmarks/magvlt_checkpoint_curve.py recipes/shapes.yaml --workdir runs --log train.log
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from generation_run import add_split_option, read_records, stage_folder, task_prompts

from mmgen.atomic import atomic_write_text
from mmgen.checkpoint import load as load_checkpoint
from mmgen.config import structure_spec
from mmgen.generation.pipeline import GenerationPipeline
from mmgen.plugins.datasets.shapes.metric import ShapesAccuracy
from mmgen.plugins.tasks.builtin import ImageToText, TextToImage
from mmgen.plugins.stages.train_model import training_from_config
from mmgen.recipe import read_yaml, structure_recipe
from mmgen.registry import load_registry
from mmgen.tokenizers.saved import load_saved_tokenizers

COLUMNS = (
    "t2i/accuracy", "t2i/objects_1", "t2i/objects_2",
    "i2t/accuracy", "i2t/objects_1", "i2t/objects_2", "i2t/colour", "i2t/cell", "i2t/shape", "i2t/parsed",
)  # fmt: skip
STAMP = r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d+) "
TRAIN_START = re.compile(STAMP + r".*stage train: running in ")
NEXT_STAGE = re.compile(r"mmgen\.runner: stage (?!train:)\w+: running in ")  # ends the train stage's lines
TRAIN_STEP = re.compile(STAMP + r"INFO mmgen\.progress: train (?P<step>\d+)/\d+ step")


def checkpoint_steps(train_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(p.stem.split("-")[1]), p) for p in (train_dir / "trainer" / "checkpoints").glob("step-*.pt")]
    return sorted(found)


def seconds_from_log(log: Path) -> Callable[[int], float]:
    """Seconds of training at each step: from the train stage's start line and its progress lines (one every
    30 s off a terminal), interpolated between them. The last run of the train stage in the log counts."""
    points: list[tuple[int, float]] = []
    reading = False
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if NEXT_STAGE.search(line):
            reading = False
        start, step = TRAIN_START.search(line), TRAIN_STEP.search(line) if reading else None
        match = start or step
        if match is None:
            continue
        stamp = time.mktime(time.strptime(match["time"], "%Y-%m-%d %H:%M:%S")) + int(match["ms"]) / 1000
        if start:
            points, reading = [(0, stamp)], True
        else:
            points.append((int(step["step"]), stamp))
    if len(points) < 2:
        raise SystemExit(f"{log}: no train stage start and progress lines ('stage train: running in', 'train N/M step')")
    steps, stamps = zip(*points)
    return lambda at: float(np.interp(at, steps, stamps) - stamps[0])


def load_weights(model: torch.nn.Module, path: Path) -> str:
    """The checkpoint's EMA weights into `model` (its raw weights when it kept none); says which."""
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    if state.get("ema") is None:
        return "raw"
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state["ema"].items():
            params[name].copy_(tensor)
    return "ema"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="the recipe that made the run (its generate sampler is used)")
    parser.add_argument("--workdir", type=Path, default=Path("runs"))
    parser.add_argument("--train", type=Path, default=None, help="the train stage folder (default: the newest)")
    parser.add_argument("--log", type=Path, default=None, help="the run's log, for training seconds per step")
    parser.add_argument("--steps", type=int, nargs="*", default=None, help="only these checkpoints (default: all kept)")
    parser.add_argument("--prompts", type=int, default=128, help="held-out records per task")
    add_split_option(parser)
    parser.add_argument("--sampler", default=None, help="sampler spec as YAML (default: the recipe's generate sampler)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None, help="default: magvlt_checkpoint_curve_<recipe name>")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    recipe = read_yaml(args.recipe)

    folders = {key: stage_folder(None, args.workdir, key) for key in ("data", "tokenizers")}
    # The train stage may still be running: its model is built from the recipe, its weights read per checkpoint.
    folders["train"] = args.train or max((args.workdir / "artefacts").glob("train-*"), key=lambda p: p.stat().st_mtime)
    tokenizers = load_saved_tokenizers(folders["tokenizers"], registry)
    structured = structure_recipe({**recipe, "tracker": {"use": "none"}}, registry=registry, source=args.recipe)
    config = next(entry.spec for entry in structured.stages if entry.key == "train").config
    model = training_from_config(config, registry=registry, tokenizers=tokenizers).model
    sampler_data = yaml.safe_load(args.sampler) if args.sampler else recipe["stages"]["generate"].get("sampler", "maskgit")
    sampler = registry.build(structure_spec("samplers", sampler_data, path="sampler", registry=registry))
    records = read_records(folders["data"], args.split, limit=args.prompts)
    tasks = {"t2i": TextToImage(), "i2t": ImageToText()}
    prompts = {name: task_prompts(task, records, tokenizers) for name, task in tasks.items()}
    seconds = seconds_from_log(args.log) if args.log else None
    steps = [(step, path) for step, path in checkpoint_steps(folders["train"]) if not args.steps or step in args.steps]
    if not steps:
        raise SystemExit(f"no kept checkpoints under {folders['train'] / 'trainer' / 'checkpoints'}")
    first_mtime = steps[0][1].stat().st_mtime
    curve = []
    for step, path in steps:
        weights = load_weights(model, path)
        model.eval()
        pipeline = GenerationPipeline(model=model, tokenizers=tokenizers, sampler=sampler, show_progress=False)
        begun = time.perf_counter()
        generations = [g for name, task in tasks.items() for g in pipeline.run(task, prompts[name], seed=args.seed, batch_size=64)]
        metrics = ShapesAccuracy().compute(generations)
        train_seconds = seconds(step) if seconds else path.stat().st_mtime - first_mtime
        point = {"step": step, "weights": weights, "train_seconds": train_seconds, **metrics}
        point["eval_seconds"] = time.perf_counter() - begun
        curve.append(point)
        shown = "  ".join(f"{key} {metrics.get(key, float('nan')):.2f}" for key in COLUMNS)
        print(f"step {step:5d} ({weights})  {train_seconds:7.0f}s  {shown}", flush=True)

    result = {
        "benchmark": "magvlt_checkpoint_curve",
        "recipe": str(args.recipe),
        "train": folders["train"].name,
        "split": args.split,
        "prompts": args.prompts,
        "sampler": sampler_data,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "curve": curve,
    }
    name = args.name or f"magvlt_checkpoint_curve_{recipe['name']}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / name
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2, default=str))
    lines = [
        (
            f"MAGVLT checkpoints of `{folders['train'].name}` (recipe `{args.recipe}`): accuracy by the Shapes oracles"
            f" from one sample per prompt, {args.prompts} {args.split} records per task, sampler {json.dumps(sampler_data)}"
        ),
        "",
        "| step | weights | train s | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for p in curve:
        cells = " | ".join(f"{p.get(key, float('nan')):.3f}" for key in COLUMNS)
        lines.append(f"| {p['step']} | {p['weights']} | {p['train_seconds']:.0f} | {cells} |")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
