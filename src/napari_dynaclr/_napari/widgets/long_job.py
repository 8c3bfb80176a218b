"""One long computation of a view at a time, in the work process: a progress bar fed by its ``(done, total,
what)`` events, a Cancel button that kills the process serving it, and its failure as one napari notification
(the engine's message, in the dock's words) after which the view is ready again."""

from __future__ import annotations

import threading
from collections.abc import Callable

from magicgui.widgets import PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QVBoxLayout, QWidget

from napari_dynaclr._napari import workers
from napari_dynaclr._napari.widgets._forms import Message
from napari_dynaclr._napari.widgets._jobs import DockJobs, thread_job
from napari_dynaclr._napari.widgets._wording import error_message
from napari_dynaclr.errors import Cancelled


class LongJob(QWidget):
    """Run / Cancel buttons, a progress bar and a status line for one kind of job (see the module)."""

    def __init__(self, owner: QWidget, run_text: str, start: Callable[[], object]):
        super().__init__(owner)
        self.jobs = DockJobs(owner)
        self.worker = None
        self.cancel_event: threading.Event | None = None
        self.last_error: str | None = None
        self.run_btn = PushButton(text=run_text)
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.status = Message("")
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.run_btn.native)
        buttons.addWidget(self.cancel_btn.native)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        lay.addLayout(buttons)
        lay.addWidget(self.bar)
        lay.addWidget(self.status.native)
        self.run_btn.clicked.connect(lambda: start())
        self.cancel_btn.clicked.connect(lambda: self.cancel())

    @property
    def running(self) -> bool:
        return self.worker is not None

    def fail(self, exc_or_message) -> None:
        """One notification line, and the same line in the status (the view stays ready)."""
        msg = exc_or_message if isinstance(exc_or_message, str) else error_message(exc_or_message)
        self.last_error = msg
        show_error(msg)
        self.status.value = f"✗ {msg}"

    def start(self, job, args: tuple, what: str, on_done: Callable[[object], None]):
        """Run the generator *job* ``(*args, cancel=event)`` in a worker; *on_done* gets its result. Returns the
        worker (None when one is running already)."""
        if self.worker is not None:
            show_error(f"{what} is running: cancel it first")
            return None
        self.last_error = None
        cancel = self.cancel_event = threading.Event()
        worker = thread_job(job)(*args, cancel=cancel)
        self.worker = worker
        self.run_btn.enabled = False
        self.cancel_btn.enabled = True
        self.bar.setRange(0, 0)  # busy until the first event says how many steps
        self.bar.setVisible(True)
        self.status.value = f"{what}…"

        def progress(item) -> None:
            if isinstance(item, workers.Event) and isinstance(item.value, tuple) and worker is self.worker:
                done, total, label = item.value
                self.bar.setRange(0, int(total))
                self.bar.setValue(int(done))
                self.status.value = f"{what}: {done}/{total} ({label})"

        def failed(exc) -> None:
            if isinstance(exc, Cancelled) or cancel.is_set():  # (a cancel kills the work process it waits on)
                show_info(f"{what} cancelled")
                self.status.value = f"{what} cancelled"
            else:
                self.fail(exc)

        def finished() -> None:
            if self.worker is worker:
                self.worker = self.cancel_event = None
                self.run_btn.enabled = True
                self.cancel_btn.enabled = False
                self.bar.setVisible(False)

        return self.jobs.start(worker, cancel, yielded=progress, returned=on_done, errored=failed, finished=finished)

    def cancel(self) -> None:
        """Stop the running job (its work process is killed; the other lane goes on)."""
        if self.cancel_event is not None:
            workers.cancel_job(self.cancel_event)
            self.status.value = "cancelling…"
