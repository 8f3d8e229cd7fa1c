"""Shapes generator: spec conformance (docs/shapes.md, "Images") and determinism."""

import numpy as np
import pytest

from mmgen.plugins.datasets.shapes.render import cell_center, place, render, sample_scene
from mmgen.plugins.datasets.shapes.scene import ObjectSpec, Scene
from mmgen.plugins.datasets.shapes.spec import CELLS, PALETTE, SIZES, all_pairs

WHITE = np.array([255, 255, 255])


def scenes(size, count, seed=0, max_objects=3):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, size=size, max_objects=max_objects) for _ in range(count)]


def test_small_square_pixels_are_exact_coverage_blends():
    # Side 0.16 * 32 = 5.12 centred on (16, 16): edges at 13.44 and 18.56, so
    # columns/rows 14..17 are fully covered and 13 / 18 half covered (4 of 8 subsamples).
    spec = ObjectSpec(shape="square", colour="red", size="small", cell="center")
    image = render(Scene(size=32, objects=[place(spec, (16.0, 16.0), 32)]), 32)
    red = np.array(PALETTE["red"], dtype=float)
    half = np.rint(0.5 * red + 0.5 * 255).astype(np.uint8)
    quarter = np.rint(0.25 * red + 0.75 * 255).astype(np.uint8)
    assert (image[14:18, 14:18] == PALETTE["red"]).all()
    assert (image[14:18, 13] == half).all() and (image[14:18, 18] == half).all()
    assert (image[13, 14:18] == half).all() and (image[18, 14:18] == half).all()
    assert (image[13, 13] == quarter).all() and (image[18, 18] == quarter).all()
    mask = np.ones((32, 32), dtype=bool)
    mask[13:19, 13:19] = False
    assert (image[mask] == 255).all()
    assert place(spec, (16.0, 16.0), 32).bbox == (13, 13, 19, 19)


def test_shape_geometry_at_128():
    def covered(shape):
        spec = ObjectSpec(shape=shape, colour="blue", size="large", cell="center")
        obj = place(spec, (64.0, 64.0), 128)  # side 35.84: box [46.08, 81.92]
        return (render(Scene(size=128, objects=[obj]), 128) == PALETTE["blue"]).all(axis=2)

    square, circle, triangle, cross = (covered(s) for s in ("square", "circle", "triangle", "cross"))
    assert square[47:81, 47:81].all() and square.sum() == 34 * 34
    # Circle: full width on the middle row, corners of the box empty.
    assert circle[64, 47:81].all() and not circle[47, 47] and not circle[80, 80]
    # Triangle: apex at the top centre, base on the bottom edge.
    rows = np.flatnonzero(triangle.any(axis=1))
    assert triangle[rows[0], 63:65].any() and triangle[rows[0]].sum() <= 2
    assert triangle[80, 47:81].sum() >= 32
    widths = triangle.sum(axis=1)[rows]
    assert (np.diff(widths) >= 0).all()
    # Cross: bars one third of the box thick (11.95 px) through the centre, box corners empty.
    assert cross[64, 47:81].all() and cross[47:81, 64].all()
    assert not cross[50, 50] and not cross[78, 78]
    assert cross[47].sum() in (11, 12)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_random_scenes_follow_the_spec(size):
    for scene in scenes(size, 25):
        image = render(scene, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert 1 <= len(scene.objects) <= 3
        assert len({o.spec.cell for o in scene.objects}) == len(scene.objects)
        outside = np.ones((size, size), dtype=bool)
        boxes = []
        for obj in scene.objects:
            cx, cy = cell_center(obj.spec.cell, size)
            assert abs(obj.center[0] - cx) <= 0.02 * size and abs(obj.center[1] - cy) <= 0.02 * size
            x0, y0, x1, y1 = obj.bbox
            side = SIZES[obj.spec.size] * size
            # A circle's or triangle's tip may miss the supersampling grid of its last pixel.
            spans = (int(np.ceil(side)) - 1, int(np.ceil(side)), int(np.ceil(side)) + 1)
            assert x1 - x0 in spans and y1 - y0 in spans
            # Inside its own cell, so objects never overlap.
            row, column = divmod(CELLS.index(obj.spec.cell), 3)
            assert (
                column * size / 3 <= cx - 0.02 * size - side / 2
                and cx + 0.02 * size + side / 2 <= (column + 1) * size / 3
            )
            assert x0 >= np.floor(column * size / 3) and x1 <= np.ceil((column + 1) * size / 3)
            assert y0 >= np.floor(row * size / 3) and y1 <= np.ceil((row + 1) * size / 3)
            own = np.zeros((size, size), dtype=bool)
            own[y0:y1, x0:x1] = True
            for other in scene.objects:
                if other is not obj:  # at 32 px an edge pixel may be shared with a neighbour
                    own[other.bbox[1] : other.bbox[3], other.bbox[0] : other.bbox[2]] = False
            window = image[own].astype(float)
            colour = np.array(PALETTE[obj.spec.colour], dtype=float)
            # Every pixel is a blend of white and the object's colour (anti-aliasing), some exactly it.
            t = np.clip((WHITE - window) @ (WHITE - colour) / ((WHITE - colour) @ (WHITE - colour)), 0, 1)
            assert np.abs(window - (WHITE + t[:, None] * (colour - WHITE))).max() <= 1.0
            if obj.spec.shape == "cross" and side / 3 < 2:
                assert t.max() >= 0.8  # a 1.7 px bar may straddle two pixels and cover neither fully
            else:
                assert (window == colour).all(axis=1).any()
            outside[y0:y1, x0:x1] = False
            boxes.append(obj.bbox)
        assert (image[outside] == 255).all()
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                reach = (SIZES[a.spec.size] + SIZES[b.spec.size]) * size / 2
                assert max(abs(a.center[0] - b.center[0]), abs(a.center[1] - b.center[1])) > reach
        if size > 32:  # at 32 px two objects may share an anti-aliased edge pixel
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_sampling_is_deterministic_by_seed():
    first = [render(s, 64).tobytes() for s in scenes(64, 10, seed=3)]
    again = [render(s, 64).tobytes() for s in scenes(64, 10, seed=3)]
    other = [render(s, 64).tobytes() for s in scenes(64, 10, seed=4)]
    assert first == again and first != other


def test_object_counts_cover_one_to_max():
    counts = {len(s.objects) for s in scenes(32, 60, max_objects=3)}
    assert counts == {1, 2, 3}
    assert {len(s.objects) for s in scenes(32, 20, max_objects=1)} == {1}


def test_allowed_and_required_pairs():
    rng = np.random.default_rng(0)
    allowed = [("red", "circle")]
    for _ in range(10):
        scene = sample_scene(rng, size=32, max_objects=3, allowed_pairs=allowed, required_pairs=[("blue", "cross")])
        pairs = [(o.spec.colour, o.spec.shape) for o in scene.objects]
        assert pairs.count(("blue", "cross")) == 1 and set(pairs) <= {("red", "circle"), ("blue", "cross")}
    # A set gives the same scenes as the equivalent sorted list.
    a = sample_scene(np.random.default_rng(1), size=32, max_objects=2, allowed_pairs=set(all_pairs()))
    b = sample_scene(np.random.default_rng(1), size=32, max_objects=2)
    assert a == b


def test_bad_options_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="canvas size must be one of"):
        sample_scene(rng, size=48, max_objects=2)
    with pytest.raises(ValueError, match="max_objects must be in 1..3"):
        sample_scene(rng, size=64, max_objects=4)


def test_scene_json_round_trip():
    for scene in scenes(64, 5):
        assert Scene.from_json(scene.to_json()) == scene
        assert set(scene.to_json()["objects"][0]) == {"shape", "colour", "size", "cell", "bbox", "center"}
