"""BPE-dropout: seeded dropped-merge encodings, stored for the train split, drawn per read, resumable."""

import itertools
import logging
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest

from mmgen.config import ConfigError, structure
from mmgen.data_stream import BatchStream
from mmgen.errors import UserError
from mmgen.plugins.datasets.bpe_dropout import BpeDropout, variant_seeds
from mmgen.plugins.datasets.cache_stage import CacheStage, TokenCache, cache_splits, dropout_metrics, log_variants
from mmgen.plugins.datasets.data_stage import DataSplits
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.token_cache import TokenCacheDataset, build_token_cache, cache_key, read_header
from mmgen.recipe import load_recipe
from mmgen.registry import load_registry
from mmgen.tokenizers.sentencepiece_bpe import EOS_ID, SentencePieceBPE
from token_cache_helpers import BlockImageTokenizer, CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"train": 10, "val": 3}
LONG = "a purple square and a green triangle on a white background"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data stage folder: Shapes train and val stores (five captions per record)."""
    folder = tmp_path_factory.mktemp("data")
    shapes = ShapesDataset(size=32, counts=COUNTS)
    for split in COUNTS:
        ingest(dataset_candidates(shapes, split), folder / f"{split}.lmdb", progress=False)
    return DataSplits(folder)


@pytest.fixture(scope="module")
def bpe(data):
    """A 64-piece BPE with room for every dropped-merge encoding of these captions."""
    tokenizer = SentencePieceBPE(vocab_size=64, max_length=80)
    tokenizer.train(caption for record in data.records("train") for caption in record.captions)
    return tokenizer


def tokenizers(bpe):
    return {"image": BlockImageTokenizer(), "text": bpe}


def ids(segment, row):
    return segment.tokens[row, : int(segment.lengths[row])].tolist()


def with_max_length(bpe, max_length):
    """The same BPE model with another text space length."""
    return SentencePieceBPE(vocab_size=64, max_length=max_length, model_proto=bpe._proto)


# ---- the tokenizer --------------------------------------------------------------------------


def test_seeded_rows_decode_to_the_text_repeat_per_seed_and_ignore_the_batch(bpe):
    texts = [LONG, "A Large RED circle  in the top left"]
    first = bpe.encode_dropout(texts, rate=0.3, seeds=[11, 12])
    assert bpe.decode(first) == [LONG, "a large red circle in the top left"]
    assert first.tokens.tolist() == bpe.encode_dropout(texts, rate=0.3, seeds=[11, 12]).tokens.tolist()
    # Row i depends on its own text and seed only: alone, or after other rows, it is the same.
    alone = bpe.encode_dropout(texts[1:], rate=0.3, seeds=[12])
    assert ids(alone, 0) == ids(first, 1)
    later = bpe.encode_dropout([LONG, LONG, LONG], rate=0.3, seeds=[1, 2, 11])
    assert ids(later, 2) == ids(first, 0)
    # Other seeds give other segmentations, every one longer than or as long as the canonical one.
    canonical = bpe.encode_ids(LONG)
    rows = [ids(bpe.encode_dropout([LONG], rate=0.3, seeds=[s]), 0) for s in range(20)]
    assert len({tuple(r) for r in rows}) > 10 and all(len(r) >= len(canonical) for r in rows)
    assert all(r[-1] == EOS_ID for r in rows)
    # Rate 0 is the canonical encoding whatever the seed.
    assert ids(bpe.encode_dropout([LONG], rate=0.0, seeds=[5]), 0) == canonical


def test_the_merge_loop_at_rate_0_is_sentencepieces_encoding(data, bpe):
    captions = [caption for record in data.records("train") for caption in record.captions]
    odd = ["a red \u2295 circle", "a red \u2295\u2295 circle \u2295", "\u00fcn\u00efc\u00f6d\u00e9 square", "", "x"]
    spelled = SentencePieceBPE(vocab_size=400, max_length=80, byte_fallback=True)
    spelled.train(captions)
    for tokenizer in (bpe, spelled):
        for text in captions + odd:
            canonical = tokenizer._require().encode(tokenizer._normalise(text), out_type=int)
            assert tokenizer._merge(tokenizer._normalise(text), rate=0.0, rng=None) == canonical, text
    assert bpe.decode(bpe.encode_dropout(odd, rate=0.5, seeds=range(5))) == bpe.decode(bpe.encode(odd))
    assert spelled.decode(spelled.encode_dropout(odd, rate=0.5, seeds=range(5))) == [t.lower() for t in odd]


def test_the_rows_are_the_same_in_another_process(bpe, tmp_path):
    # sentencepiece's own seeded sampling is not: its stream for one seed differs between processes.
    bpe.save(tmp_path / "bpe")
    script = (
        "import sys; from mmgen.tokenizers.sentencepiece_bpe import SentencePieceBPE as B;"
        f"print(B.load(sys.argv[1]).encode_dropout([{LONG!r}] * 8, rate=0.3, seeds=range(8)).tokens.tolist())"
    )
    child = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bpe")], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == str(bpe.encode_dropout([LONG] * 8, rate=0.3, seeds=range(8)).tokens.tolist())


def test_dropped_merges_change_the_segmentation_at_about_the_rate(bpe):
    # One merge skipped at rate p leaves the canonical row with chance about (1 - p) ** merges
    # (a skipped pair may still merge later), merges = symbols - canonical tokens.
    symbols = len(LONG.replace(" ", "")) + len(LONG.split())  # each word starts with the "▁" symbol
    merges = symbols - (len(bpe.encode_ids(LONG)) - 1)
    assert merges > 10
    canonical = bpe.encode_ids(LONG)
    for rate in (0.02, 0.05, 0.1):
        segment = bpe.encode_dropout([LONG] * 400, rate=rate, seeds=range(400))
        changed = sum(ids(segment, i) != canonical for i in range(400)) / 400
        assert abs(changed - (1 - (1 - rate) ** merges)) < 0.12, (rate, changed)
        assert set(bpe.decode(segment)) == {LONG}


def test_encode_dropout_errors(bpe):
    with pytest.raises(ValueError, match=r"BPE-dropout rate must be in \[0, 1\], got 1.5"):
        bpe.encode_dropout([LONG], rate=1.5, seeds=[0])
    with pytest.raises(ValueError, match="2 texts but 1 seeds"):
        bpe.encode_dropout([LONG, LONG], rate=0.1, seeds=[0])
    with pytest.raises(TypeError, match="a list of texts, not one str"):
        bpe.encode_dropout(LONG, rate=0.1, seeds=[0])


# ---- the cache ------------------------------------------------------------------------------


def build(data, out, bpe, *, dropout=BpeDropout(), batch_size=64, splits=()):
    config = CacheStage.Config(splits=splits, batch_size=batch_size, bpe_dropout=dropout)
    cache_splits(data, out, tokenizers=tokenizers(bpe), config=config)
    return TokenCache(out)


def test_the_train_split_stores_k_variants_per_caption_and_val_stays_canonical(data, bpe, tmp_path):
    cache = build(data, tmp_path / "cache", bpe, dropout=BpeDropout(rate=0.1, variants=3, seed=7))
    train, val = cache.split("train"), cache.split("val")
    assert (train.variants, val.variants) == (3, 0)
    assert "bpe_dropout" not in val.header
    assert train.header["dtypes"] == val.header["dtypes"] == {"image": "<u2", "text": "<u2"}  # as without variants
    plain = build(data, tmp_path / "plain", bpe, dropout=BpeDropout(variants=0)).split("train")
    store = LmdbStore(data.path("train"))
    changed = 0
    for index in range(COUNTS["train"]):
        captions = [" ".join(c.lower().split()) for c in store[index].captions]
        canonical, lengths = train.captions(index)
        assert np.array_equal(canonical, plain.captions(index)[0]) and np.array_equal(lengths, plain.captions(index)[1])
        tokens, variant_lengths = train.dropout_variants(index)
        assert tokens.shape == (5, 3, 80) and tokens.dtype == np.dtype("<u2") and variant_lengths.shape == (5, 3)
        seeds = variant_seeds(7, index, 15)
        for c, k in itertools.product(range(5), range(3)):
            row = tokens[c, k, : variant_lengths[c, k]].tolist()
            assert bpe.decode_ids(row) == captions[c]
            assert row == ids(bpe.encode_dropout([captions[c]], rate=0.1, seeds=[seeds[c * 3 + k]]), 0)
            changed += row != canonical[c, : lengths[c]].tolist()
    assert 0.5 < changed / 150 < 1  # rate 0.1 on 20-odd merges per caption changes most rows, not all
    made = {"rate": 0.1, "variants": 3, "seed": 7, "rows": 150, "changed": changed, "replaced": 0}
    assert train.header["bpe_dropout"] == made
    with pytest.raises(KeyError, match="holds no BPE-dropout variants"):
        val.dropout_variants(0)
    assert dropout_metrics(cache) == {
        "train/bpe_dropout/replaced": 0.0,
        "train/bpe_dropout/changed_share": changed / 150,
    }


def test_the_variants_follow_the_seed_alone_not_the_batch_size(data, bpe, tmp_path):
    options = BpeDropout(rate=0.1, variants=2, seed=3)
    one = build(data, tmp_path / "a", bpe, dropout=options, batch_size=64, splits=("train",)).split("train")
    other = build(data, tmp_path / "b", bpe, dropout=options, batch_size=3, splits=("train",)).split("train")
    reseeded = build(data, tmp_path / "c", bpe, dropout=attrs.evolve(options, seed=4), splits=("train",)).split("train")
    assert all(np.array_equal(one.dropout_variants(i)[0], other.dropout_variants(i)[0]) for i in range(10))
    assert any(not np.array_equal(one.dropout_variants(i)[0], reseeded.dropout_variants(i)[0]) for i in range(10))


def test_a_variant_longer_than_the_text_space_is_stored_as_the_canonical_row(data, bpe, tmp_path, caplog):
    store = LmdbStore(data.path("train"))
    captions = [[" ".join(c.lower().split()) for c in store[i].captions] for i in range(COUNTS["train"])]
    longest = max(len(bpe.encode_ids(c)) for rows in captions for c in rows)
    short = with_max_length(bpe, longest + 2)  # room for every canonical row, not for every variant
    with caplog.at_level(logging.INFO, logger="mmgen.plugins.datasets.cache_stage"):
        cache = build(data, tmp_path / "cache", short, dropout=BpeDropout(rate=0.1, variants=4), splits=("train",))
    train = cache.split("train")
    expected_replaced = 0
    for index, rows in enumerate(captions):
        seeds = variant_seeds(0, index, 20)
        tokens, lengths = train.dropout_variants(index)
        canonical, canonical_lengths = train.captions(index)
        for c, k in itertools.product(range(5), range(4)):
            full = ids(bpe.encode_dropout([rows[c]], rate=0.1, seeds=[seeds[c * 4 + k]]), 0)
            if len(full) > short.max_length:
                expected_replaced += 1
                assert np.array_equal(tokens[c, k], canonical[c]) and lengths[c, k] == canonical_lengths[c]
            else:
                assert tokens[c, k, : lengths[c, k]].tolist() == full
    assert expected_replaced > 0
    made = train.header["bpe_dropout"]
    assert made["replaced"] == expected_replaced
    assert dropout_metrics(cache)["train/bpe_dropout/replaced"] == float(expected_replaced)
    assert (
        f"cache train: 4 BPE-dropout variants per caption at rate 0.1; {made['changed']} of 200 differ from the"
        f" canonical row, {expected_replaced} were too long for the text space (stored as the canonical row)"
    ) in caplog.messages
    assert expected_replaced * 4 <= 200 and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_more_than_a_quarter_too_long_adds_a_hint(caplog):
    made = {"rate": 0.1, "variants": 4, "seed": 0, "rows": 100, "changed": 90}
    with caplog.at_level(logging.INFO, logger="mmgen.plugins.datasets.cache_stage"):
        log_variants("train", {**made, "replaced": 25})
        log_variants("train", {**made, "replaced": 26})
    line = (
        "cache train: 4 BPE-dropout variants per caption at rate 0.1; 90 of 100 differ from the canonical row,"
        " {} were too long for the text space (stored as the canonical row)"
    )
    hint = "; a larger max_length of the text tokenizer (or a lower cache.bpe_dropout.rate) keeps more"
    assert caplog.messages == [line.format(25), line.format(26) + hint]
    assert all(r.levelno == logging.INFO for r in caplog.records)


# ---- reading ------------------------------------------------------------------------------


def text_rows(batch):
    text = batch.segments[1]
    return [text.tokens[i, : int(text.lengths[i])].tolist() for i in range(len(text.tokens))]


def test_each_read_shows_one_stored_variant_drawn_from_seed_epoch_and_index(data, bpe, tmp_path):
    train = build(data, tmp_path / "cache", bpe, dropout=BpeDropout(variants=4), splits=("train",)).split("train")
    plain = build(data, tmp_path / "plain", bpe, dropout=BpeDropout(variants=0), splits=("train",)).split("train")
    shown = {}
    for epoch in range(12):
        for dataset in (train, plain):
            dataset.seed, dataset.epoch = 5, epoch
        for index in range(COUNTS["train"]):
            item, canonical = train[index], plain[index]
            # The same caption as the plain cache picks (same hash), shown as one of its variants.
            tokens, lengths = train.dropout_variants(index)
            row = next(c for c in range(5) if np.array_equal(train.captions(index)[0][c], canonical.tokens["text"]))
            stored = [tokens[row, k].tolist() for k in range(4)]
            assert item.tokens["text"].tolist() in stored
            assert item.lengths["text"] == lengths[row, stored.index(item.tokens["text"].tolist())]
            assert np.array_equal(item.tokens["image"], canonical.tokens["image"])
            shown.setdefault((index, row), set()).add(stored.index(item.tokens["text"].tolist()))
    assert max(len(v) for v in shown.values()) >= 3  # different reads show different variants
    again = TokenCacheDataset(train.path, seed=5)
    again.set_epoch(11)
    assert [again[i].tokens["text"].tolist() for i in range(10)] == [
        train[i].tokens["text"].tolist() for i in range(10)
    ]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_stream_reads_the_same_variants(data, bpe, tmp_path, num_workers):
    train = build(data, tmp_path / "cache", bpe, dropout=BpeDropout(variants=4), splits=("train",)).split("train")

    def stream(dataset):
        return BatchStream(dataset, batch_size=3, collate=dataset.collate, seed=9, num_workers=num_workers)

    whole = stream(TokenCacheDataset(train.path, seed=9))
    expected = [text_rows(b) for b in itertools.islice(whole, 8)]  # 3 batches an epoch: crosses two epochs
    whole.close()
    first = stream(TokenCacheDataset(train.path, seed=9))
    head = [text_rows(b) for b in itertools.islice(first, 4)]
    state = first.state_dict()
    first.close()
    resumed = stream(TokenCacheDataset(train.path, seed=9))
    resumed.load_state_dict(state)
    tail = [text_rows(b) for b in itertools.islice(resumed, 4)]
    resumed.close()
    assert head + tail == expected
    canonical = {tuple(r) for i in range(10) for r in train.captions(i)[0].tolist()}
    assert any(tuple(row + [EOS_ID] * (80 - len(row))) not in canonical for batch in expected for row in batch)


# ---- the recipe -----------------------------------------------------------------------------


def test_recipe_options_and_their_errors():
    registry = load_registry()
    config = structure(CacheStage.Config, {"bpe_dropout": {"variants": 2}}, path="stages.cache", registry=registry)
    assert config.bpe_dropout == BpeDropout(rate=0.1, variants=2, seed=0)
    assert CacheStage.Config().bpe_dropout == BpeDropout(rate=0.1, variants=4, seed=0)  # the paper's rate
    for bad, message in (
        ({"rate": 1.5}, "stages.cache.bpe_dropout.rate: must be in [0, 1], got 1.5"),
        ({"variants": -1}, "stages.cache.bpe_dropout.variants: must be >= 0, got -1"),
    ):
        with pytest.raises(ConfigError) as error:
            structure(CacheStage.Config, {"bpe_dropout": bad}, path="stages.cache", registry=registry)
        assert str(error.value) == message


@pytest.mark.parametrize("name", ["quickstart", "shapes", "compare_argvlt"])
def test_the_shapes_recipes_keep_bpe_dropout_off(name):
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", registry=load_registry())
    cache = next(entry for entry in recipe.stages if entry.key == "cache")
    assert cache.spec.config.bpe_dropout.variants == 0
