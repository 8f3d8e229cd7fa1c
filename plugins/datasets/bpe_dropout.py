"""BPE-dropout variants of the captions, made once when the token cache is built.

MAGVLT trains with BPE-dropout 0.1 (official configs/magvlt-it2it-base-sampling.yaml:
`bpe_pdrop: 0.1`): each time a caption is read, every BPE merge is skipped with
that chance, so the model sees many segmentations of the same text. The token
cache encodes once, so it stores `variants` dropped-merge encodings of every
caption of the train split next to the canonical one, and each training read
picks one of them (token_cache.py, `TokenCacheDataset`). Variant k of caption
row c of record i is BPE-dropped under a seed drawn from (seed, i, c, k) alone,
so the cache is the same whatever the batch size or machine.

A dropped-merge encoding is longer than the canonical one; a variant cut at
the tokenizer's `max_length` (it no longer decodes to the canonical row's text)
is replaced by the canonical row and counted (`replaced`).
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
import numpy as np

from mmgen.api import UserError, non_negative, probability

DROPOUT_SPLIT = "train"  # val and test stay canonical: evaluation reads the captions as a user would write them


@attrs.frozen(kw_only=True)
class BpeDropout:
    """The cache stage's `bpe_dropout` option: `variants` encodings per train caption, merges skipped at `rate`.

    `variants: 0` (or `rate: 0`) stores the canonical encoding only. `seed` picks which merges each
    variant skips (a cache-stage option, so it is part of the stage's hash).
    """

    rate: float = attrs.field(default=0.1, validator=probability)  # the paper's BPE-dropout
    variants: int = attrs.field(default=4, validator=non_negative)
    seed: int = attrs.field(default=0, validator=non_negative)

    @property
    def enabled(self) -> bool:
        return self.variants > 0 and self.rate > 0

    def describe(self) -> dict[str, Any]:
        """What the cache header and cache key record of these options."""
        return {"rate": self.rate, "variants": self.variants, "seed": self.seed}


@attrs.define
class VariantCounts:
    """How many variants a cache build made, differed from the canonical row, and were replaced by it."""

    rows: int = 0
    changed: int = 0
    replaced: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "changed": self.changed, "replaced": self.replaced}


def require_dropout(tokenizer: Any, modality: str) -> None:
    """Refuse, in one line, a caption tokenizer that cannot BPE-drop (no `encode_dropout`)."""
    if not callable(getattr(tokenizer, "encode_dropout", None)):
        name = getattr(tokenizer, "name", type(tokenizer).__name__)
        raise UserError(
            f"cache: bpe_dropout asks for BPE-dropout variants of the {modality!r} captions, but tokenizer"
            f" {name!r} has no encode_dropout(items, *, rate, seeds); set cache.bpe_dropout.variants: 0"
        )


def variant_seeds(seed: int, record: int, rows: int) -> list[int]:
    """One 32-bit seed per variant row of record `record` (rows = captions x variants), from (seed, record)."""
    return np.random.SeedSequence([seed, record]).generate_state(rows, np.uint32).tolist()


def encode_variants(
    records: Sequence[Any],
    first_index: int,
    *,
    tokenizer: Any,
    options: BpeDropout,
    dtype: np.dtype,
    counts: VariantCounts,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per record: its variant rows [captions x variants, L] (caption-major) as `dtype`, and their lengths.

    `first_index` is the store index of records[0]; `counts` is added to.
    """
    k = options.variants
    captions = [caption for record in records for caption in record.captions]
    seeds = []
    for offset, record in enumerate(records):
        seeds += variant_seeds(options.seed, first_index + offset, len(record.captions) * k)
    canonical = tokenizer.encode(captions)
    dropped = tokenizer.encode_dropout([c for c in captions for _ in range(k)], rate=options.rate, seeds=seeds)
    base_tokens = np.repeat(canonical.tokens.detach().cpu().numpy(), k, axis=0)
    base_lengths = np.repeat(canonical.lengths.detach().cpu().numpy(), k)
    tokens = dropped.tokens.detach().cpu().numpy().copy()
    lengths = dropped.lengths.detach().cpu().numpy().copy()
    if tokens.shape != base_tokens.shape:
        raise ValueError(f"encode_dropout gave rows of shape {tokens.shape[1:]}, encode {base_tokens.shape[1:]}")
    # A row that does not decode to the canonical row's text was cut at max_length.
    texts = np.repeat(np.array(tokenizer.decode(canonical), dtype=object), k)
    cut = np.array([got != want for got, want in zip(tokenizer.decode(dropped), texts)], dtype=bool)
    tokens[cut], lengths[cut] = base_tokens[cut], base_lengths[cut]
    counts.rows += len(tokens)
    counts.replaced += int(cut.sum())
    counts.changed += int(((tokens != base_tokens).any(axis=1) | (lengths != base_lengths)).sum())
    out = []
    start = 0
    for record in records:
        stop = start + len(record.captions) * k
        out.append((tokens[start:stop].astype(dtype), lengths[start:stop].astype("<i4")))
        start = stop
    return out
