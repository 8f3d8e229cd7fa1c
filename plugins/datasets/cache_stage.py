"""The `cache` recipe stage: every store of the `data` stage encoded by the `tokenizers` stage's tokenizers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import attrs

from mmgen.stage import StageContext

log = logging.getLogger(__name__)


class CacheStage:
    """Writes `<out_dir>/<split>.lmdb` token caches, one per `<data>/<split>.lmdb` store."""

    name: ClassVar[str] = "cache"

    @attrs.frozen(kw_only=True)
    class Config:
        splits: tuple[str, ...] = ()  # empty: every store the data stage wrote
        caption_modality: str = "text"
        batch_size: int = 64
        data_stage: str = "data"  # the earlier stages this one reads
        tokenizers_stage: str = "tokenizers"

    def __init__(self, *, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> CacheStage:
        return cls(config=config)

    def run(self, ctx: StageContext) -> None:
        from mmgen.tokenizers.saved import load_saved_tokenizers

        tokenizers = load_saved_tokenizers(ctx.artefact(self.config.tokenizers_stage), ctx.registry)
        counts = cache_splits(
            ctx.artefact(self.config.data_stage), ctx.out_dir, tokenizers=tokenizers, config=self.config
        )
        ctx.tracker.log_metrics({f"cache/{split}/records": count for split, count in counts.items()})


def cache_splits(
    data_dir: Path, out_dir: Path, *, tokenizers: Mapping[str, Any], config: CacheStage.Config
) -> dict[str, int]:
    """Build `<out_dir>/<split>.lmdb` for each chosen `<data_dir>/<split>.lmdb`; returns record counts."""
    from .token_cache import TokenCacheDataset, build_token_cache

    splits = config.splits or tuple(sorted(p.name[: -len(".lmdb")] for p in Path(data_dir).glob("*.lmdb")))
    if not splits:
        raise ValueError(f"cache stage: no <split>.lmdb stores in {data_dir}")
    counts = {}
    for split in splits:
        out = build_token_cache(
            Path(data_dir) / f"{split}.lmdb",
            Path(out_dir) / f"{split}.lmdb",
            tokenizers=tokenizers,
            caption_modality=config.caption_modality,
            batch_size=config.batch_size,
        )
        cached = TokenCacheDataset(out, tokenizers=tokenizers)
        log.info("cache %s: %d records, modalities %s", split, len(cached), cached.modalities)
        counts[split] = len(cached)
    return counts
