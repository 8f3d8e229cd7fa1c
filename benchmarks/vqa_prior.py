"""VQA accuracy without looking at the image: each question type's most frequent train answer.

    python benchmarks/vqa_prior.py [--split test] [--out benchmarks/results]

The floor a VQA model has to beat (docs/results/finetune.md, "VQA"): the
`shapes_vqa` data of recipes/finetune_vqa.yaml (its `data` stage's options),
every question of `split` answered with its question type's most frequent
answer among the train questions, scored by the `vqa_accuracy` metric's
question accuracy; per question type, per answer type and overall.
Writes vqa_prior.json and vqa_prior.md to `--out` when given.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "finetune_vqa.yaml"


def dataset_options() -> dict:
    import yaml

    options = dict(yaml.safe_load(RECIPE.read_text())["stages"]["data"]["dataset"])
    options.pop("use")
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from mmgen.plugins.datasets.shapes_vqa.dataset import ShapesVqaDataset
    from mmgen.plugins.metrics.vqa_accuracy import question_accuracy

    dataset = ShapesVqaDataset.from_config(ShapesVqaDataset.Config(**dataset_options()))
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in dataset.records("train"):
        counts[record.meta["question_type"]][record.meta["answer"]] += 1
    prior = {kind: found.most_common(1)[0][0] for kind, found in counts.items()}

    scores: dict[str, list[float]] = defaultdict(list)
    for record in dataset.records(args.split):
        meta = record.meta
        accuracy = question_accuracy(prior[meta["question_type"]], meta["answers"])
        for key in ("overall", f"question_type/{meta['question_type']}", f"answer_type/{meta['answer_type']}"):
            scores[key].append(accuracy)
    results = {key: sum(values) / len(values) for key, values in sorted(scores.items())}
    results["n"] = len(scores["overall"])
    lines = [
        f"VQA accuracy of the per-type prior on shapes_vqa {args.split} ({results['n']} questions;"
        f" `python benchmarks/vqa_prior.py --split {args.split}`)",
        "",
        "| what | prior answer | accuracy |",
        "|---|---|---|",
    ]
    for key, value in results.items():
        if key != "n":
            kind = key.split("/", 1)[-1]
            lines.append(f"| {key} | {prior.get(kind, '')} | {value:.3f} |")
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "vqa_prior.json").write_text(json.dumps({"prior": prior, "accuracy": results}, indent=2) + "\n")
        (args.out / "vqa_prior.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
