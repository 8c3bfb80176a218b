"""Input files and folders, checked one way before anything reads them, and one YAML loader.

Every file the tool reads (a checkpoint, a tracks or annotation CSV, a predict.yml or collection YAML, a
cell-index parquet) goes through :func:`check_input_file`, every folder (a plate, a tracks folder) through
:func:`check_input_folder`; each refusal is one line naming the input:

- missing: ``<what> not found: <path>``;
- a folder where a file is expected, or a file where a folder is;
- a named pipe (FIFO), a socket or a device: opening a FIFO blocks until someone writes to it, a device may
  never end; they are refused before they are opened;
- not readable: ``<what> <path>: permission denied``.

Every YAML input goes through :func:`load_yaml`: at most :data:`MAX_YAML_BYTES`, UTF-8, and a document that,
counting every value each time an alias repeats it, holds at most :data:`MAX_YAML_VALUES` values nested at
most :data:`MAX_YAML_DEPTH` levels (a 2 KB "billion laughs" file expands to 10⁹ values).
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from napari_dynaclr.errors import DynaclrError

MAX_YAML_BYTES = 10 * 1024 * 1024  # a predict.yml or a collection is a few KB
MAX_YAML_VALUES = 100_000  # values counted with repetition (an alias repeats what it points to)
MAX_YAML_DEPTH = 100

_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    for test, name in _SPECIAL:
        if test(mode):
            return name
    return "not a regular file"


def _stat(path: Path, what: str, error: type[DynaclrError]) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except PermissionError:
        raise error(f"{what} {path}: permission denied (a folder above it cannot be entered)") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def os_error(exc: OSError, path, what: str, error: type[DynaclrError] = DynaclrError) -> DynaclrError:
    """The one-line error for an :class:`OSError` met while reading the input *what* at *path*."""
    if isinstance(exc, PermissionError):
        return error(f"{what} {path}: permission denied")
    if isinstance(exc, FileNotFoundError):
        return error(f"{what} not found: {path}")
    return error(f"{what} {path} cannot be read: {exc.strerror or exc}")


def check_input_file(path, what: str, error: type[DynaclrError] = DynaclrError) -> Path:
    """*path* as a :class:`Path` when it is an existing, readable regular file (a link to one counts); else
    *error* with one line naming *what* (``"checkpoint"``, ``"annotation CSV"`` ...) and the path. Never opens
    a FIFO, a socket or a device (they are refused by their type)."""
    path = Path(path)
    st = _stat(path, what, error)
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is {_kind(st.st_mode)}, not a regular file (reading it could block or never "
                    "end); refusing")
    if not os.access(path, os.R_OK):
        raise error(f"{what} {path}: permission denied")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise os_error(exc, path, what, error) from None
    return path


def check_input_folder(path, what: str, error: type[DynaclrError] = DynaclrError,
                       expected: str = "a folder") -> Path:
    """*path* as a :class:`Path` when it is an existing folder that can be listed and entered; else *error*
    with one line (``<what> <path> is a file, expected <expected>``, ``permission denied`` ...)."""
    path = Path(path)
    st = _stat(path, what, error)
    if not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
        raise error(f"{what} {path} is {kind}, expected {expected}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise error(f"{what} {path}: permission denied")
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        raise os_error(exc, path, what, error) from None
    return path


def read_input_bytes(path, what: str, limit: int, error: type[DynaclrError] = DynaclrError) -> bytes:
    """The bytes of the input file *path* (checked by :func:`check_input_file`), refused beyond *limit*."""
    path = check_input_file(path, what, error)
    try:
        size = path.stat().st_size
        if size <= limit:
            with open(path, "rb") as fh:
                raw = fh.read(limit + 1)
            size = len(raw)
    except OSError as exc:
        raise os_error(exc, path, what, error) from None
    if size > limit:  # (or grew since stat)
        raise error(f"{what} {path} is larger than {limit / 2**20:g} MB ({size} bytes); a {what} is a few KB: "
                    "refusing")
    return raw


# ------------------------------------------------------------------------------------------------------- YAML

def load_yaml(path, what: str, error: type[DynaclrError] = DynaclrError):
    """The document of the YAML file *path* (the input *what*: ``"predict.yml"``, ``"collection"`` ...), read
    with ``yaml.safe_load`` within this module's limits; any problem is one line (*error*) naming the file."""
    raw = read_input_bytes(path, what, MAX_YAML_BYTES, error)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None
    return parse_yaml_text(text, f"{what} {path}", error)


def parse_yaml_text(text: str, source: str, error: type[DynaclrError] = DynaclrError):
    """The document of the YAML *text* (from *source*, named in the one-line *error*), within this module's
    limits (size, nesting, alias expansion)."""
    import yaml

    if len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise error(f"{source} is larger than {MAX_YAML_BYTES} bytes; refusing")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{source} is not valid YAML: {first[:200]}") from None
    except RecursionError:
        raise error(f"{source}: the YAML nests deeper than {MAX_YAML_DEPTH} levels; refusing") from None
    except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-02-30
        raise error(f"{source} is not valid YAML: {str(exc)[:200]}") from None
    check_expansion(doc, source, error)
    return doc


def _children(node):
    if isinstance(node, Mapping):
        return itertools.chain.from_iterable(node.items())
    return iter(node)


def _is_container(node) -> bool:
    return isinstance(node, (Mapping, list, tuple, set, frozenset))


_END = object()


def check_expansion(doc, source: str = "config", error: type[DynaclrError] = DynaclrError) -> None:
    """Refuse a document that, counting every value each time it is reached (YAML aliases make one
    object appear many times: a "billion laughs" file of 2 KB), holds more than :data:`MAX_YAML_VALUES`
    values or nests deeper than :data:`MAX_YAML_DEPTH` (a self-referencing alias nests forever).

    The walk keeps one iterator per level and stops at the limit, so it never expands the document.
    """
    if not _is_container(doc):
        return
    count = 1
    stack = [_children(doc)]
    while stack:
        child = next(stack[-1], _END)
        if child is _END:
            stack.pop()
            continue
        count += 1
        if count > MAX_YAML_VALUES:
            raise error(f"{source}: the YAML expands to more than {MAX_YAML_VALUES} values (aliases?); refusing")
        if _is_container(child):
            if len(stack) >= MAX_YAML_DEPTH:
                raise error(f"{source}: the YAML nests deeper than {MAX_YAML_DEPTH} levels (a recursive alias?); "
                            "refusing")
            stack.append(_children(child))
