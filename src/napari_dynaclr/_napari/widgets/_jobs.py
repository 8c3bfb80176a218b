"""Bookkeeping of a dock's napari workers: end them when the dock is deleted or napari quits.

A dock runs its jobs in napari thread workers (:mod:`napari_dynaclr._napari.workers`). When napari
closes, the dock is deleted while they may still run; :class:`DockJobs` then sets their cancel events
(which kills the work process serving them) and asks the workers to quit, so that napari's own
wait for running workers at quit returns at once. It uses only public Qt signals
(``QObject.destroyed``, ``QCoreApplication.aboutToQuit``) and napari's public worker API.
"""

from __future__ import annotations

import threading

from qtpy.QtCore import QCoreApplication


class DockJobs:
    """The running jobs of one dock (a worker and, for jobs that use the work process, a cancel event)."""

    def __init__(self, owner):
        self._running: list[tuple[object, threading.Event | None]] = []
        running = self._running  # the slots below must not hold the dock itself

        def stop_all(*_):
            _stop(running)

        owner.destroyed.connect(stop_all)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(stop_all)
            owner.destroyed.connect(lambda *_: _disconnect(app.aboutToQuit, stop_all))

    def track(self, worker, cancel: threading.Event | None = None):
        """Remember *worker* (not yet started) until it finishes; return it."""
        entry = (worker, cancel)
        self._running.append(entry)
        worker.finished.connect(lambda: self._running.remove(entry) if entry in self._running else None)
        return worker

    def stop_all(self) -> None:
        _stop(self._running)

    def __len__(self) -> int:
        return len(self._running)


def _stop(running) -> None:
    from napari_dynaclr._napari.workers import cancel_job

    for worker, cancel in list(running):
        if cancel is not None:
            cancel_job(cancel)
        try:
            worker.quit()
        except RuntimeError:  # its Qt side is gone already
            pass


def _disconnect(signal, slot) -> None:
    try:
        signal.disconnect(slot)
    except (TypeError, RuntimeError):
        pass
