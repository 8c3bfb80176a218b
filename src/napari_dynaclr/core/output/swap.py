"""The system calls under the safe write path: ``renameat2`` (an atomic exchange, a rename that never replaces),
``fsync`` of a file or a folder, removal of what we made, and SIGINT/SIGTERM held back during a commit."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import stat
import threading
from pathlib import Path

from napari_dynaclr.errors import OutputError

_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_renameat2 = None


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    return _renameat2


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2 with *flags*; False when the system lacks it (the caller falls back)."""
    fn = _libc_renameat2()
    if not fn:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # no renameat2, or not on this file system
        return False
    raise OSError(err, os.strerror(err), str(dst))


def rename_exchange(src: Path, dst: Path) -> bool:
    """Swap *src* and *dst* in one step; False where the system cannot."""
    return _rename2(src, dst, _RENAME_EXCHANGE)


def rename_new(src: Path, dst: Path, what: str = "output") -> None:
    """Move *src* to *dst*, which must not exist (refused with :class:`OutputError` if something appeared there)."""
    try:
        if _rename2(src, dst, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise OutputError(f"{what} {dst} appeared while this run was writing; it was not replaced") from None
    if os.path.lexists(dst):  # (no renameat2: a short window remains between this check and the rename)
        raise OutputError(f"{what} {dst} appeared while this run was writing; it was not replaced")
    os.rename(src, dst)


def fsync_path(path: Path) -> None:
    """Flush a file, or every file and folder under a folder, to disk (what a rename then publishes is complete)."""
    if path.is_dir() and not path.is_symlink():
        for root, _dirs, files in os.walk(path):
            for name in files:
                _fsync_one(Path(root) / name, os.O_RDONLY)
            _fsync_one(Path(root), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    elif path.is_file():
        _fsync_one(path, os.O_RDONLY)


def fsync_folder(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; quietly skipped where folders cannot be opened."""
    try:
        _fsync_one(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        pass


def _fsync_one(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS, errno.EBADF):  # (a file system without fsync for this)
            raise
    finally:
        os.close(fd)


def remove(path: Path) -> OSError | None:
    """Remove a folder or file of ours; return the first error (what could not be removed is left), or None."""
    errors: list[OSError] = []
    if path.is_dir() and not path.is_symlink():
        def note(_fn, _p, exc):
            if not errors and isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                errors.append(exc)

        shutil.rmtree(path, onexc=note)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(exc)
    return errors[0] if errors and os.path.lexists(path) else None


def is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class signals_held:
    """Hold SIGINT/SIGTERM back during a commit: while it runs they are only recorded (``pending``), so the
    swap and the removal of the old store always complete. Python runs signal handlers in the main thread
    only, so this applies there (the CLI, the work process); elsewhere nothing changes."""

    _SIGS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.pending: list[int] = []
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGS:
                self._old[sig] = signal.signal(sig, self._record)
        return self

    def _record(self, signum, frame):
        self.pending.append(signum)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False
