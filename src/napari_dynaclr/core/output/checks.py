"""What an output path may be, checked before any work starts.

- The target (:func:`check_target`): never an input of the run (nor inside one, nor containing one), never inside
  a zarr store or plate, never a symbolic link, a name the file system takes, in a writable folder.
- What is there already (:func:`check_existing`): never a mount point; without ``overwrite`` nothing but a file
  this tool wrote, unchanged (:func:`is_own_output`); with it only this tool's kind of output
  (:func:`check_replaceable`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from napari_dynaclr.core.output.manifest import REPORT_MARK, recorded
from napari_dynaclr.errors import OutputError, Remedy

#: what an output is, hence what ``overwrite`` may replace
KINDS = ("store", "parquet", "json", "csv", "text")
#: the metadata files that make a folder a zarr node
ZARR_METADATA = (".zgroup", ".zarray", ".zattrs", "zarr.json", ".zmetadata")


def real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def check_output_path(path: str | Path, overwrite: bool = False, inputs: Mapping[str, object] | None = None,
                      overwrite_hint: str | None = None, kind: str = "store") -> Path:
    """Refuse an output that would destroy data, before any work starts; return it as a Path.

    *inputs*: ``{"plate": path, "tracks": path, ...}`` — everything the run reads (None values are skipped).
    *overwrite_hint*: how the user asks for a replacement, in words (default: the ``overwrite`` setting as a
    :class:`Remedy`, which the CLI words as its flag, the dock as its checkbox). *kind*: what the output is
    (:data:`KINDS`), hence what ``overwrite`` may replace."""
    path = check_target(path, inputs)
    check_existing(path, overwrite, overwrite_hint, kind)
    return path


def check_target(path: str | Path, inputs: Mapping[str, object] | None = None) -> Path:
    """The checks that do not depend on what is at *path* now (see the module)."""
    path = Path(path)
    parent_dir = Path(os.path.abspath(path)).parent
    try:
        name_max = os.pathconf(parent_dir if parent_dir.exists() else "/", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise OutputError(f"output name {path.name[:40]}… is longer than this file system allows ({name_max} bytes)")
    if path.is_symlink():
        raise OutputError(f"output {path} is a symbolic link (to {os.readlink(path)}); give the real path")
    target = real(path)
    for name, given in (inputs or {}).items():
        if given is None:
            continue
        inp = real(Path(given))
        if target == inp:
            raise OutputError(f"output {path} is the input {name} {given}; choose another output path")
        if inp in target.parents:
            raise OutputError(f"output {path} lies inside the input {name} {given}; choose a path outside it")
        if target in inp.parents:
            raise OutputError(f"output {path} contains the input {name} {given}; choose another output path")
    if kind_error := _kind_of_name(path):
        raise OutputError(kind_error)
    store = zarr_ancestor(target)
    if store is not None:
        raise OutputError(f"output {path} lies inside the zarr store {store}; choose a path outside it")
    parent = target.parent
    if not parent.exists():
        raise OutputError(f"output folder {path.parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"output folder {path.parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path.parent} is not writable")
    return path


def _kind_of_name(path: Path) -> str | None:
    if path.name in ZARR_METADATA:
        return f"output {path} is named like a zarr metadata file ({path.name}); choose another name"
    if path.name in ("", ".", ".."):
        return f"output {path} names a folder, not a new file or store; give a name"
    return None


def zarr_ancestor(target: Path) -> Path | None:
    """The nearest folder above *target* that is a zarr node (a store, a plate, one of their groups), or None."""
    for folder in target.parents:
        if any(os.path.lexists(folder / name) for name in ZARR_METADATA):
            return folder
    return None


def exists_error(problem: str, overwrite_hint: str | None = None) -> OutputError:
    """An output that exists: allowing ``overwrite`` replaces it (a :class:`Remedy` each front end words; or the
    caller's own *overwrite_hint*)."""
    if overwrite_hint is not None:
        return OutputError(f"{problem}; {overwrite_hint} to replace it")
    return OutputError(problem, remedy=Remedy("overwrite", purpose="to replace it", joint="; "))


def check_existing(path: Path, overwrite: bool, overwrite_hint: str | None = None, kind: str = "store") -> None:
    """Refuse to replace what is at *path* (nothing there: fine). See the module."""
    if not os.path.lexists(path):
        return
    if os.path.ismount(path):
        raise OutputError(f"output {path} is a mount point; it cannot be replaced (choose a path inside it or "
                          "another output path)")
    if kind != "store" and path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name")
    if not overwrite:
        if is_own_output(path, kind):
            return
        raise exists_error(f"output {path} already exists", overwrite_hint)
    check_replaceable(path, kind)


def check_replaceable(path: Path, kind: str = "store") -> None:
    """Refuse to replace anything but this tool's *kind* of output: an embedding store (ours or VisCy's) or an
    empty folder (``"store"``), a parquet file (``"parquet"``), a text file (``"json"``, ``"csv"``, ``"text"``)."""
    from napari_dynaclr.core.zattrs import is_embedding_store

    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    if kind == "store":
        if not path.is_dir():
            raise OutputError(f"output {path} exists and is a file, not an embedding store; refusing to replace it")
        if is_embedding_store(path) or not any(path.iterdir()):
            return
        raise OutputError(f"output {path} exists and is {describe_folder(path)}, not an embedding store; refusing "
                          "to replace it (choose another output path)")
    if kind == "parquet":
        if path.is_file() and _is_parquet(path):
            return
        what = "a folder" if path.is_dir() else "not a parquet file"
        raise OutputError(f"output {path} exists and is {what}; refusing to replace it (choose another output path)")
    if path.is_dir():
        raise OutputError(f"output {path} exists and is {describe_folder(path)}; refusing to replace it with a "
                          f"{kind.upper() if kind != 'text' else 'text'} file (choose another output path)")
    if not _is_text(path):
        raise OutputError(f"output {path} exists and is not a text file (binary data); refusing to replace it "
                          "(choose another output path)")


def is_own_output(path: Path, kind: str) -> bool:
    """A file output this tool wrote and nobody changed since: what its folder's manifest records, when it records
    the name (:func:`~napari_dynaclr.core.output.manifest.recorded`: the content hash decides); otherwise a JSON
    report with this tool's mark (:func:`is_own_report`)."""
    if kind == "store" or not path.is_file():
        return False
    mine = recorded(path)
    return mine if mine is not None else is_own_report(path, kind)


def is_own_report(path: Path, kind: str) -> bool:
    """A JSON report this tool wrote (its first key is ``written_by: napari-dynaclr …``; ``schema:
    napari-dynaclr/…`` in the verify reports of earlier versions)."""
    if kind != "json" or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    marks = (f'"{REPORT_MARK}": "napari-dynaclr'.encode(), b'"schema": "napari-dynaclr/')  # (earlier versions: schema)
    return head.lstrip().startswith(b"{") and any(mark in head for mark in marks)


def describe_folder(path: Path) -> str:
    """What a folder is, in a few words, for a message."""
    from napari_dynaclr.core.plate import is_hcs_plate
    from napari_dynaclr.core.zattrs import group_attributes

    if is_hcs_plate(path):
        return "an OME-Zarr HCS plate"
    attrs = group_attributes(path)
    if attrs is not None:
        kind = attrs.get("encoding-type")
        return f"a zarr store ({kind})" if kind else "a zarr store that is not an embedding store"
    try:
        names = sorted(p.name for p in path.iterdir())
    except OSError:
        return "a folder that cannot be listed"
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return f"a folder with {len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def _is_parquet(path: Path) -> bool:
    """A file with parquet's magic bytes at both ends."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(-4, os.SEEK_END)
            return head == b"PAR1" and fh.read(4) == b"PAR1"
    except OSError:
        return False


def _is_text(path: Path) -> bool:
    """A regular file whose start is UTF-8 text without NUL bytes (an empty file too)."""
    if not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # (a character cut at the end of what was read)
    return True
