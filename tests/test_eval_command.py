"""`mmgen eval`: the evaluate stage's metrics over a run's generations or a generations folder, and every
metric (fid, caption, clip_score, shapes_accuracy) in one evaluation and one table."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from generation_helpers import GridImageTokenizer, WordTokenizer
from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.api import Generation, StageContext, StageInputs, load_registry, save_generations, structure_spec
from mmgen.cli import main
from mmgen.plugins.clip.model import ClipModel, ClipSizes
from mmgen.plugins.datasets.data_stage import DataStage
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.stages.evaluate import evaluate, metrics_table
from mmgen.stage_folder import mark_done


def caption_tools() -> bool:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return shutil.which("java") is not None


class NoTracker:
    def log_metrics(self, metrics, *, step=None):
        self.metrics = dict(metrics)

    def log_artifact(self, path, *, artifact_path=None):
        self.artifact = Path(path)


def shapes_records(n: int = 6) -> list:
    dataset = ShapesDataset.from_config(ShapesDataset.Config(size=32, train=0, val=0, test=n, holdout=0))
    return list(dataset.records("test"))


def picture(record) -> np.ndarray:
    with Image.open(io.BytesIO(record.data)) as image:
        return np.asarray(image.convert("RGB"))


def perfect_generations(records) -> list[Generation]:
    """What a perfect model makes from the records: their own pictures and first captions."""
    t2i = [
        Generation(
            task="t2i", key=r.key, inputs={"text": r.captions[0]}, outputs={"image": picture(r)}, reference=r.meta
        )
        for r in records
    ]
    i2t = [
        Generation(
            task="i2t", key=r.key, inputs={"image": picture(r)}, outputs={"text": r.captions[0]}, reference=r.meta
        )
        for r in records
    ]
    return t2i + i2t


class Data:
    def __init__(self, records):
        self.list = records

    def records(self, split):
        return self.list


def specs(names_and_options):
    registry = load_registry()
    return [
        structure_spec("metrics", {"use": name, **options}, path=name, registry=registry)
        for name, options in names_and_options
    ], registry


def test_every_metric_in_one_evaluation_gives_one_table():
    records = shapes_records()
    words = tuple(sorted({word for r in records for c in r.captions for word in c.split()}))
    tokenizers = {
        "image": GridImageTokenizer(grid=(4, 4), size=32, vocab=8),
        "text": WordTokenizer(words=words, length=24),
    }
    torch.manual_seed(0)
    clip = ClipModel(
        ClipSizes(image_vocab=8, image_length=16, text_vocab=len(words) + 1, text_length=24, width=16, depth=1, heads=2)
    ).eval()
    inputs = StageInputs({}, uses={}, loaded={"data": Data(records), "clip": clip, "tokenizers": tokenizers})
    chosen = [("fid", {"extractor": "pixels", "pixels_size": 2}), ("clip_score", {}), ("shapes_accuracy", {})]
    if caption_tools():
        chosen.append(("caption", {}))
    metric_specs, registry = specs(chosen)
    results = evaluate(perfect_generations(records), metric_specs, registry=registry, inputs=inputs, device="cpu")
    assert results["fid/t2i/fid_pixels"] == pytest.approx(0.0, abs=1e-6)  # the records' own pictures
    assert results["shapes_accuracy/t2i/accuracy"] == 1.0 and results["shapes_accuracy/i2t/accuracy"] == 1.0
    assert {"clip_score/t2i", "clip_score/i2t", "clip_score/all"} <= set(results)
    table = metrics_table(results)
    groups = [line.split("  ")[0].strip() for line in table]
    expected = ["clip_score", "fid/t2i", "shapes_accuracy/i2t", "shapes_accuracy/t2i"]
    if caption_tools():
        expected.insert(0, "caption/i2t")
        assert results["caption/i2t/bleu_1"] > 0.5  # each first caption is among its references
    assert groups == expected
    assert table[groups.index("fid/t2i")].split() == ["fid/t2i", "fid_pixels", "0.000", "n", "6"]


def invoke(args):
    return CliRunner().invoke(main, ["eval", *args])


def finished(folder: Path, key: str, use: str) -> Path:
    mark_done(folder, key=key, use=use, digest=folder.name.rpartition("-")[2], seconds=1.0)
    return folder


def test_eval_of_a_run_reads_its_generate_and_data_stages(tmp_path, monkeypatch):
    records = shapes_records()
    run = tmp_path / "run"
    data_dir = run / "artefacts" / "data-aaaa"
    registry = load_registry()
    shapes = {"use": "shapes", "size": 32, "train": 0, "val": 0, "test": 6, "holdout": 0}
    stage = DataStage.from_config(
        DataStage.Config(dataset=structure_spec("datasets", shapes, path="d", registry=registry))
    )
    stage.run(
        StageContext(out_dir=data_dir, inputs=StageInputs({}, uses={}), registry=registry, tracker=NoTracker(), seed=0)
    )
    finished(data_dir, "data", "data")
    save_generations(perfect_generations(records), run / "artefacts" / "generate-bbbb")
    finished(run / "artefacts" / "generate-bbbb", "generate", "generate")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = ["--metric", "fid", "--set", "fid.extractor=pixels", "--metric", "shapes_accuracy"]
    if caption_tools():
        names += ["--metric", "caption"]
    result = invoke([str(run), *names, "--tracker", "mlflow"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "evaluations" / "generate-bbbb.json").read_text())
    assert written["fid/t2i/fid_pixels"] == pytest.approx(0.0, abs=1e-6)  # the data stage's own pictures
    assert written["shapes_accuracy/t2i/accuracy"] == 1.0 and written["fid/t2i/n"] == 6.0
    if caption_tools():
        assert written["caption/i2t/n"] == 6.0 and written["caption/i2t/bleu_1"] > 0.5
    lines = result.stdout.splitlines()  # stderr has MLflow's and Java's notes
    assert lines[:-1] == metrics_table(written)
    assert lines[-1] == f"wrote {Path('evaluations') / 'generate-bbbb.json'}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("eval").experiment_id])
    assert (tracked.info.run_name, tracked.info.status) == ("eval-generate-bbbb", "FINISHED")
    assert tracked.data.metrics == pytest.approx(written)
    assert tracked.data.params["fid.extractor"] == "pixels"
    assert [a.path for a in client.list_artifacts(tracked.info.run_id)] == ["generate-bbbb.json"]

    # A changed generations file is found before anything reads it.
    jsonl = run / "artefacts" / "generate-bbbb" / "generations.jsonl"
    jsonl.write_text(jsonl.read_text() + "\n")
    changed = invoke([str(run), "--metric", "shapes_accuracy", "--tracker", "none"])
    assert changed.exit_code == 2 and changed.output.startswith("error: ") and len(changed.output.splitlines()) == 1
    assert "generations.jsonl" in changed.output


def test_eval_of_a_generations_folder_writes_the_json_it_prints(tmp_path):
    rng = np.random.default_rng(0)
    made = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    save_generations([Generation(task="t2i", key=f"t2i-{i:04d}", inputs={"text": "x"}, outputs={"image": im})
                      for i, im in enumerate(made)], tmp_path / "gens")  # fmt: skip
    (tmp_path / "refs").mkdir()
    for i, image in enumerate(made):
        Image.fromarray(image).save(tmp_path / "refs" / f"{i}.png")
    out = tmp_path / "m.json"
    args = [str(tmp_path / "gens"), "--metric", "fid", "--set", "fid.extractor=pixels", "--tracker", "none"]
    result = invoke([*args, "--set", f"fid.reference_dir={tmp_path / 'refs'}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert sorted(written) == ["fid/t2i/fid_pixels", "fid/t2i/n"] and written["fid/t2i/fid_pixels"] < 1e-6
    assert result.output.splitlines() == ["fid/t2i  fid_pixels 0.000  n 5", f"wrote {out}"]
    # The references of a bare folder: a data stage it does not have.
    no_refs = invoke([*args, "--out", str(out)])
    assert no_refs.exit_code == 2
    assert no_refs.output == (
        "error: fid: no references: give fid.reference_dir, or the data stage the prompts came from "
        "(in a recipe: fid.data_stage; with mmgen eval: --stage data=DIR)\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/nowhere", "--metric", "fid"], "error: mmgen eval: no folder '{tmp}/nowhere'"),
        (
            ["{tmp}", "--metric", "fid"],
            "error: mmgen eval: {tmp} is neither a run workdir (it has no artefacts/) "
            "nor a folder of generations (it has no generations.jsonl)",
        ),
        (
            ["{tmp}/gens", "--metric", "fdi"],
            "error: mmgen eval: fdi.use: no metric named 'fdi'; did you mean 'fid'? "
            f"(registered: {', '.join(load_registry().names('metrics'))})",  # installed packages' metrics too
        ),
        (
            ["{tmp}/gens", "--metric", "fid", "--set", "fid.extractor=vgg"],
            "error: mmgen eval: fid.extractor: unknown extractor 'vgg'; choose one of inception, pixels",
        ),
        (
            ["{tmp}/gens", "--metric", "fid", "--set", "fid.inception_path={tmp}/no.pt"],
            "error: mmgen eval: fid.inception_path: no file at '{tmp}/no.pt'",
        ),
        (
            ["{tmp}/gens", "--metric", "fid", "--set", "caption.split=val"],
            "error: mmgen eval: --set caption.split=val: paths start with a --metric name (fid)",
        ),
        (
            ["{tmp}/gens", "--metric", "fid", "--stage", "data"],
            "error: mmgen eval: --stage 'data': expected KEY=DIR, e.g. data=runs/shapes/artefacts/data-1a2b",
        ),
    ],
    ids=["missing", "neither", "unknown-metric", "bad-option", "missing-inception", "other-metric", "bad-stage"],
)
def test_mistakes_are_one_line(tmp_path, args, message):
    save_generations([], tmp_path / "gens")
    result = invoke([a.format(tmp=tmp_path) for a in args] + ["--tracker", "none"])
    assert (result.exit_code, result.output) == (2, message.format(tmp=tmp_path) + "\n")
