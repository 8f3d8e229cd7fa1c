"""The token cache: exact tokens, seeded caption choice, staleness, and 0 vs 2 workers."""

import os

import numpy as np
import pytest
import torch

from mmgen.data_stream import BatchStream
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.token_cache import (
    StaleCacheError,
    TokenCacheDataset,
    build_token_cache,
    mix,
    weighted_row,
)
from token_cache_helpers import BlockImageTokenizer, CharTokenizer

TOKENIZERS = {"image": BlockImageTokenizer(), "text": CharTokenizer()}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.lmdb"
    ingest(dataset_candidates(ShapesDataset(size=32, counts={"train": 12}), "train"), path, progress=False)
    return path


def test_items_hold_the_tokenizers_tokens(store, tmp_path):
    cache = build_token_cache(store, tmp_path / "train.lmdb", tokenizers=TOKENIZERS, progress=False)
    data = TokenCacheDataset(cache, seed=5)
    source = LmdbStore(store)
    assert len(data) == 12 and data.modalities == ("image", "text")
    for index in (0, 7, 11):
        record = source[index]
        item = data[index]
        image = TOKENIZERS["image"].encode(TOKENIZERS["image"].load_item(record.data)[None])
        assert np.array_equal(item.tokens["image"], image.tokens[0].numpy()) and item.lengths["image"] == 16
        captions = TOKENIZERS["text"].encode(list(record.captions))
        row = mix(5, 0, index) % len(record.captions)
        assert np.array_equal(item.tokens["text"], captions.tokens[row].numpy())
        assert item.lengths["text"] == int(captions.lengths[row])
        assert data.meta(index) == record.meta and data.key(index) == record.key
        tokens, lengths = data.captions(index)
        assert np.array_equal(tokens, captions.tokens.numpy()) and lengths.tolist() == captions.lengths.tolist()


def test_caption_choice_depends_on_seed_epoch_and_index_only(store, tmp_path):
    cache = build_token_cache(store, tmp_path / "train.lmdb", tokenizers=TOKENIZERS, progress=False)
    data = TokenCacheDataset(cache, seed=1)
    first = [data[i].tokens["text"].tolist() for i in range(12)]
    assert first == [TokenCacheDataset(cache, seed=1)[i].tokens["text"].tolist() for i in range(12)]
    data.set_epoch(1)
    assert [data[i].tokens["text"].tolist() for i in range(12)] != first
    assert [it.index for it in data.__getitems__([3, 1, 2])] == [3, 1, 2]
    with pytest.raises(IndexError):
        data[12]


def _draw(u: float) -> int:
    """The hash whose top 53 bits make the uniform `u` (weighted_row's reading)."""
    return int(u * 2.0**53) << 11


def test_weighted_row_splits_the_unit_interval_by_cumulative_share():
    # Shares 2 : 1 : 1 -> row 0 on [0, 0.5), row 1 on [0.5, 0.75), row 2 on [0.75, 1).
    picks = [weighted_row(_draw(u), [2.0, 1.0, 1.0], 3) for u in (0.0, 0.49, 0.5, 0.74, 0.75, 0.999)]
    assert picks == [0, 0, 1, 1, 2, 2]
    # Rows past the list weigh 1: the same split; rows past `count` are ignored.
    assert [weighted_row(_draw(u), [2.0], 3) for u in (0.49, 0.5, 0.75)] == [0, 1, 2]
    assert [weighted_row(_draw(u), [1.0, 1.0, 5.0], 2) for u in (0.49, 0.5)] == [0, 1]
    assert weighted_row(2**64 - 1, [0.0, 1.0, 0.0], 3) == 1  # the largest hash never runs past the last row
    with pytest.raises(ValueError, match="give no chance to any of 2 captions"):
        weighted_row(0, [0.0, 0.0, 3.0], 2)


def test_caption_weights_pick_the_weighted_rows(store, tmp_path):
    cache = build_token_cache(store, tmp_path / "train.lmdb", tokenizers=TOKENIZERS, progress=False)
    source = LmdbStore(store)
    for weights, row in (([1.0, 0.0, 0.0, 0.0, 0.0], 0), ([0.0, 0.0, 1.0, 0.0, 0.0], 2)):
        data = TokenCacheDataset(cache, seed=5, caption_weights=weights)
        expected = TOKENIZERS["text"].encode([source[i].captions[row] for i in range(12)]).tokens.numpy()
        assert all(np.array_equal(data[i].tokens["text"], expected[i]) for i in range(12))
    # Row 0 three times as likely as each other row: its share over 12 items x 20 epochs is near 3/7.
    data = TokenCacheDataset(cache, seed=5, caption_weights=[3.0])
    first = TOKENIZERS["text"].encode([source[i].captions[0] for i in range(12)]).tokens.numpy()
    shown = 0
    for epoch in range(20):
        data.set_epoch(epoch)
        shown += sum(np.array_equal(data[i].tokens["text"], first[i]) for i in range(12))
    assert 0.33 < shown / 240 < 0.53  # uniform would be 0.2 (5 captions)
    for bad in ([], [1.0, -1.0]):
        with pytest.raises(ValueError, match="caption_weights must be a non-empty list of weights >= 0"):
            TokenCacheDataset(cache, caption_weights=bad)


def test_collate_gives_one_segment_per_modality_in_cache_order(store, tmp_path):
    data = TokenCacheDataset(build_token_cache(store, tmp_path / "c.lmdb", tokenizers=TOKENIZERS, progress=False))
    batch = data.collate([data[i] for i in (4, 2, 9)])
    assert [s.modality for s in batch.segments] == ["image", "text"]
    image, text = batch.segments
    assert image.tokens.shape == (3, 16) and image.tokens.dtype == torch.long and image.lengths.tolist() == [16] * 3
    assert text.tokens.shape == (3, 12) and text.lengths.tolist() == [data[i].lengths["text"] for i in (4, 2, 9)]


def test_stale_cache_is_never_used(store, tmp_path):
    out = tmp_path / "train.lmdb"
    build_token_cache(store, out, tokenizers=TOKENIZERS, progress=False)
    stamp = os.stat(out / "data.mdb").st_mtime_ns
    build_token_cache(store, out, tokenizers=TOKENIZERS, progress=False)  # same tokenizers, same source: kept
    assert os.stat(out / "data.mdb").st_mtime_ns == stamp
    other = {"image": BlockImageTokenizer(levels=8), "text": CharTokenizer()}
    with pytest.raises(
        StaleCacheError, match="'image' tokens were made by tokenizer block-4-16, not by the given block-4-8"
    ):
        TokenCacheDataset(out, tokenizers=other)
    build_token_cache(store, out, tokenizers=other, progress=False)  # other tokenizers: rebuilt
    data = TokenCacheDataset(out, tokenizers=other)
    assert data.header["tokenizers"] == {"image": "block-4-8", "text": "chars-12"}
    assert int(max(data[i].tokens["image"].max() for i in range(12))) < 8


def test_changed_source_rebuilds(tmp_path):
    path = tmp_path / "s.lmdb"
    ingest(dataset_candidates(ShapesDataset(size=32, counts={"train": 3}), "train"), path, progress=False)
    build_token_cache(path, tmp_path / "c.lmdb", tokenizers=TOKENIZERS, progress=False)
    ingest(dataset_candidates(ShapesDataset(size=32, counts={"train": 5}), "train"), path, progress=False)
    build_token_cache(path, tmp_path / "c.lmdb", tokenizers=TOKENIZERS, progress=False)
    assert len(TokenCacheDataset(tmp_path / "c.lmdb")) == 5


def test_missing_tokenizer_is_an_error(store, tmp_path):
    with pytest.raises(ValueError, match="holds \\['image'\\] records but no tokenizer encodes them"):
        build_token_cache(store, tmp_path / "c.lmdb", tokenizers={"text": CharTokenizer()}, progress=False)
    with pytest.raises(StaleCacheError, match="no token cache here"):
        TokenCacheDataset(tmp_path / "nothing")


def test_zero_and_two_workers_give_the_same_samples(store, tmp_path):
    cache = build_token_cache(store, tmp_path / "train.lmdb", tokenizers=TOKENIZERS, progress=False)

    def batches(workers):
        data = TokenCacheDataset(cache, seed=3)
        stream = BatchStream(data, batch_size=4, collate=data.collate, seed=3, num_workers=workers)
        taken = [next(stream) for _ in range(7)]  # 3 batches per epoch: crosses two epoch boundaries
        stream.close()
        return [[s.tokens.tolist() + [s.lengths.tolist()] for s in b.segments] for b in taken]

    zero = batches(0)
    assert zero == batches(2)
    assert zero[0] != zero[3]  # a new epoch: another order and other captions
