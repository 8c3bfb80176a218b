"""Writing an output store without ever destroying what we did not create.

Users point this tool at their only copy of a plate. Every store we write goes through :class:`OutputGuard`:

- **Inputs are sacred**: an output path that is, contains or lies inside an input (plate, tracks,
  checkpoint, predict.yml) is refused, whatever ``overwrite`` says; so is a symbolic link.
- **Only our own kind is replaced**: ``overwrite`` replaces an AnnData embedding store (ours or VisCy's) or
  an empty folder, nothing else; anything else is refused with a message saying what it is.
- **One writer per output**: an exclusive ``flock`` on a lock file beside the output is held from the checks
  to the end of the run; a second run fails at once naming the first (pid, host, start time). The kernel
  releases the lock when a process dies, so a crash never blocks later runs.
- **Atomic replacement**: the new store is written to a hidden folder beside the output and swapped in with
  one ``renameat2(RENAME_EXCHANGE)`` (Linux) — at every instant the output path holds the complete old store
  or the complete new one — with SIGINT/SIGTERM held back from the swap until the old store is removed, so
  what the exit code and message say is what is on disk. A store that appeared at the output path while we
  were predicting is never replaced unless ``overwrite`` was given.
- **Leftovers are cleaned**: the hidden folders of earlier runs on the same output that were killed
  (``kill -9``, a power cut) are removed by the next run on that path (it holds the lock, so none of them
  belongs to a live run); an old store left hidden by an interrupted non-atomic swap is put back.

Hidden names are fixed-length (``.dynaclr-<hash>.<kind>-<tag>``), so any legal output name works.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from napari_dynaclr.errors import InterruptedAfterCommit, OutputError, Remedy


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


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _exists(problem: str, overwrite_hint: str | None) -> OutputError:
    """An output that exists: allowing ``overwrite`` replaces it."""
    if overwrite_hint is not None:
        return OutputError(f"{problem}; {overwrite_hint} to replace it")
    return OutputError(problem, remedy=Remedy("overwrite", purpose="to replace it", joint="; "))


def check_output_path(path: str | Path, overwrite: bool = False, inputs: Mapping[str, object] | None = None,
                      overwrite_hint: str | None = None, kind: str = "store") -> Path:
    """Refuse an output that would destroy data, before any work starts; return it as a Path.

    *inputs*: ``{"plate": path, "tracks": path, ...}`` (None values are skipped). *overwrite_hint*: how the
    user asks for a replacement, in words (default: the ``overwrite`` setting, as a :class:`Remedy` each front end
    words). *kind*: what the output is, hence what
    ``overwrite`` may replace (``"store"``: an embedding store or an empty folder; ``"parquet"``: a parquet
    file, e.g. a cell index)."""
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
    real = _real(path)
    for name, given in (inputs or {}).items():
        if given is None:
            continue
        inp = _real(Path(given))
        if real == inp:
            raise OutputError(f"output {path} is the input {name} {given}; choose another output path")
        if inp in real.parents:
            raise OutputError(f"output {path} lies inside the input {name} {given}; choose a path outside it")
        if real in inp.parents:
            raise OutputError(f"output {path} contains the input {name} {given}; choose another output path")
    parent = real.parent
    if not parent.exists():
        raise OutputError(f"output folder {path.parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"output folder {path.parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path.parent} is not writable")
    if path.exists():
        if not overwrite:
            raise _exists(f"output {path} already exists", overwrite_hint)
        check_replaceable(path, kind)
    return path


def check_replaceable(path: Path, kind: str = "store") -> None:
    """Refuse to replace anything but an embedding store (or an empty folder); for ``kind="parquet"``, anything
    but a parquet file."""
    from napari_dynaclr.core.zattrs import is_embedding_store

    if kind == "parquet":
        if path.is_file() and _is_parquet(path):
            return
        what = "a folder" if path.is_dir() else "not a parquet file"
        raise OutputError(f"output {path} exists and is {what}; refusing to replace it (choose another output path)")
    if not path.is_dir():
        raise OutputError(f"output {path} exists and is a file, not an embedding store; refusing to replace it")
    if is_embedding_store(path) or not any(path.iterdir()):
        return
    raise OutputError(
        f"output {path} exists and is {describe_folder(path)}, not an embedding store; refusing to replace it "
        "(choose another output path)"
    )


def _is_parquet(path: Path) -> bool:
    """A file with parquet's magic bytes at both ends."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(-4, os.SEEK_END)
            return head == b"PAR1" and fh.read(4) == b"PAR1"
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Remove a hidden store folder or file of ours (quietly: what cannot be removed is left)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


class OutputGuard:
    """The checks, the lock, the leftovers and the atomic commit for one output store (see the module)."""

    def __init__(self, path: str | Path, overwrite: bool = False, inputs: Mapping[str, object] | None = None,
                 overwrite_hint: str | None = None, kind: str = "store"):
        self.path = Path(path)
        self.kind = kind
        self.overwrite = overwrite
        self.inputs = dict(inputs or {})
        self.overwrite_hint = overwrite_hint
        key = hashlib.sha1(os.fsencode(_real(self.path))).hexdigest()[:16]
        self._prefix = f".dynaclr-{key}"
        self._lock_path = self.path.parent / f"{self._prefix}.lock"
        self._lock_fd: int | None = None
        self._existed = False

    # ------------------------------------------------------------------ checks and lock

    def __enter__(self) -> OutputGuard:
        check_output_path(self.path, self.overwrite, self.inputs, self.overwrite_hint, self.kind)
        self._acquire()
        try:
            self._clean_leftovers()
            check_output_path(self.path, self.overwrite, self.inputs, self.overwrite_hint, self.kind)  # (restored)
            self._existed = self.path.exists()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _acquire(self) -> None:
        import fcntl

        while True:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot create a lock file beside {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(
                    f"another napari-dynaclr run ({holder}) is writing {self.path}; wait for it to finish or "
                    "choose another output path"
                ) from None
            # the file we locked must still be the one at the path (a finishing run unlinks it)
            try:
                same = os.stat(self._lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "output": str(self.path)}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._lock_fd = fd

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            os.unlink(self._lock_path)  # while still holding it: a waiting run re-checks the inode
        except OSError:
            pass
        os.close(fd)

    def _clean_leftovers(self) -> None:
        """Remove the hidden folders of dead runs on this output; put back an old store a non-atomic swap
        left hidden (the output path is then empty)."""
        parent = self.path.parent
        olds = sorted(parent.glob(f"{self._prefix}.old-*"))
        if olds and not self.path.exists() and not self.path.is_symlink():
            os.rename(olds[-1], self.path)
            olds = olds[:-1]
        for p in [*parent.glob(f"{self._prefix}.partial-*"), *olds]:
            _remove(p)

    # ------------------------------------------------------------------ writing

    def temporary(self) -> Path:
        """A fresh hidden path beside the output to write the new store to."""
        return self.path.parent / f"{self._prefix}.partial-{uuid.uuid4().hex[:12]}"

    def commit(self, tmp: Path) -> Path:
        """Move the complete store at *tmp* to the output path, atomically; remove the old store."""
        with _signals_held() as held:
            try:
                old = self._swap_in(tmp)
            except BaseException:
                _remove(tmp)
                raise
            if old is not None:
                _remove(old)
        if held.pending:
            raise InterruptedAfterCommit(
                f"interrupted after the new store was complete: {self.path} holds it and is kept"
            )
        return self.path

    def _swap_in(self, tmp: Path) -> Path | None:
        path = self.path
        if path.exists() or path.is_symlink():
            if not self.overwrite:
                raise _exists(f"output {path} appeared while this run was predicting; it was not replaced",
                              self.overwrite_hint)
            check_replaceable(path, self.kind)
            old = path.parent / f"{self._prefix}.old-{uuid.uuid4().hex[:12]}"
            if _rename_exchange(tmp, path):  # tmp now holds the old store
                os.rename(tmp, old)
                return old
            os.rename(path, old)  # not atomic (no renameat2): the next run restores a hidden old store
            os.rename(tmp, path)
            return old
        if not _rename_noreplace(tmp, path):
            os.rename(tmp, path)
        return None


def clean_after_kill(path: str | Path) -> None:
    """After the process writing *path* was killed (a cancelled or crashed napari run): remove its lock file
    and hidden partial store, unless another run holds the output now."""
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
                     kind: str = "store") -> Path:
    """``write(tmp)`` a complete store (or file, *kind* ``"parquet"``) beside *path*, then commit it (with its
    own guard unless *guard*)."""
    if guard is None:
        with OutputGuard(path, overwrite, inputs, kind=kind) as own:
            return write_atomically(path, write, overwrite, inputs, own, kind)
    tmp = guard.temporary()
    try:
        write(tmp)
    except BaseException as exc:
        _remove(tmp)
        error = _storage_error(exc, path)
        if error is None:
            raise
        raise error from exc
    return guard.commit(tmp)


def _storage_error(exc: BaseException, path: Path) -> OutputError | None:
    """The one-line error for a failed write (a full disk, a read-only folder…), or None for others."""
    if isinstance(exc, OSError):
        return OutputError(f"cannot write {path}: {exc.strerror or exc}")
    text = str(exc)
    if isinstance(exc, RuntimeError) and any(s in text for s in ("No space left", "Disk quota", "Read-only file")):
        return OutputError(f"cannot write {path}: {text.splitlines()[0][:200]}")
    return None


# ------------------------------------------------------------------ renameat2 (Linux), signals

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


def _rename_exchange(src: Path, dst: Path) -> bool:
    return _rename2(src, dst, _RENAME_EXCHANGE)


def _rename_noreplace(src: Path, dst: Path) -> bool:
    try:
        return _rename2(src, dst, _RENAME_NOREPLACE)
    except FileExistsError:
        raise OutputError(f"output {dst} appeared while this run was predicting; it was not replaced") from None


class _signals_held:
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


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
    except (OSError, ValueError):
        return "pid unknown"
