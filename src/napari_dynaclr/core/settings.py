"""The base of the run's typed settings (pydantic): every value checked when a model is made or changed, a
problem raised as one :class:`~napari_dynaclr.errors.ConfigError` naming the setting (``{@key}``, worded by each
front end), never as pydantic's multi-line error.

Validators raise :class:`ConfigError` themselves for the checks with their own words; the type checks pydantic
does are turned into ``"{@key}: expected <the field's description>, got <value>"``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from napari_dynaclr.errors import ConfigError, shorten

PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
CPU_BACKENDS = ("auto", "openvino", "onednn", "eager")  # the CPU encoder kernels (napari_dynaclr.model.fast_cpu)

_REPR = reprlib.Repr(maxlevel=2, maxtuple=4, maxlist=4, maxdict=4, maxset=4, maxstring=48, maxother=48,
                     maxlong=48)


def clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def brief(value) -> str:
    """A short repr (never builds the full repr of a big value)."""
    try:
        return clip(_REPR.repr(value))
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
        return f"<{type(value).__name__}>"


def expect(text: str, default=None, **kwargs):
    """A field whose description says what it takes (the words of its type error)."""
    return Field(default, description=text, **kwargs)


class Settings(BaseModel):
    """A settings model: unknown names refused, values validated on creation and on assignment; any problem is
    a one-line :class:`ConfigError` naming the setting."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True,
                              validate_default=False)

    def __init__(self, /, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise settings_error(exc, data) from None

    @classmethod
    def model_validate(cls, obj, **kwargs):
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise settings_error(exc, obj) from None

    def __setattr__(self, name, value):
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise settings_error(exc, {name: value}) from None

    def fields(self) -> dict:
        """The field values as they are (no copy, no conversion): ``{name: value}``."""
        return {name: getattr(self, name) for name in type(self).model_fields}


def _field_info(key: str):
    """The declaration of the setting *key* in any settings model (for its description)."""
    return next((cls.model_fields[key] for cls in settings_classes() if key in cls.model_fields), None)


def _value_at(data, loc) -> tuple[object, bool]:
    """The value at *loc* in *data* (mappings and models; a part that is neither, like a union's tag, is skipped)."""
    value, found = data, True
    for part in loc:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(part, str) and isinstance(value, BaseModel) and hasattr(value, part):
            value = getattr(value, part)
        elif isinstance(part, int) and isinstance(value, (list, tuple)) and -len(value) <= part < len(value):
            value = value[part]
        elif isinstance(part, str):  # a union's tag
            continue
        else:
            found = False
            break
    return value, found


def settings_classes() -> list[type[Settings]]:
    """Every settings model (the subclasses of :class:`Settings`)."""
    out, stack = [], list(Settings.__subclasses__())
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def _key_of(loc) -> str:
    """The setting an error location is about: its last part that names a field of a settings model (not a
    union member's tag, a list index or a mapping key)."""
    names = {name for cls in settings_classes() for name in cls.model_fields}
    keys = [p for p in loc if isinstance(p, str) and p in names]
    return keys[-1] if keys else ""


def settings_error(exc: ValidationError, data) -> ConfigError:
    """pydantic's *exc* (validating *data*) as one line: the first problem, naming its setting."""
    errors = exc.errors(include_url=False, include_context=True)
    first = errors[0]
    key = _key_of(first["loc"])
    n_more = len({_key_of(e["loc"]) for e in errors}) - 1
    more = f" (+{n_more} more problem{'s' if n_more > 1 else ''})" if n_more > 0 else ""
    if first["type"] == "extra_forbidden":
        unknown = [e["loc"][-1] for e in errors if e["type"] == "extra_forbidden"]
        return ConfigError(f"unknown setting(s) {shorten(unknown)}")
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return ConfigError(f"{{@{key or 'source'}}}: expected a data source of kind 'tracks' (a plate and its tracks) "
                           "or 'boc' (Bag of Channels)", key=key or "source")
    if first["type"] == "missing":
        return ConfigError(f"{{@{key}}} is missing", key=key)
    # the whole value of the setting, not the element inside it that failed
    top = list(first["loc"])
    while top and top[-1] != key:
        top.pop()
    value, found = _value_at(data, top)
    got = brief(value if found else first.get("input"))
    info = _field_info(key) if key else None
    what = f"expected {info.description}" if info is not None and info.description else first["msg"]
    return ConfigError(f"{{@{key}}}: {what}, got {got}{more}" if key else f"{what}, got {got}{more}", key=key or None)


def pair(value, name: str) -> tuple[int, int]:
    """Two integers (one number: both the same), or a :class:`ConfigError` naming *name*."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        vals = tuple(value)
    except TypeError:
        raise ConfigError(f"{{@{name}}} must be two integers, got {value!r}") from None
    if len(vals) != 2:
        raise ConfigError(f"{{@{name}}} must be two integers, got {list(vals)}")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            raise ConfigError(f"{{@{name}}} must be two integers, got {list(vals)}")
        out.append(int(v))
    return out[0], out[1]


def positive_int(value, name: str, minimum: int = 1) -> int:
    """*value* as an int >= *minimum* (a bool, a float or a string is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{{@{name}}} must be {what}, got {value!r}")
    return value


def one_of(value, choices, name: str):
    if value not in choices:
        raise ConfigError(f"{{@{name}}} {value!r} is not one of {', '.join(map(str, choices))}")
    return value
