"""The GUI side of the work process (:mod:`napari_dynaclr.child`). No torch, no Qt.

:class:`ChildProcess` starts ``python -m napari_dynaclr.child`` on first use, sends it one request
at a time and yields its answer as a stream. A request can be cancelled (the child is killed; the next
request starts a new one); a child that dies (a segfault, CUDA out of memory, the OOM killer) becomes one
:class:`~napari_dynaclr.errors.WorkerCrashed` error. :meth:`ChildProcess.stream` yields ``None`` every
*heartbeat* seconds while it waits, so a napari generator worker driving it can be aborted at any time.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Listener

from napari_dynaclr import errors
from napari_dynaclr.errors import Cancelled, WorkerCrashed

#: how long the child may take to start and connect (a cold torch import on a network home: tens of s)
CONNECT_TIMEOUT_S = 120.0


class Event:
    """A progress event of the request (the child's ``("event", obj)``)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class Warned:
    """A warning the child raised while serving the request: a text, or a
    :class:`~napari_dynaclr.errors.DynaclrWarning` (:meth:`text` words its settings)."""

    __slots__ = ("message",)

    def __init__(self, message):
        self.message = message

    def text(self, wording: errors.Wording = errors.KEYS) -> str:
        """The warning in *wording*'s words."""
        if isinstance(self.message, errors.DynaclrWarning):
            return self.message.describe(wording)
        return str(self.message)


class ChildProcess:
    """One work process, serving one request at a time (thread-safe: requests queue).

    The request in flight is identified by its cancel event; :meth:`cancel` ends it from any thread, even
    when the generator serving it is never resumed again (an aborted napari worker)."""

    def __init__(self, heartbeat: float = 0.1):
        self.heartbeat = heartbeat
        self._turn = threading.Condition()  # one request at a time: _owner is the one in flight
        self._owner: threading.Event | None = None
        self._state = threading.Lock()  # guards _proc/_conn
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._closed = False

    # ------------------------------------------------------------------ life cycle

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _launch(self, cancel: threading.Event):
        """Start a child and wait for it to connect; returns ``(proc, conn)`` (not yet installed)."""
        key = secrets.token_bytes(32)
        with Listener(family="AF_UNIX" if os.name == "posix" else None, authkey=key) as listener:
            proc = subprocess.Popen(
                [sys.executable, "-m", "napari_dynaclr.child"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # a Ctrl-C in napari's terminal is napari's to handle
            )
            try:  # standard input then stays open: the child ends itself when this process dies (its end closes)
                proc.stdin.write(f"{listener.address} {key.hex()} {os.getpid()}\n".encode())
                proc.stdin.flush()
            except OSError:
                pass  # it died already: reported below
            return proc, self._accept(listener, proc, cancel)

    def _accept(self, listener, proc, cancel: threading.Event):
        """Wait for the child to connect; notice a child that died on the way, or a cancel."""
        result: dict = {}

        def accept():
            try:
                result["conn"] = listener.accept()
            except BaseException as exc:  # noqa: BLE001 - reported below
                result["error"] = exc

        t = threading.Thread(target=accept, name="dynaclr-child-accept", daemon=True)
        t.start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while t.is_alive():
            t.join(0.05)
            stop = cancel.is_set() or self._closed
            if t.is_alive() and (stop or proc.poll() is not None or time.monotonic() > deadline):
                _kill(proc)
                listener.close()  # ends the accept
                t.join(1.0)
                if stop:
                    raise Cancelled("cancelled")
                raise WorkerCrashed(f"the work process did not start ({_exit_text(proc.returncode)})")
        if "conn" not in result:
            _kill(proc)
            raise WorkerCrashed(f"the work process could not connect: {result.get('error')}")
        return result["conn"]

    def _connection(self, cancel: threading.Event):
        """The running child's ``(proc, conn)``, started when needed, for the request owning *cancel*."""
        with self._state:
            proc, conn = self._proc, self._conn
        if proc is not None and conn is not None and proc.poll() is None:
            return proc, conn
        self.kill()
        proc, conn = self._launch(cancel)
        with self._turn, self._state:  # install it only while this request still owns the process
            if self._owner is cancel and not self._closed and not cancel.is_set():
                self._proc, self._conn = proc, conn
                return proc, conn
        conn.close()
        _kill(proc)
        raise Cancelled("cancelled")

    def kill(self, only: subprocess.Popen | None = None) -> None:
        """Kill the child now (a cancelled request; the next request starts a new one). *only*: kill it only while
        it is still that process — a request that ended never kills the process a later request started."""
        with self._state:
            proc, conn = self._proc, self._conn
            if only is not None and proc is not only:
                proc = conn = None
            else:
                self._proc = self._conn = None
        if proc is not None:
            _kill(proc)
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _end(self, proc: subprocess.Popen) -> None:
        """Kill the child and return only once *proc* is dead: a cancel from another thread may be killing
        it right now, and the caller's clean-up (the output's lock file) needs it gone. A later request's process
        is left alone: a cancelled request's thread may get here after the next request started its own."""
        self.kill(only=proc)
        _kill(proc)

    def close(self) -> None:
        """Kill the child and refuse further requests (napari is closing)."""
        self._closed = True
        self.kill()
        with self._turn:
            self._owner = None
            self._turn.notify_all()

    def cancel(self, cancel: threading.Event) -> None:
        """Set *cancel*; when its request is in flight, kill the child, then let the next request start (in that
        order: a request let in first would send itself to the process being killed)."""
        cancel.set()
        with self._turn:
            if self._owner is not cancel:
                return
            self.kill()
            self._owner = None
            self._turn.notify_all()

    # ------------------------------------------------------------------ requests

    def stream(self, kind: str, *args, cancel: threading.Event | None = None, **kwargs) -> Iterator:
        """Send a request and yield :class:`Event` / :class:`Warned` items (and ``None`` heartbeats);
        return the result. Setting *cancel* kills the child and raises :class:`Cancelled`."""
        cancel = cancel or threading.Event()
        while True:  # wait while another request is being served
            with self._turn:
                if cancel.is_set() or self._closed:
                    raise Cancelled("cancelled")
                if self._owner is None:
                    self._owner = cancel
                    break
                self._turn.wait(self.heartbeat)
            yield None
        try:
            proc, conn = self._connection(cancel)
            try:
                conn.send((kind, args, kwargs))
            except (OSError, ValueError):
                self.kill(only=proc)
                raise WorkerCrashed(f"the work process stopped unexpectedly ({_exit_text(proc.poll())})") from None
            while True:
                try:
                    ready = conn.poll(self.heartbeat)
                except (OSError, ValueError):  # closed under us (kill/close from another thread)
                    ready = True
                if cancel.is_set() or self._closed:
                    self._end(proc)
                    raise Cancelled("cancelled")
                if not ready:
                    yield None
                    continue
                try:
                    msg = conn.recv()
                except (EOFError, OSError, ValueError):
                    if cancel.is_set() or self._closed:
                        self._end(proc)
                        raise Cancelled("cancelled") from None
                    code = _wait(proc)
                    self.kill(only=proc)
                    raise WorkerCrashed(
                        f"the work process stopped unexpectedly ({_exit_text(code)}); nothing was written "
                        "at the output path"
                    ) from None
                tag = msg[0]
                if tag == "event":
                    yield Event(msg[1])
                elif tag == "warning":
                    yield Warned(msg[1])
                elif tag == "done":
                    return msg[1]
                elif tag == "error":
                    raise _error(*msg[1:])
        finally:
            with self._turn:
                if self._owner is cancel:
                    self._owner = None
                    self._turn.notify_all()

    def call(self, kind: str, *args, cancel: threading.Event | None = None, **kwargs):
        """:meth:`stream` to the end, ignoring progress; return the result."""
        gen = self.stream(kind, *args, cancel=cancel, **kwargs)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value


def _error(wire: dict, user_error: bool) -> Exception:
    """The child's error as an exception here: a :class:`DynaclrError` with its type, message, key and remedy
    (:func:`~napari_dynaclr.errors.from_wire`); anything else (a bug, a library failure) as
    :class:`WorkerCrashed`."""
    if user_error:
        return errors.from_wire(wire)
    name, message = wire.get("code", "error"), wire.get("message", "")
    return WorkerCrashed(f"{name}: {message}" if message else name)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL (a child started with SIGTERM ignored — nohup-like launchers — would survive SIGTERM), then close
    its standard input (kept open so that the child notices this process's death)."""
    if proc.poll() is None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: anything it started goes too
            else:
                proc.kill()
        except OSError:
            try:
                proc.kill()
            except OSError:
                pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _wait(proc: subprocess.Popen) -> int | None:
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
