"""The `shapes_accuracy` metric over generations."""

from mmgen.batch import Generation
from mmgen.plugins.datasets.shapes.captions import prompt
from mmgen.plugins.datasets.shapes.metric import ShapesAccuracy
from mmgen.plugins.datasets.shapes.render import cell_center, place, render_specs
from mmgen.plugins.datasets.shapes.scene import ObjectSpec, Scene

RED = ObjectSpec(shape="circle", colour="red", size="large", cell="top left")
BLUE = ObjectSpec(shape="square", colour="blue", size="small", cell="center")
YELLOW_TRIANGLE = ObjectSpec(shape="triangle", colour="yellow", size="small", cell="right")


def scene_json(*specs):
    return Scene(size=32, objects=[place(s, cell_center(s.cell, 32), 32) for s in specs]).to_json()


def t2i(specs, drawn):
    return Generation(
        task="t2i",
        key="k",
        inputs={"text": prompt(specs)},
        outputs={"image": render_specs(drawn, 32)},
        reference=scene_json(*specs),
    )


def i2t(specs, text):
    return Generation(task="i2t", key="k", inputs={}, outputs={"text": text}, reference=scene_json(*specs))


def test_accuracy_overall_per_check_per_count_and_held_out():
    recoloured = ObjectSpec(shape="square", colour="green", size="small", cell="center")
    generations = [
        t2i([RED], [RED]),
        t2i([RED, BLUE], [RED, BLUE]),
        t2i([RED, BLUE], [RED, recoloured]),
        t2i([YELLOW_TRIANGLE], [YELLOW_TRIANGLE]),
        i2t([RED, BLUE], "a large red circle in the top left and a small blue square in the center"),
        i2t([RED, BLUE], "a red circle on a white background"),
        i2t([RED], "circle circle circle"),
        Generation(task="inpaint", key="k", inputs={}, outputs={}, reference={}),
    ]
    results = ShapesAccuracy.from_config(ShapesAccuracy.Config()).compute(generations)
    assert results == {
        "t2i/accuracy": 0.75,
        "t2i/colour": 0.75,
        "t2i/shape": 1.0,
        "t2i/size": 1.0,
        "t2i/cell": 1.0,
        "t2i/relation": 1.0,
        "t2i/count": 1.0,
        "t2i/objects_1": 1.0,
        "t2i/objects_2": 0.5,
        "t2i/heldout": 1.0,
        "t2i/n": 4.0,
        "i2t/accuracy": 1 / 3,
        "i2t/colour": 2 / 3,
        "i2t/shape": 2 / 3,
        "i2t/size": 2 / 3,
        "i2t/cell": 2 / 3,
        "i2t/relation": 2 / 3,
        "i2t/count": 1 / 3,
        "i2t/parsed": 2 / 3,
        "i2t/objects_1": 0.0,
        "i2t/objects_2": 0.5,
        "i2t/n": 3.0,
    }
