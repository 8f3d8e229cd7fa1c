"""The `shapes` dataset plugin: records, splits, held-out pairs, determinism."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from mmgen.plugins.datasets.shapes.captions import prompt
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.shapes.render import render
from mmgen.plugins.datasets.shapes.scene import Scene
from mmgen.plugins.datasets.shapes.spec import CELLS

COUNTS = {"train": 40, "val": 10, "test": 10, "holdout": 10}


def pairs(record):
    return {(o["colour"], o["shape"]) for o in record.meta["objects"]}


def test_records_are_complete_and_consistent():
    data = ShapesDataset(size=32, max_objects=2, counts=COUNTS, seed=1)
    assert data.splits() == ("train", "val", "test", "holdout")
    records = list(data.records("val"))
    assert [r.key for r in records] == [f"val-{i:07d}" for i in range(10)]
    for record in records:
        assert record.modality == "image" and len(record.captions) == 5
        scene = Scene.from_json(json.loads(json.dumps(record.meta)))
        pixels = np.asarray(Image.open(io.BytesIO(record.data)))
        assert Image.open(io.BytesIO(record.data)).format == "PNG"
        assert (pixels == render(scene, 32)).all()
        assert record.captions[0] == prompt(scene.specs)


def test_same_seed_same_bytes_and_other_seed_differs():
    first = [(r.data, r.captions, r.meta) for r in ShapesDataset(size=32, counts=COUNTS, seed=1).records("train")]
    again = [(r.data, r.captions, r.meta) for r in ShapesDataset(size=32, counts=COUNTS, seed=1).records("train")]
    other = [(r.data, r.captions, r.meta) for r in ShapesDataset(size=32, counts=COUNTS, seed=2).records("train")]
    assert first == again and first != other
    # A split's records do not depend on the other splits' counts.
    smaller = ShapesDataset(size=32, counts={"train": 5}, seed=1)
    assert [(r.data, r.captions) for r in smaller.records("train")] == [(d, c) for d, c, _ in first[:5]]


def test_held_out_pairs_stay_out_of_train_and_val():
    data = ShapesDataset(size=32, max_objects=3, counts={**COUNTS, "train": 150}, seed=0)
    held = ("yellow", "triangle")
    assert all(held not in pairs(r) for split in ("train", "val") for r in data.records(split))
    assert all(held in pairs(r) for r in data.records("holdout"))
    kept = ShapesDataset(size=32, max_objects=3, counts={"train": 150}, seed=0, hold_out=False)
    assert kept.splits() == ("train",)
    assert any(held in pairs(r) for r in kept.records("train"))


def test_config_and_errors():
    config = ShapesDataset.Config(
        size=32, train=3, val=0, test=2, holdout=1, holdout_pairs=("red circle", "blue cross")
    )
    data = ShapesDataset.from_config(config)
    assert data.splits() == ("train", "test", "holdout") and data.count("test") == 2
    assert data.held_out == (("red", "circle"), ("blue", "cross"))
    with pytest.raises(KeyError, match="shapes has no split 'val'"):
        list(data.records("val"))
    with pytest.raises(ValueError, match="is not '<colour> <shape>'"):
        ShapesDataset(holdout_pairs=("pink circle",))
    with pytest.raises(ValueError, match="size must be one of"):
        ShapesDataset(size=100)


def test_reading_order_lists_objects_by_cell_with_the_same_pixels():
    counts = {"train": 40}
    drawn = ShapesDataset(size=32, max_objects=3, counts=counts, seed=4)
    reading = ShapesDataset(size=32, max_objects=3, counts=counts, seed=4, object_order="reading")
    swapped = 0
    for index in range(40):
        before, after = drawn.record("train", index), reading.record("train", index)
        assert after.data == before.data  # the same image
        cells = [o["cell"] for o in after.meta["objects"]]
        assert cells == sorted(cells, key=CELLS.index)
        assert sorted(cells) == sorted(o["cell"] for o in before.meta["objects"])
        assert after.captions[0] == prompt(Scene.from_json(after.meta).specs)  # `full` follows the order
        swapped += cells != [o["cell"] for o in before.meta["objects"]]
    assert swapped > 5  # drawn order is random, so many scenes were reordered
    assert ShapesDataset.from_config(ShapesDataset.Config(object_order="reading")).object_order == "reading"
    with pytest.raises(ValueError, match="object_order must be one of \\('drawn', 'reading'\\), got 'sorted'"):
        ShapesDataset(object_order="sorted")
