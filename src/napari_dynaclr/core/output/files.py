"""Files through the safe write path: reports (JSON, CSV, text), new entries of a folder, the writers that fill a
temporary path the path hands out (:func:`temporary_writer`), and the scratch folder of a multi-device run."""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from napari_dynaclr.core.output.checks import check_target, real, zarr_ancestor
from napari_dynaclr.core.output.guard import hidden_prefix, is_issued, issue, retire, storage_error, write_atomically
from napari_dynaclr.core.output.manifest import REPORT_MARK, record_file
from napari_dynaclr.core.output.swap import fsync_folder, fsync_path, remove, rename_new
from napari_dynaclr.errors import OutputError


def temporary_writer(fn: Callable) -> Callable:
    """Mark *fn* as a writer: it writes only into its first argument, a temporary path this package handed out
    (checked on every call). The only functions outside :mod:`napari_dynaclr.core.output` allowed to write files
    (``tests/test_safe_writes_architecture.py``)."""

    @functools.wraps(fn)
    def checked(tmp, *args, **kwargs):
        if not is_issued(tmp):
            raise RuntimeError(f"{fn.__qualname__} writes only into a temporary path of napari_dynaclr.core.output, "
                               f"not {tmp}")
        return fn(tmp, *args, **kwargs)

    checked.temporary_writer = True
    return checked


def write_text(path: str | Path, text: str, overwrite: bool = False, inputs: Mapping[str, object] | None = None,
               kind: str = "text", overwrite_hint: str | None = None, record: bool = False) -> Path:
    """Write *text* (UTF-8) as the file *path* through the safe write path: a hidden file beside it, flushed to disk,
    then renamed over the old one — *path* holds the old content or the complete new one, on a full disk or past a
    file-size limit too (one line, the old file intact). *kind* ``"json"``, ``"csv"`` or ``"text"`` says what an
    existing file may be to be replaced (:func:`~napari_dynaclr.core.output.checks.check_existing`). *record*: the
    new file is recorded in its folder's manifest (:func:`~napari_dynaclr.core.output.manifest.record_file`), so
    that a rerun replaces it — unchanged — without *overwrite*."""
    data = text.encode("utf-8")

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as fh:  # (flushed to disk by the commit)
            fh.write(data)

    written = write_atomically(Path(path), write, overwrite, inputs, kind=kind, overwrite_hint=overwrite_hint)
    if record:
        record_file(written)
    return written


def report_json(payload: Mapping, made_by: str) -> str:
    """*payload* as this tool's JSON report: first key ``written_by`` (how a later run knows the file is ours and may
    replace it without ``--overwrite``); NaN refused."""
    from napari_dynaclr import __version__

    doc = {REPORT_MARK: f"napari-dynaclr {__version__} {made_by}".strip()}
    doc.update((k, v) for k, v in payload.items() if k != REPORT_MARK)
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, payload: Mapping, made_by: str, overwrite: bool = False,
               inputs: Mapping[str, object] | None = None, overwrite_hint: str | None = None,
               record: bool = False) -> Path:
    """Write a JSON report (:func:`report_json`) through :func:`write_text`: a report this tool wrote is replaced
    as a rerun's, anything else only with *overwrite* (and then only a text file). *record*: see
    :func:`write_text` (a recorded report is this tool's only while unchanged, its mark notwithstanding)."""
    return write_text(path, report_json(payload, made_by), overwrite, inputs, "json", overwrite_hint, record)


def write_entries(folder: str | Path, names: Iterable[str], write: Callable[[Path], object],
                  before_publish: Callable[[str, Path], None] | None = None):
    """Create the new entries *names* of *folder* (none may exist): ``write(staging)`` fills a hidden staging folder
    beside them with those names, then each is moved in with a rename that never replaces anything (a name that
    exists is refused). *before_publish(name, staged_path)* runs before each move (a manifest records it there).
    Returns what *write* returns. The staging folder of a killed run is removed by :func:`clean_staging`."""
    folder = Path(folder)
    names = list(names)
    for name in names:
        check_target(folder / name)
        if os.path.lexists(folder / name):
            raise OutputError(f"{folder / name} already exists; it was not replaced")
    staging = issue(folder / f".dynaclr-staging-{uuid.uuid4().hex[:12]}")
    try:
        staging.mkdir()
        try:
            result = write(staging)
        except BaseException as exc:
            error = storage_error(exc, folder / names[0] if len(names) == 1 else folder)
            if error is None:
                raise
            raise error from exc
        for name in names:
            fsync_path(staging / name)
        for name in names:
            if before_publish is not None:
                before_publish(name, staging / name)
            rename_new(staging / name, folder / name)
        fsync_folder(folder)
        return result
    finally:
        remove(staging)
        retire(staging)


def clean_staging(folder: Path) -> None:
    """Remove the staging folders killed runs left in *folder* (call it holding the folder's lock)."""
    for p in Path(folder).glob(".dynaclr-staging-*"):
        remove(p)


def make_folder(path: str | Path) -> Path:
    """Create the folder *path* (and missing parents) for a tool's output, never inside a zarr store."""
    path = Path(path)
    store = zarr_ancestor(real(path))
    if store is not None:
        raise OutputError(f"folder {path} lies inside the zarr store {store}; choose a path outside it")
    if path.is_dir():
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path}: {exc.strerror or exc}") from None
    return path


class ScratchFolder:
    """A hidden folder beside an output for the batches of a multi-device run: rank 0 names it (:meth:`beside`),
    every rank writes complete files into it (:meth:`save_npz`), rank 0 removes it; a killed run's scratch folder
    is a leftover the next run on that output removes (its name is one of the output's partial entries)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def beside(cls, output_path: str | Path | None) -> ScratchFolder:
        import tempfile

        if output_path is None:
            return cls(Path(tempfile.gettempdir()) / f".dynaclr-ranks-{uuid.uuid4().hex[:12]}")
        output_path = Path(output_path)
        return cls(output_path.parent / f"{hidden_prefix(output_path)}.partial-ranks-{uuid.uuid4().hex[:12]}")

    def create(self) -> ScratchFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def save_npz(self, name: str, **arrays) -> Path:
        """Write the arrays as ``name`` (complete files only: a hidden file renamed)."""
        import numpy as np

        tmp = self.path / f".{name}.{os.getpid()}.partial.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.path / name)
        return self.path / name

    def remove(self) -> None:
        remove(self.path)
