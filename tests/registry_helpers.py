"""Toy components and a registry built from them, for core tests."""

from __future__ import annotations

import types
from typing import ClassVar, Literal

import attrs
import pluggy

from mmgen import hookspecs
from mmgen.config import Spec, component, components, upstream
from mmgen.registry import Provider, Registry


class ToySampler:
    name: ClassVar[str] = "toy_sampler"

    @attrs.frozen(kw_only=True)
    class Config:
        steps: int = 10
        temperature: float = 1.0
        greedy: bool = False
        schedule: Literal["cosine", "linear"] = "cosine"
        sizes: tuple[int, ...] = (1, 2)
        note: str | None = None

    @classmethod
    def from_config(cls, config, **deps):
        instance = cls()
        instance.config, instance.deps = config, deps
        return instance


class ToyObjective:
    name: ClassVar[str] = "toy_objective"

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 1.0

    @classmethod
    def from_config(cls, config, **deps):
        return cls()


class ToyStage:
    name: ClassVar[str] = "toy_stage"
    runs: ClassVar[list] = []

    @attrs.frozen(kw_only=True)
    class Config:
        sampler: Spec = component("samplers", default={"use": "toy_sampler"})
        objectives: tuple[Spec, ...] = components("objectives")
        value: int = 0
        reads: str | None = upstream(None)  # an earlier stage whose folder this one sees

    def __init__(self, config):
        self.config = config

    @classmethod
    def from_config(cls, config, **deps):
        return cls(config)

    @classmethod
    def summary(cls, directory):
        return [f"value {(directory / 'value.txt').read_text()}"]

    def run(self, ctx):
        ToyStage.runs.append((self.config.value, ctx.out_dir, dict(ctx.inputs.folders)))
        (ctx.out_dir / "value.txt").write_text(str(self.config.value))


def toy_plugin(*classes_by_kind: tuple[str, type]) -> types.SimpleNamespace:
    hooks = {}
    for kind in {k for k, _ in classes_by_kind}:
        classes = [c for k, c in classes_by_kind if k == kind]

        def hook(register, classes=classes):
            for cls in classes:
                register(cls)

        hooks[f"register_{kind}"] = hookspecs.hookimpl(hook)
    return types.SimpleNamespace(**hooks)


def make_registry(*plugins: tuple[str, types.SimpleNamespace], version: str = "1.0") -> Registry:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    providers = {}
    for name, plugin in plugins:
        manager.register(plugin, name=name)
        providers[name] = Provider(plugin=name, package=f"pkg-{name}", version=version)
    manager.check_pending()
    return Registry(manager, providers, [])


def toy_registry(*, version: str = "1.0") -> Registry:
    from mmgen.plugins.trackers.none_tracker import NoneTracker

    plugin = toy_plugin(
        ("samplers", ToySampler), ("objectives", ToyObjective), ("stages", ToyStage), ("trackers", NoneTracker)
    )
    return make_registry(("toys", plugin), version=version)


def stage_context(out_dir, *, folders=None, loaded=None, registry=None, tracker=None, seed=0):
    """A StageContext whose inputs are `folders` (stage key -> folder; each made by the stage plugin of that
    name) and `loaded` (stage key -> an output already in memory)."""
    from mmgen.stage import StageContext, StageInputs

    folders = dict(folders or {})
    inputs = StageInputs(folders, uses={key: key for key in folders}, registry=registry, loaded=loaded)
    return StageContext(out_dir=out_dir, inputs=inputs, registry=registry, tracker=tracker, seed=seed)
