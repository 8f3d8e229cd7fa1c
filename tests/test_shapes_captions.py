"""Shapes captions and the caption oracle: every template is parsed and never states something false."""

import numpy as np
import pytest

from mmgen.plugins.datasets.shapes.captions import TEMPLATES, make_captions, prompt
from mmgen.plugins.datasets.shapes.oracle import CaptionParseError, StatedObject, i2t_correct, parse_caption
from mmgen.plugins.datasets.shapes.render import place, sample_scene
from mmgen.plugins.datasets.shapes.scene import ObjectSpec, Scene

RED_CIRCLE = ObjectSpec(shape="circle", colour="red", size="large", cell="top left")
ORANGE_SQUARE = ObjectSpec(shape="square", colour="orange", size="small", cell="center")
BLUE_CROSS = ObjectSpec(shape="cross", colour="blue", size="small", cell="bottom right")


def scene_of(*specs, size=64):
    from mmgen.plugins.datasets.shapes.render import cell_center

    return Scene(size=size, objects=[place(s, cell_center(s.cell, size), size) for s in specs])


def template_of(text):
    for start, name in (("a picture of", "picture"), ("an image of", "image_of"), ("there is", "there_is")):
        if text.startswith(start):
            return name
    if text.endswith("on a white background"):
        return "background"
    if any(word in text for word in (" left of ", " right of ", " above ", " below ")):
        return "relation"
    return "full"


def test_each_template_on_a_hand_made_scene():
    specs = [RED_CIRCLE, ORANGE_SQUARE]
    rng = np.random.default_rng(0)
    texts = {name: template(specs, rng) for name, (template, _) in TEMPLATES.items()}
    assert texts["full"] == "a large red circle in the top left and a small orange square in the center"
    assert texts["image_of"] == "an image of a large red circle in the top left and a small orange square in the center"
    assert texts["picture"] == "a picture of a red circle in the top left and an orange square in the center"
    assert texts["there_is"] == "there is a large red circle and a small orange square"
    assert texts["background"] == "a red circle and an orange square on a white background"
    assert texts["relation"] in (
        "a large red circle to the left of a small orange square",
        "a large red circle above a small orange square",
    )


def test_parse_states_only_what_is_said():
    assert parse_caption("a large red circle in the top left and a small orange square in the center") == [
        StatedObject(shape="circle", colour="red", size="large", cell="top left"),
        StatedObject(shape="square", colour="orange", size="small", cell="center"),
    ]
    assert parse_caption("A picture of an orange square in the bottom right.") == [
        StatedObject(shape="square", colour="orange", cell="bottom right")
    ]
    assert parse_caption("a red circle and a blue cross on a white background") == [
        StatedObject(shape="circle", colour="red"),
        StatedObject(shape="cross", colour="blue"),
    ]
    assert parse_caption("a small blue cross below a large red circle and a green triangle") == [
        StatedObject(shape="cross", colour="blue", size="small", relation=("below", 1)),
        StatedObject(shape="circle", colour="red", size="large"),
        StatedObject(shape="triangle", colour="green"),
    ]
    assert parse_caption("there is a large circle") == [StatedObject(shape="circle", size="large")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected 'a' or 'an' at word 0, found 'the end'"),
        ("a red", "expected a shape"),
        ("a red circle in the middle", "expected a cell"),
        ("a red circle next to a blue square", "expected 'and', 'in the <cell>', a relation or the end"),
        ("a red circle and", "expected 'a' or 'an' at word 4"),
    ],
)
def test_unparseable_captions_raise(text, message):
    with pytest.raises(CaptionParseError, match=message):
        parse_caption(text)


def test_every_generated_caption_parses_and_is_true():
    rng = np.random.default_rng(7)
    used = set()
    for _ in range(60):
        scene = sample_scene(rng, size=32, max_objects=3)
        captions = make_captions(scene, rng)
        assert len(captions) == 5 and len(set(captions)) == 5
        assert captions[0] == prompt(scene.specs)
        for text in captions:
            judgement = i2t_correct(text, scene)
            # Captions never state something false and always mention every object.
            assert judgement.correct, (text, scene.specs)
            assert judgement.checks == dict.fromkeys(
                ("colour", "shape", "size", "cell", "relation", "count", "parsed"), True
            )
            used.add(template_of(text))
        stated = parse_caption(captions[0])
        assert [(s.shape, s.colour, s.size, s.cell) for s in stated] == [
            (o.shape, o.colour, o.size, o.cell) for o in scene.specs
        ]
    assert used == set(TEMPLATES)


def test_captions_are_deterministic_by_generator():
    scene = scene_of(RED_CIRCLE, ORANGE_SQUARE, BLUE_CROSS)
    first = make_captions(scene, np.random.default_rng(5))
    assert first == make_captions(scene, np.random.default_rng(5))
    assert len({tuple(make_captions(scene, np.random.default_rng(s))) for s in range(10)}) > 1


def test_i2t_judgement_per_check():
    scene = scene_of(RED_CIRCLE, ORANGE_SQUARE)
    wrong_size = i2t_correct("a small red circle in the top left and a small orange square in the center", scene)
    assert not wrong_size.correct and not wrong_size.checks["size"]
    assert wrong_size.checks["colour"] and wrong_size.checks["cell"] and wrong_size.checks["count"]
    missing = i2t_correct("a red circle on a white background", scene)
    assert not missing.correct and not missing.checks["count"] and missing.checks["colour"]
    wrong_relation = i2t_correct("a red circle below an orange square", scene)
    assert not wrong_relation.correct and not wrong_relation.checks["relation"] and wrong_relation.checks["shape"]
    extra = i2t_correct("a red circle and an orange square and a blue cross", scene)
    assert not extra.correct and not extra.checks["shape"] and not extra.checks["count"]
    garbage = i2t_correct("red red red", scene.to_json())
    assert not garbage.correct and garbage.checks == dict.fromkeys(
        ("colour", "shape", "size", "cell", "relation", "count", "parsed"), False
    )
    assert garbage.n_objects == 2
    # The assignment is one-to-one and order-free.
    assert i2t_correct("an orange square and a red circle", scene.to_json()).correct
