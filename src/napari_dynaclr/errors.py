"""Errors napari-dynaclr raises for bad input.

Every error is a :class:`DynaclrError` whose message is one sentence naming the offending file, key,
column or channel. The CLI prints it on one line and exits non-zero; the napari widgets show it as a
notification. Anything that is *not* a DynaclrError is a bug in napari-dynaclr.

Settings are named by their key, written ``{@key}`` in a message (``"{@batch_size}: expected a positive
integer, got 0"``), and what the user can do about an error is a structured :class:`Remedy` (``exc.remedy``:
turn a setting on, give or set one), so that each front end words them for its own controls: ``str(exc)``
uses the plain keys, the command line its flags (``--batch-size``), the napari dock its fields
(:class:`Wording`). ``exc.key`` is the setting the error is about (None: not about a setting).

Errors cross the work process's boundary as data (:meth:`DynaclrError.to_wire`, :func:`from_wire`): every
subclass is registered under its stable ``code`` (its class name) and arrives with its type, message, key and
remedy. All of them are defined here, so every process knows every code.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import ClassVar

#: a setting named in a message: ``{@batch_size}``
SETTING = re.compile(r"\{@(\w+)\}")


@dataclasses.dataclass(frozen=True)
class Remedy:
    """What the user can do, in neutral words: turn the setting *key* on (*value* ``True``), give one (``None``)
    or set it to *value*, *purpose* (``"to write them as NaN rows"``); *otherwise*: another way out that is not a
    setting (``"fix the plate"``); *joint*: how it follows the problem (``". "``: a new sentence, ``"; "``)."""

    key: str
    value: object = True
    purpose: str = ""
    otherwise: str = ""
    joint: str = ". "


class Wording:
    """How a front end names the run's settings and asks for them. This one uses the keys themselves
    (``set allow_nonfinite``); the command line and the napari dock have their own (:attr:`names`,
    :meth:`turn_on`, :meth:`give`, :meth:`set`)."""

    names: Mapping[str, str] = {}

    def name(self, key: str) -> str:
        return self.names.get(key, key)

    def turn_on(self, key: str) -> str:
        return f"set {self.name(key)}"

    def give(self, key: str) -> str:
        return f"give {self.name(key)}"

    def set(self, key: str, value) -> str:
        return f"set {self.name(key)} to {value}"

    def ask(self, remedy: Remedy) -> str:
        if remedy.value is True:
            ask = self.turn_on(remedy.key)
        elif remedy.value is None:
            ask = self.give(remedy.key)
        else:
            ask = self.set(remedy.key, remedy.value)
        return f"{ask} {remedy.purpose}" if remedy.purpose else ask

    def render(self, message: str, remedy: Remedy | None = None) -> str:
        """*message* with its settings named, and the *remedy* asked for, in this front end's words."""
        text = SETTING.sub(lambda m: self.name(m[1]), message)
        if remedy is None:
            return text
        ask = self.ask(remedy)
        if remedy.otherwise:
            ask = f"{remedy.otherwise}, or {ask}"
        if remedy.joint.rstrip().endswith("."):
            ask = ask[:1].upper() + ask[1:]
        return text + remedy.joint + ask


KEYS = Wording()  # the keys themselves: str(exc)

#: every DynaclrError class by its code (filled as the classes are defined)
REGISTRY: dict[str, type[DynaclrError]] = {}


class DynaclrError(Exception):
    """Base class: a user-facing problem with the input, with a one-line message.

    *message* may name settings as ``{@key}``; *key*: the setting the error is about (default: the remedy's,
    else the first one named); *remedy*: what to do (:class:`Remedy`)."""

    exit_code = 2
    code: ClassVar[str] = "DynaclrError"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code", cls.__name__)
        if code in REGISTRY and REGISTRY[code] is not cls:
            raise TypeError(f"error code {code!r} is used by {REGISTRY[code].__qualname__} already")
        cls.code = code
        REGISTRY[code] = cls

    def __init__(self, message: str = "", *, key: str | None = None, remedy: Remedy | None = None):
        super().__init__(message)
        self.message = str(message)
        self.remedy = remedy
        named = SETTING.search(self.message)
        self.key = key or (remedy.key if remedy is not None else None) or (named[1] if named else None)

    def describe(self, wording: Wording = KEYS) -> str:
        """The one-line message in *wording*'s words."""
        return wording.render(self.message, self.remedy)

    def __str__(self) -> str:
        return self.describe()

    def to_wire(self) -> dict:
        """The error as plain data (type code, message, key, remedy), for another process."""
        return {"code": self.code, "message": self.message, "key": self.key,
                "remedy": dataclasses.asdict(self.remedy) if self.remedy is not None else None}

    def __reduce__(self):
        return from_wire, (self.to_wire(),)


REGISTRY["DynaclrError"] = DynaclrError


def from_wire(wire: Mapping) -> DynaclrError:
    """The error :meth:`DynaclrError.to_wire` described, with its type (an unknown code: :class:`WorkerCrashed`)."""
    cls = REGISTRY.get(str(wire.get("code")))
    remedy = Remedy(**wire["remedy"]) if wire.get("remedy") else None
    if cls is None:
        return WorkerCrashed(f"{wire.get('code')}: {wire.get('message', '')}")
    return cls(wire.get("message", ""), key=wire.get("key"), remedy=remedy)


class DynaclrWarning(UserWarning):
    """A warning that names settings (``{@allow_nonfinite}``): each front end words it its way."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def describe(self, wording: Wording = KEYS) -> str:
        return wording.render(self.message)

    def __str__(self) -> str:
        return self.describe()


class CheckpointError(DynaclrError):
    """The checkpoint file is missing, unreadable, or does not fit the encoder."""


class ConfigError(DynaclrError):
    """A configuration (predict.yml or flags) is malformed or contradicts the data/weights."""


class PlateError(DynaclrError):
    """The image store is not a usable HCS OME-Zarr plate (or a channel/z-range does not fit)."""


class TracksError(DynaclrError):
    """A tracking table is missing or malformed."""


class OutputError(DynaclrError):
    """The output path cannot be written (exists, not writable, disk full)."""


class StoreError(DynaclrError):
    """An embedding store cannot be read or is not an AnnData embedding store."""


class AnnotationError(DynaclrError):
    """An annotation CSV is missing or malformed, or the labels it gives cannot train or test a classifier."""


class NonfiniteEmbeddings(DynaclrError):
    """The model gave NaN/Inf features or projections (refused unless ``allow_nonfinite``)."""


class ExploreError(DynaclrError):
    """A problem with an explorer action (unknown column, bad annotation file...)."""


class WorkerCrashed(DynaclrError):
    """The napari plugin's work process died (a crash, out of memory, killed) or failed unexpectedly."""


class Cancelled(DynaclrError):
    """The run was cancelled by the user; nothing was written."""

    exit_code = 130


class InterruptedAfterCommit(DynaclrError):
    """Interrupted (Ctrl-C, SIGTERM) just after the new store was moved into place: it is complete and kept."""

    exit_code = 130


def shorten(names, limit: int = 5) -> str:
    """Comma-join the first *limit* names and say how many more there are."""
    names = [str(n) for n in names]
    head = ", ".join(names[:limit])
    if len(names) > limit:
        head += f" (+{len(names) - limit} more)"
    return head
