"""One writer per output: an exclusive ``flock`` on a lock file beside it, naming its holder.

The kernel releases a ``flock`` when its process dies, so the lock of a killed run never blocks the next one —
whoever owns the file it left: a lock file this process cannot open for writing (another user's, read-only) is
locked through a read-only descriptor (``flock`` needs no write access) and, once locked, replaced by a new one;
one it cannot open at all is taken over when ``/proc/locks`` shows no process holding it.

Why not the ``filelock`` package: its Unix lock needs write access to an existing lock file and refuses one owned
by another account (``PermissionError``) instead of taking over a dead holder's, and it keeps the file's content
to itself, where this lock writes who holds it (pid, host, start) for the message a second run prints.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from napari_dynaclr.errors import OutputError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class OutputLock:
    """The lock on *lock_path*, guarding the output *what* (for messages)."""

    def __init__(self, lock_path: Path, what: Path):
        self.path = Path(lock_path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise :class:`OutputError` naming the run that holds it."""
        import fcntl

        for _attempt in range(100):
            fd, writable = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(f"another napari-dynaclr run ({holder}) is writing {self.what}; wait for it to "
                                  "finish or choose another output path") from None
            # the file we locked must still be the one at the path (a finishing run unlinks it)
            if not _same_file(fd, self.path):
                os.close(fd)
                continue
            if not writable and _unlink(self.path):  # a dead holder's file we cannot write: make a new one
                os.close(fd)
                continue
            if writable:
                info = {"pid": os.getpid(), "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "output": str(self.what)}
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, json.dumps(info).encode())
                except OSError:  # (a full disk: the lock holds all the same, its holder is just not named)
                    pass
            self._fd = fd
            return
        raise OutputError(f"cannot lock {self.what}: its lock file {self.path} keeps changing")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if _same_file(fd, self.path):
            _unlink(self.path)  # while still holding it: a waiting run re-checks the inode
        os.close(fd)

    def _open(self) -> tuple[int, bool]:
        """A descriptor of the lock file (created if missing) and whether it is writable."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644), True
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputError(f"lock file {self.path} of {self.what} is a symbolic link; remove it") from None
            if exc.errno not in (errno.EACCES, errno.EPERM) or not os.path.lexists(self.path):
                raise OutputError(f"cannot create a lock file beside {self.what}: {exc.strerror or exc}") from None
        try:
            return os.open(self.path, os.O_RDONLY | _NOFOLLOW), False
        except OSError:
            pass
        # unreadable too: ask the kernel whether a live process holds it
        held = _held_by_a_process(self.path)
        if held is False and _unlink(self.path):
            return self._open()
        owner = _owner(self.path)
        if held:
            raise OutputError(f"another napari-dynaclr run (lock file {self.path}, owned by {owner}) is writing "
                              f"{self.what}; wait for it to finish or choose another output path")
        raise OutputError(f"the lock file {self.path} (owned by {owner}) cannot be opened or removed; if no "
                          f"napari-dynaclr run is writing {self.what}, delete it")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _held_by_a_process(path: Path) -> bool | None:
    """Whether ``/proc/locks`` lists a lock on *path*'s inode (None: cannot tell)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(key in line.split() for line in text.splitlines())


def _owner(path: Path) -> str:
    try:
        uid = os.stat(path, follow_symlinks=False).st_uid
    except OSError:
        return "an unknown user"
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
    except (OSError, ValueError):
        return "pid unknown"
