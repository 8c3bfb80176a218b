"""Opening an embedding store for the DynaCLR dock: read in a worker, shown in the session without blocking
the GUI thread for long.

A table of up to :data:`~napari_dynaclr._napari.session.ASYNC_CELLS` cells is shown at once (``set_table``).
A larger one never blocks the GUI thread for long: the worker also builds the frame index, colours and the
first FOV's napari layers (:func:`~napari_dynaclr._napari.session.prepare_table`), and the GUI thread puts
them into the viewer one step per event-loop turn
(:meth:`~napari_dynaclr._napari.session.ExplorerSession.install`), each step started by a single-shot timer
once the previous one (and the paint it caused) is done. Only the latest open counts: an earlier one still
reading is discarded, one still showing stops at its next step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import QWidget

from napari_dynaclr._napari import workers
from napari_dynaclr._napari.session import ExplorerSession
from napari_dynaclr._napari.widgets._forms import alive, in_turns
from napari_dynaclr._napari.widgets._jobs import DockJobs, thread_job

#: the pause between two steps of showing a large store
STEP_MS = 1


class StoreOpener:
    """Opens stores for *owner* (the dock): *opened* gets each store read for the latest open (before it is
    shown), *shown* the path and store once it is shown, *failed* the error of the latest open, *finished*
    is called when the latest open's worker is done."""

    def __init__(self, owner: QWidget, session: ExplorerSession, jobs: DockJobs, *,
                 opened: Callable[[workers.OpenedStore], None],
                 shown: Callable[[Path, workers.OpenedStore], None],
                 failed: Callable[[BaseException], None],
                 finished: Callable[[], None]):
        self.owner = owner
        self.session = session
        self.jobs = jobs
        self._opened, self._shown, self._failed, self._finished = opened, shown, failed, finished
        self.worker = None  # the latest open (runs until the store is shown)
        self._token = None  # the latest open; an earlier one's result is discarded

    def open(self, path: Path, plate: Path | None, tracks: Path | None):
        """Read the store at *path* (with *plate* and *tracks*, or else those it records) in a worker and
        show it; returns the worker, which runs until the store is shown."""
        from napari_dynaclr._napari.layers import napari_units
        from napari_dynaclr._napari.session import ASYNC_CELLS  # (read now: the tests lower it)

        napari_units()  # (here, on the GUI thread: the job may make the store's first layers in its thread)
        s = self.session
        shown = threading.Event()  # the worker runs until the store is shown (or its result is stale)
        token = self._token = object()  # only the latest open counts
        worker = thread_job(workers.open_store_job)(
            path, plate, tracks, ASYNC_CELLS, s.color_column, s.colormap, shown)

        def current() -> bool:
            return token is self._token and alive(self.owner)

        def end() -> None:  # the open is shown, failed or stale: the worker stops (and then the timer goes)
            shown.set()

        def yielded(item) -> None:
            if not isinstance(item, workers.OpenedStore):
                return
            if not current():  # a newer open (or the dock is gone): drop this one
                end()
                item.close()
                return
            self._opened(item)

            def shown_or_stale(completed: bool) -> None:
                end()
                if completed and s.table is item.table:  # (else a newer table took over)
                    self._shown(path, item)

            def broke(exc: Exception) -> None:  # a step failed: said; the next open or FOV switch rebuilds the layers
                end()
                self._failed(exc)

            in_turns(self.owner, showing(item), current, shown_or_stale, broke, STEP_MS)

        def showing(item):
            yield from s.install(item.prepared, adata=item.adata, store_path=path, plate=item.plate,
                                 tracks_path=item.tracks_path)
            yield  # *shown* runs in a turn of its own (the dock then shows its plot, which paints)

        def done(opened: workers.OpenedStore) -> None:
            if opened.prepared is not None:  # shown in steps (or discarded) already
                return
            if not current():
                opened.close()
                return
            self._opened(opened)
            s.set_table(opened.table, adata=opened.adata, store_path=path, plate=opened.plate,
                        tracks_path=opened.tracks_path)
            self._shown(path, opened)

        def finished() -> None:  # (after the last step: the worker runs until end())
            if current():
                self._finished()

        def failed(exc: BaseException) -> None:
            if current():
                self._failed(exc)

        self.worker = worker
        return self.jobs.start(worker, yielded=yielded, returned=done, errored=failed, finished=finished)


def store_plate_not_found(opened: workers.OpenedStore) -> Path | None:
    """The plate path *opened* records when it was not found (the store moved away from its plate, or the plate
    from it); None when the plate was found, given, or never recorded."""
    found = opened.inputs
    if opened.plate is not None or opened.plate_error or found is None or found.plate is not None:
        return None
    tried = next((f.tried for f in found.plates.values() if f.tried), None)
    return Path(tried[0]) if tried else None


def recorded_config(opened: workers.OpenedStore) -> Path | None:
    """The predict.yml *opened* records for its run, where it is found (None: it records none, e.g. VisCy's
    stores, or it is not found)."""
    found = opened.inputs.config if opened.inputs is not None else None
    return found.path if found is not None and found.found else None
