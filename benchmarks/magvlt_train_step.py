"""MAGVLT training-step throughput on CPU: steps/s of the `shapes` preset at batch 64.

Times one optimizer step (objectives' forwards, backward, AdamW) per task and
weights the times by p_tau (T2I : I2T : IT2IT = 8 : 1 : 1), so a variant's
steps/s is what a long run averages. Baseline in the same process: mask
prediction alone. Variants: the paper's four objectives, the same with
UnrollMask and MixSel on a quarter of the batch, and narrower widths. Rounds
interleave the variants, and medians are reported, because the machine is shared.

Synthetic tokens shaped like the Shapes quickstart: an 8x8 grid of 512 image
codes and captions of up to 16 tokens from 128.

    python benchmarks/magvlt_train_step.py --threads 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mmgen.atomic import atomic_write_text
from mmgen.batch import Segment, TokenBatch
from mmgen.objectives.mask import MaskPrediction
from mmgen.objectives.mixsel import MixSel
from mmgen.objectives.target_length import TargetLength
from mmgen.objectives.tasks import TaskDraw, paper_tasks
from mmgen.objectives.training_loss import TrainingLoss
from mmgen.objectives.unroll_mask import UnrollMask
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.token_space import JointTokenSpace, TokenSpace


def synthetic_batch(batch_size: int, *, image_vocab: int, text_vocab: int, text_length: int) -> TokenBatch:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, image_vocab, (batch_size, 64), generator=g)
    lengths = torch.randint(text_length // 2, text_length + 1, (batch_size,), generator=g)
    words = torch.randint(1, text_vocab, (batch_size, text_length), generator=g)
    captions = torch.where(torch.arange(text_length)[None] < lengths[:, None] - 1, words, 0)
    return TokenBatch(
        segments=(Segment.full("image", images), Segment(modality="text", tokens=captions, lengths=lengths))
    )


def objectives(space: JointTokenSpace, which: str) -> list:
    mask = MaskPrediction(token_space=space)
    if which == "mask":
        return [mask]
    fraction = 0.25 if which == "paper-quarter" else 1.0
    return [
        mask,
        TargetLength(token_space=space),
        UnrollMask(token_space=space, fraction=fraction),
        MixSel(token_space=space, separators={"text": (1,)}, fraction=fraction),
    ]


class Variant:
    def __init__(self, label: str, space: JointTokenSpace, *, width: int, which: str) -> None:
        self.label = label
        torch.manual_seed(0)
        self.model = MagvltModel.from_config(MagvltModel.Config(preset="shapes", width=width), token_space=space)
        built = objectives(space, which)
        # One loss per task (a one-task p_tau); the benchmark weights the tasks by p_tau itself.
        self.losses = {
            name: TrainingLoss(built, TaskDraw({name: task}, seed=0)) for name, task in paper_tasks().items()
        }
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.seconds: dict[str, list[float]] = {}

    def step(self, batch: TokenBatch, task_name: str, generator: torch.Generator) -> float:
        start = time.perf_counter()
        out = self.losses[task_name](self.model, batch, 0, generator)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = TokenSpace(name="image", vocab_size=512, shape=(8, 8))
    text = TokenSpace(name="text", vocab_size=128, shape=(16,), variable_length=True, pad_id=0, eos_id=0)
    space = JointTokenSpace(spaces=(image, text), extra_specials=MixSel.extra_specials)
    batch = synthetic_batch(args.batch_size, image_vocab=512, text_vocab=128, text_length=16)
    variants = [
        Variant("mask only, d=256 (baseline)", space, width=256, which="mask"),
        Variant("paper objectives, d=256", space, width=256, which="paper"),
        Variant("paper objectives, UM+MS on 1/4 of the batch, d=256", space, width=256, which="paper-quarter"),
        Variant("paper objectives, UM+MS on 1/4 of the batch, d=192", space, width=192, which="paper-quarter"),
        Variant("paper objectives, UM+MS on 1/4 of the batch, d=128", space, width=128, which="paper-quarter"),
    ]
    weights = {name: t.weight for name, t in paper_tasks().items()}
    generator = torch.Generator().manual_seed(0)
    for variant in variants:  # warm-up: allocator, kernels
        for task in weights:
            variant.step(batch, task, generator)
    for _ in range(args.rounds):
        for variant in variants:
            for task in weights:
                variant.seconds.setdefault(task, []).append(variant.step(batch, task, generator))
    total = sum(weights.values())
    rows = []
    for variant in variants:
        per_task = {task: statistics.median(times) for task, times in variant.seconds.items()}
        seconds = sum(weights[t] / total * s for t, s in per_task.items())
        rows.append(
            {
                "variant": variant.label,
                "parameters": variant.parameters,
                "seconds_per_step": seconds,
                "steps_per_s": 1.0 / seconds,
                "seconds_by_task": per_task,
            }
        )
    base = rows[0]["steps_per_s"]
    for row in rows:
        row["vs_baseline"] = row["steps_per_s"] / base
    result = {
        "benchmark": "magvlt_train_step",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_at_end": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"magvlt_train_step_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2))
    lines = [
        f"MAGVLT train step, batch {args.batch_size}, {args.threads} thread(s),"
        f" load average {result['load_average_at_end'][0]:.1f}",
        "",
        "| variant | parameters | s/step | steps/s | vs baseline | T2I s | I2T s | IT2IT s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t = row["seconds_by_task"]
        lines.append(
            f"| {row['variant']} | {row['parameters']:,} | {row['seconds_per_step']:.2f} | {row['steps_per_s']:.3f} |"
            f" {row['vs_baseline']:.2f}x | {t['t2i']:.2f} | {t['i2t']:.2f} | {t['it2it']:.2f} |"
        )
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
