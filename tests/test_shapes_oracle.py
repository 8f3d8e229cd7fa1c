"""Shapes image oracle (exact on clean renders) and the T2I judge."""

import numpy as np
import pytest

from mmgen.plugins.datasets.shapes.captions import prompt
from mmgen.plugins.datasets.shapes.oracle import read_image, t2i_correct
from mmgen.plugins.datasets.shapes.render import render, render_specs, sample_scene
from mmgen.plugins.datasets.shapes.scene import ObjectSpec
from mmgen.plugins.datasets.shapes.spec import CELLS, COLOURS, SHAPES, SIZES


def in_cell_order(specs):
    return sorted(specs, key=lambda s: CELLS.index(s.cell))


@pytest.mark.parametrize("size, count", [(32, 40), (64, 30), (128, 8)])
def test_oracle_is_exact_on_clean_renders(size, count):
    rng = np.random.default_rng(size)
    for _ in range(count):
        scene = sample_scene(rng, size=size, max_objects=3)
        assert read_image(render(scene, size), size=size) == in_cell_order(scene.specs)


@pytest.mark.parametrize("size", [32, 64])
def test_oracle_reads_every_colour_shape_and_size(size):
    # Nine objects, one per cell, cover every colour, shape and size at least once.
    specs = [
        ObjectSpec(shape=SHAPES[i % 4], colour=COLOURS[i % 6], size=tuple(SIZES)[i % 2], cell=CELLS[i])
        for i in range(9)
    ]
    assert read_image(render_specs(specs, size), size=size) == specs


def test_blank_and_specks_are_not_objects():
    blank = np.full((64, 64, 3), 255, dtype=np.uint8)
    assert read_image(blank, size=64) == []
    blank[10:12, 10:12] = (230, 25, 75)  # 4 px, far below a small triangle's 52 px
    assert read_image(blank, size=64) == []


def test_other_resolutions_are_resampled_to_the_canvas():
    specs = [ObjectSpec(shape="square", colour="green", size="large", cell="center")]
    image = render_specs(specs, 128)
    assert read_image(image, size=64) == specs


def test_t2i_judgement():
    specs = [
        ObjectSpec(shape="circle", colour="red", size="large", cell="top left"),
        ObjectSpec(shape="square", colour="blue", size="small", cell="center"),
    ]
    text = prompt(specs)
    right = t2i_correct(text, render_specs(specs, 64))
    assert right.correct and right.n_objects == 2 and all(right.checks.values())

    recoloured = [specs[0], ObjectSpec(shape="square", colour="green", size="small", cell="center")]
    judged = t2i_correct(text, render_specs(recoloured, 64))
    assert not judged.correct
    assert judged.checks == {
        "colour": False,
        "shape": True,
        "size": True,
        "cell": True,
        "relation": True,
        "count": True,
    }

    extra = [*specs, ObjectSpec(shape="cross", colour="yellow", size="small", cell="bottom")]
    judged = t2i_correct(text, render_specs(extra, 64))
    assert not judged.correct and not judged.checks["count"] and judged.checks["colour"]

    judged = t2i_correct(text, render_specs(specs[:1], 64))
    assert not judged.correct and judged.checks["count"] is False and judged.checks["shape"] is False

    moved = [specs[0], ObjectSpec(shape="square", colour="blue", size="small", cell="bottom")]
    judged = t2i_correct(text, render_specs(moved, 64))
    assert judged.checks == {
        "colour": True,
        "shape": True,
        "size": True,
        "cell": False,
        "relation": True,
        "count": True,
    }


@pytest.mark.parametrize("degradation", ["blur r=1.0", "jpeg q=75"])
def test_oracle_reads_mildly_degraded_renders_at_64(degradation):
    from mmgen.plugins.datasets.shapes.robustness import DEGRADATIONS

    rng = np.random.default_rng(11)
    for _ in range(10):
        scene = sample_scene(rng, size=64, max_objects=3)
        assert read_image(DEGRADATIONS[degradation](render(scene, 64)), size=64) == in_cell_order(scene.specs)
