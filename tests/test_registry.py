import pluggy
import pytest
from registry_helpers import ToySampler, make_registry, toy_plugin

from mmgen.registry import PluginError, UnknownComponentError, load_registry


def test_components_are_indexed_with_their_provider():
    registry = make_registry(("toys", toy_plugin(("samplers", ToySampler))))
    assert registry.names("samplers") == ["toy_sampler"]
    entry = registry.entry("samplers", "toy_sampler")
    assert entry.cls is ToySampler
    assert (entry.provider.package, entry.provider.version, entry.provider.plugin) == ("pkg-toys", "1.0", "toys")


def test_duplicate_name_names_both_providers():
    with pytest.raises(PluginError, match=r"duplicate sampler name 'toy_sampler': registered by pkg-\w+ 1.0 \(\w+\) and by pkg-\w+ 1.0"):
        make_registry(("a", toy_plugin(("samplers", ToySampler))), ("b", toy_plugin(("samplers", ToySampler))))


def test_unknown_name_and_kind():
    registry = make_registry(("toys", toy_plugin(("samplers", ToySampler))))
    with pytest.raises(UnknownComponentError, match="did you mean 'toy_sampler'"):
        registry.get("samplers", "toy-sampler")
    with pytest.raises(KeyError, match="unknown component kind 'sampler'"):
        registry.get("sampler", "toy_sampler")


def test_class_without_config_is_rejected():
    class NoConfig:
        name = "bare"

        @classmethod
        def from_config(cls, config):
            return cls()

    with pytest.raises(PluginError, match="'bare' needs an attrs `Config` class"):
        make_registry(("toys", toy_plugin(("samplers", NoConfig))))


def test_broken_plugin_is_skipped_and_reported(monkeypatch):
    monkeypatch.setenv("MMGEN_PLUGINS", "broken_plugin,toy_plugin")
    monkeypatch.delenv("MMGEN_STRICT_PLUGINS", raising=False)
    registry = load_registry()
    assert [f.plugin for f in registry.failures if f.plugin == "broken_plugin"] == ["broken_plugin"]
    failure = next(f for f in registry.failures if f.plugin == "broken_plugin")
    assert failure.error == "ImportError: this plugin is broken on purpose"
    assert "toy_sampler" in registry.names("samplers")


def test_strict_mode_makes_a_broken_plugin_fatal(monkeypatch):
    monkeypatch.setenv("MMGEN_PLUGINS", "broken_plugin")
    monkeypatch.setenv("MMGEN_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'broken_plugin' .* failed to import: this plugin is broken on purpose"):
        load_registry()


def test_misspelt_hook_fails_loudly(monkeypatch):
    monkeypatch.setenv("MMGEN_PLUGINS", "misspelt_plugin")
    with pytest.raises(pluggy.PluginValidationError, match="register_sampler"):
        load_registry()
