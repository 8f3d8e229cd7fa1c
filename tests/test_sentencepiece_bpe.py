import pytest
import torch

from mmgen.tokenizers.sentencepiece_bpe import EOS_ID, SentencePieceBPE

CAPTIONS = [
    "a large red circle in the top left",
    "a small blue square in the center and a large green cross in the right",
    "there is a yellow triangle",
    "A Picture of a purple square",
] * 20


@pytest.fixture(scope="module")
def bpe():
    tokenizer = SentencePieceBPE(vocab_size=120, max_length=12, dropout=0.1)
    tokenizer.train(CAPTIONS)
    return tokenizer


def test_token_space_uses_eos_as_pad(bpe):
    space = bpe.token_space
    assert (space.name, space.shape, space.variable_length) == ("text", (12,), True)
    assert space.pad_id == space.eos_id == EOS_ID


def test_round_trip_is_exact_and_lower_cased(bpe):
    texts = ["a large red circle in the top left", "A Picture of a  purple square"]
    segment = bpe.encode(texts)
    assert bpe.decode(segment) == ["a large red circle in the top left", "a picture of a purple square"]


def test_eos_closes_each_row_and_pads_the_rest(bpe):
    segment = bpe.encode(["there is a yellow triangle", ""])
    first, empty = segment.tokens.tolist()
    n = segment.lengths[0].item()
    assert first[n - 1] == EOS_ID and EOS_ID not in first[: n - 1]
    assert first[n:] == [EOS_ID] * (12 - n)
    assert segment.lengths[1].item() == 1 and empty == [EOS_ID] * 12


def test_truncates_to_max_length_keeping_eos(bpe):
    long = " and ".join(["a small blue square in the center"] * 5)
    ids = bpe.encode_ids(long)
    assert len(ids) == 12 and ids[-1] == EOS_ID


def test_dropout_only_when_training():
    bpe = SentencePieceBPE(vocab_size=120, max_length=64, dropout=0.1)
    bpe.train(CAPTIONS)
    text = ["a small blue square in the center and a large green cross in the right"]
    plain = [bpe.encode(text).tokens for _ in range(5)]
    assert all(torch.equal(plain[0], p) for p in plain)
    import sentencepiece as spm

    spm.set_random_generator_seed(3)
    sampled = [bpe.encode(text, training=True).tokens for _ in range(20)]
    assert any(not torch.equal(plain[0], s) for s in sampled)
    # Any segmentation decodes to the same text.
    assert {bpe.decode(bpe.encode(text, training=True))[0] for _ in range(5)} == {text[0]}


def test_decode_drops_specials_and_out_of_range_ids(bpe):
    ids = bpe.encode_ids("a large red circle")
    assert bpe.decode_ids([0, *ids[:-1], 9999, EOS_ID, *ids]) == "a large red circle"


def test_save_load_preserves_tokens_and_hash(bpe, tmp_path):
    bpe.save(tmp_path / "text")
    loaded = SentencePieceBPE.load(tmp_path / "text")
    assert loaded.content_hash() == bpe.content_hash()
    assert torch.equal(loaded.encode(CAPTIONS[:4]).tokens, bpe.encode(CAPTIONS[:4]).tokens)


def test_training_is_deterministic_and_hash_tracks_content():
    a, b, c = (SentencePieceBPE(vocab_size=120, max_length=12) for _ in range(3))
    a.train(CAPTIONS)
    b.train(CAPTIONS)
    c.train(CAPTIONS[:2])
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_errors():
    with pytest.raises(RuntimeError, match="not trained yet"):
        SentencePieceBPE().encode(["x"])
    with pytest.raises(ValueError, match="no non-empty text"):
        SentencePieceBPE().train(["", "  "])
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        SentencePieceBPE(max_length=1)


def test_seeded_dropout_is_repeatable():
    bpe = SentencePieceBPE(vocab_size=120, max_length=64, dropout=0.3)
    bpe.train(CAPTIONS)
    text = ["a small blue square in the center and a large green cross in the right"] * 4
    first = bpe.encode(text, training=True, seed=7).tokens
    assert torch.equal(first, bpe.encode(text, training=True, seed=7).tokens)
    assert any(not torch.equal(first, bpe.encode(text, training=True, seed=s).tokens) for s in range(8, 12))
    # Without `training` the seed changes nothing.
    assert torch.equal(bpe.encode(text, seed=1).tokens, bpe.encode(text, seed=2).tokens)


def test_byte_fallback_round_trips_unseen_characters():
    plain = SentencePieceBPE(vocab_size=400, max_length=32)
    plain.train(CAPTIONS)
    assert plain.decode(plain.encode(["a red ⊕ circle"])) == ["a red  circle"]  # the unknown piece is dropped
    spelled = SentencePieceBPE(vocab_size=400, max_length=32, byte_fallback=True)
    spelled.train(CAPTIONS)
    assert spelled.decode(spelled.encode(["a red ⊕ circle"])) == ["a red ⊕ circle"]
    with pytest.raises(ValueError, match="Vocabulary size is smaller than required_chars"):
        SentencePieceBPE(vocab_size=120, byte_fallback=True).train(CAPTIONS)


class MetricsLog:
    """A tracker that keeps what it is given."""

    def __init__(self) -> None:
        self.logged = {}

    def log_metrics(self, metrics, *, step=None):
        self.logged.update(metrics)


def splits(captions: dict[str, list[str]]):
    """`records(split)` as the data stage gives it: a split it did not write is a MissingSplitError."""
    from mmgen.batch import Record
    from mmgen.errors import MissingSplitError

    def records(split):
        if split not in captions:
            raise MissingSplitError(f"the data stage wrote no {split!r} split")
        texts = captions[split]
        return [Record(key=f"{split}{i}", modality="image", data=b"", captions=(c,)) for i, c in enumerate(texts)]

    return records


def test_fit_reads_train_captions_and_logs_val_lengths():
    records = splits({"train": CAPTIONS, "val": ["a large red circle in the top left"]})
    bpe = SentencePieceBPE(vocab_size=120, max_length=12)
    tracker = MetricsLog()
    bpe.fit(records, tracker=tracker, out_dir=None, device="cpu", seed=0)
    n = len(bpe.encode_ids("a large red circle in the top left"))
    assert tracker.logged == {
        "text/vocab_size": float(bpe.token_space.vocab_size),
        "text/mean_length": float(n),
        "text/truncated_share": 0.0,
    }
    with pytest.raises(TypeError, match="a list of texts, not one str"):
        bpe.encode("a red circle")


def test_fit_without_a_val_split_logs_no_statistics():
    bpe = SentencePieceBPE(vocab_size=120, max_length=12)
    tracker = MetricsLog()
    bpe.fit(splits({"train": CAPTIONS}), tracker=tracker, out_dir=None, device="cpu", seed=0)
    assert tracker.logged == {} and bpe.decode_ids(bpe.encode_ids("a red circle")) == "a red circle"


def test_fit_warns_when_train_captions_are_cut_at_max_length(caplog):
    texts = [*CAPTIONS, "a large red circle in the top left and a small blue square in the bottom right"]
    records = splits({"train": texts})

    # Room for every caption: no warning; its lengths (the same merges: same texts) say what max_length 8 cuts.
    fits = SentencePieceBPE(vocab_size=120, max_length=64)
    with caplog.at_level("WARNING"):
        fits.fit(records, out_dir=None, device="cpu", seed=0)
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
    lengths = [len(fits.encode_ids(t)) for t in texts]  # EOS included
    cut = sum(n > 8 for n in lengths)

    caplog.clear()
    with caplog.at_level("WARNING"):
        SentencePieceBPE(vocab_size=120, max_length=8).fit(records, out_dir=None, device="cpu", seed=0)
    assert 0 < cut < len(texts) and [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"text: {cut} of {len(texts)} train captions ({100 * cut / len(texts):.1f}%) are longer than max_length 8 and "
        f"are cut (the longest: {max(lengths)} tokens with EOS); raise max_length or vocab_size"
    ]
