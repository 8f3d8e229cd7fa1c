"""Which caption words can a trained MAGVLT read from an image, and which can the VQ codes tell at all?

Two measurements on Shapes, for finding what holds I2T back:

1. Teacher-forced I2T on held-out pairs of `--split` (val by default; `full` captions) with the whole
   caption masked, the sampler's first step: for each attribute word (shape,
   colour, size and cell words), how often the model's top piece at that
   position is the true one, with the true image and with each image swapped
   for the next row's (`shuffled`: what the model guesses without looking).
   One-object captions only, so each caption is the one right answer. Also
   the confusion of the shape words.
2. With `--readability`: how well the shape of one-object images can be read
   from their VQ codes alone, by a linear classifier on the bag of codes
   (code counts, no positions) and by two 3x3 convolutions over the 8x8 code
   grid (codes embedded by the tokenizer's code vectors), each trained on
   `--train-images` training images and scored on the held-out images.

    python benchmarks/i2t_word_probe.py --model runs/artefacts/train-<hash> \\
        --tokenizers runs/artefacts/tokenizers-<hash> --cache runs/artefacts/cache-<hash> --readability
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F

from generation_run import add_split_option
from mmgen.atomic import atomic_write_text
from mmgen.batch import TokenBatch
from mmgen.layout import pack
from mmgen.objectives.task_layout import task_items
from mmgen.plugins.datasets.shapes.spec import CELLS, PALETTE, SHAPES, SIZES
from mmgen.plugins.datasets.token_cache import TokenCacheDataset
from mmgen.plugins.models.saved import load_trained_model
from mmgen.registry import load_registry
from mmgen.task import Task
from mmgen.tokenizers.saved import load_saved_tokenizers

FULL_ONLY = [1, 0, 0, 0, 0]  # each Shapes record's first caption: the `full` template
WORDS = {
    "shape": set(SHAPES),
    "colour": set(PALETTE),
    "size": set(SIZES),
    "cell": {word for cell in CELLS for word in cell.split()},
}


def one_object(batch: TokenBatch, texts: list[str]) -> TokenBatch:
    keep = torch.tensor([" and " not in text for text in texts])
    return TokenBatch(segments=[s.select(keep.nonzero().flatten()) for s in batch.segments])


@torch.no_grad()
def caption_logits(model, batch: TokenBatch) -> torch.Tensor:
    """[B, L, V] at every caption position, the whole caption masked, the image shown."""
    task = Task(name="i2t", context=("image",), target=("text",))
    text = batch.modality("text")
    segments = {"image": batch.modality("image"), "text": text}
    packed = pack(model.token_space, task_items(model.token_space, task, segments, masks={"text": text.valid()}))
    span = packed.span("text")
    return model.logits(model(packed)[:, span.start : span.stop], "text")


def word_accuracy(model, batch: TokenBatch, *, piece) -> dict:
    text = batch.modality("text")
    image = batch.modality("image")
    shuffled = TokenBatch(segments=[attrs.evolve(image, tokens=image.tokens.roll(1, 0)), text])
    predicted = {"true": caption_logits(model, batch).argmax(-1), "shuffled": caption_logits(model, shuffled).argmax(-1)}
    right, total = collections.Counter(), collections.Counter()
    confusion = collections.Counter()
    for row in range(text.batch_size):
        for position in range(int(text.lengths[row])):
            word = piece(int(text.tokens[row, position]))
            kind = next((k for k, words in WORDS.items() if word in words), None)
            if kind is None:
                continue
            total[kind] += 1
            for name, tokens in predicted.items():
                right[(kind, name)] += int(tokens[row, position]) == int(text.tokens[row, position])
            if kind == "shape":
                confusion[(word, piece(int(predicted["true"][row, position])))] += 1
    result = {f"{kind}/{name}": right[(kind, name)] / total[kind] for kind in WORDS for name in predicted if total[kind]}
    result["words"] = dict(total)
    result["shape_confusion"] = {f"{a} -> {b}": n for (a, b), n in sorted(confusion.items())}
    return result


def shape_labels(texts: list[str]) -> torch.Tensor:
    return torch.tensor([next(i for i, s in enumerate(SHAPES) if s in text) for text in texts])


def readability(tokenizers, train: TokenBatch, train_texts, test: TokenBatch, test_texts, *, seed: int) -> dict:
    """Shape accuracy on test images from codes: bag of codes (linear) and code grid (two 3x3 convolutions)."""
    torch.manual_seed(seed)
    codes = tokenizers["image"].token_space.vocab_size
    grid = tuple(tokenizers["image"].token_space.shape)
    y_train, y_test = shape_labels(train_texts), shape_labels(test_texts)
    x_train, x_test = train.modality("image").tokens, test.modality("image").tokens

    def bag(tokens):
        return torch.stack([torch.bincount(row, minlength=codes).float() for row in tokens])

    linear = torch.nn.Linear(codes, len(SHAPES))
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(300):  # full batch: converges well before 300
        loss = F.cross_entropy(linear(bag(x_train)), y_train) + 1e-4 * linear.weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        bag_accuracy = float((linear(bag(x_test)).argmax(1) == y_test).float().mean())

    vectors = tokenizers["image"].code_vectors().float()
    embed = torch.nn.Embedding.from_pretrained(vectors, freeze=True)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(vectors.shape[1], 64, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, len(SHAPES)),
    )

    def run(tokens):
        return conv(embed(tokens.view(-1, *grid)).permute(0, 3, 1, 2))

    optimizer = torch.optim.Adam(conv.parameters(), lr=3e-3)
    for _ in range(400):
        rows = torch.randint(0, len(y_train), (256,))
        loss = F.cross_entropy(run(x_train[rows]), y_train[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        grid_accuracy = float((run(x_test).argmax(1) == y_test).float().mean())
    return {"readability/bag_of_codes_linear": bag_accuracy, "readability/code_grid_conv": grid_accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokenizers", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="a cache stage folder (<split>.lmdb, train.lmdb)")
    parser.add_argument("--records", type=int, default=512, help="held-out records read (one-object ones are kept)")
    add_split_option(parser)
    parser.add_argument("--readability", action="store_true")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="i2t_word_probe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    tokenizers = load_saved_tokenizers(args.tokenizers, registry)
    model = load_trained_model(args.model, registry)
    processor = tokenizers["text"]

    def piece(token: int) -> str:
        return processor.decode_ids([token]).strip()

    def read(split: str, count: int) -> tuple[TokenBatch, list[str]]:
        data = TokenCacheDataset(args.cache / f"{split}.lmdb", seed=0, tokenizers=tokenizers, caption_weights=FULL_ONLY)
        batch = data.collate(data.__getitems__(list(range(min(count, len(data))))))
        texts = processor.decode(batch.modality("text"))
        kept = one_object(batch, texts)
        return kept, [t for t in texts if " and " not in t]

    test, test_texts = read(args.split, args.records)
    result = {"model": str(args.model), "one_object_test_pairs": len(test_texts), **word_accuracy(model, test, piece=piece)}
    if args.readability:
        train, train_texts = read("train", args.train_images)
        result.update(readability(tokenizers, train, train_texts, test, test_texts, seed=0))
    result["load_average"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.name}_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2))
    lines = [
        f"I2T word probe, `{args.model}`: {len(test_texts)} one-object {args.split} pairs, whole caption masked",
        "",
        "| word | right, true image | right, shuffled image | words |",
        "|---|---|---|---|",
    ]
    for kind in WORDS:
        lines.append(
            f"| {kind} | {result[f'{kind}/true']:.2f} | {result[f'{kind}/shuffled']:.2f} | {result['words'][kind]} |"
        )
    if args.readability:
        lines += [
            "",
            f"Shape of one-object images from their codes ({len(train_texts)} training images):"
            f" bag of codes, linear {result['readability/bag_of_codes_linear']:.2f};"
            f" code grid, two 3x3 convolutions {result['readability/code_grid_conv']:.2f}",
        ]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(result["shape_confusion"]))


if __name__ == "__main__":
    main()
