"""Which of K sampled captions is right, and who finds it: CLIP, the model's own T2I direction, refinement.

On the first `--prompts` images of a Shapes run's `--split` (val by default: settings
are tuned on val, the final evaluation reads test), the recipe's sampler
draws K captions per image (one sampling pass, seed 0). Then, on those same
candidates, in one process:

- any@K: the share of images with at least one right caption among the K
  (the most any reranker can reach);
- `clip`: CLIP's pick (MAGVLT's reranker);
- `cycle, N pass(es)`: the pick by log p(image | caption) under the model
  itself (plugins/rerankers/cycle.py), the image masked whole (1 pass)
  or as two checkerboard halves (2 passes);
- refinement (plugins/refiners/caption_refine.py) of the cycle pick, for the
  settings in REFINEMENTS: one-word moves only or also word pairs, one or two
  passes, the recipe's earlier and current settings among them.

Right = the Shapes I2T oracle (parsed, nothing false, every object named),
split by object count. Writes JSON and Markdown to benchmarks/results/.

    python benchmarks/i2t_cycle_rerank.py --recipe recipes/shapes.yaml --candidates 32 \\
        --data runs/artefacts/data-<hash> --tokenizers runs/artefacts/tokenizers-<hash> \\
        --train runs/artefacts/train-<hash> --clip runs/artefacts/clip-<hash>
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import ClassVar, Mapping

import torch

from generation_run import add_split_option, read_records, stage_folder, task_prompts

from mmgen.atomic import atomic_write_text
from mmgen.batch import Segment
from mmgen.config import structure_spec
from mmgen.generation.pipeline import GenerationPipeline, best_in_groups
from mmgen.plugins.clip.model import load_clip
from mmgen.plugins.clip.reranker import ClipReranker
from mmgen.plugins.datasets.shapes.accuracy import i2t_correct
from mmgen.plugins.models.saved import load_trained_model
from mmgen.plugins.refiners.caption_refine import CaptionRefiner
from mmgen.plugins.refiners.refine_config import RefineConfig
from mmgen.plugins.rerankers.cycle import CycleReranker
from mmgen.plugins.tasks.builtin import ImageToText
from mmgen.plugins.tasks.text_cleanup import clean_caption
from mmgen.recipe import read_yaml
from mmgen.registry import load_registry
from mmgen.tokenizers.saved import load_saved_tokenizers


class Recorder:
    """A reranker that keeps every candidate it is shown (and picks the first: all score the same)."""

    name: ClassVar[str] = "recorder"
    modalities = ("image", "text")

    def __init__(self) -> None:
        self.images: list[Segment] = []
        self.texts: list[Segment] = []

    def scores(self, segments: Mapping[str, Segment]) -> torch.Tensor:
        image, text = (segments[m] for m in self.modalities)
        self.images.append(image)
        self.texts.append(text)
        return torch.zeros(image.batch_size, device=image.tokens.device)  # best_in_groups keeps the first on ties


# name: refinement options, `passes` naming the cycle score (and so the cycle pick) it climbs
REFINEMENTS = {
    "1 pass, one-word moves, 2 sweeps (shapes.yaml before)": RefineConfig(passes=1, sweeps=2, pair_distances=()),
    "1 pass, words and word pairs, <= 4 sweeps": RefineConfig(passes=1),
    "2 passes, one-word moves, <= 4 sweeps": RefineConfig(passes=2, pair_distances=()),
    "2 passes, words and word pairs, <= 4 sweeps": RefineConfig(passes=2),
}


def cycle_name(passes: int) -> str:
    return f"cycle, {passes} pass" + ("es" if passes > 1 else "")


def joined(segments: list[Segment]) -> Segment:
    return Segment(
        modality=segments[0].modality,
        tokens=torch.cat([s.tokens for s in segments]),
        lengths=torch.cat([s.lengths for s in segments]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs"), help="a workdir with finished stage folders")
    for name in ("data", "tokenizers", "train", "clip"):
        parser.add_argument(f"--{name}", type=Path, default=None, help=f"the {name} stage folder (default: in --run)")
    parser.add_argument("--recipe", type=Path, default=Path("recipes/shapes.yaml"), help="whose sampler to use")
    parser.add_argument("--prompts", type=int, default=128)
    add_split_option(parser)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="i2t_cycle_rerank")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    names = ("data", "tokenizers", "train", "clip")
    stage = {name: stage_folder(getattr(args, name), args.run, name) for name in names}
    tokenizers = load_saved_tokenizers(stage["tokenizers"], registry)
    model = load_trained_model(stage["train"], registry)
    sampler_data = read_yaml(args.recipe)["stages"]["generate"]["sampler"]
    sampler = registry.build(structure_spec("samplers", sampler_data, path="sampler", registry=registry))
    recorder = Recorder()
    pipeline = GenerationPipeline(model=model, tokenizers=tokenizers, sampler=sampler)
    task = ImageToText()
    records = read_records(stage["data"], args.split, limit=args.prompts)
    prompts = task_prompts(task, records, tokenizers)
    start = time.perf_counter()
    pipeline.run(task, prompts, candidates=args.candidates, reranker=recorder, seed=0, batch_size=64)
    seconds = {"sample": time.perf_counter() - start}
    image, text = joined(recorder.images), joined(recorder.texts)
    references = [p.reference for p in prompts]
    two = torch.tensor([len(r["objects"]) == 2 for r in references])

    def right(captions: Segment, rows_per_image: int) -> torch.Tensor:
        texts = [clean_caption(t) for t in tokenizers["text"].decode(captions)]
        refs = [r for r in references for _ in range(rows_per_image)]
        return torch.tensor([bool(i2t_correct(t, r).correct) for t, r in zip(texts, refs)]).view(-1, rows_per_image)

    def shares(ok: torch.Tensor) -> dict[str, float]:
        parts = {"all": ok, "one": ok[~two], "two": ok[two]}
        return {name: float(part.float().mean()) for name, part in parts.items()}

    candidates_right = right(text, args.candidates)
    rows: dict[str, dict[str, float]] = {f"any@{args.candidates}": shares(candidates_right.any(1))}
    rerankers = {
        "clip": ClipReranker(load_clip(stage["clip"])),
        cycle_name(1): CycleReranker(model, passes=1),
        cycle_name(2): CycleReranker(model, passes=2),
    }
    picks = {}
    for name, reranker in rerankers.items():
        start = time.perf_counter()
        picks[name] = best_in_groups(reranker.pair_scores(image, text), candidates=args.candidates)
        seconds[name] = time.perf_counter() - start
        rows[name] = shares(right(text.select(picks[name]), 1)[:, 0])
    for name, config in REFINEMENTS.items():
        pick = picks[cycle_name(config.passes)]
        refiner = CaptionRefiner(model, config=config, scorer=rerankers[cycle_name(config.passes)])
        start = time.perf_counter()
        refined = refiner.refine_captions(image.select(pick), text.select(pick))
        seconds[name] = time.perf_counter() - start
        rows[name] = shares(right(refined, 1)[:, 0])
    result = {
        "run": {k: str(v) for k, v in stage.items()},
        "prompts": len(prompts),
        "two_object_prompts": int(two.sum()),
        "candidates": args.candidates,
        "threads": args.threads,
        "rows": rows,
        "seconds": seconds,
        "load_average": os.getloadavg()[0],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.name}_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2))
    lines = [
        f"I2T on {len(prompts)} {args.split} images ({int(two.sum())} with two objects),"
        f" {args.candidates} sampled captions each; model `{stage['train']}`",
        "",
        "| pick (refinement: of the cycle pick with the same passes; seconds after it) "
        "| all-correct | one-object | two-object | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, share in rows.items():
        spent = f"{seconds[name]:.0f}" if name in seconds else f"{seconds['sample']:.0f} (sampling)"
        lines.append(f"| {name} | {share['all']:.2f} | {share['one']:.2f} | {share['two']:.2f} | {spent} |")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
