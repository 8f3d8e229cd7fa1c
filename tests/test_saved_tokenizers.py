import pytest

from mmgen.registry import load_registry
from mmgen.tokenizers.saved import SavedTokenizerError, load_saved_tokenizers, save_tokenizers
from mmgen.tokenizers.sentencepiece_bpe import SentencePieceBPE


def trained(modality):
    tokenizer = SentencePieceBPE(modality=modality, vocab_size=60, max_length=8)
    tokenizer.train(["a red circle", "a blue square"] * 5)
    return tokenizer


def test_order_and_hash_are_kept(tmp_path):
    registry = load_registry()
    save_tokenizers({"caption": trained("caption"), "question": trained("question")}, tmp_path)
    loaded = load_saved_tokenizers(tmp_path, registry)
    assert list(loaded) == ["caption", "question"]
    assert loaded["caption"].decode(loaded["caption"].encode(["a red circle"])) == ["a red circle"]


def test_altered_files_are_refused(tmp_path):
    registry = load_registry()
    save_tokenizers({"text": trained("text")}, tmp_path)
    (tmp_path / "text" / "bpe.json").write_text((tmp_path / "text" / "bpe.json").read_text().replace('"max_length": 8', '"max_length": 9'))
    with pytest.raises(SavedTokenizerError, match="does not match"):
        load_saved_tokenizers(tmp_path, registry)
    with pytest.raises(SavedTokenizerError, match="tokenizers.json is missing"):
        load_saved_tokenizers(tmp_path / "nowhere", registry)
