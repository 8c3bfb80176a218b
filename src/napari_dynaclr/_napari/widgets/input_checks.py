"""The Predict tab's checks of its inputs, each in a worker, each shown beside its field; only the latest
check of each kind counts.

- the checkpoint: its (inferred) config and whether all keys match, once the typing of its path pauses;
- the plate: its layout, then its FOVs listed, selected as the predict.yml selects them (all without one);
- the cells: the run planned without a model (:func:`napari_dynaclr._napari.workers.preview_cells`), how many
  cells it will predict (or what is wrong with the inputs), and the first FOV shown with those cells. The run
  then fills these layers instead of building new ones.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qtpy.QtCore import QTimer

from napari_dynaclr._napari import workers
from napari_dynaclr._napari.widgets._forms import field_path, in_turns
from napari_dynaclr._napari.widgets._jobs import thread_job
from napari_dynaclr._napari.widgets._wording import error_message
from napari_dynaclr._napari.widgets.predict_form import yml_selection
from napari_dynaclr.errors import Cancelled, DynaclrError


def _debounce(parent, slot, ms: int) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(lambda: slot())
    return timer


class InputChecks:
    """The checks of the Predict fields of *dock* (the DynaCLR dock; see the module); connects itself to the
    fields."""

    def __init__(self, dock):
        self.dock = dock
        self.fovs_plate: Path | None = None  # the plate the FOV list describes
        self.fov_shapes: dict = {}  # its FOVs' TCZYX shapes (a Tracks layer is checked against them)
        self.plate_worker = None  # reading the plate's layout
        self.preview_worker = None  # the latest preview of the cells (runs until they are shown)
        self._inspect_worker = None
        self._inspect_cancel: threading.Event | None = None
        self._preview_token = None
        # typing a path checks it once the typing pauses; only the latest check's result is shown
        self.ckpt_timer = _debounce(dock, self.inspect_checkpoint, 400)
        self.plate_timer = _debounce(dock, self.read_plate, 400)
        self.preview_timer = _debounce(dock, self._on_preview_timer, 300)  # the inputs change in bursts
        dock.ckpt.changed.connect(lambda _: self.ckpt_timer.start())
        dock.plate.changed.connect(lambda _: self.plate_timer.start())
        for w in (dock.plate, dock.tracks, dock.tracks_source.layer, dock.tracks_source.fov, dock.fovs,
                  dock.channels, dock.z_start, dock.z_stop, dock.patch, dock.final_patch):
            w.changed.connect(lambda _: self.preview_timer.start())

    # ------------------------------------------------------------------ checkpoint

    def inspect_checkpoint(self):
        """Check the checkpoint in a worker: show the (inferred) config and whether all keys match."""
        d = self.dock
        path = field_path(d.ckpt.value)
        if path is None:
            return None
        d.ckpt_info.value = "checking…"
        encoder = d.yml_config.encoder if d.yml_config is not None else None
        if self._inspect_cancel is not None:  # only the latest check counts
            workers.cancel_job(self._inspect_cancel)
        cancel = self._inspect_cancel = threading.Event()
        worker = thread_job(workers.inspect_checkpoint)(path, encoder, cancel)

        def done(text):
            if worker is self._inspect_worker:
                d.ckpt_info.value = f"✓ {text}"

        def failed(exc):
            if worker is self._inspect_worker and not isinstance(exc, Cancelled):
                d.ckpt_info.value = f"✗ {error_message(exc)}"

        self._inspect_worker = worker
        return d.jobs.start(worker, cancel, returned=done, errored=failed)

    def inspect_checkpoint_now(self):
        """Check the checkpoint without waiting for the typing to pause."""
        self.ckpt_timer.stop()
        return self.inspect_checkpoint()

    # ------------------------------------------------------------------ plate

    def read_plate(self):
        """Read the plate's layout in a worker (a large plate on a network drive takes seconds), then list
        its FOVs, selected as the predict.yml selects them (all without one). Returns the worker."""
        from napari_dynaclr.core.plate import plate_info

        d = self.dock
        path = field_path(d.plate.value)
        self.fovs_plate = None  # the FOV list does not describe the chosen plate (yet)
        if path is None:
            self.plate_worker = None
            return None
        d.plate_info.value = "reading the plate…"
        worker = thread_job(plate_info)(path, *yml_selection(d.yml_config, path))

        def latest() -> bool:  # this read is the latest one (its result counts): it is over now
            if worker is not self.plate_worker:
                return False
            self.plate_worker = None
            return True

        def done(info):
            if not latest():
                return
            t, _, z, y, x = info["shape"]
            d.plate_info.value = (f"{len(info['fovs'])} FOVs in {len(info['wells'])} wells; channels: "
                                  f"{', '.join(info['channels'])}; TZYX {t}×{z}×{y}×{x} {info['dtype']}")
            d.fovs.choices = info["fovs"]
            d.fovs.value = info["selected"]
            self.fovs_plate, self.fov_shapes = path, info["shapes"]
            d.tracks_source.refresh()  # the FOVs a Tracks layer may belong to
            d.z_stop.max = max(z, 1)
            if not d.channels.value:
                d.channels.value = ", ".join(info["channels"])
            self.preview_timer.start()

        def failed(exc):
            if not latest():
                return
            d.plate_info.value = f"✗ {error_message(exc)}"
            d.fovs.choices = []
            self.preview_timer.start()

        self.plate_worker = worker
        return d.jobs.start(worker, returned=done, errored=failed)

    def read_plate_now(self):
        """Read the plate without waiting for the typing to pause."""
        self.plate_timer.stop()
        return self.read_plate()

    # ------------------------------------------------------------------ cells

    def _on_preview_timer(self) -> None:
        # otherwise the plate's layout restarts the timer when it arrives
        if self.plate_worker is None and not self.plate_timer.isActive():
            self.preview_cells()

    def preview_cells(self):
        """Plan the run in a worker (no model): report how many cells it will predict, or what is wrong
        with the inputs, and show them. Only while the viewer holds no embeddings (nothing or a preview);
        returns the worker (or None)."""
        d = self.dock
        self.preview_timer.stop()
        if d.worker is not None or d.is_boc:  # a run shows its own cells; a BoC yml has no plate fields
            return None
        if d.session.table is not None and not d.session.is_preview:
            # embeddings are shown (and the embedding view may be computing on them): leave them alone
            d.cells_info.value = ""
            return None
        if field_path(d.plate.value) is None or (field_path(d.tracks.value) is None and not d.tracks_source.active):
            d.cells_info.value = ""
            return None
        try:
            cfg = d.build_config(require_output=False)
        except DynaclrError as exc:
            d.cells_info.value = f"✗ {error_message(exc)}"
            return None
        token = self._preview_token = object()  # only the latest preview counts
        s = d.session
        shown = threading.Event()  # the job runs until its cells are shown (or its result is stale)
        worker = thread_job(workers.preview_job)(cfg, s.color_column, s.colormap, shown)

        def current() -> bool:  # this preview may still be shown: the latest, no run, no embeddings shown
            return token is self._preview_token and d.worker is None and (s.table is None or s.is_preview)

        def found(result):
            if result is None:  # (the job waiting for its cells to be shown)
                return
            prepared, plate = result
            n_fovs = len(prepared.fov_names)
            if token is self._preview_token:
                d.cells_info.value = f"{len(prepared.table)} cells in {n_fovs} FOV{'s' * (n_fovs != 1)} to predict"
            owned = [True]  # the last step's word: the plate is still this preview's to close

            def steps():
                for owned[0] in showing(prepared, plate):
                    yield

            def shown_or_stale(completed: bool) -> None:
                if not completed and owned[0]:
                    plate.close()
                shown.set()

            def broke(exc: Exception) -> None:  # said in place; the next preview starts over
                d.cells_info.value = f"✗ {error_message(exc)}"
                shown_or_stale(False)

            in_turns(d, steps(), current, shown_or_stale, broke)

        def showing(prepared, plate):
            """The preview's layers made one per event-loop turn, then shown as an opened store is
            (:meth:`~napari_dynaclr._napari.session.ExplorerSession.install`). Each step says whether the plate
            is still the preview's to close when it goes stale (True until the install owns it)."""
            from napari_dynaclr._napari.layers import fov_layer_steps

            fov = s.fov_name if s.fov_name in prepared.fov_names else prepared.fov_names[0]
            for made in fov_layer_steps(prepared.table, plate, fov, prepared.colors, hidden=True):
                prepared.layers = made
                yield True
            yield from (False for _ in s.install(prepared, plate=plate, tracks_path=cfg.source.tracks_path,
                                                 preview=True))

        def failed(exc):
            if token is self._preview_token:
                d.cells_info.value = f"✗ {error_message(exc)}"

        d.cells_info.value = "finding the cells…"
        self.preview_worker = worker
        return d.jobs.start(worker, shown, yielded=found, errored=failed)


def read_predict_yml(path: Path):
    """A predict.yml read into a config (in a worker: the first read imports the config's packages). (napari's
    unit registry is left to napari: building pint's lazy registry off the GUI thread races the layers that the
    GUI thread makes meanwhile — 'pixel' is not defined.)"""
    from napari_dynaclr.core.predict_yml import load_predict_yaml

    return load_predict_yaml(path)

