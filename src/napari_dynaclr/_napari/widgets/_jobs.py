"""Where a dock's napari workers run, and how they end when the dock is deleted or napari quits.

The docks' workers run on the plugin's own :class:`~qtpy.QtCore.QThreadPool`, not on Qt's global pool:
most of them wait for the plugin's work process for a long time, and Qt itself uses the global pool for
short internal tasks (e.g. scaling the frames of napari's activity indicator) whose caller blocks until they
run — on a 2-core machine, two waiting workers in the global pool freeze the GUI. Starting a napari
worker on another pool is the documented ``QThreadPool.start(worker)`` path.

When napari closes, :class:`DockJobs` sets the jobs' cancel events (which kills the work process serving
them), asks the workers to quit, waits briefly for the pool, and ends the work process. Only public Qt
signals (``QObject.destroyed``, ``QCoreApplication.aboutToQuit``) and napari's public worker API are used.

The pool belongs to Qt, not to Python: PyQt destroys the Qt objects Python owns when the interpreter exits, and
``~QThreadPool`` waits for its workers without a limit. A job still reading in its thread by then (a store's
read waits on zarr's event loop, which zarr's own exit handler has stopped) would keep napari's process from
ever exiting; a pool left to Qt is not destroyed, and the process ends with its threads.
"""

from __future__ import annotations

import threading
import weakref

from napari.utils.notifications import show_error
from qtpy.QtCore import QCoreApplication, QObject, QThreadPool, QTimer

from napari_dynaclr._napari import workers
from napari_dynaclr._napari.widgets._forms import after_first_paint, alive

#: how long napari's quit waits for the plugin's workers once they were asked to stop
QUIT_WAIT_MS = 3000

_POOL: QThreadPool | None = None
_RUNNING: weakref.WeakSet = weakref.WeakSet()  # started and not finished


def plugin_pool() -> QThreadPool:
    """The plugin's thread pool (its own, sized for workers that mostly wait)."""
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _leave_to_qt(_POOL)
        _POOL.setMaxThreadCount(16)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(_at_quit)
    return _POOL


def _leave_to_qt(obj) -> None:
    """Make the Qt side own *obj* (PyQt: ``sip.transferto``), so that interpreter exit does not destroy it. Under
    PySide (no such call) the binding keeps it."""
    try:
        from qtpy import sip
    except ImportError:
        return
    sip.transferto(obj, None)


def is_running(worker) -> bool:
    """Whether *worker* was started here and has not finished yet."""
    return worker in _RUNNING


def thread_job(job, **kwargs):
    """napari's ``thread_worker`` for *job*, as every job of the plugin is made: errors go to the job's
    ``errored`` signal (``ignore_errors``), and the job runs through
    :func:`~napari_dynaclr._napari.workers.in_thread` (data packages imported one thread at a time, a generator's
    ``RuntimeError`` not lost)."""
    from napari.qt.threading import thread_worker

    return thread_worker(workers.in_thread(job), ignore_errors=True, **kwargs)


def start_job(worker):
    """Start a job that belongs to no dock (e.g. building the sample data) on the plugin's pool; napari's
    quit ends it by ending the work process it waits on."""
    _RUNNING.add(worker)
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    plugin_pool().start(worker)
    return worker


class DockJobs:
    """The running jobs of one dock (a worker and, for jobs that use the work process, a cancel event)."""

    def __init__(self, owner):
        self._running: list[tuple] = []  # (worker, cancel event or None, on_stop or None)
        self._latest: dict = {}  # key -> the newest running entry started with latest=key
        self._owner = weakref.ref(owner)
        running = self._running

        # the dock's end and napari's quit stop its jobs, through a receiver the module holds until the dock is
        # deleted: a slot held only by the dock's connections is part of the dock's garbage, and the garbage
        # collector can clear it before deleting the dock calls it (a segfault)
        stopper = _Stopper(running)
        owner.destroyed.connect(stopper.dock_deleted)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(stopper.stop)

    def start(self, worker, cancel: threading.Event | None = None, on_stop=None, latest=None, **slots):
        """Start *worker* (a napari thread worker) on the plugin's pool and remember it until it finishes.
        *on_stop*: called after the job was stopped from outside (napari closing), e.g. to remove what a
        killed work process left beside its output. *slots* (``yielded=``, ``returned=``, ``errored=``,
        ``finished=``): the dock's handlers of the worker's signals, called only while the dock's Qt widget
        exists — a worker stopped because napari closes still reports, after its dock is gone.

        *latest*: a key (e.g. ``"neighbours"``) for jobs where only the newest result counts: starting one
        cancels the running job of the same key (its *cancel* event: the work process drops its request) and
        from then on that job's ``yielded``/``returned``/``errored`` slots are no longer called (its
        ``finished`` slot still is). :meth:`latest` gives the running job of a key."""
        entry = (worker, cancel, on_stop)
        if latest is not None:
            old = self._latest.get(latest)
            if old is not None and old[1] is not None:
                from napari_dynaclr._napari.workers import cancel_job

                cancel_job(old[1])
            self._latest[latest] = entry
        for name, slot in slots.items():
            current = None if latest is None or name == "finished" else (lambda: self._latest.get(latest) is entry)
            getattr(worker, name).connect(_while_alive(self._owner, slot, current))
        self._running.append(entry)
        _RUNNING.add(worker)

        def done():
            _RUNNING.discard(worker)
            if entry in self._running:
                self._running.remove(entry)
            if latest is not None and self._latest.get(latest) is entry:
                del self._latest[latest]

        worker.finished.connect(done)
        plugin_pool().start(worker)
        return worker

    def import_packages(self, widget, then=None) -> None:
        """The packages a dock needs (:data:`~napari_dynaclr._napari.workers.DATA_PACKAGES`, then
        :data:`~napari_dynaclr._napari.workers.DOCK_PACKAGES`: pandas, matplotlib…) imported by a thread started
        after *widget*'s first paint (:func:`~napari_dynaclr._napari.widgets._forms.after_first_paint`), not on
        napari's GUI thread as the dock opens (0.5–1 s); *then* (optional) on the GUI thread once they are (in
        the next turn when another dock's thread already imported them; not when the import failed: the error is
        shown)."""
        returned = {} if then is None else {"returned": lambda _: then()}  # (not after a failed import)
        if workers.dock_packages_imported():
            if then is not None:
                QTimer.singleShot(0, _while_alive(self._owner, then))
            return
        after_first_paint(widget, lambda: self.start(thread_job(workers.import_dock_packages)(),
                                                     errored=lambda exc: show_error(str(exc)), **returned))

    def latest(self, key):
        """The running job started with ``latest=key`` (the newest one), or None."""
        entry = self._latest.get(key)
        return None if entry is None else entry[0]


def _while_alive(owner: weakref.ref, slot, current=None):
    """*slot*, called only while the dock's Qt widget exists (and, with *current*, while ``current()`` is true)."""
    def call(*args):
        widget = owner()
        if widget is not None and alive(widget) and (current is None or current()):
            slot(*args)

    return call


def _stop(running) -> None:
    from napari_dynaclr._napari.workers import cancel_job

    for worker, cancel, on_stop in list(running):
        if cancel is not None:
            cancel_job(cancel)
        try:
            worker.quit()
        except RuntimeError:  # its Qt side is gone already
            pass
        if on_stop is not None:
            on_stop()


def _at_quit() -> None:
    """napari is quitting (the docks' own handlers asked their workers to stop): end the work process,
    then give the workers a moment to return."""
    from napari_dynaclr._napari.workers import close_work_process

    close_work_process()
    if _POOL is not None:
        _POOL.waitForDone(QUIT_WAIT_MS)


#: the stoppers of the docks that exist (see DockJobs.__init__)
_STOPPERS: set = set()


class _Stopper(QObject):
    """Stops a dock's *running* jobs when the dock is deleted or napari quits."""

    def __init__(self, running: list):
        super().__init__()
        self._running = running
        _STOPPERS.add(self)

    def stop(self, *_) -> None:
        _stop(self._running)

    def dock_deleted(self, *_) -> None:
        self.stop()
        _STOPPERS.discard(self)
        self.deleteLater()
