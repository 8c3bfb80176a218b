"""The record of what this tool wrote in a folder: ``.dynaclr-manifest.json``, each entry's name with a SHA-256 of
its content, so that a later run knows its own output — unchanged since — from a user's file of the same name.

The demo folder and the napari sample data record every entry (:class:`~napari_dynaclr.core.output.OwnedFolder`);
a command's file output (``evaluate mmd``'s CSV and JSON, ``evaluate pseudotime --json``) is recorded in its
folder's manifest after it is written (:func:`record_file`). An output the manifest records is this tool's exactly
while its content hash matches the record: a rerun replaces it without ``--overwrite``; the same name holding a
user's file, or the tool's file edited since, is refused without it (:func:`recorded`).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from napari_dynaclr.core.output.lock import OutputLock
from napari_dynaclr.core.output.swap import fsync_folder, remove
from napari_dynaclr.errors import OutputError

MANIFEST = ".dynaclr-manifest.json"
#: the lock of a folder whose manifest is being changed (held by an OwnedFolder while it writes)
FOLDER_LOCK = ".dynaclr-folder.lock"
#: the first key of every JSON report this tool writes (how a later run knows the file is ours), the manifest too
REPORT_MARK = "written_by"


def read_manifest(folder: Path) -> dict[str, dict]:
    """The manifest's entries (``{name: {"sha256": …}}`` or ``{name: {"pending": "store"}}``); {} without one."""
    try:
        doc = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = doc.get("entries") if isinstance(doc, dict) else None
    return {str(k): v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}


def write_manifest(folder: Path, entries: dict[str, dict], maker: str) -> None:
    """Replace the manifest of *folder* by *entries* (a hidden file flushed to disk, then renamed over it); call it
    holding the folder's lock."""
    folder = Path(folder)
    doc = {REPORT_MARK: f"napari-dynaclr: the entries {maker} wrote in this folder", "entries": entries}
    tmp = folder / f"{MANIFEST}.partial-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / MANIFEST)
    except OSError as exc:
        remove(tmp)
        raise OutputError(f"cannot write {folder / MANIFEST}: {exc.strerror or exc}") from None
    fsync_folder(folder)


def recorded(path: Path) -> bool | None:
    """Whether the file *path* is what this tool recorded writing there: True (its content hash matches the
    record), False (recorded, but its content differs or was never hashed), None (its folder records no such
    name)."""
    path = Path(path)
    record = read_manifest(path.parent).get(path.name)
    if record is None:
        return None
    return "sha256" in record and os.path.lexists(path) and content_hash(path) == record["sha256"]


def record_file(path: Path, maker: str = "napari-dynaclr") -> None:
    """Record the file *path*, as it is now, in its folder's manifest (under the folder's lock; a folder another
    run holds is refused naming that run)."""
    path = Path(path)
    lock = OutputLock(path.parent / FOLDER_LOCK, path.parent)
    lock.acquire()
    try:
        entries = read_manifest(path.parent)
        entries[path.name] = {"sha256": content_hash(path)}
        write_manifest(path.parent, entries, maker)
    finally:
        lock.release()


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes; of a folder, of its sorted file list with each file's hash (links by target)."""
    h = hashlib.sha256()
    if path.is_symlink():
        h.update(b"link\0" + os.fsencode(os.readlink(path)))
    elif path.is_dir():
        h.update(b"folder\0")
        for rel, kind, value in _walk(path, ""):
            h.update(f"{kind}\0{rel}\0{value}\n".encode("utf-8", "surrogateescape"))
    else:
        h.update(b"file\0" + _file_hash(path).encode())
    return h.hexdigest()


def _walk(folder: Path, rel: str):
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = rel + entry.name
        if entry.is_symlink():
            yield name, "L", os.readlink(entry.path)
        elif entry.is_dir():
            yield name, "D", ""
            yield from _walk(Path(entry.path), name + "/")
        else:
            yield name, "F", _file_hash(Path(entry.path))


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
