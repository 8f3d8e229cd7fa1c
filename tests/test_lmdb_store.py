"""The LMDB record store: exact bytes, header, growth, resume, verification, sharded reading."""

import json
import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from mmgen.batch import Record
from mmgen.plugins.datasets import lmdb_store
from mmgen.plugins.datasets.lmdb_store import LmdbStore, StoreError, StoreWriter, environment, record_slot
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.store_verify import verify_store


def records(count, *, modality="image", size=1000):
    return [
        Record(key=f"item-{i}", modality=modality, data=bytes([i % 256]) * size, captions=[f"c{i}", "x"], meta={"i": i})
        for i in range(count)
    ]


def write(path, items, **options):
    with StoreWriter(path, **options) as writer:
        return [writer.add(item) for item in items]


def test_round_trip_keeps_bytes_captions_and_meta(tmp_path):
    shapes = list(ShapesDataset(size=32, counts={"train": 3}).records("train"))
    audio = Record(key="clip", modality="audio", data=b"RIFF\x00\x01raw", captions=["a beep"], meta={"rate": 8000})
    write(tmp_path / "s.lmdb", [*shapes, audio])
    store = LmdbStore(tmp_path / "s.lmdb")
    assert [store[i] for i in range(4)] == [*shapes, audio]
    assert store.get("clip") == audio and store.get("nope") is None
    header = store.header
    assert header["count"] == 4 and header["modalities"] == {"image": 3, "audio": 1}
    assert header["captions"] == 16 and header["schema_version"] == 1 and header["format"] == "mmgen.lmdb"
    with pytest.raises(IndexError):
        store.record(4)


def test_duplicate_keys_are_stored_once(tmp_path):
    items = records(3)
    assert write(tmp_path / "s.lmdb", [*items, items[1]]) == [True, True, True, False]
    assert len(LmdbStore(tmp_path / "s.lmdb")) == 3


def test_map_grows_as_needed(tmp_path):
    write(tmp_path / "s.lmdb", records(40, size=50_000), map_size=1 << 20, commit_every=8)
    store = LmdbStore(tmp_path / "s.lmdb")
    assert len(store) == 40 and store[39].data == bytes([39]) * 50_000
    assert environment(tmp_path / "s.lmdb", write=False).info()["map_size"] >= 2_000_000


def test_reopened_writer_appends_and_checksum_matches_one_pass(tmp_path):
    items = records(10)
    write(tmp_path / "a.lmdb", items[:4])
    write(tmp_path / "a.lmdb", items)  # resume: the first four are already there
    write(tmp_path / "b.lmdb", items)
    a, b = LmdbStore(tmp_path / "a.lmdb"), LmdbStore(tmp_path / "b.lmdb")
    assert [a[i] for i in range(10)] == items
    assert a.header == b.header


def test_issues_are_logged_with_their_reasons(tmp_path):
    with StoreWriter(tmp_path / "s.lmdb") as writer:
        writer.add(records(1)[0], issue={"status": "fixed", "reasons": ["converted CMYK to RGB"]})
        assert writer.skip("broken.png", {"status": "skipped", "reasons": ["not an image"]})
        assert not writer.skip("broken.png", {"status": "skipped", "reasons": ["again"]})
    store = LmdbStore(tmp_path / "s.lmdb")
    assert dict(store.issues()) == {
        "broken.png": {"key": "broken.png", "status": "skipped", "reasons": ["not an image"]},
        "item-0": {"key": "item-0", "status": "fixed", "reasons": ["converted CMYK to RGB"]},
    }
    assert store.header["issues"] == {"fixed": 1, "skipped": 1} and len(store) == 1


def test_verify_finds_a_corrupted_record(tmp_path):
    write(tmp_path / "s.lmdb", records(5))
    assert verify_store(tmp_path / "s.lmdb").ok
    env = environment(tmp_path / "s.lmdb", write=True)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(record_slot(2)))
        value[-1] ^= 0xFF
        txn.put(record_slot(2), bytes(value))
    report = verify_store(tmp_path / "s.lmdb")
    assert not report.ok and report.records == 5
    assert report.problems == ("record 2 ('item-2'): checksum mismatch",)
    lmdb_store.close_environment(tmp_path / "s.lmdb")


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no LMDB store here"):
        LmdbStore(tmp_path)
    write(tmp_path / "s.lmdb", records(1))
    env = environment(tmp_path / "s.lmdb", write=True)
    with env.begin(write=True) as txn:
        header = json.loads(txn.get(b"H"))
        txn.put(b"H", json.dumps({**header, "schema_version": 99}).encode())
    lmdb_store.close_environment(tmp_path / "s.lmdb")
    with pytest.raises(StoreError, match="schema version 99"):
        LmdbStore(tmp_path / "s.lmdb").header


def test_seeded_order_is_deterministic_and_ranks_are_disjoint(tmp_path):
    write(tmp_path / "s.lmdb", records(11))
    store = LmdbStore(tmp_path / "s.lmdb")
    first = store.order(seed=3, epoch=0)
    assert first == store.order(seed=3, epoch=0) and sorted(first) == list(range(11))
    assert first != store.order(seed=3, epoch=1)
    shares = [store.order(seed=3, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]  # 11 padded to 12 by wrapping, as DistributedSampler
    assert set(shares[0]) | set(shares[1]) | set(shares[2]) == set(range(11))
    assert set(shares[0]).isdisjoint(shares[1]) and set(shares[1]).isdisjoint(shares[2])
    plain = [[r.key for r in store.records(rank=r, world_size=2)] for r in range(2)]
    assert plain == [[f"item-{i}" for i in range(0, 11, 2)], [f"item-{i}" for i in range(1, 11, 2)]]


def test_store_opens_lazily_and_reads_in_workers(tmp_path):
    write(tmp_path / "s.lmdb", records(8))
    store = LmdbStore(tmp_path / "s.lmdb")
    assert str((tmp_path / "s.lmdb").resolve()) not in lmdb_store._ENVIRONMENTS
    clone = pickle.loads(pickle.dumps(store))
    assert clone[5].key == "item-5"

    def keys(workers):
        loader = DataLoader(store, batch_size=3, num_workers=workers, collate_fn=lambda rs: [r.key for r in rs])
        return [k for batch in loader for k in batch]

    assert keys(0) == keys(2) == [f"item-{i}" for i in range(8)]
    assert torch.utils.data.get_worker_info() is None
