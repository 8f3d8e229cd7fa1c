"""The `caption` metric: on a small hand-made set its scores equal pycocoevalcap's, run directly."""

from __future__ import annotations

import json
import shutil

import pytest

from mmgen.api import Generation, Record, StageInputs, UserError
from mmgen.plugins.metrics import caption as caption_module
from mmgen.plugins.metrics.caption import CaptionScores

REFERENCES = {
    "img-0": ["A red circle on the left.", "a red circle", "red circle, left side"],
    "img-1": [
        "Two blue squares.",
        "a pair of blue squares",
        "two squares, both blue",
        "blue squares",
        "2 blue squares",
    ],
    "img-2": ["A green triangle above a yellow circle.", "green triangle over a yellow circle"],
    "img-3": ["a yellow square to the right of a red circle", "red circle, yellow square on its right", "two shapes"],
}
MADE = {
    "img-0": "a red circle on the left",
    "img-1": "two blue squares",
    "img-2": "a green triangle below a circle",
    "img-3": "a yellow square and a red circle",
}


def caption_tools_missing() -> str | None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return "pycocoevalcap is not installed (pip install 'mmgen[caption]')"
    if shutil.which("java") is None:
        return "no Java on the PATH: pycocoevalcap's tokenizer and METEOR need a JRE (.ci/run installs one)"
    return None


needs_caption_tools = pytest.mark.skipif(caption_tools_missing() is not None, reason=caption_tools_missing() or "")


def generations() -> list[Generation]:
    return [Generation(task="i2t", key=key, inputs={}, outputs={"text": text}) for key, text in MADE.items()]


def direct_scores() -> dict[str, float]:
    """pycocoevalcap as its own COCOEvalCap runs it: PTB-tokenise both sides, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({key: [{"caption": c} for c in refs] for key, refs in REFERENCES.items()})
    res = tokenizer.tokenize({key: [{"caption": text}] for key, text in MADE.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, _ = Meteor().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    names = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")
    return dict(zip(names, [*bleu, meteor, rouge, cider]))


@needs_caption_tools
def test_scores_equal_pycocoevalcap_run_directly(tmp_path):
    path = tmp_path / "references.json"
    path.write_text(json.dumps(REFERENCES))
    metric = CaptionScores.from_config(CaptionScores.Config(references_file=str(path)), inputs=None)
    result = metric.compute(generations())
    expected = direct_scores()
    assert set(result) == {f"i2t/{name}" for name in expected} | {"i2t/n"}
    assert result["i2t/n"] == 4.0
    for name, value in expected.items():
        assert result[f"i2t/{name}"] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert 0.3 < result["i2t/bleu_1"] < 1 and result["i2t/cider_d"] > 0  # not a degenerate set


class Records:
    def __init__(self, records):
        self.list = records

    def records(self, split):
        assert split == "test"
        return self.list


def test_references_from_the_data_stage_are_each_records_captions(monkeypatch):
    scored = []
    monkeypatch.setattr(caption_module, "check_caption_tools", lambda: None)
    monkeypatch.setattr(
        caption_module, "coco_scores", lambda refs, made: scored.append((refs, made)) or {"bleu_1": 0.5}
    )
    records = [Record(key=k, modality="image", data=b"", captions=tuple(v)) for k, v in REFERENCES.items()]
    inputs = StageInputs({}, uses={}, loaded={"data": Records(records[::-1])})
    result = CaptionScores.from_config(CaptionScores.Config(), inputs=inputs).compute(generations())
    assert result == {"i2t/bleu_1": 0.5, "i2t/n": 4.0}
    ((refs, made),) = scored  # rows by position: "0" is img-0, ...
    assert refs == {str(i): REFERENCES[key] for i, key in enumerate(MADE)}
    assert made == {str(i): text for i, text in enumerate(MADE.values())}


def test_without_java_one_line_says_to_install_a_jre(monkeypatch, tmp_path):
    pytest.importorskip("pycocoevalcap", reason="pycocoevalcap is not installed (pip install 'mmgen[caption]')")
    monkeypatch.setattr(caption_module.shutil, "which", lambda name: None)
    metric = CaptionScores.from_config(CaptionScores.Config(), inputs=None)
    assert metric.compute([]) == {}  # nothing to judge: nothing needs Java
    with pytest.raises(UserError) as caught:
        metric.compute(generations())
    assert str(caught.value) == (
        "caption: the caption metric needs Java (pycocoevalcap's PTB tokenizer and METEOR run on it): "
        "install a JRE, e.g. apt-get install default-jre-headless"
    )


def test_a_generation_without_references_is_one_line(tmp_path):
    path = tmp_path / "references.json"
    path.write_text(json.dumps({"img-0": ["a red circle"]}))
    metric = CaptionScores.from_config(CaptionScores.Config(references_file=str(path)))
    if caption_tools_missing() is None:
        with pytest.raises(
            UserError, match=r"^caption: 3 generation\(s\) have no reference captions \(first: 'img-1'\)$"
        ):
            metric.compute(generations())
    path.write_text(json.dumps({"img-0": "not a list"}))
    with pytest.raises(UserError, match="must hold a JSON object: generation key -> list of captions"):
        metric.references(generations())
