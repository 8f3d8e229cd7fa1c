"""The plugin manager: loads built-in and third-party plugins and indexes their components.

Built-ins register exactly like third parties: each module in DEFAULT_PLUGINS is
a pluggy plugin, as is every entry point in the `mmgen` group. Plugins load when
a command runs (`load_registry()`), never on `import mmgen`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
from typing import Any, Callable, Iterable

import attrs
import pluggy

from . import hookspecs
from .errors import UserError
from .version import __version__

log = logging.getLogger(__name__)

KINDS = tuple(hookspecs.DEPS)  # tokenizers, models, objectives, samplers, tasks, rerankers, refiners, ...

# Built-in plugin modules. Their top-level imports stay light (no torch): they
# import component classes inside the hook bodies, so `mmgen --help` stays fast.
DEFAULT_PLUGINS = (
    "mmgen.plugins.trackers.register",
    "mmgen.plugins.datasets.register",
    "mmgen.tokenizers.register",
    "mmgen.plugins.models.register",
    "mmgen.objectives.register",
    "mmgen.plugins.stages.register",
    "mmgen.samplers.register",
    "mmgen.plugins.tasks.register",
    "mmgen.plugins.rerankers.register",
    "mmgen.plugins.refiners.register",
    "mmgen.plugins.clip.register",
    "mmgen.plugins.metrics.register",
    "mmgen.plugins.estimate.register",
    "mmgen.plugins.serve.register",
)

ENTRY_POINT_GROUP = "mmgen"
STRICT_ENV = "MMGEN_STRICT_PLUGINS"
EXTRA_ENV = "MMGEN_PLUGINS"  # comma-separated extra plugin modules (development and tests)
TRACE_ENV = "MMGEN_TRACE_HOOKS"


class PluginError(UserError):
    """A plugin could not be loaded or registered something invalid."""


class UnknownComponentError(KeyError):
    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        message = f"no {kind[:-1]} named {name!r}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        message += f" (registered: {', '.join(known) or 'none'})"
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@attrs.frozen(kw_only=True)
class Provider:
    """Who supplied a plugin: its plugin name, distribution and version."""

    plugin: str
    package: str
    version: str

    def __str__(self) -> str:
        return f"{self.package} {self.version} ({self.plugin})"


@attrs.frozen(kw_only=True)
class Entry:
    kind: str
    name: str
    cls: type
    provider: Provider


@attrs.frozen(kw_only=True)
class PluginFailure:
    plugin: str
    error: str


def is_strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip() not in ("", "0", "false", "no")


def _check_component(kind: str, cls: Any, provider: Provider) -> str:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{provider}: {kind} component {cls!r} has no string `name`")
    config = getattr(cls, "Config", None)
    if config is None or not attrs.has(config):
        raise PluginError(f"{provider}: {kind} component {name!r} needs an attrs `Config` class")
    if not callable(getattr(cls, "from_config", None)):
        raise PluginError(f"{provider}: {kind} component {name!r} needs a `from_config(config, **deps)` classmethod")
    return name


class Registry:
    """Every component the loaded plugins registered, by kind and name."""

    def __init__(self, manager: pluggy.PluginManager, providers: dict[str, Provider], failures: list[PluginFailure]):
        self.manager = manager
        self.failures = failures
        self._providers = providers
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            self._collect(kind)

    def _collect(self, kind: str) -> None:
        hook = getattr(self.manager.hook, f"register_{kind}")
        # Call each implementation separately so every class is attributed to its plugin.
        for impl in reversed(hook.get_hookimpls()):
            provider = self._providers.get(impl.plugin_name) or Provider(
                plugin=impl.plugin_name, package="unknown", version="?"
            )

            def register(cls: type, _provider: Provider = provider) -> None:
                if os.environ.get(TRACE_ENV):  # hooks are called one by one here, past pluggy's own tracing
                    log.info("hook: register_%s from %s registered %s", kind, _provider.plugin, getattr(cls, "name", cls))
                self._add(kind, cls, _provider)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin must not take the others down
                if is_strict():
                    raise
                self.failures.append(PluginFailure(plugin=impl.plugin_name, error=f"{type(exc).__name__}: {exc}"))
                log.debug("plugin %s failed in register_%s: %s", impl.plugin_name, kind, exc)

    def _add(self, kind: str, cls: type, provider: Provider) -> None:
        name = _check_component(kind, cls, provider)
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"duplicate {kind[:-1]} name {name!r}: registered by {existing.provider} and by {provider}"
            )
        self._entries[kind][name] = Entry(kind=kind, name=name, cls=cls, provider=provider)

    def _kind(self, kind: str) -> dict[str, Entry]:
        if kind not in self._entries:
            raise KeyError(f"unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
        return self._entries[kind]

    def names(self, kind: str) -> list[str]:
        return sorted(self._kind(kind))

    def entries(self, kind: str) -> list[Entry]:
        return [self._kind(kind)[name] for name in self.names(kind)]

    def entry(self, kind: str, name: str) -> Entry:
        entries = self._kind(kind)
        if name not in entries:
            raise UnknownComponentError(kind, name, entries)
        return entries[name]

    def get(self, kind: str, name: str) -> type:
        return self.entry(kind, name).cls

    def build(self, spec: Any, **deps: Any) -> Any:
        """Instantiate a structured `config.Spec` with its dependencies."""
        return self.get(spec.kind, spec.use).from_config(spec.config, **deps)


def _load_module(name: str) -> Any:
    return importlib.import_module(name)


def _plugin_sources() -> list[tuple[str, Callable[[], Any], Provider]]:
    builtin = Provider(plugin="", package="mmgen", version=__version__)
    sources = [(m, lambda m=m: _load_module(m), attrs.evolve(builtin, plugin=m)) for m in DEFAULT_PLUGINS]
    for module in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
        sources.append((module, lambda m=module: _load_module(m), Provider(plugin=module, package=module, version="?")))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        provider = Provider(
            plugin=ep.name,
            package=dist.name if dist else ep.value.split(":")[0],
            version=dist.version if dist else "?",
        )
        sources.append((ep.name, ep.load, provider))
    return sources


def load_plugins() -> tuple[pluggy.PluginManager, dict[str, Provider], list[PluginFailure]]:
    """Import every plugin; a failing one is skipped and reported (fatal when strict)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        manager.trace.root.setwriter(lambda message: log.info("hook: %s", message.rstrip()))
        manager.enable_tracing()
    providers: dict[str, Provider] = {}
    failures: list[PluginFailure] = []
    for plugin_name, load, provider in _plugin_sources():
        if manager.has_plugin(plugin_name):
            other = providers.get(plugin_name)
            raise PluginError(f"duplicate plugin name {plugin_name!r}: provided by {other} and by {provider}")
        try:
            module = load()
        except Exception as exc:
            if is_strict():
                raise PluginError(f"plugin {plugin_name!r} ({provider.package}) failed to import: {exc}") from exc
            failures.append(PluginFailure(plugin=plugin_name, error=f"{type(exc).__name__}: {exc}"))
            log.debug("skipping plugin %s (%s): %s: %s", plugin_name, provider.package, type(exc).__name__, exc)
            continue
        manager.register(module, name=plugin_name)
        providers[plugin_name] = provider
    # A misspelt hook name (register_model instead of register_models) fails loudly.
    manager.check_pending()
    return manager, providers, failures


def load_registry() -> Registry:
    manager, providers, failures = load_plugins()
    return Registry(manager, providers, failures)
