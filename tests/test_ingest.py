"""Ingestion from a folder (JSONL / CSV), COCO captions and dataset plugins, over broken input."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from ingest_helpers import (
    EXPECTED_FIXED,
    EXPECTED_RECORDS,
    EXPECTED_SKIPPED,
    encoded,
    gradient,
    image_files,
    write_corpus,
)
from mmgen.plugins.datasets.ingest.caption_text import clean_captions
from mmgen.plugins.datasets.ingest.coco import coco_candidates
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.folder import folder_candidates
from mmgen.plugins.datasets.ingest.image_checks import BadItem, check_image
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset


def pixels(data):
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGB"
    return np.asarray(image)


def test_broken_folder_corpus_exact_counts(tmp_path):
    captions = write_corpus(tmp_path / "images")
    report = ingest(folder_candidates(tmp_path / "images", captions), tmp_path / "out.lmdb", progress=False)
    assert (report.records, report.fixed, report.skipped) == (EXPECTED_RECORDS, 8, 11)
    assert report.skip_reasons == EXPECTED_SKIPPED
    assert report.fix_reasons == {k.split(":")[0]: v for k, v in EXPECTED_FIXED.items()}
    assert (report.new, report.already_present) == (21, 0)

    store = LmdbStore(tmp_path / "out.lmdb")
    files = image_files()
    by_key = {store[i].key: store[i] for i in range(len(store))}
    assert sorted(by_key) == sorted(
        [
            "good.png",
            "good.jpg",
            "gray.png",
            "rgba.png",
            "palette.png",
            "cmyk.jpg",
            "deep.png",
            "rotated.jpg",
            "image.bmp",
            "latin.png",
        ]
    )
    # Good PNG / JPEG bytes are stored untouched; rows for the same image merge their captions.
    assert by_key["good.png"].data == files["good.png"] and by_key["good.jpg"].data == files["good.jpg"]
    assert by_key["good.png"].captions == ("a picture called good.png", "a second caption")
    assert by_key["good.png"].meta == {"id": "good.png", "image": "good.png", "source": "extra"}
    # Converted ones are 8-bit RGB PNGs with the right pixels.
    assert (pixels(by_key["gray.png"].data) == 120).all()
    assert (pixels(by_key["rgba.png"].data) == 255).all()  # fully transparent red over white
    assert (pixels(by_key["deep.png"].data) == 255).all()
    assert pixels(by_key["rotated.jpg"].data).shape == (4, 2, 3)  # 4x2 rotated to 2 wide, 4 high
    assert (pixels(by_key["image.bmp"].data) == np.asarray(gradient())).all()
    assert by_key["latin.png"].captions == ("un café crème",)
    issues = dict(store.issues())
    assert issues["bomb.png"]["reasons"][0].startswith("too many pixels")
    assert issues["nothere.png"] == {
        "key": "nothere.png",
        "status": "skipped",
        "reasons": ["missing image: nothere.png"],
        "fixes": [],
        "source": "captions.jsonl:20",
    }
    assert issues["blank_caption.png"]["fixes"] == ["caption dropped: empty"]


def test_rerun_over_a_finished_store_changes_nothing(tmp_path):
    captions = write_corpus(tmp_path / "images")
    first = ingest(folder_candidates(tmp_path / "images", captions), tmp_path / "out.lmdb", progress=False)
    again = ingest(folder_candidates(tmp_path / "images", captions), tmp_path / "out.lmdb", progress=False)
    assert (again.new, again.already_present) == (0, 21)
    assert (again.records, again.fixed, again.skipped) == (first.records, first.fixed, first.skipped)


def test_csv_captions_one_row_per_caption(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(encoded(gradient(), "PNG"))
    (folder / "b.jpg").write_bytes(encoded(gradient(), "JPEG"))
    rows = b'image,caption,id\na.png,"first, with a comma",\na.png,second,\nb.jpg,caf\xe9,B\nb.jpg,,B\nc.png,gone,\n'
    (folder / "captions.csv").write_bytes(rows)
    report = ingest(folder_candidates(folder, folder / "captions.csv"), tmp_path / "out.lmdb", progress=False)
    assert (report.records, report.fixed, report.skipped) == (2, 1, 1)
    assert report.skip_reasons == {"missing image": 1}
    assert report.fix_reasons == {"caption not UTF-8": 1, "caption dropped": 1}
    store = LmdbStore(tmp_path / "out.lmdb")
    assert [(r.key, r.captions) for r in store.records()] == [
        ("a.png", ("first, with a comma", "second")),
        ("B", ("café",)),
    ]


def test_csv_without_the_needed_columns_is_refused(tmp_path):
    (tmp_path / "captions.csv").write_text("file,text\na.png,hello\n")
    with pytest.raises(ValueError, match="CSV captions need 'image' and 'caption' columns"):
        folder_candidates(tmp_path, tmp_path / "captions.csv")


def test_coco_captions(tmp_path):
    folder = tmp_path / "val2014"
    folder.mkdir()
    (folder / "1.jpg").write_bytes(encoded(gradient(), "JPEG"))
    (folder / "3.jpg").write_bytes(encoded(Image.new("CMYK", (4, 4)), "JPEG"))
    (folder / "4.jpg").write_bytes(encoded(gradient(), "JPEG"))
    annotations = {
        "images": [
            {"id": 1, "file_name": "1.jpg"},
            {"id": 2, "file_name": "2.jpg"},
            {"id": 1, "file_name": "3.jpg"},
            {"id": 3, "file_name": "3.jpg"},
            {"id": 4, "file_name": "4.jpg"},
            {"file_name": "5.jpg"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A dog.\n"},
            {"id": 11, "image_id": 1, "caption": "a  brown dog"},
            {"id": 12, "image_id": 2, "caption": "lost"},
            {"id": 13, "image_id": 3, "caption": "a cat"},
            {"id": 14, "image_id": 99, "caption": "orphan"},
            {"id": 15, "image_id": 4, "caption": ""},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(annotations))
    candidates = coco_candidates(tmp_path / "captions.json", folder)
    report = ingest(candidates, tmp_path / "out.lmdb", progress=False)
    assert (report.records, report.fixed, report.skipped) == (2, 1, 5)
    assert report.skip_reasons == {"missing image": 2, "duplicate id": 1, "no usable caption": 1, "bad entry": 1}
    store = LmdbStore(tmp_path / "out.lmdb")
    assert [(r.key, r.captions) for r in store.records()] == [("1", ("A dog.", "a brown dog")), ("3", ("a cat",))]
    assert store.get("1").meta == {"coco_id": 1, "file_name": "1.jpg", "annotation_ids": [10, 11]}


def test_dataset_plugin_records_are_stored_as_given(tmp_path):
    data = ShapesDataset(size=32, counts={"train": 6})
    report = ingest(dataset_candidates(data, "train"), tmp_path / "train.lmdb", total=6, progress=False)
    assert (report.records, report.fixed, report.skipped) == (6, 0, 0)
    assert list(LmdbStore(tmp_path / "train.lmdb").records()) == list(data.records("train"))


def test_image_checks_directly():
    good = encoded(gradient(), "PNG")
    assert check_image(good).data == good and check_image(good).fixes == ()
    with pytest.raises(BadItem, match="too many pixels: 8x6 is over the limit of 40"):
        check_image(good, max_pixels=40)
    with pytest.raises(BadItem, match="^empty file$"):
        check_image(b"")


def test_caption_cleaning():
    clean = clean_captions(["  two\tspaces\n", "", 7, "caf\udce9"])
    assert clean.captions == ("two spaces", "café")
    assert clean.fixes == (
        "caption dropped: empty",
        "caption dropped: not text (int)",
        "caption not UTF-8: decoded as cp1252",
    )
