"""VQAv2 ingestion on a hand-made file in the VQAv2 layout with malformed entries: exact skip lines and counts."""

import json

from click.testing import CliRunner

from ingest_helpers import broken_png, encoded, gradient
from mmgen.cli import main
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.ingest.vqav2 import vqav2_candidates
from mmgen.plugins.datasets.ingest.vqav2_command import skip_lines
from mmgen.plugins.datasets.lmdb_store import LmdbStore

BROWN = [{"answer": "brown", "answer_confidence": "yes", "answer_id": i} for i in range(1, 9)]
TAN = [{"answer": "tan", "answer_confidence": "maybe", "answer_id": i} for i in (9, 10)]
YES = [{"answer": "yes", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]


def annotation(question_id, image_id, answers=YES, **fields):
    return {
        "question_id": question_id,
        "image_id": image_id,
        "question_type": "what color is the",
        "answer_type": "other",
        "multiple_choice_answer": answers[0]["answer"],
        "answers": answers,
        **fields,
    }


QUESTIONS = {
    "data_subtype": "val2014",
    "questions": [
        {"image_id": 1, "question": "What color is the dog?", "question_id": 10},  # the one good question
        {"image_id": 1, "question": "Is it sunny?", "question_id": 11},  # its annotation has 9 answers
        {"image_id": 2, "question": "How many?", "question_id": 20},  # its image does not decode
        {"image_id": 3, "question": "Where?", "question_id": 30},  # its image is missing
        {"image_id": 1, "question_id": 12},
        {"image_id": 1, "question": "Again?", "question_id": 10},
        {"image_id": 1, "question": "Annotated?", "question_id": 13},
        "junk",
        {"image_id": "1", "question": "A string id?", "question_id": 14},
        {"image_id": 1, "question": "Which image?", "question_id": 15},  # its annotation names image 2
        {"image_id": 1, "question": "Broken answers?", "question_id": 16},
    ],
}
ANNOTATIONS = {
    "annotations": [
        annotation(10, 1, BROWN + TAN),
        annotation(11, 1, YES[:9]),
        annotation(20, 2),
        annotation(30, 3),
        annotation(99, 1),
        annotation(10, 1),
        {"image_id": 1},
        annotation(15, 2),
        annotation(16, 1, YES[:3] + ["yes"] + YES[4:]),
    ]
}
Q, A = "questions.json", "annotations.json"
# In the store's key order: question ids (as text), then the keys of entries without one (file and index).
EXPECTED_SKIPS = [
    f"skipped {Q} questions[1], question_id 11: bad annotation: {A} annotations[1]: 9 answers, not 10",
    f"skipped {Q} questions[6], question_id 13: no annotation: {A} has none for this question_id",
    f"skipped {Q} questions[9], question_id 15: bad annotation: {A} annotations[7]: image_id 2 is not the question's 1",
    f"skipped {Q} questions[10], question_id 16: bad annotation: {A} annotations[8]: answers[3] has no text 'answer'",
    f"skipped {Q} questions[2], question_id 20: corrupt or truncated image: "
    "broken data stream when reading image file",
    f"skipped {Q} questions[3], question_id 30: unknown image: COCO_val2014_000000000003.jpg (image_id 3)",
    f"skipped {A} annotations[4]: annotation without question: question_id 99 is not in {Q}",
    f"skipped {A} annotations[5]: duplicate annotation: question_id 10 is also at {A} annotations[0]",
    f"skipped {A} annotations[6]: bad annotation: no 'question_id'",
    f"skipped {Q} questions[4]: bad question: no 'question'",
    f"skipped {Q} questions[5]: duplicate question: question_id 10 is also at {Q} questions[0]",
    f"skipped {Q} questions[7]: bad question: not an object (str)",
    f"skipped {Q} questions[8]: bad question: 'image_id' is str, not int",
]


def write_source(tmp_path):
    images = tmp_path / "val2014"
    images.mkdir()
    (images / "COCO_val2014_000000000001.jpg").write_bytes(encoded(gradient(), "JPEG"))
    (images / "COCO_val2014_000000000002.jpg").write_bytes(broken_png())
    (tmp_path / Q).write_text(json.dumps(QUESTIONS))
    (tmp_path / A).write_text(json.dumps(ANNOTATIONS))
    return tmp_path / Q, tmp_path / A, images


def test_good_question_becomes_a_vqa_record_and_every_bad_entry_one_skip(tmp_path):
    questions, annotations, images = write_source(tmp_path)
    report = ingest(vqav2_candidates(questions, annotations, images), tmp_path / "out.lmdb", progress=False)
    assert (report.records, report.fixed, report.skipped) == (1, 0, 13)
    assert report.skip_reasons == {
        "bad annotation": 4,
        "bad question": 3,
        "duplicate question": 1,
        "duplicate annotation": 1,
        "annotation without question": 1,
        "no annotation": 1,
        "unknown image": 1,
        "corrupt or truncated image": 1,
    }
    assert skip_lines(tmp_path / "out.lmdb") == EXPECTED_SKIPS
    (record,) = LmdbStore(tmp_path / "out.lmdb").records()
    assert record.key == "10" and record.modality == "image"
    assert record.captions == ("question: What color is the dog? answer: brown",)
    assert record.meta == {
        "question": "What color is the dog?",
        "answer": "brown",
        "answers": ["brown"] * 8 + ["tan"] * 2,
        "question_type": "what color is the",
        "answer_type": "other",
        "question_id": 10,
        "image_id": 1,
        "file_name": "COCO_val2014_000000000001.jpg",
    }


def test_image_map_names_the_files(tmp_path):
    questions, annotations, images = write_source(tmp_path)
    (images / "dog.jpg").write_bytes(encoded(gradient(), "JPEG"))
    (tmp_path / "map.json").write_text(json.dumps({"1": "dog.jpg", "3": "../outside.jpg"}))
    candidates = vqav2_candidates(questions, annotations, images, image_map=tmp_path / "map.json")
    by_key = {c.key: c for c in candidates}
    assert by_key["10"].path == (images / "dog.jpg").resolve() and not by_key["10"].problems
    assert by_key["20"].problems == ("unknown image: image_id 2 is not in the image map",)
    assert by_key["30"].problems == ("bad path: ../outside.jpg is outside the image folder",)


def run(*args):
    result = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_command_prints_each_skip_then_the_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("MMGEN_NO_PROGRESS", "1")
    questions, annotations, images = write_source(tmp_path)
    out = tmp_path / "vqa.lmdb"
    args = ["data", "ingest", "vqav2", "--questions", questions, "--annotations", annotations, "--images", images]
    code, output = run(*map(str, args), "--out", str(out))
    assert code == 0, output
    assert output.splitlines() == [
        *EXPECTED_SKIPS,
        f"{out}: 1 records (0 fixed), 13 skipped",
        "this run: 14 items handled, 0 already present",
        "skipped:",
        "       1  annotation without question",
        "       4  bad annotation",
        "       3  bad question",
        "       1  corrupt or truncated image",
        "       1  duplicate annotation",
        "       1  duplicate question",
        "       1  no annotation",
        "       1  unknown image",
    ]
    # A file not in the VQAv2 layout: one line, nothing ingested.
    (tmp_path / "bad.json").write_text(json.dumps({"annotation": []}))
    bad = [*args[:5], "--annotations", tmp_path / "bad.json", "--images", images, "--out", tmp_path / "other.lmdb"]
    code, output = run(*map(str, bad))
    assert code == 1
    assert output == f"Error: {tmp_path / 'bad.json'}: not a VQAv2 file (no 'annotations' list at the top)\n"
    assert not (tmp_path / "other.lmdb").exists()
