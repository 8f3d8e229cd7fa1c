"""The `data` and `cache` recipe stages and the `lmdb` dataset plugin."""

import logging

import attrs
import pytest

from mmgen.config import structure
from mmgen.errors import MissingSplitError
from mmgen.plugins.datasets.bpe_dropout import BpeDropout
from mmgen.plugins.datasets.cache_stage import CacheStage, TokenCache, cache_splits
from mmgen.plugins.datasets.data_stage import DataSplits, DataStage
from mmgen.plugins.datasets.lmdb_dataset import LmdbDataset
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.token_cache import TokenCacheDataset
from mmgen.registry import load_registry
from mmgen.stage import StageContext, StageInputs
from token_cache_helpers import BlockImageTokenizer, CharTokenizer


@attrs.define
class RecordingTracker:
    metrics: dict = attrs.field(factory=dict)

    def log_metrics(self, metrics, *, step=None):
        self.metrics.update(metrics)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def run_data_stage(registry, out_dir, data):
    config = structure(DataStage.Config, data, path="stages.data", registry=registry)
    tracker = RecordingTracker()
    inputs = StageInputs({}, uses={}, registry=registry)
    ctx = StageContext(out_dir=out_dir, inputs=inputs, registry=registry, tracker=tracker, seed=0)
    registry.get("stages", "data").from_config(config).run(ctx)
    return tracker


def test_data_stage_writes_one_store_per_split(registry, tmp_path):
    options = {"use": "shapes", "size": 32, "train": 5, "val": 2, "test": 0, "holdout": 3}
    tracker = run_data_stage(registry, tmp_path, {"dataset": options})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holdout.lmdb", "train.lmdb", "val.lmdb"]
    expected = ShapesDataset(size=32, counts={"train": 5, "val": 2, "holdout": 3})
    assert list(LmdbStore(tmp_path / "val.lmdb").records()) == list(expected.records("val"))
    assert tracker.metrics == {
        "train/records": 5,
        "train/skipped": 0,
        "train/fixed": 0,
        "val/records": 2,
        "val/skipped": 0,
        "val/fixed": 0,
        "holdout/records": 3,
        "holdout/skipped": 0,
        "holdout/fixed": 0,
    }


def test_data_stage_split_choice_and_errors(registry, tmp_path):
    run_data_stage(
        registry, tmp_path / "a", {"dataset": {"use": "shapes", "size": 32, "train": 2}, "splits": ["train"]}
    )
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["train.lmdb"]
    # What later stages get back from the data stage's folder.
    data = DataStage.load(tmp_path / "a")
    assert data.splits() == ["train"] and len(data.records("train")) == 2
    with pytest.raises(MissingSplitError, match=r"no 'val' split .*it has \['train'\]"):
        data.records("val")
    with pytest.raises(MissingSplitError, match="has no split\\(s\\) \\['dev'\\]"):
        run_data_stage(registry, tmp_path / "b", {"dataset": {"use": "shapes"}, "splits": ["dev"]})


def test_cache_stage_encodes_every_store(registry, tmp_path, caplog):
    run_data_stage(
        registry,
        tmp_path / "data",
        {"dataset": {"use": "shapes", "size": 32, "train": 4, "val": 2, "test": 0, "holdout": 0}},
    )
    tokenizers = {"image": BlockImageTokenizer(), "text": CharTokenizer()}
    plain = CacheStage.Config(bpe_dropout=BpeDropout(variants=0))  # CharTokenizer cannot BPE-drop (test_bpe_dropout.py)
    with caplog.at_level(logging.INFO):
        counts = cache_splits(DataSplits(tmp_path / "data"), tmp_path / "cache", tokenizers=tokenizers, config=plain)
    assert counts == {"train": 4, "val": 2}
    cache = TokenCacheDataset(tmp_path / "cache" / "train.lmdb", tokenizers=tokenizers)
    assert (
        cache.modalities == ("image", "text") and cache.meta(3) == LmdbStore(tmp_path / "data" / "train.lmdb")[3].meta
    )
    only = cache_splits(
        DataSplits(tmp_path / "data"), tmp_path / "c2", tokenizers=tokenizers, config=CacheStage.Config(splits=("val",))
    )
    assert only == {"val": 2}
    # What later stages get back from the cache stage's folder.
    loaded = CacheStage.load(tmp_path / "cache")
    assert isinstance(loaded, TokenCache) and loaded.splits() == ["train", "val"]
    assert len(loaded.split("val", tokenizers=tokenizers)) == 2
    with pytest.raises(MissingSplitError, match=r"no 'test' split \(it has \['train', 'val'\]\)"):
        loaded.split("test")
    with pytest.raises(ValueError, match="no <split>.lmdb stores in"):
        cache_splits(DataSplits(tmp_path / "cache" / "nothing"), tmp_path / "c3", tokenizers=tokenizers, config=plain)


def test_registered_components(registry):
    assert registry.get("datasets", "shapes") is ShapesDataset and registry.get("datasets", "lmdb") is LmdbDataset
    assert registry.get("stages", "cache") is CacheStage
    assert registry.get("metrics", "shapes_accuracy").name == "shapes_accuracy"


def test_lmdb_dataset_reads_stores_back(registry, tmp_path):
    run_data_stage(
        registry, tmp_path, {"dataset": {"use": "shapes", "size": 32, "train": 3, "val": 1, "test": 0, "holdout": 0}}
    )
    config = structure(LmdbDataset.Config, {"path": str(tmp_path)}, path="dataset", registry=registry)
    data = LmdbDataset.from_config(config)
    assert data.splits() == ("train", "val") and data.count("train") == 3
    assert list(data.records("train")) == list(ShapesDataset(size=32, counts={"train": 3}).records("train"))
    single = LmdbDataset(path=tmp_path / "val.lmdb", split="dev")
    assert single.splits() == ("dev",) and [r.key for r in single.records("dev")] == ["val-0000000"]
    with pytest.raises(MissingSplitError, match="has no split 'test'"):
        data.records("test")
    with pytest.raises(FileNotFoundError, match="neither a store nor a folder"):
        LmdbDataset(path=tmp_path / "missing")
