"""Typed YAML configs for the evaluations: VisCy's ``base:`` composition and one-line errors from pydantic.

``compose_yaml`` reads a YAML mapping with its ``base:`` files merged first, as VisCy's
``viscy_utils.compose.load_composed_config`` (paths relative to the file, dicts merged key by key, lists replaced,
top-level keys starting with ``_`` dropped). ``validate_config`` checks a mapping against a pydantic model and
turns the first problem into one :class:`~napari_dynaclr.errors.ConfigError` line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from napari_dynaclr.core.schema import brief
from napari_dynaclr.errors import ConfigError


class StrictModel(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "bool_type": "true or false", "string_type": "a string",
    "float_type": "a number", "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "greater_than": "a value > {gt}", "greater_than_equal": "a value >= {ge}",
    "too_short": "a list of at least {min_length} item(s)",
}


def _keys_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the (sub)model at *loc* accepts, for an unknown-key message."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        sub = field.annotation
        for candidate in (sub, *getattr(sub, "__args__", ())):
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
                    break
    return list(model.model_fields)


_UNION_TAGS = ("int", "float")  # pydantic names the member of ``int | float`` that failed; one problem for us


def _where(err: dict) -> tuple:
    loc = tuple(err["loc"])
    return loc[:-1] if loc and loc[-1] in _UNION_TAGS else loc


def _first_problem(exc: ValidationError, model: type[BaseModel]) -> str:
    err = exc.errors(include_url=False)[0]
    loc = _where(err)
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r} (allowed here: {', '.join(_keys_of(model, loc))})"
    if err["type"] == "missing":
        return f"missing key {where!r}"
    if err["type"] in ("value_error", "assertion_error"):
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"{where}: {msg}" if where else msg
    template = _EXPECTED.get(err["type"])
    what = template.format(**err.get("ctx", {})) if template else err["msg"]
    if len(err["loc"]) > len(loc) and err["type"] in ("int_type", "float_type"):
        what = "a number"
    got = brief(err.get("input"))
    return f"{where}: expected {what}, got {got}"


def validate_config(model: type[BaseModel], raw: Mapping[str, Any], source: str):
    """*raw* validated as *model*; the first problem becomes ``<source>: <problem>`` (:class:`ConfigError`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        problems = len({_where(e) for e in exc.errors(include_url=False)})
        more = f" (+{problems - 1} more problem{'s' if problems > 2 else ''})" if problems > 1 else ""
        raise ConfigError(f"{source}: {_first_problem(exc, model)}{more}") from None


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) \
            else value
    return out


def _read_yaml(path: Path) -> dict:
    from napari_dynaclr.core.inputs import load_yaml

    data = load_yaml(path, "config", ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} holds a {type(data).__name__}, not a mapping of keys")
    return data


def compose_yaml(path: str | Path, _seen: frozenset[Path] = frozenset()) -> dict:
    """A YAML mapping with its ``base:`` files merged first (VisCy's ``load_composed_config``)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config {path}: circular base: reference")
    data = _read_yaml(path)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: base: expected a path or a list of paths, got {brief(bases)}")
    merged: dict = {}
    for rel in bases:
        merged = _deep_merge(merged, compose_yaml(path.parent / rel, _seen | {path}))
    return {k: v for k, v in _deep_merge(merged, data).items() if not str(k).startswith("_")}
