from typing import Literal

import attrs
import pytest
from registry_helpers import ToySampler, ToyStage, toy_registry

from mmgen.config import ConfigError, structure, structure_attrs, structure_spec, to_data

REGISTRY = toy_registry()


def sampler(options, path="sampler"):
    return structure_spec("samplers", {"use": "toy_sampler", **options}, path=path, registry=REGISTRY)


def test_structures_typed_config_with_defaults():
    spec = sampler({"steps": 16, "temperature": "1e-4", "sizes": [3, 4], "schedule": "linear"})
    assert spec.use == "toy_sampler"
    assert spec.config == ToySampler.Config(steps=16, temperature=1e-4, sizes=(3, 4), schedule="linear")


@pytest.mark.parametrize(
    "options, path, message",
    [
        ({"steps": 8.7}, "sampler.steps", "expected an integer, got 8.7 (float)"),
        ({"steps": True}, "sampler.steps", "expected an integer, got True (bool)"),
        ({"greedy": "false"}, "sampler.greedy", "expected true or false, got 'false' (str)"),
        ({"greedy": 0}, "sampler.greedy", "expected true or false, got 0 (int)"),
        ({"temperature": "warm"}, "sampler.temperature", "expected a number, got 'warm' (str)"),
        ({"stpes": 3}, "sampler.stpes", "did you mean 'steps'?"),
        ({"schedule": "cosin"}, "sampler.schedule", "expected one of ['cosine', 'linear'], got 'cosin' (str); did you mean 'cosine'?"),
        ({"sizes": [1, "x"]}, "sampler.sizes[1]", "expected an integer"),
        ({"note": 3}, "sampler.note", "expected a string"),
    ],
)
def test_bad_values_fail_with_yaml_path(options, path, message):
    with pytest.raises(ConfigError) as info:
        sampler(options)
    assert info.value.path == path
    assert message in info.value.message


def test_unknown_component_suggests_a_name():
    with pytest.raises(ConfigError) as info:
        structure_spec("samplers", {"use": "toy_sampelr"}, path="stages.gen.sampler", registry=REGISTRY)
    assert info.value.path == "stages.gen.sampler.use"
    assert "no sampler named 'toy_sampelr'; did you mean 'toy_sampler'?" in info.value.message


def test_component_fields_default_and_lists():
    config = structure_attrs(ToyStage.Config, {"objectives": ["toy_objective", {"use": "toy_objective", "weight": 0.5}]}, registry=REGISTRY)
    assert config.sampler.use == "toy_sampler" and config.sampler.config == ToySampler.Config()
    assert [o.config.weight for o in config.objectives] == [1.0, 0.5]
    with pytest.raises(ConfigError) as info:
        structure_attrs(ToyStage.Config, {"objectives": [{"use": "toy_objective", "wieght": 2}]}, path="s", registry=REGISTRY)
    assert info.value.path == "s.objectives[0].wieght"


def test_missing_required_option():
    @attrs.frozen(kw_only=True)
    class Needs:
        size: int

    with pytest.raises(ConfigError, match="size: missing required option"):
        structure_attrs(Needs, {}, path="x")


def test_integer_written_as_float_string_is_accepted_only_when_whole():
    assert structure(int, "1e3") == 1000
    with pytest.raises(ConfigError):
        structure(int, "1.5e0")


def test_literal_does_not_confuse_bool_and_int():
    with pytest.raises(ConfigError):
        structure(Literal[1, 2], True)


def test_to_data_round_trips():
    spec = sampler({"steps": 3})
    data = to_data(spec)
    assert data == {"use": "toy_sampler", "steps": 3, "temperature": 1.0, "greedy": False, "schedule": "cosine", "sizes": [1, 2], "note": None}
    assert structure_spec("samplers", data, path="", registry=REGISTRY) == spec
