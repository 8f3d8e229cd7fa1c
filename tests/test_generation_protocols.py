"""Generation protocols: the generate stage runs one sample, the reranked best of N and refinement side by side,
timed; the evaluate stage puts every metric of each into one table. Also the split each reads."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import attrs
import pytest

from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.api import ConfigError, StageContext, StageInputs, structure_attrs
from mmgen.plugins.stages.evaluate import EvaluateStage
from mmgen.plugins.stages.generate import GenerateStage
from mmgen.plugins.stages.protocol_runs import ProtocolOptions
from mmgen.recipe import load_recipe
from mmgen.registry import load_registry
from test_generation_tasks import (
    FakeData,
    FakeTracker,
    OverwritingRefiner,
    SpySampler,
    StageRegistry,
    TokenSumReranker,
    _png,
    blue,
    fake_pipeline,
    stripes,
)
from mmgen.batch import Record

ROOT = Path(__file__).resolve().parents[1]


class SumReranker(TokenSumReranker):
    """TokenSumReranker as a registered plugin."""

    name = "token_sum"

    @attrs.frozen
    class Config:
        pass

    @classmethod
    def from_config(cls, config, **_deps):
        return cls()


class BlueRefiner(OverwritingRefiner):
    """Writes "blue" over every caption token, as a registered plugin."""

    name = "blue"

    @attrs.frozen
    class Config:
        pass

    @classmethod
    def from_config(cls, config, **_deps):
        return cls(word=blue())


class TaskCount:
    """Generations per task: `<task>/n`."""

    name = "task_count"

    @attrs.frozen
    class Config:
        pass

    @classmethod
    def from_config(cls, config, **_deps):
        return cls()

    def compute(self, generations):
        counts = {}
        for generation in generations:
            counts[f"{generation.task}/n"] = counts.get(f"{generation.task}/n", 0) + 1
        return counts


class ProtocolRegistry(StageRegistry):
    """StageRegistry with the fakes above, and the sampler it builds wrapped in a SpySampler."""

    def __init__(self, outputs):
        super().__init__(outputs)
        self.spy = None
        self.spies = []  # every sampler built: the stage's, then any protocol's own

    def get(self, kind, name):
        fakes = {("rerankers", "token_sum"): SumReranker, ("refiners", "blue"): BlueRefiner}
        fakes[("metrics", "task_count")] = TaskCount
        return fakes.get((kind, name)) or super().get(kind, name)

    def build(self, spec, **deps):
        built = super().build(spec, **deps)
        if spec.kind == "samplers":
            self.spy = built = SpySampler(built)
            self.spies.append(built)
        return built


PROTOCOLS = {
    "t2i": {"best": {"candidates": 3, "rerank": "token_sum"}},
    "i2t": {
        "best": {"candidates": 2, "rerank": "token_sum"},
        "refined": {"candidates": 2, "rerank": "token_sum", "refine": "blue"},
    },
}


def run_stages(tmp_path, protocols):
    pipeline, _ = fake_pipeline()
    records = [
        Record(key=f"val-{i}", modality="image", data=_png(stripes()), captions=("a red circle",), meta={"i": i})
        for i in range(3)
    ]
    stages = ProtocolRegistry({"data": FakeData(records), "tokenizers": pipeline.tokenizers, "train": pipeline.model})
    data = {"sampler": {"use": "maskgit", "fixed": {"steps": 2}, "variable": {"steps": 2}}, "prompts": 2}
    config = structure_attrs(GenerateStage.Config, {**data, "protocols": protocols}, registry=stages)
    folders = {key: tmp_path / key for key in ("data", "tokenizers", "train")}
    inputs = StageInputs(folders, uses={key: key for key in folders}, registry=stages)
    tracker = FakeTracker()
    gen_dir, eval_dir = tmp_path / "generate", tmp_path / "evaluate"
    GenerateStage.from_config(config).run(
        StageContext(out_dir=gen_dir, inputs=inputs, registry=stages, tracker=tracker, seed=0)
    )
    evaluate = EvaluateStage.from_config(
        structure_attrs(EvaluateStage.Config, {"metrics": ["task_count"]}, registry=stages)
    )
    eval_dir.mkdir()
    eval_inputs = StageInputs({"generate": gen_dir}, uses={"generate": "generate"}, registry=stages)
    evaluate.run(StageContext(out_dir=eval_dir, inputs=eval_inputs, registry=stages, tracker=tracker, seed=0))
    return stages, tracker, gen_dir, eval_dir


def test_a_protocol_may_draw_its_candidates_with_its_own_sampler(tmp_path):
    own = {"use": "maskgit", "variable": {"steps": 2, "temperature": 0.7}}
    protocols = {"i2t": {"varied": {"candidates": 2, "rerank": "token_sum", "sampler": own}}}
    stages, _, gen_dir, _ = run_stages(tmp_path, protocols)
    stage_sampler, protocol_sampler = stages.spies
    assert protocol_sampler.inner.variable.temperature == 0.7 and stage_sampler.inner.variable.temperature != 0.7
    # The stage's sampler: the warm-up prompt of each task and one_sample; the protocol's: 2 prompts x 2 candidates.
    assert [request.segments[0].tokens.shape[0] for request, _ in stage_sampler.seen] == [1, 1, 2, 2]
    assert [request.segments[0].tokens.shape[0] for request, _ in protocol_sampler.seen] == [4]
    assert list(GenerateStage.load(gen_dir)) == ["one_sample", "varied"]


def test_a_protocol_may_run_on_the_first_prompts_only(tmp_path):
    protocols = {"i2t": {"best": {"candidates": 2, "rerank": "token_sum", "prompts": 1}}}
    stages, _, gen_dir, eval_dir = run_stages(tmp_path, protocols)
    # Warm-up t2i and i2t, one_sample t2i and i2t on both prompts, then `best` on the first: 1 x 2 candidates.
    assert [request.segments[0].tokens.shape[0] for request, _ in stages.spy.seen] == [1, 1, 2, 2, 2]
    runs = GenerateStage.load(gen_dir)
    assert [g.key for g in runs["best"].generations] == ["val-0"] and runs["best"].timings["i2t"]["prompts"] == 1
    assert "| i2t | task_count n | 2 | 1 |" in (eval_dir / "results.md").read_text().splitlines()


def test_each_protocol_is_generated_timed_and_evaluated_side_by_side(tmp_path):
    stages, tracker, gen_dir, eval_dir = run_stages(tmp_path, PROTOCOLS)
    # Sampler calls: one untimed warm-up prompt per task, then protocol by protocol (one_sample first),
    # task by task: rows = prompts x candidates.
    assert [request.segments[0].tokens.shape[0] for request, _ in stages.spy.seen] == [1, 1, 2, 2, 6, 4, 4]
    runs = GenerateStage.load(gen_dir)
    assert list(runs) == ["one_sample", "best", "refined"]
    assert [sorted(run.timings) for run in runs.values()] == [["i2t", "t2i"], ["i2t", "t2i"], ["i2t"]]
    assert {name: [g.task for g in run.generations] for name, run in runs.items()} == {
        "one_sample": ["t2i", "t2i", "i2t", "i2t"],
        "best": ["t2i", "t2i", "i2t", "i2t"],
        "refined": ["i2t", "i2t"],
    }
    assert [g.outputs["text"] for g in runs["refined"].generations] == ["blue", "blue"]  # repeats dropped
    assert runs["best"].timings["t2i"]["candidates"] == 3 and runs["best"].timings["t2i"]["rerank"] == "token_sum"
    assert runs["refined"].timings["i2t"]["refine"] == "blue"
    for name in runs:
        assert (gen_dir / name / "generations.jsonl").is_file()
    written = json.loads((eval_dir / "metrics.json").read_text())
    assert not [k for k in written if "seconds" in k]  # wall clock is not in what a rerun reproduces
    seconds = json.loads((eval_dir / "timings.json").read_text())
    assert sorted(seconds) == [
        "best/time/i2t/seconds_per_output",
        "best/time/t2i/seconds_per_output",
        "one_sample/time/i2t/seconds_per_output",
        "one_sample/time/t2i/seconds_per_output",
        "refined/time/i2t/seconds_per_output",
    ]
    assert all(value > 0 for value in seconds.values()), seconds
    assert tracker.metrics == {**written, **seconds}
    table = (eval_dir / "results.md").read_text().splitlines()
    assert table[:2] == ["| task | value | one_sample | best | refined |", "|---|---|---|---|---|"]
    rows = [re.sub(r"\| time seconds_per_output \|.*", "| time seconds_per_output |", row) for row in table[2:]]
    assert rows == [
        "| i2t | time candidates | 1 | 2 | 2 |",
        "| i2t | time seconds_per_output |",
        "| i2t | task_count n | 2 | 2 | 2 |",
        "| t2i | time candidates | 1 | 3 | - |",
        "| t2i | time seconds_per_output |",
        "| t2i | task_count n | 2 | 2 | - |",
    ]
    assert EvaluateStage.summary(eval_dir) == table


def test_a_protocol_without_a_reranker_samples_one_candidate_per_prompt(tmp_path):
    refine_only = {"i2t": {"refined": {"refine": "blue"}}}
    stages, _, gen_dir, _ = run_stages(tmp_path, refine_only)
    # Warm-up t2i and i2t, then one_sample t2i, one_sample i2t, refined i2t: one row per prompt each.
    assert [request.segments[0].tokens.shape[0] for request, _ in stages.spy.seen] == [1, 1, 2, 2, 2]
    runs = GenerateStage.load(gen_dir)
    assert runs["refined"].timings["i2t"]["candidates"] == 1 and runs["refined"].timings["i2t"]["rerank"] is None


def config(data):
    return structure_attrs(GenerateStage.Config, data, registry=load_registry())


def test_the_older_keys_describe_one_more_protocol_named_by_its_components():
    old = config(
        {"candidates": {"t2i": 8, "i2t": 32}, "rerank": {"t2i": "clip", "i2t": "cycle"}, "refine": {"i2t": "caption_refine"}}
    )
    assert list(old.task_protocols("t2i")) == ["one_sample", "clip"]
    assert list(old.task_protocols("i2t")) == ["one_sample", "cycle+caption_refine"]
    clip = old.task_protocols("t2i")["clip"]
    assert clip.candidates == 8 and clip.rerank.use == "clip" and clip.refine is None
    assert config({}).task_protocols("t2i") == {"one_sample": ProtocolOptions()}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"protocols": {"t2i": {"best": {"candidates": 4}}}}, "protocols.t2i.best: 4 candidates need a reranker"),
        ({"tasks": ["t2i"], "protocols": {"i2t": {"clip": {}}}}, r"protocols given for tasks not run: \['i2t'\]"),
        (
            {"protocols": {"t2i": {"one_sample": {"candidates": 2, "rerank": "clip"}}}},
            "protocols.t2i.one_sample is one sample",
        ),
        (
            {"candidates": {"t2i": 2}, "rerank": {"t2i": "clip"}, "protocols": {"t2i": {"clip": {}}}},
            r"t2i has protocols and the older `candidates.t2i`",
        ),
        ({"protocols": {"t2i": {"x": {"rerank": "clipp"}}}}, r"protocols.t2i.x.rerank.use: no reranker named 'clipp'"),
        ({"protocols": {"t2i": {"best/of": {}}}}, r"protocols.t2i: name 'best/of' is a folder and a metric prefix"),
        ({"protocols": {"t2i": {"x": {"prompts": 0}}}}, r"protocols.t2i.x.prompts"),
    ],
)
def test_protocol_mistakes_are_one_clear_line(data, message):
    with pytest.raises(ConfigError, match=message):
        config(data)


def test_the_generate_stage_reads_test_and_the_shipped_recipes_say_so():
    assert config({}).split == "test"
    registry = load_registry()
    for name, expected in (("quickstart", ["one_sample", "clip"]), ("shapes", ["one_sample", "clip", "cycle_refine"])):
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", registry=registry)
        generate = next(entry.spec.config for entry in recipe.stages if entry.key == "generate")
        assert generate.split == "test"
        assert list(generate.task_protocols("i2t")) == expected
        assert list(generate.task_protocols("t2i")) == ["one_sample", "clip"]


def test_benchmarks_read_val_unless_asked():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import argparse

        from generation_run import TUNING_SPLIT, add_split_option
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    parser = argparse.ArgumentParser()
    add_split_option(parser)
    assert TUNING_SPLIT == "val" and parser.parse_args([]).split == "val"
    assert parser.parse_args(["--split", "test"]).split == "test"
    # No benchmark reads test records by itself; those that tune or measure on held-out records take `--split`.
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        assert not re.search(r"""(read_records\([^)]*|\.split\()["']test["']""", path.read_text()), path.name
    tuning = ["i2t_cycle_rerank", "i2t_word_probe", "magvlt_shapes_quality", "maskgit_sampler_sweep"]
    for name in ["argvlt_vs_magvlt_speed", *tuning]:
        text = (ROOT / "benchmarks" / f"{name}.py").read_text()
        assert "add_split_option(parser)" in text and "args.split" in text, name


def test_mmgen_eval_of_a_generate_folder_evaluates_every_protocol(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from mmgen.cli import main
    from test_generation_tasks import stripes_decoded

    _, _, gen_dir, _ = run_stages(tmp_path, PROTOCOLS)
    (tmp_path / "refs").mkdir()
    for i in range(2):
        Image.fromarray(stripes_decoded()).save(tmp_path / "refs" / f"{i}.png")
    out = tmp_path / "m.json"
    args = ["eval", str(gen_dir), "--metric", "fid", "--set", "fid.extractor=pixels"]
    args += ["--set", f"fid.reference_dir={tmp_path / 'refs'}", "--tracker", "none", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert sorted(k for k in written if "/fid/" in k) == [
        "best/fid/t2i/fid_pixels",
        "best/fid/t2i/n",
        "one_sample/fid/t2i/fid_pixels",
        "one_sample/fid/t2i/n",
    ]
    assert written["one_sample/fid/t2i/n"] == 2.0 and written["best/time/t2i/candidates"] == 3.0
    assert result.output.splitlines()[-1] == f"wrote {out}"


def test_a_protocol_that_cannot_run_fails_before_any_sampling(tmp_path):
    with pytest.raises(ValueError, match="task 't2i' cannot feed the 'blue' refiner"):
        run_stages(tmp_path, {"t2i": {"refined": {"refine": "blue"}}})
    # Not even one_sample, which runs first, was generated.
    assert (tmp_path / "generate").exists() is False or not list((tmp_path / "generate").rglob("generations.jsonl"))
