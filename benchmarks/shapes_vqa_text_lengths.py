"""Token lengths of shapes_vqa texts under the text tokenizer, to choose its max_length (docs/vqa.md).

    python benchmarks/shapes_vqa_text_lengths.py [--images 1000]

Trains `sentencepiece_bpe` on the train texts of `images` images (3 questions each) for `max_objects` 2
and 3 and vocabularies of 128 and 256 pieces, and prints per case the mean and longest length (with EOS)
and the share over 24 tokens.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()

    from mmgen.plugins.datasets.shapes_vqa.dataset import ShapesVqaDataset
    from mmgen.tokenizers.sentencepiece_bpe import SentencePieceBPE

    for max_objects in (2, 3):
        config = ShapesVqaDataset.Config(size=32, max_objects=max_objects, train=args.images, val=0, test=0, holdout=0)
        texts = [r.captions[0] for r in ShapesVqaDataset.from_config(config).records("train")]
        for vocab_size in (128, 256):
            tokenizer = SentencePieceBPE(vocab_size=vocab_size, max_length=64)
            tokenizer.train(texts)
            lengths = [len(tokenizer.encode_ids(text)) + 1 for text in texts]
            over = sum(n > 24 for n in lengths) / len(lengths)
            print(
                f"max_objects {max_objects} vocab_size {vocab_size}: mean {sum(lengths) / len(lengths):.1f}, "
                f"longest {max(lengths)}, over 24 tokens {100 * over:.1f}%"
            )


if __name__ == "__main__":
    main()
