"""Strict structuring of recipe data into typed, frozen component configs.

Strings stop here: past `structure()` there are only typed objects. Errors carry
the YAML path (`stages.train.trainer.steps`) and a did-you-mean. Unlike a
lenient converter, 8.7 is not an int and "false" is not a bool; floats written
as `1e-4` (which PyYAML reads as a string) are parsed explicitly.
"""

from __future__ import annotations

import collections.abc
import difflib
import types
import typing
from typing import Any, Literal, Mapping, Union

import attrs
import cattrs

from .errors import UserError
from .hookspecs import DEPS
from .validators import FieldError

KIND_KEY = "mmgen_kind"
MANY_KEY = "mmgen_many"  # False: one component; True: a list; "map": a mapping of name -> component
RAW_DEFAULT_KEY = "mmgen_raw_default"
UPSTREAM_KEY = "mmgen_upstream"


class ConfigError(UserError, ValueError):
    """A recipe value that does not fit its config; `path` says where."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<root>'}: {message}")
        self.path = path
        self.message = message


@attrs.frozen(kw_only=True)
class Spec:
    """A component named in a recipe: its kind, registered name and typed Config."""

    kind: str
    use: str
    config: Any


def component(kind: str, *, default: Mapping[str, Any] | None = None) -> Any:
    """A config field holding one component of `kind` (`{use: name, ...options}`)."""
    metadata = {KIND_KEY: kind, MANY_KEY: False, RAW_DEFAULT_KEY: default}
    if default is None:
        return attrs.field(metadata=metadata)
    return attrs.field(default=None, metadata=metadata)


def components(kind: str, *, default: tuple[Mapping[str, Any], ...] = ()) -> Any:
    """A config field holding a list of components of `kind`."""
    return attrs.field(default=(), metadata={KIND_KEY: kind, MANY_KEY: True, RAW_DEFAULT_KEY: tuple(default)})


def optional_component(kind: str) -> Any:
    """A config field holding one component of `kind`, or null (the default)."""
    return attrs.field(default=None, metadata={KIND_KEY: kind, MANY_KEY: False, RAW_DEFAULT_KEY: None})


def component_map(kind: str) -> Any:
    """A config field mapping names (task names, say) to components of `kind`; empty by default."""
    return attrs.field(factory=dict, metadata={KIND_KEY: kind, MANY_KEY: "map", RAW_DEFAULT_KEY: None})


def upstream(stage: str | None) -> Any:
    """A config field naming the earlier stage whose output this component reads (by default `stage`; None: none).

    The runner checks before any work that such a stage comes earlier in the
    recipe, and hands the component that stage's output (`StageInputs`).
    """
    return attrs.field(default=stage, metadata={UPSTREAM_KEY: True})


def declared_inputs(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every `upstream` field in a structured config, nested components included: [(yaml path, stage key)]."""
    if isinstance(value, Spec):
        return declared_inputs(value.config, path)
    found: list[tuple[str, str]] = []
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            if field.metadata.get(UPSTREAM_KEY):
                if item is not None:
                    found.append((_join(path, field.name), item))
            else:
                found += declared_inputs(item, _join(path, field.name))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += declared_inputs(item, _join(path, index))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found += declared_inputs(item, _join(path, str(key)))
    return found


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe_value(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if len(text) > limit:  # the YAML path says where; the start of the value is enough to recognise it
        text = text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def structure(tp: Any, data: Any, *, path: str = "", registry: Any = None) -> Any:
    """Turn plain YAML data into an instance of `tp`, or raise ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise ConfigError(path, f"expected true or false, got {describe_value(data)}")
        return data
    if tp is int:
        return _structure_int(data, path)
    if tp is float:
        return _structure_float(data, path)
    if tp is str:
        if not isinstance(data, str):
            raise ConfigError(path, f"expected a string, got {describe_value(data)}")
        return data
    if tp is type(None):
        if data is not None:
            raise ConfigError(path, f"expected null, got {describe_value(data)}")
        return None
    if origin is Literal:
        if not any(data == a and type(data) is type(a) for a in args):
            hint = did_you_mean(data, [a for a in args if isinstance(a, str)]) if isinstance(data, str) else ""
            raise ConfigError(path, f"expected one of {list(args)}, got {describe_value(data)}{hint}")
        return data
    if origin in (Union, types.UnionType):
        return _structure_union(args, data, path, registry)
    if origin is tuple:
        return _structure_tuple(args, data, path, registry)
    if origin in (list, typing.List):
        return [structure(args[0], item, path=_join(path, i), registry=registry) for i, item in enumerate(_seq(data, path))]
    if origin in (dict, collections.abc.Mapping):
        return _structure_mapping(args, data, path, registry)
    if attrs.has(tp):
        return structure_attrs(tp, data, path=path, registry=registry)
    raise ConfigError(path, f"unsupported config type {tp!r}")


def _structure_int(data: Any, path: str) -> int:
    if isinstance(data, bool) or not isinstance(data, (int, str)):
        raise ConfigError(path, f"expected an integer, got {describe_value(data)}")
    if isinstance(data, str):
        try:
            number = float(data)
        except ValueError:
            raise ConfigError(path, f"expected an integer, got {describe_value(data)}") from None
        if not number.is_integer():
            raise ConfigError(path, f"expected an integer, got {describe_value(data)}")
        return int(number)
    return data


def _structure_float(data: Any, path: str) -> float:
    if isinstance(data, bool):
        raise ConfigError(path, f"expected a number, got {describe_value(data)}")
    if isinstance(data, (int, float)):
        return float(data)
    if isinstance(data, str):
        try:
            return float(data)  # PyYAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    raise ConfigError(path, f"expected a number, got {describe_value(data)}")


def _structure_union(args: tuple, data: Any, path: str, registry: Any) -> Any:
    if data is None and type(None) in args:
        return None
    errors = []
    for option in (a for a in args if a is not type(None)):
        try:
            return structure(option, data, path=path, registry=registry)
        except ConfigError as exc:
            errors.append(exc.message)
    raise ConfigError(path, " or ".join(errors))


def _seq(data: Any, path: str) -> list:
    if not isinstance(data, (list, tuple)):
        raise ConfigError(path, f"expected a list, got {describe_value(data)}")
    return list(data)


def _mapping(data: Any, path: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {describe_value(data)}")
    return data


def _structure_tuple(args: tuple, data: Any, path: str, registry: Any) -> tuple:
    items = _seq(data, path)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(structure(args[0], item, path=_join(path, i), registry=registry) for i, item in enumerate(items))
    if len(items) != len(args):
        raise ConfigError(path, f"expected a list of {len(args)} items, got {len(items)}")
    return tuple(structure(t, item, path=_join(path, i), registry=registry) for i, (t, item) in enumerate(zip(args, items)))


def _structure_mapping(args: tuple, data: Any, path: str, registry: Any) -> dict:
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {describe_value(data)}")
    key_type, value_type = args if args else (str, Any)
    result = {}
    for key, value in data.items():
        structured_key = structure(key_type, key, path=_join(path, str(key)), registry=registry)
        result[structured_key] = structure(value_type, value, path=_join(path, str(key)), registry=registry)
    return result


def structure_attrs(cls: type, data: Any, *, path: str = "", registry: Any = None) -> Any:
    """Structure a mapping into the attrs class `cls`, rejecting unknown keys."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping of options for {cls.__name__}, got {describe_value(data)}")
    fields = {f.name: f for f in attrs.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            hint = misplaced_option_hint(cls, str(key), data, registry) or did_you_mean(str(key), fields)
            raise ConfigError(
                _join(path, str(key)),
                f"unknown option for {cls.__qualname__}{hint} (options: {', '.join(fields) or 'none'})",
            )
    kwargs = {}
    for name, field in fields.items():
        kind = field.metadata.get(KIND_KEY)
        field_path = _join(path, name)
        if name in data:
            raw = data[name]
            if raw is None and _is_optional_component(field):
                kwargs[name] = None  # an optional component left out
                continue
        elif kind is not None and field.metadata.get(RAW_DEFAULT_KEY) is not None:
            raw = field.metadata[RAW_DEFAULT_KEY]
        elif field.default is attrs.NOTHING:
            raise ConfigError(field_path, f"missing required option for {cls.__qualname__}")
        else:
            continue
        if kind is None:
            kwargs[name] = structure(hints[name], raw, path=field_path, registry=registry)
        elif field.metadata[MANY_KEY] == "map":
            kwargs[name] = {
                key: structure_spec(kind, item, path=_join(field_path, str(key)), registry=registry)
                for key, item in _mapping(raw, field_path).items()
            }
        elif field.metadata[MANY_KEY]:
            kwargs[name] = tuple(
                structure_spec(kind, item, path=_join(field_path, i), registry=registry)
                for i, item in enumerate(_seq(raw, field_path))
            )
        else:
            kwargs[name] = structure_spec(kind, raw, path=field_path, registry=registry)
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(_join(path, exc.field), exc.problem) from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(path, str(exc)) from None


def _is_optional_component(field: Any) -> bool:
    """`optional_component`: null means none. (A `component` with a default has a raw default to fall back on.)"""
    metadata = field.metadata
    return (
        metadata.get(KIND_KEY) is not None
        and metadata[MANY_KEY] is False
        and metadata[RAW_DEFAULT_KEY] is None
        and field.default is None
    )


def structure_spec(kind: str, data: Any, *, path: str, registry: Any) -> Spec:
    """`{use: name, ...options}` (or just `name`) -> Spec with the component's typed Config."""
    if registry is None:
        raise ConfigError(path, "a component reference needs the plugin registry")
    if isinstance(data, str):
        data = {"use": data}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping with `use: <{kind[:-1]} name>`, got {describe_value(data)}")
    if "use" not in data:
        known = ", ".join(sorted(registered_names(registry, kind))) or "none"
        raise ConfigError(_join(path, "use"), f"missing; name the {kind[:-1]} (registered: {known})")
    use = data["use"]
    if not isinstance(use, str):
        raise ConfigError(_join(path, "use"), f"expected a {kind[:-1]} name, got {describe_value(use)}")
    try:
        cls = registry.get(kind, use)
    except KeyError as exc:
        raise ConfigError(_join(path, "use"), f"{exc}{other_kind_hint(kind, use, registry)}") from None
    options = {k: v for k, v in data.items() if k != "use"}
    config = structure_attrs(cls.Config, options, path=path, registry=registry)
    return Spec(kind=kind, use=use, config=config)


# ---- hints for options written in the wrong place -------------------------------------------------


def registered_names(registry: Any, kind: str) -> list[str]:
    try:
        return list(registry.names(kind))
    except (AttributeError, KeyError):
        return []


def _config_class(registry: Any, kind: str, use: Any) -> type | None:
    if registry is None or not isinstance(use, str):
        return None
    try:
        return registry.get(kind, use).Config
    except (AttributeError, KeyError):
        return None


def other_kind_hint(kind: str, name: str, registry: Any) -> str:
    """`shapes` given as a stage: say it is a dataset, and which option of which `kind` component takes it."""
    if registry is None:
        return ""
    for other in (k for k in DEPS if k != kind and name in registered_names(registry, k)):
        hint = f"; {name!r} is a {other[:-1]}, not a {kind[:-1]}"
        for owner in registered_names(registry, kind):
            config = _config_class(registry, kind, owner)
            for field in attrs.fields(config) if config is not None else ():
                if field.metadata.get(KIND_KEY) == other:
                    form = f"[{{use: {name}, ...}}]" if field.metadata[MANY_KEY] is True else f"{{use: {name}, ...}}"
                    return f"{hint}: the {owner!r} {kind[:-1]} takes it as `{field.name}: {form}`"
        return hint
    return ""


def misplaced_option_hint(cls: type, key: str, data: Mapping, registry: Any) -> str:
    """An unknown `key` that is an option one level down (`steps` for `trainer.steps`), or a plugin's name."""
    found = option_paths(cls, key, data, registry)
    if found:
        return f"; did you mean {' or '.join(repr(p) for p in found[:3])}?"
    for field in attrs.fields(cls):
        kind = field.metadata.get(KIND_KEY)
        if kind is not None and key in registered_names(registry, kind):
            form = f"[{{use: {key}, ...}}]" if field.metadata[MANY_KEY] is True else f"{{use: {key}, ...}}"
            return f"; {key!r} is a {kind[:-1]}: write `{field.name}: {form}`"
    return ""


def option_paths(cls: type, key: str, data: Any, registry: Any, *, depth: int = 3) -> list[str]:
    """Where, inside the options of `cls` (as `data` fills them), an option called `key` exists: ["trainer.steps"]."""
    found: list[str] = []
    if depth == 0 or not attrs.has(cls):
        return found
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        if not field.init:
            continue
        given = data.get(field.name) if isinstance(data, Mapping) else None
        for where, sub_cls, sub_data in _option_classes(field, hints[field.name], given, registry):
            if key in {f.name for f in attrs.fields(sub_cls) if f.init}:
                found.append(f"{where}.{key}")
            else:
                found += [f"{where}.{p}" for p in option_paths(sub_cls, key, sub_data, registry, depth=depth - 1)]
    return found


def _option_classes(field: Any, tp: Any, given: Any, registry: Any) -> list[tuple[str, type, Any]]:
    """The option classes a field holds: (its path, the class, the data given for it)."""
    kind = field.metadata.get(KIND_KEY)
    if kind is None:
        nested = [t for t in (typing.get_args(tp) or (tp,)) if attrs.has(t)]
        return [(field.name, nested[0], given)] if nested else []
    raw = given if given is not None else field.metadata.get(RAW_DEFAULT_KEY)
    if field.metadata[MANY_KEY] is True:
        items = [(f"{field.name}[{i}]", item) for i, item in enumerate(raw)] if isinstance(raw, (list, tuple)) else []
    elif field.metadata[MANY_KEY] is False:
        items = [(field.name, raw)]
    else:
        items = []
    found = []
    for where, item in items:
        item = {"use": item} if isinstance(item, str) else item
        config = _config_class(registry, kind, item.get("use")) if isinstance(item, Mapping) else None
        if config is not None:
            found.append((where, config, item))
    return found


_unstructurer = cattrs.Converter()
_unstructurer.register_unstructure_hook(
    Spec, lambda spec: {"use": spec.use, **_unstructurer.unstructure(spec.config)}
)


def to_data(value: Any) -> Any:
    """The plain-data (YAML / JSON) form of a structured config."""
    data = _unstructurer.unstructure(value)
    return _lists(data)


def _lists(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _lists(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_lists(v) for v in data]
    return data
