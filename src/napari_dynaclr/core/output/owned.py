"""A folder whose entries this tool writes and records, so that it replaces or removes only what it made.

The demo folder and the napari sample data hold files with common names (``plate.zarr``, ``tracks``,
``model.ckpt``, ``predict.yml``, ``truth.csv``). :class:`OwnedFolder` records each entry it writes in a manifest
(``.dynaclr-manifest.json``: the entry's name and a SHA-256 of its content — of a folder, of its file list and
contents) *before* the entry appears under its name, and replaces or removes an entry only while its content still
matches the record: a user's plate, tracks or config copied into the folder, or an entry changed since, is never
touched, whatever its name.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from napari_dynaclr.core.output.files import clean_staging, make_folder, write_entries
from napari_dynaclr.core.output.lock import OutputLock
from napari_dynaclr.core.output.manifest import FOLDER_LOCK, MANIFEST, content_hash, read_manifest, write_manifest
from napari_dynaclr.core.output.swap import remove
from napari_dynaclr.errors import OutputError, shorten

_OURS = ".dynaclr-"  # the manifest, the folder's lock, staging and trash entries


class OwnedFolder:
    """Held (``with``) while writing: the folder's lock, its manifest, its entries (see the module).

    *maker*: who made the entries, for messages (``"the demo"``); *hint*: what the user can do instead of a
    refused replacement (``"choose another --out"``)."""

    def __init__(self, folder: str | Path, what: str = "demo folder", maker: str = "the demo",
                 hint: str = "choose another --out"):
        self.folder = Path(folder)
        self.what, self.maker, self.hint = what, maker, hint
        self._lock = OutputLock(self.folder / FOLDER_LOCK, self.folder)

    def __enter__(self) -> OwnedFolder:
        if os.path.lexists(self.folder) and not self.folder.is_dir():
            raise OutputError(f"{self.what} {self.folder} is a file; {self.hint}")
        make_folder(self.folder)
        self._lock.acquire()
        try:
            clean_staging(self.folder)
            for p in [*self.folder.glob(f"{_OURS}trash-*"), *self.folder.glob(f"{MANIFEST}.partial-*")]:
                remove(p)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    # ------------------------------------------------------------------ what is there

    def entries(self) -> list[str]:
        """The folder's entries, but for this class's own hidden files."""
        return sorted(p.name for p in self.folder.iterdir() if not p.name.startswith(_OURS))

    def recorded(self) -> dict[str, dict]:
        """The manifest's entries (``{name: {"sha256": …}}`` or ``{name: {"pending": "store"}}``); {} without one."""
        return read_manifest(self.folder)

    def has(self, names: Iterable[str]) -> bool:
        """Whether every entry of *names* was written completely and is there (no hashing: a cheap look)."""
        recorded = self.recorded()
        return all("sha256" in recorded.get(n, {}) and os.path.lexists(self.folder / n) for n in names)

    def matches(self, name: str) -> bool:
        """Whether the entry *name* is still what was recorded (its content hash, or an embedding store for an entry
        recorded before a store was written to it)."""
        record = self.recorded().get(name)
        path = self.folder / name
        if record is None or not os.path.lexists(path):
            return False
        if "sha256" in record:
            return content_hash(path) == record["sha256"]
        if record.get("pending") == "store":
            from napari_dynaclr.core.zattrs import is_embedding_store

            return is_embedding_store(path) or (path.is_dir() and not any(path.iterdir()))
        return False

    # ------------------------------------------------------------------ replacing

    def clear(self, overwrite: bool, not_empty_hint: str = "pass --overwrite or choose --out") -> None:
        """Make the folder empty of entries for a new build: refuse without *overwrite*; with it remove every entry,
        after checking that each is what the manifest records (else nothing is removed)."""
        entries = self.entries()
        if not entries:
            return
        if not overwrite:
            raise OutputError(f"{self.what} {self.folder} is not empty; {not_empty_hint}")
        recorded = self.recorded()
        foreign = [n for n in entries if n not in recorded]
        if foreign:
            raise OutputError(f"{self.what} {self.folder} holds files {self.maker} did not make ({shorten(foreign)}); "
                              f"refusing to empty it — {self.hint}")
        for name in entries:
            if not self.matches(name):
                raise OutputError(f"{self.what} {self.folder}: {name} is not what {self.maker} wrote there (its "
                                  f"content differs from {self.maker}'s record); refusing to replace it — {self.hint}")
        for name in entries:
            self._remove(name)

    def _remove(self, name: str) -> None:
        trash = self.folder / f"{_OURS}trash-{uuid.uuid4().hex[:12]}"
        os.rename(self.folder / name, trash)
        self._update(name, None)
        error = remove(trash)
        if error is not None:
            warnings.warn(f"the old {self.folder / name} could not be deleted ({error.strerror or error}); it is left "
                          f"at {trash} — delete it by hand", stacklevel=3)

    # ------------------------------------------------------------------ writing

    def write_entries(self, names: Iterable[str], write: Callable[[Path], object]):
        """Write new entries (see :func:`~napari_dynaclr.core.output.files.write_entries`), each recorded in the
        manifest before it appears under its name."""
        return write_entries(self.folder, names, write,
                             before_publish=lambda name, staged: self._update(name, {"sha256": content_hash(staged)}))

    def add_text(self, name: str, text: str) -> Path:
        data = text.encode("utf-8")

        def write(staging: Path) -> None:
            with open(staging / name, "xb") as fh:
                fh.write(data)

        self.write_entries([name], write)
        return self.folder / name

    def expect_store(self, name: str) -> Path:
        """Record that an embedding store is about to be written at *name* by another writer (a prediction):
        until :meth:`record` hashes it, an embedding store there counts as this folder's."""
        self._update(name, {"pending": "store"})
        return self.folder / name

    def record(self, name: str) -> None:
        """Record the entry *name* as it is now (written by this run through the safe write path)."""
        self._update(name, {"sha256": content_hash(self.folder / name)})

    def _update(self, name: str, record: dict | None) -> None:
        entries = self.recorded()
        if record is None:
            entries.pop(name, None)
        else:
            entries[name] = record
        write_manifest(self.folder, entries, self.maker)
