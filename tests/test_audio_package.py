"""packages/mmgen-audio, the third modality as a drop-in package: found, trained, run end to end.

The package is installed into the test environment (.ci/run and the README's
test command install it), so the registry holds its components and the contract
tests check them; here: its listing when pip-installed elsewhere, the audio
tokenizer trained by the shared Trainer and its round trip, the tiny
text-to-audio recipe end to end through `mmgen run`, the three-modality data set
and the one-line errors a user sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgen.api import Generation, MissingSplitError, UserError, load_registry
from mmgen_audio.dataset import SoundsDataset
from mmgen_audio.events import events_from_json
from mmgen_audio.metric import AudioAccuracy
from mmgen_audio.oracle import read_clip
from mmgen_audio.render import render
from mmgen_audio.scene_sounds import SceneSoundsDataset, scene_events
from mmgen_audio.tokenizer import AudioTokenizer
from mmgen_audio.training import TrainConfig
from mmgen_audio.vq import PRESETS, AudioVQ

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "packages" / "mmgen-audio"
COMPONENTS = {
    "datasets": ["scene_sounds", "sounds"],
    "tokenizers": ["audio_vq"],
    "tasks": ["a2i", "a2t", "i2a", "t2a"],
    "metrics": ["audio_accuracy"],
}


def cli_env() -> dict[str, str]:
    # One torch thread: with the 2 shared cores busy, tiny models run far faster on one (tests/conftest.py).
    return {**os.environ, "MMGEN_STRICT_PLUGINS": "1", "OMP_NUM_THREADS": "1", "MMGEN_NO_PROGRESS": "1"}


def test_the_registry_holds_every_component_from_the_package():
    registry = load_registry()
    for kind, names in COMPONENTS.items():
        found = sorted(e.name for e in registry.entries(kind) if e.provider.package == "mmgen-audio")
        assert found == names, kind
    assert registry.failures == []


def test_pip_installing_the_package_is_all_it_takes_to_list_it(tmp_path):
    source = shutil.copytree(PACKAGE, tmp_path / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
    )
    # The copy comes first on the path; a distribution found twice is listed once (the first found).
    env = {**cli_env(), "PYTHONPATH": str(site)}
    listing = subprocess.run([sys.executable, "-m", "mmgen.cli", "plugins"], env=env, capture_output=True, text=True)
    assert listing.returncode == 0 and "failed" not in listing.stdout, listing.stdout[-2000:] + listing.stderr[-2000:]
    rows = [line.split()[:3] for line in listing.stdout.splitlines()]
    for names in COMPONENTS.values():
        for name in names:
            assert [name, "mmgen-audio", "0.1.0"] in rows, (name, listing.stdout[-2000:], listing.stderr[-2000:])


def tiny_tokenizer(**train: int) -> AudioTokenizer:
    options = {"steps": 6, "batch_size": 4, "warmup_steps": 1, "log_every": 3, "checkpoint_every": 6, "eval_clips": 4, **train}
    return AudioTokenizer(model=AudioVQ(PRESETS["tiny"]), train=TrainConfig(**options), griffin_lim_iterations=4)


def sound_records(count: int = 8):
    data = SoundsDataset(counts={"train": count, "val": 4})
    stores = {split: list(data.records(split)) for split in data.splits()}

    def records(split: str):
        if split not in stores:
            raise MissingSplitError(f"no {split!r} split")  # as the data stage does
        return stores[split]

    return records


def test_the_tokenizer_trains_with_the_shared_trainer_and_round_trips(tmp_path):
    tokenizer = tiny_tokenizer()
    untrained = tokenizer.content_hash()
    tokenizer.fit(sound_records(), out_dir=tmp_path / "work", seed=0)
    # The shared Trainer's checkpoints, and a hash that follows the weights.
    assert [p.name for p in sorted((tmp_path / "work" / "checkpoints").iterdir()) if p.suffix == ".pt"] == ["step-00000006.pt"]
    assert tokenizer.content_hash() != untrained and set(tokenizer.train_metrics) == {"rec_loss", "codebook_usage"}
    space = tokenizer.token_space
    assert (space.name, space.vocab_size, space.shape, space.variable_length) == ("audio", 16, (32,), False)
    clips = torch.stack([tokenizer.record_item(r) for r in sound_records()("train")[:3]])
    segment = tokenizer.encode(clips)
    assert segment.tokens.shape == (3, 32) and segment.lengths.tolist() == [32, 32, 32]
    waves = tokenizer.decode(segment)
    assert len(waves) == 3 and waves[0].shape == (8192,) and float(waves[0].abs().max()) <= 1.0
    tokenizer.save(tmp_path / "saved")
    again = AudioTokenizer.load(tmp_path / "saved")
    assert again.content_hash() == tokenizer.content_hash()
    assert torch.equal(again.encode(clips).tokens, segment.tokens)
    assert torch.equal(again.decode_waves(segment.tokens), tokenizer.decode_waves(segment.tokens))
    # What a generation keeps, and what grids and MLflow get of it.
    item = tokenizer.present(waves[0])
    assert item.dtype == np.float32 and item.shape == (8192,)
    assert tokenizer.picture(item).dtype == np.uint8 and tokenizer.picture(item).shape == (64, 128, 3)
    files = tokenizer.files(item)
    assert sorted(files) == ["png", "wav"] and files["wav"][:4] == b"RIFF" and files["png"][:4] == b"\x89PNG"


def test_bad_audio_is_a_one_line_user_error():
    tokenizer = tiny_tokenizer()
    with pytest.raises(UserError) as error:
        tokenizer.load_item(b"not a wav at all")
    assert str(error.value).startswith("audio item: not a readable WAV file (") and "\n" not in str(error.value)
    from mmgen_audio.wav import wav_bytes

    with pytest.raises(UserError, match=r"^audio item: sampled at 16000 Hz, expected 8000 Hz \(resample it first\)$"):
        tokenizer.load_item(wav_bytes(np.zeros(100), 16000))
    with pytest.raises(ValueError, match=r"audio_vq expects tokens \[B, 32\], got \(1, 5\)"):
        tokenizer.decode_waves(torch.zeros(1, 5, dtype=torch.long))


def test_recipe_errors_are_one_line_at_their_yaml_path(tmp_path):
    recipe = (PACKAGE / "recipes" / "tiny.yaml").read_text().replace("{use: audio_vq, preset: tiny,", "{use: audio_vq,")
    (tmp_path / "bad.yaml").write_text(recipe)
    run = subprocess.run(
        [sys.executable, "-m", "mmgen.cli", "run", str(tmp_path / "bad.yaml")], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "stages.tokenizers.tokenizers[0]" in lines[0]
    assert "audio_vq: give a preset (tiny, sounds) or an architecture" in lines[0]


def test_the_tiny_text_to_audio_recipe_runs_end_to_end(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "mmgen.cli", "run", str(PACKAGE / "recipes" / "tiny.yaml")],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    artefacts = tmp_path / "runs" / "artefacts"
    (evaluate,) = artefacts.glob("evaluate-*")
    metrics = json.loads((evaluate / "metrics.json").read_text())
    assert metrics["one_sample/audio_accuracy/t2a/n"] == 4.0
    assert {k.rsplit("/", 1)[1] for k in metrics if "/audio_accuracy/" in k} == {
        "accuracy", "count", "duration", "events_1", "kind", "loudness", "n", "pitch",
    }  # fmt: skip
    (generate,) = artefacts.glob("generate-*")
    media = sorted(p.name for p in (generate / "one_sample" / "media" / "t2a").iterdir())
    assert media[:2] == ["00000-test-0000000-output-audio.png", "00000-test-0000000-output-audio.wav"] and len(media) == 8
    lines = [json.loads(line) for line in (generate / "one_sample" / "generations.jsonl").read_text().splitlines()]
    assert [g["task"] for g in lines] == ["t2a"] * 4
    assert lines[0]["inputs"]["text"].startswith("a ") and "npy" in lines[0]["outputs"]["audio"]
    (tokenizers,) = artefacts.glob("tokenizers-*")
    assert (tokenizers / "work" / "audio" / "checkpoints").is_dir()  # trained by the shared Trainer


def test_scene_sounds_records_hold_picture_caption_and_the_sound_the_scene_makes():
    scenes = {"use": "shapes", "size": 32, "max_objects": 2, "object_order": "reading", "train": 3, "val": 0, "test": 0, "holdout": 0}
    from mmgen.api import structure_attrs

    config = structure_attrs(SceneSoundsDataset.Config, {"scenes": scenes}, registry=load_registry())
    records = list(SceneSoundsDataset.from_config(config).records("train"))
    assert [r.key for r in records] == ["train-0000000", "train-0000001", "train-0000002"]
    for record in records:
        assert record.modalities == ("image", "audio") and record.data[:4] == b"\x89PNG"
        events = scene_events(record.meta["objects"])
        assert events == events_from_json(record.meta["events"]) and len(events) == len(record.meta["objects"])
        from mmgen_audio.wav import read_wav

        assert read_clip(read_wav(record.item("audio"), sample_rate=8000)) == list(events)
    from mmgen.api import ConfigError

    with pytest.raises(ConfigError, match=r"stages.data.dataset.scenes: a clip holds at most 2 sounds: give max_objects <= 2, got 3"):
        structure_attrs(
            SceneSoundsDataset.Config, {"scenes": {**scenes, "max_objects": 3}}, path="stages.data.dataset", registry=load_registry()
        )


def test_the_metric_judges_made_sounds_and_captions_against_the_records_events():
    events = [{"kind": "beep", "pitch": "low", "loudness": "loud", "duration": "long"}]
    right = render(events_from_json(events))
    wrong = render(events_from_json([{**events[0], "pitch": "high"}]))
    made = [
        Generation(task="t2a", key="a", inputs={"text": "x"}, outputs={"audio": right}, reference={"events": events}),
        Generation(task="t2a", key="b", inputs={"text": "x"}, outputs={"audio": wrong}, reference={"events": events}),
        Generation(task="a2t", key="c", inputs={"audio": right}, outputs={"text": "a loud low beep"}, reference={"events": events}),
        Generation(task="t2i", key="d", inputs={"text": "x"}, outputs={"image": np.zeros((2, 2, 3), np.uint8)}),
    ]
    results = AudioAccuracy().compute(made)
    assert results["t2a/accuracy"] == 0.5 and results["t2a/pitch"] == 0.5 and results["t2a/kind"] == 1.0
    assert results["t2a/n"] == 2.0 and results["a2t/accuracy"] == 1.0 and results["a2t/parsed"] == 1.0
    assert not any(k.startswith("t2i/") for k in results)
    assert AudioAccuracy().compute([]) == {}
