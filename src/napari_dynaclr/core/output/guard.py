"""The guard of one output: the checks, the lock, the leftovers of earlier runs and the atomic commit.

:class:`OutputGuard` is held from the checks to the end of a run (a prediction takes minutes): on entry it checks
the target (:func:`~napari_dynaclr.core.output.checks.check_target`), takes the lock, removes what killed runs on
the same output left (even when this run is then refused), then checks what is at the path; :meth:`commit` moves
the complete new output in with one ``renameat2(RENAME_EXCHANGE)`` and removes the old one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from napari_dynaclr.core.output.checks import (
    check_existing,
    check_replaceable,
    check_target,
    exists_error,
    is_own_output,
    real,
)
from napari_dynaclr.core.output.lock import OutputLock
from napari_dynaclr.core.output.swap import fsync_folder, fsync_path, remove, rename_exchange, rename_new, signals_held
from napari_dynaclr.errors import InterruptedAfterCommit, OutputError

_ISSUED: set[Path] = set()
_ISSUED_LOCK = threading.Lock()


def hidden_prefix(path: Path) -> str:
    """The fixed-length prefix of every hidden entry (lock, partial and old outputs) of the output *path*."""
    return f".dynaclr-{hashlib.sha1(os.fsencode(real(path))).hexdigest()[:16]}"


def issue(tmp: Path) -> Path:
    """Record *tmp* as a temporary path of the safe write path (see :func:`is_issued`)."""
    with _ISSUED_LOCK:
        _ISSUED.add(Path(os.path.abspath(tmp)))
    return tmp


def retire(tmp: Path) -> None:
    with _ISSUED_LOCK:
        _ISSUED.discard(Path(os.path.abspath(tmp)))


def is_issued(path: str | Path) -> bool:
    """Whether *path* is (or lies inside) a temporary path this process's safe write path handed out."""
    p = Path(os.path.abspath(path))
    with _ISSUED_LOCK:
        return any(p == t or t in p.parents for t in _ISSUED)


class OutputGuard:
    """The checks, the lock, the leftovers and the atomic commit for one output (see the module).

    *kind*: what the output is (``store``, ``parquet``, ``json``, ``csv``, ``text``), hence what ``overwrite`` may
    replace; *inputs*: everything the run reads, resolved as the run resolves it."""

    def __init__(self, path: str | Path, overwrite: bool = False, inputs: Mapping[str, object] | None = None,
                 overwrite_hint: str | None = None, kind: str = "store"):
        self.path = Path(path)
        self.kind = kind
        self.overwrite = overwrite
        self.inputs = dict(inputs or {})
        self.overwrite_hint = overwrite_hint
        self._prefix = hidden_prefix(self.path)
        self._lock = OutputLock(self.path.parent / f"{self._prefix}.lock", self.path)

    def __enter__(self) -> OutputGuard:
        check_target(self.path, self.inputs)  # (nothing is written next to an input)
        self._acquire()
        try:
            self._clean_leftovers()  # before any refusal below: a refused run cleans too
            check_existing(self.path, self.overwrite, self.overwrite_hint, self.kind)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _acquire(self) -> None:
        self._lock.acquire()

    def _release(self) -> None:
        self._lock.release()

    def _clean_leftovers(self) -> None:
        """Remove the hidden entries of dead runs on this output; put back an old output a non-atomic swap left
        hidden (the output path is then empty); say which could not be removed."""
        parent = self.path.parent
        olds = sorted(parent.glob(f"{self._prefix}.old-*"))
        if olds and not os.path.lexists(self.path):
            os.rename(olds[-1], self.path)
            olds = olds[:-1]
        for p in [*parent.glob(f"{self._prefix}.partial-*"), *olds]:
            _remove_or_warn(p, f"a leftover of an earlier run on {self.path}")

    # ------------------------------------------------------------------ writing

    def temporary(self, tag: str = "") -> Path:
        """A fresh hidden path beside the output to write the new output to."""
        return issue(self.path.parent / f"{self._prefix}.partial-{tag}{uuid.uuid4().hex[:12]}")

    def commit(self, tmp: Path) -> Path:
        """Move the complete output at *tmp* to the output path, atomically; remove the old one."""
        try:
            fsync_path(tmp)
        except OSError as exc:
            remove(tmp)
            retire(tmp)
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        with signals_held() as held:
            try:
                old = self._swap_in(tmp)
            except BaseException:
                remove(tmp)
                raise
            finally:
                retire(tmp)
            fsync_folder(self.path.parent)
            if old is not None:
                _remove_or_warn(old, f"the old {self.path}, replaced by the new one,")
        if held.pending:
            raise InterruptedAfterCommit(
                f"interrupted after the new {'store' if self.kind == 'store' else 'file'} was complete: "
                f"{self.path} holds it and is kept"
            )
        return self.path

    def _swap_in(self, tmp: Path) -> Path | None:
        path = self.path
        if os.path.lexists(path):
            if not self.overwrite and not is_own_output(path, self.kind):
                raise exists_error(f"output {path} appeared while this run was predicting; it was not replaced",
                                   self.overwrite_hint)
            if os.path.ismount(path):
                raise OutputError(f"output {path} is a mount point; it cannot be replaced")
            if self.overwrite:
                check_replaceable(path, self.kind)
            old = path.parent / f"{self._prefix}.old-{uuid.uuid4().hex[:12]}"
            if rename_exchange(tmp, path):  # tmp now holds the old output
                os.rename(tmp, old)
                return old
            os.rename(path, old)  # not atomic (no renameat2): the next run restores a hidden old output
            os.rename(tmp, path)
            return old
        rename_new(tmp, path)
        return None


def _remove_or_warn(path: Path, what: str) -> None:
    error = remove(path)
    if error is not None:
        warnings.warn(f"{what} could not be deleted ({error.strerror or error}); it is left at {path} — delete it "
                      "by hand", stacklevel=3)


def clean_after_kill(path: str | Path) -> None:
    """After the process writing *path* was killed (a cancelled or crashed napari run): remove its lock file
    and hidden partial output, unless another run holds the output now."""
    guard = OutputGuard(path)
    try:
        guard._acquire()
    except OutputError:
        return  # a live run owns it: its leftovers are its own
    try:
        guard._clean_leftovers()
    finally:
        guard._release()


def write_atomically(path: Path, write: Callable[[Path], None], overwrite: bool = False,
                     inputs: Mapping[str, object] | None = None, guard: OutputGuard | None = None,
                     kind: str = "store", overwrite_hint: str | None = None) -> Path:
    """``write(tmp)`` a complete output of *kind* beside *path*, then commit it (with its own guard unless
    *guard*, the run's held one)."""
    if guard is None:
        with OutputGuard(path, overwrite, inputs, overwrite_hint, kind) as own:
            return write_atomically(path, write, overwrite, inputs, own, kind)
    tmp = guard.temporary()
    try:
        write(tmp)
    except BaseException as exc:
        remove(tmp)
        retire(tmp)
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from exc
    return guard.commit(tmp)


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM,
                   errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE}


def storage_error(exc: BaseException, path: Path) -> OutputError | None:
    """The one-line error for a failed write (a full disk, a file-size limit, a read-only folder…), found in
    *exc* or what caused it (zarr and anndata wrap the system's error), or None for other errors."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OutputError):
            return exc
        if isinstance(exc, OSError):
            return OutputError(f"cannot write {path}: {exc.strerror or exc}")
        text = str(exc)
        match = re.search(r"os error (\d+)", text)  # (zarr's and obstore's wording)
        if match and int(match.group(1)) in _STORAGE_ERRNOS:
            return OutputError(f"cannot write {path}: {os.strerror(int(match.group(1)))}")
        if any(s in text for s in ("No space left", "Disk quota", "Read-only file", "File too large")):
            return OutputError(f"cannot write {path}: {text.splitlines()[0][:200]}")
        exc = exc.__cause__ or exc.__context__
    return None
