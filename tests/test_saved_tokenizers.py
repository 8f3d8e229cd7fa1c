import pytest
from registry_helpers import stage_context

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


# ---- image and text together, and the `tokenizers` recipe stage ---------------------

from mmgen.config import structure_spec  # noqa: E402
from mmgen.plugins.datasets.lmdb_store import StoreWriter  # noqa: E402
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset  # noqa: E402


class Tracker:
    def __init__(self):
        self.metrics, self.images = {}, []

    def log_metrics(self, metrics, *, step=None):
        self.metrics.update(metrics)

    def log_image(self, image, *, file_name):
        self.images.append(file_name)


def write_data_stage(folder):
    shapes = ShapesDataset(size=32, counts={"train": 24, "val": 4})
    for split in ("train", "val"):
        with StoreWriter(folder / f"{split}.lmdb") as writer:
            for record in shapes.records(split):
                writer.add(record)
    return shapes


def test_tokenizers_stage_trains_and_saves_image_then_text(tmp_path):
    registry = load_registry()
    shapes = write_data_stage(tmp_path / "data")
    options = {
        "use": "tokenizers",
        "tokenizers": [
            {"use": "vqgan", "preset": "tiny", "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "eval_images": 4}},
            {"use": "sentencepiece_bpe", "vocab_size": 200, "max_length": 24},
        ],
    }
    stage = registry.build(structure_spec("stages", options, path="stages.tokenizers", registry=registry))
    tracker = Tracker()
    stage.run(stage_context(tmp_path / "out", folders={"data": tmp_path / "data"}, registry=registry, tracker=tracker))

    loaded = load_saved_tokenizers(tmp_path / "out", registry)
    assert list(loaded) == ["image", "text"]
    assert (loaded["image"].name, loaded["text"].name) == ("vqgan", "sentencepiece_bpe")
    assert loaded["image"].token_space.shape == (4, 4)
    record = shapes.record("val", 0)
    caption = record.captions[0]
    assert loaded["text"].decode(loaded["text"].encode([caption])) == [caption]
    image = loaded["image"].load_item(record.data)
    assert loaded["image"].decode(loaded["image"].encode(image[None]))[0].shape == (3, 16, 16)
    # The val split is evaluated and logged under the tokenizer's modality.
    assert {"image/val/psnr", "image/val/codebook_usage", "image/val/perplexity"} <= set(tracker.metrics)
    assert "text/vocab_size" in tracker.metrics and tracker.images == ["reconstructions/step_0000003.png"]


def test_saving_under_another_modality_is_refused(tmp_path):
    with pytest.raises(ValueError, match="the tokenizer saved as 'image' encodes modality 'text'"):
        save_tokenizers({"image": trained("text")}, tmp_path)
    with pytest.raises(ValueError, match="cannot name a folder"):
        save_tokenizers({"../text": trained("../text")}, tmp_path)
