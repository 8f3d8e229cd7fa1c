"""The shipped Shapes models under each CPU kernel path: codes and one-sample accuracies, side by side.

Runs this script's measurement once per setting in a subprocess (torch reads ATEN_CPU_CAPABILITY and
MKL reads MKL_CBWR when they load), on the 64 test scenes tests/test_shipped_checkpoints.py uses, with
recipes/shapes.yaml's sampler, one sample and seed 0; reports how many image codes differ from the
first setting's and the Shapes oracle's accuracies.
docs/results/tokenizer.md, "Twin codes: merged into their lowest id".

    python benchmarks/shipped_checkpoints_kernels.py [--without-merging]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2"}, "default": {"ATEN_CPU_CAPABILITY": "default"},
            "mkl_compatible": {"MKL_CBWR": "COMPATIBLE"}}  # fmt: skip
SCENES = 64
KEPT = ("accuracy", "objects_1", "objects_2", "colour", "shape")


def measure(*, merge: bool) -> dict:
    """Codes and accuracies in this process (called in the subprocess of each setting)."""
    import torch

    if not merge:  # the counterfactual: every twin reported as itself, as before twins were merged
        from mmgen.tokenizers.vqgan.quantizer import VectorQuantizer

        VectorQuantizer.merge_twins = lambda self, **_: 0

    from mmgen.generation.pipeline import GenerationPipeline
    from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
    from mmgen.plugins.datasets.shapes.metric import ShapesAccuracy
    from mmgen.plugins.stages.generate import example
    from mmgen.recipe import load_recipe
    from mmgen.registry import load_registry
    from mmgen.stage import StageInputs
    from mmgen.stage_folder import newest_finished, newest_model, read_done

    registry = load_registry()
    checkpoints = ROOT / "checkpoints" / "shapes"
    folders = {
        "train": newest_model(checkpoints, registry=registry),
        "tokenizers": newest_finished(checkpoints, "tokenizers"),
    }
    inputs = StageInputs(folders, uses={k: read_done(f)["use"] for k, f in folders.items()}, registry=registry)
    model, tokenizers = inputs.load("train"), inputs.load("tokenizers")
    dataset = ShapesDataset(size=64, max_objects=2, object_order="reading", counts={"test": SCENES}, seed=0)
    records = list(dataset.records("test"))
    images = torch.stack([tokenizers["image"].load_item(r.data) for r in records])
    codes = tokenizers["image"].encode(images).tokens.flatten().tolist()
    generate = load_recipe(ROOT / "recipes" / "shapes.yaml", registry=registry).stages[-2].spec.config
    pipeline = GenerationPipeline(model=model, tokenizers=tokenizers, sampler=registry.build(generate.sampler))
    examples = [example(r, tokenizers, caption_modality="text") for r in records]
    accuracies = {}
    for name in ("t2i", "i2t"):
        from mmgen.config import structure_spec

        task = registry.build(structure_spec("tasks", name, path="task", registry=registry))
        made = pipeline.run(task, task.prompts(examples), seed=0, batch_size=SCENES)
        found = ShapesAccuracy().compute(made)
        accuracies[name] = {k: round(found[f"{name}/{k}"], 3) for k in KEPT if f"{name}/{k}" in found}
    return {"codes": codes, "accuracies": accuracies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--without-merging", action="store_true", help="report twins as themselves (as before)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(merge=not args.without_merging)))
        return
    first = None
    print("| setting | codes differing from native | T2I all / one-object / two-object | I2T all / colour / shape |")
    print("|---|---|---|---|")
    for name, env in SETTINGS.items():
        out = subprocess.run(
            [sys.executable, __file__, "--measure", *(["--without-merging"] if args.without_merging else [])],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(out.stdout.strip().splitlines()[-1])
        first = first or found["codes"]
        differ = sum(a != b for a, b in zip(first, found["codes"]))
        t2i, i2t = found["accuracies"]["t2i"], found["accuracies"]["i2t"]
        print(
            f"| {name} | {differ} of {len(first)} | {t2i['accuracy']:.2f} / {t2i['objects_1']:.2f} / {t2i['objects_2']:.2f}"
            f" | {i2t['accuracy']:.2f} / {i2t['colour']:.2f} / {i2t['shape']:.2f} |"
        )


if __name__ == "__main__":
    main()
