"""mmgen-audio's Sounds set: exact renders, captions and the oracles that read them back.

Modelled on the Shapes tests: every clean render is read back exactly by the
waveform oracle, every caption template by the caption parser, and the data set
gives the same bytes for the same seed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmgen_audio.accuracy import caption_correct, sound_correct
from mmgen_audio.caption_parser import CaptionParseError, StatedEvent, parse_caption
from mmgen_audio.captions import make_captions
from mmgen_audio.dataset import SoundsDataset
from mmgen_audio.events import SoundEvent, events_from_json
from mmgen_audio.oracle import read_clip
from mmgen_audio.render import render
from mmgen_audio.spec import CLIP_SAMPLES, DURATIONS, KINDS, LOUDNESS, PITCHED, PITCHES, SAMPLE_RATE
from mmgen_audio.wav import read_wav

EVERY_EVENT = [
    SoundEvent(kind=kind, pitch=pitch, loudness=loudness, duration=duration)
    for kind in KINDS
    for pitch in (PITCHES if kind in PITCHED else [None])
    for loudness in LOUDNESS
    for duration in DURATIONS
]


def test_there_are_24_distinct_events():
    assert len(EVERY_EVENT) == len(set(EVERY_EVENT)) == 24


def test_the_oracle_reads_every_clean_render_exactly():
    for seed, event in enumerate(EVERY_EVENT):
        assert read_clip(render([event], seed=seed)) == [event]
    wrong = [(a, b) for seed, (a, b) in enumerate(itertools.product(EVERY_EVENT, EVERY_EVENT)) if read_clip(render([a, b], seed=seed)) != [a, b]]
    assert wrong == []


def test_silence_holds_no_event_and_a_wrong_length_is_refused():
    assert read_clip(np.zeros(CLIP_SAMPLES, np.float32)) == []
    with pytest.raises(ValueError, match="the sound oracle reads clips of 8192 samples, got 100"):
        read_clip(np.zeros(100))


def test_a_render_is_silent_outside_its_events():
    clip = render([SoundEvent(kind="beep", pitch="low", loudness="loud", duration="short")])
    assert clip.dtype == np.float32 and clip.shape == (CLIP_SAMPLES,)
    onset, length = int(0.05 * SAMPLE_RATE), int(0.15 * SAMPLE_RATE)
    assert not clip[:onset].any() and not clip[onset + length :].any()
    assert abs(float(np.abs(clip).max()) - 0.7) < 1e-6


def test_captions_state_every_attribute_first_and_parse_back():
    events = (
        SoundEvent(kind="beep", pitch="low", loudness="loud", duration="long"),
        SoundEvent(kind="noise burst", pitch=None, loudness="quiet", duration="short"),
    )
    assert make_captions(events) == (
        "a loud long low beep followed by a quiet short noise burst",
        "a loud low beep, then a quiet noise burst",
        "a low beep followed by a noise burst",
        "a long beep followed by a short noise burst",
    )
    assert parse_caption(make_captions(events)[0]) == [
        StatedEvent(kind="beep", pitch="low", loudness="loud", duration="long"),
        StatedEvent(kind="noise burst", loudness="quiet", duration="short"),
    ]
    for caption in make_captions(events):
        assert caption_correct(caption, events).correct, caption


@pytest.mark.parametrize(
    ("caption", "message"),
    [
        ("a low noise burst", "a noise burst has no pitch, but 'a low noise burst' gives it one"),
        ("the beep", "expected 'a' at word 1 of 'the beep'"),
        ("a loud whistle", "expected a sound (beep, chirp, noise burst, click train) at word 3 of 'a loud whistle'"),
        ("a beep and a chirp", "expected 'followed by' or ', then' at word 3 of 'a beep and a chirp'"),
    ],
)
def test_captions_outside_the_grammar_say_where(caption, message):
    with pytest.raises(CaptionParseError) as error:
        parse_caption(caption)
    assert str(error.value) == message


def test_judges_name_each_wrong_attribute():
    beep = SoundEvent(kind="beep", pitch="high", loudness="quiet", duration="short")
    chirp = SoundEvent(kind="chirp", pitch="high", loudness="quiet", duration="short")
    judged = sound_correct(render([chirp]), [beep])
    assert not judged.correct and {k for k, ok in judged.checks.items() if not ok} == {"kind"}
    judged = sound_correct(render([beep, chirp]), [beep])
    assert {k for k, ok in judged.checks.items() if not ok} == {"count"}
    judged = caption_correct("a loud beep", [beep])
    assert {k for k, ok in judged.checks.items() if not ok} == {"loudness"} and judged.checks["parsed"]
    judged = caption_correct("beep beep", [beep])
    assert not judged.correct and judged.checks["parsed"] is False


def test_the_data_set_is_deterministic_and_its_wav_reads_back_exactly():
    first = list(SoundsDataset(counts={"train": 6, "test": 2}, seed=3).records("train"))
    second = list(SoundsDataset(counts={"train": 6, "test": 2}, seed=3).records("train"))
    assert first == second and [r.key for r in first] == [f"train-{i:07d}" for i in range(6)]
    other = list(SoundsDataset(counts={"train": 6}, seed=4).records("train"))
    assert [r.data for r in other] != [r.data for r in first]
    for record in first:
        assert record.modality == "audio" and record.data[:4] == b"RIFF" and len(record.captions) == 4
        wave = read_wav(record.data, sample_rate=SAMPLE_RATE)
        assert read_clip(wave) == list(events_from_json(record.meta["events"]))
        assert parse_caption(record.captions[0]) == [StatedEvent(**e) for e in record.meta["events"]]


def test_bad_data_set_options_are_one_line_errors():
    with pytest.raises(ValueError, match=r"sounds: unknown split\(s\) \['holdout'\]; splits are \['train', 'val', 'test'\]"):
        SoundsDataset(counts={"holdout": 3})
    from mmgen.api import MissingSplitError

    with pytest.raises(MissingSplitError, match=r"sounds has no split 'val'; it has \['train'\]"):
        SoundsDataset(counts={"train": 1}).count("val")
