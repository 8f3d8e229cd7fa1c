"""The `shapes_vqa` dataset: exact answers on hand-built scenes, balance, determinism, records through ingest."""

from collections import Counter, defaultdict

import pytest

from mmgen.api import ConfigError, load_registry, structure
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.shapes.scene import ObjectSpec
from mmgen.plugins.datasets.shapes_vqa.dataset import ShapesVqaDataset
from mmgen.plugins.datasets.shapes_vqa.questions import answers_of, scene_questions


def spec(colour, shape, size, cell):
    return ObjectSpec(shape=shape, colour=colour, size=size, cell=cell)


def dataset(**options):
    config = {"size": 32, "train": 100, "val": 4, "test": 4, "holdout": 4, **options}
    return ShapesVqaDataset.from_config(ShapesVqaDataset.Config(**config))


def test_every_question_type_on_a_hand_built_scene():
    specs = [spec("red", "circle", "small", "top left"), spec("blue", "square", "large", "center")]
    pairs = [("red", "circle"), ("green", "cross"), ("orange", "square")]
    assert scene_questions(specs, existence_pairs=pairs) == {
        "colour": {"red": ["what colour is the circle?"], "blue": ["what colour is the square?"]},
        "shape": {"circle": ["what shape is the red object?"], "square": ["what shape is the blue object?"]},
        "size": {"small": ["what size is the circle?"], "large": ["what size is the square?"]},
        "position": {"top left": ["where is the circle?"], "center": ["where is the square?"]},
        "counting": {
            "2": ["how many objects are there?"],
            "1": [
                "how many circles are there?",
                "how many squares are there?",
                "how many red objects are there?",
                "how many blue objects are there?",
            ],
            "0": [
                "how many triangles are there?",
                "how many crosses are there?",
                "how many green objects are there?",
                "how many yellow objects are there?",
                "how many purple objects are there?",
                "how many orange objects are there?",
            ],
        },
        "existence": {
            "yes": ["is there a red circle?"],
            "no": ["is there a green cross?", "is there an orange square?"],
        },
        # The circle is in row 0, column 0; the square in row 1, column 1.
        "relation": {
            "yes": [
                "is the circle to the left of the square?",
                "is the circle above the square?",
                "is the square to the right of the circle?",
                "is the square below the circle?",
            ],
            "no": [
                "is the circle to the right of the square?",
                "is the circle below the square?",
                "is the square to the left of the circle?",
                "is the square above the circle?",
            ],
        },
    }


def test_objects_are_named_by_the_simplest_form_that_singles_them_out():
    # Two red circles told apart by size; a third object alike in all but the cell is never named but by cell.
    specs = [
        spec("red", "circle", "small", "top left"),
        spec("red", "circle", "large", "right"),
        spec("red", "circle", "large", "bottom"),
    ]
    found = scene_questions(specs, existence_pairs=[])
    assert found["position"] == {"top left": ["where is the small circle?"]}
    assert found["colour"] == {
        "red": ["what colour is the small circle?", "what colour is the object in the right?",
                "what colour is the object in the bottom?"]
    }
    assert found["size"] == {
        "small": ["what size is the object in the top left?"],
        "large": ["what size is the object in the right?", "what size is the object in the bottom?"],
    }
    # Only the small one can be named without its cell, so no relation question has two objects to name.
    assert "relation" not in found
    assert found["counting"]["3"] == ["how many objects are there?", "how many circles are there?",
                                      "how many red objects are there?"]


def test_records_carry_the_vqa_text_and_fields_and_the_shapes_image():
    data = dataset()
    shapes = ShapesDataset(size=32, counts={"train": 100, "val": 4, "test": 4, "holdout": 4})
    records = list(data.records("val"))
    assert data.count("val") == len(records) == 12
    assert [r.key for r in records[:4]] == ["val-0000000-q0", "val-0000000-q1", "val-0000000-q2", "val-0000001-q0"]
    image = shapes.record("val", 1)
    for record in records[3:6]:
        assert record.data == image.data
        assert {k: record.meta[k] for k in ("size", "objects")} == image.meta
    for record in records:
        meta = record.meta
        assert record.captions == (f"question: {meta['question']} answer: {meta['answer']}",)
        assert meta["answers"] == [meta["answer"]] * 10
        assert meta["question_id"] == record.key and record.key.startswith(meta["image_id"])
        assert meta["answer"] in answers_of(meta["question_type"], max_objects=2)
    assert len({r.meta["question_type"] for r in records[:3]}) == 3  # an image's questions are of distinct types


def test_types_and_answers_are_balanced_within_a_split():
    records = list(dataset().records("train"))
    types = Counter(r.meta["question_type"] for r in records)
    answers = defaultdict(Counter)
    for record in records:
        answers[record.meta["question_type"]][record.meta["answer"]] += 1
    # Relation questions need two objects, so a run of one-object scenes can hold them back a little.
    assert len(records) == 300 and max(types.values()) - min(types.values()) <= 2
    for question_type, counts in answers.items():
        values = [counts[a] for a in answers_of(question_type, max_objects=2)]
        if question_type in ("existence", "relation"):
            assert abs(values[0] - values[1]) <= 1, (question_type, values)
        else:
            assert max(values) - min(values) <= 3, (question_type, values)


def test_same_seed_same_bytes_other_seed_differs_and_held_out_pairs_are_never_named_in_train():
    def texts(data, split):
        return [(r.key, r.data, r.captions, r.meta) for r in data.records(split)]

    first = dataset(train=30)
    assert texts(first, "train") == texts(dataset(train=30), "train") != texts(dataset(train=30, seed=1), "train")
    assert texts(first, "val") == texts(dataset(train=7), "val")  # a split does not depend on the others' counts
    assert ("yellow", "triangle") not in first.existence_pairs("train") + first.existence_pairs("val")
    assert ("yellow", "triangle") in first.existence_pairs("test")
    assert not any("yellow triangle" in r.captions[0] for r in first.records("train"))


def test_records_are_stored_as_given_and_config_errors_name_the_field(tmp_path):
    data = dataset(train=3)
    report = ingest(dataset_candidates(data, "train"), tmp_path / "train.lmdb", total=9, progress=False)
    assert (report.records, report.skipped) == (9, 0)
    assert list(LmdbStore(tmp_path / "train.lmdb").records()) == list(data.records("train"))
    registry = load_registry()
    with pytest.raises(ConfigError, match="questions_per_image: must be in 1..7"):
        structure(ShapesVqaDataset.Config, {"questions_per_image": 8}, path="shapes_vqa", registry=registry)
    with pytest.raises(ConfigError, match="size: must be one of 32, 64, 128"):
        structure(ShapesVqaDataset.Config, {"size": 48}, path="shapes_vqa", registry=registry)
