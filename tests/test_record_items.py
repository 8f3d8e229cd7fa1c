"""Records with items of several modalities (Record.more): stored, ingested, cached and prompted like one-item records.

A third modality must not need a new record type: a Shapes picture and the sound
it makes are one example, so the picture is the record's main item and the sound
one of its `more` items. A record without `more` is stored byte for byte as before.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from mmgen.batch import Record, Segment
from mmgen.plugins.datasets.ingest.candidate import Candidate
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore, StoreWriter, encode_record
from mmgen.plugins.datasets.token_cache import TokenCacheDataset, build_token_cache
from mmgen.plugins.stages.generate import example
from mmgen.token_space import TokenSpace

from token_cache_helpers import BlockImageTokenizer, CharTokenizer


def png(grey: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), grey, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class ByteSoundTokenizer:
    """A stand-in sound tokenizer: the first four bytes of the item are its tokens."""

    name: ClassVar[str] = "byte_sound"
    modality = "sound"

    @property
    def token_space(self) -> TokenSpace:
        return TokenSpace(name="sound", vocab_size=256, shape=(4,))

    def load_item(self, data: bytes) -> torch.Tensor:
        return torch.tensor(list(data[:4]), dtype=torch.long)

    def encode(self, items: Any) -> Segment:
        return Segment.full("sound", torch.stack(list(items)))

    def content_hash(self) -> str:
        return "byte-sound"


def scene(index: int) -> Record:
    return Record(
        key=f"scene-{index}",
        modality="image",
        data=png(40 * index),
        captions=[f"scene {'abc'[index]}"],
        meta={"i": index},
        more={"sound": bytes([index, 1, 2, 3, 99])},
    )


def test_item_gives_the_main_or_a_further_item_and_names_what_is_missing():
    record = scene(1)
    assert record.modalities == ("image", "sound")
    assert record.item("image") == record.data and record.item("sound") == bytes([1, 1, 2, 3, 99])
    with pytest.raises(KeyError, match=r"record 'scene-1' holds no 'text' item \(it holds \['image', 'sound'\]\)"):
        record.item("text")
    with pytest.raises(ValueError, match="modality 'image' is both its main item and in `more`"):
        Record(key="k", modality="image", data=b"x", captions=["c"], more={"image": b"y"})


def test_store_keeps_every_item_and_counts_each_modality(tmp_path):
    records = [scene(0), scene(1), Record(key="plain", modality="image", data=png(7), captions=["plain"])]
    with StoreWriter(tmp_path / "s.lmdb") as writer:
        for record in records:
            writer.add(record)
    store = LmdbStore(tmp_path / "s.lmdb")
    assert [store[i] for i in range(3)] == records
    assert store.header["modalities"] == {"image": 3, "sound": 2}


def test_a_one_item_record_is_stored_as_before():
    # The stored value (and so a store's checksum) of a record without `more` has no trace of the feature.
    record = Record(key="k", modality="image", data=b"\x89PNG-bytes", captions=["a cat"], meta={"n": 1})
    info = b'{"key":"k","modality":"image","captions":["a cat"],"meta":{"n":1}}'
    value, digest = encode_record(record)
    assert digest == hashlib.sha256(info + b"\x89PNG-bytes").digest()
    assert value.endswith(info + b"\x89PNG-bytes")


def test_ingest_checks_further_items_and_names_the_bad_one(tmp_path):
    good = Candidate(key="good", data=png(10), captions=["a"], more={"sound": b"\x01\x02\x03\x04"})
    silent = Candidate(key="silent", data=png(20), captions=["b"], more={"sound": b""})
    broken = Candidate(key="broken", modality="sound", data=b"\x01\x02\x03\x04", captions=["c"], more={"image": b"not a png"})
    report = ingest([good, silent, broken], tmp_path / "s.lmdb", progress=False)
    assert (report.records, report.skipped) == (1, 2)
    store = LmdbStore(tmp_path / "s.lmdb")
    assert store[0].more == {"sound": b"\x01\x02\x03\x04"}
    reasons = {key: issue["reasons"] for key, issue in store.issues()}
    assert reasons["silent"] == ["sound item: empty file"]
    assert len(reasons["broken"]) == 1 and reasons["broken"][0].startswith("image item: ")


def test_the_token_cache_encodes_every_item_and_prompts_hold_them(tmp_path):
    with StoreWriter(tmp_path / "s.lmdb") as writer:
        for index in range(3):
            writer.add(scene(index))
    tokenizers = {"image": BlockImageTokenizer(), "sound": ByteSoundTokenizer(), "text": CharTokenizer()}
    out = build_token_cache(tmp_path / "s.lmdb", tmp_path / "c.lmdb", tokenizers=tokenizers, progress=False)
    cache = TokenCacheDataset(out, tokenizers=tokenizers)
    assert cache.modalities == ("image", "sound", "text")
    batch = cache.collate(cache.__getitems__([0, 1, 2]))
    assert batch.modality("sound").tokens.tolist() == [[0, 1, 2, 3], [1, 1, 2, 3], [2, 1, 2, 3]]
    prompt = example(LmdbStore(tmp_path / "s.lmdb")[2], tokenizers, caption_modality="text")
    assert sorted(prompt.items) == ["image", "sound", "text"] and prompt.items["text"] == "scene c"
    assert prompt.items["sound"].tolist() == [2, 1, 2, 3]


def test_a_cache_refuses_a_record_without_an_item_its_tokenizers_encode(tmp_path):
    with StoreWriter(tmp_path / "s.lmdb") as writer:
        writer.add(scene(0))
        writer.add(Record(key="mute", modality="image", data=png(5), captions=["quiet"]))
    tokenizers = {"image": BlockImageTokenizer(), "sound": ByteSoundTokenizer(), "text": CharTokenizer()}
    with pytest.raises(ValueError, match=r"record 'mute' holds no 'sound' item; the cache expects \['image', 'sound', 'text'\]"):
        build_token_cache(tmp_path / "s.lmdb", tmp_path / "c.lmdb", tokenizers=tokenizers, progress=False)
