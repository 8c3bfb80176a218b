"""Errors napari-dynaclr raises for bad input.

Every error is a :class:`DynaclrError` whose message is one sentence naming the offending file, key,
column or channel. The CLI prints it on one line and exits non-zero; the napari widgets show it as a
notification. Anything that is *not* a DynaclrError is a bug in napari-dynaclr.
"""

from __future__ import annotations


class DynaclrError(Exception):
    """Base class: a user-facing problem with the input, with a one-line message."""

    exit_code = 2


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
