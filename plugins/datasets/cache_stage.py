"""The `cache` recipe stage: every store of the `data` stage encoded by the `tokenizers` stage's tokenizers.

The train split also gets `bpe_dropout.variants` BPE-dropout encodings of each
caption (bpe_dropout.py); the stage logs, per split, `<split>/records` and,
with variants, `<split>/bpe_dropout/replaced` (variants too long for the text
space, stored as the canonical row) and `<split>/bpe_dropout/changed_share`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import attrs

from mmgen.api import MissingSplitError, StageContext, upstream

from .bpe_dropout import DROPOUT_SPLIT, BpeDropout, require_dropout

log = logging.getLogger(__name__)

MIXSEL_SPLIT = "train"  # the split the train stage reads: the one MixSel mixes


class TokenCache:
    """A cache stage's output: one token cache per split (what later stages get from `ctx.inputs.load`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def splits(self) -> list[str]:
        return sorted(p.name[: -len(".lmdb")] for p in self.directory.glob("*.lmdb"))

    def has(self, split: str) -> bool:
        return (self.directory / f"{split}.lmdb").is_dir()

    def split(
        self,
        name: str,
        *,
        seed: int = 0,
        tokenizers: Mapping[str, Any] | None = None,
        caption_weights: Sequence[float] | None = None,
    ) -> Any:
        """The split's TokenCacheDataset; with `tokenizers` it refuses a cache other tokenizers made."""
        from .mixsel_halves import with_halves
        from .token_cache import TokenCacheDataset

        if not self.has(name):
            raise MissingSplitError(f"the token cache has no {name!r} split (it has {self.splits()}): {self.directory}")
        path = self.directory / f"{name}.lmdb"
        dataset = TokenCacheDataset(path, seed=seed, tokenizers=tokenizers, caption_weights=caption_weights)
        return with_halves(dataset, path)  # MixSel's squeezed image halves, when the split has them


class CacheStage:
    """Writes `<out_dir>/<split>.lmdb` token caches, one per split of the data stage."""

    name: ClassVar[str] = "cache"

    @attrs.frozen(kw_only=True)
    class Config:
        splits: tuple[str, ...] = ()  # empty: every store the data stage wrote
        caption_modality: str = "text"
        batch_size: int = 64
        # BPE-dropout encodings stored per train caption (the paper: rate 0.1, drawn anew at each read).
        bpe_dropout: BpeDropout = attrs.field(factory=BpeDropout)
        # Also encode each train image squeezed to half width and to half height, for MixSel's pixel
        # mixing (mixsel_halves.py); image modalities whose grid has an odd side are skipped.
        mixsel_halves: bool = True
        data_stage: str = upstream("data")
        tokenizers_stage: str = upstream("tokenizers")

    def __init__(self, *, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> CacheStage:
        return cls(config=config)

    @classmethod
    def load(cls, directory: Path, **_: Any) -> TokenCache:
        return TokenCache(directory)

    def run(self, ctx: StageContext) -> None:
        tokenizers = ctx.inputs.load(self.config.tokenizers_stage)
        data = ctx.inputs.load(self.config.data_stage)
        counts = cache_splits(data, ctx.out_dir, tokenizers=tokenizers, config=self.config)
        ctx.tracker.log_metrics({f"{split}/records": count for split, count in counts.items()})
        ctx.tracker.log_metrics(dropout_metrics(TokenCache(ctx.out_dir)))


def cache_splits(
    data: Any, out_dir: Path, *, tokenizers: Mapping[str, Any], config: CacheStage.Config
) -> dict[str, int]:
    """Build `<out_dir>/<split>.lmdb` for each chosen split of `data` (DataSplits); returns record counts."""
    from .mixsel_halves import build_halves
    from .token_cache import TokenCacheDataset, build_token_cache

    splits = config.splits or tuple(data.splits())
    if not splits:
        raise ValueError(f"cache stage: no <split>.lmdb stores in {data.directory}")
    dropout = config.bpe_dropout
    if dropout.enabled and DROPOUT_SPLIT in splits and config.caption_modality in tokenizers:
        require_dropout(tokenizers[config.caption_modality], config.caption_modality)  # before any split is encoded
    counts = {}
    for split in splits:
        out = build_token_cache(
            data.path(split),
            Path(out_dir) / f"{split}.lmdb",
            tokenizers=tokenizers,
            caption_modality=config.caption_modality,
            batch_size=config.batch_size,
            bpe_dropout=dropout if split == DROPOUT_SPLIT else None,
        )
        if config.mixsel_halves and split == MIXSEL_SPLIT:
            build_halves(data.path(split), out, tokenizers=tokenizers, batch_size=config.batch_size)
        cached = TokenCacheDataset(out, tokenizers=tokenizers)
        log.info("cache %s: %d records, modalities %s", split, len(cached), cached.modalities)
        if cached.variants:
            log_variants(split, cached.header["bpe_dropout"])
        counts[split] = len(cached)
    return counts


def log_variants(split: str, made: Mapping[str, Any]) -> None:
    """What the BPE-dropout variants came to, with a hint when over a quarter did not fit the text space.

    An info line, not a warning: `mmgen -q` shows warnings, and toy recipes (max_length 16) always lose most.
    """
    hint = ""
    if made["replaced"] * 4 > made["rows"]:
        hint = "; a larger max_length of the text tokenizer (or a lower cache.bpe_dropout.rate) keeps more"
    log.info(
        "cache %s: %d BPE-dropout variants per caption at rate %s; %d of %d differ from the canonical row,"
        " %d were too long for the text space (stored as the canonical row)%s",
        split,
        made["variants"],
        made["rate"],
        made["changed"],
        made["rows"],
        made["replaced"],
        hint,
    )


def dropout_metrics(cache: TokenCache) -> dict[str, float]:
    """Per split with BPE-dropout variants: how many were too long (`replaced`) and the share that differ."""
    from .token_cache import read_header

    metrics = {}
    for split in cache.splits():
        made = (read_header(cache.directory / f"{split}.lmdb") or {}).get("bpe_dropout")
        if made:
            metrics[f"{split}/bpe_dropout/replaced"] = float(made["replaced"])
            metrics[f"{split}/bpe_dropout/changed_share"] = made["changed"] / max(made["rows"], 1)
    return metrics
