"""The main dock: choose checkpoint, plate, tracks and settings; predict in a worker; open stores.

The run is :func:`napari_dynaclr._napari.workers.prediction_job` — the CLI's engine, in the plugin's work
process — driven by a napari generator thread worker: a napari progress bar advances per batch, cells
stream into the layers and the scatter, Cancel kills the work process and nothing is written, errors
(a crash of the work process too) become notifications and the widget returns to ready. napari's
process never imports torch. The GUI predicts on one device (the first GPU, or the CPU).

The Predict tab's layout and its mapping to and from a config are in
:mod:`~napari_dynaclr._napari.widgets.predict_form`; the live checks of its inputs (checkpoint, plate, the
cells a run will predict, shown before it starts) in :mod:`~napari_dynaclr._napari.widgets.input_checks`;
opening a store in :mod:`~napari_dynaclr._napari.widgets.open_store`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
)
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from napari_dynaclr._napari import workers
from napari_dynaclr._napari.session import get_session
from napari_dynaclr._napari.widgets import predict_form
from napari_dynaclr._napari.widgets._forms import (
    Message,
    ScrollingTabs,
    alive,
    field_path,
    keep_button_text,
    while_alive,
)
from napari_dynaclr._napari.widgets._jobs import DockJobs, thread_job
from napari_dynaclr._napari.widgets._wording import DOCK, error_message
from napari_dynaclr._napari.widgets.input_checks import InputChecks, read_predict_yml
from napari_dynaclr._napari.widgets.open_store import StoreOpener, recorded_config, store_plate_not_found
from napari_dynaclr._napari.widgets.tracks_layer_source import TracksLayerSource
from napari_dynaclr.errors import Cancelled, ConfigError, DynaclrError

if TYPE_CHECKING:
    import napari.viewer

    from napari_dynaclr._napari.widgets.cells_view import CellsView
    from napari_dynaclr._napari.widgets.conditions_view import ConditionsView
    from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView
    from napari_dynaclr._napari.widgets.time_view import TimeView
    from napari_dynaclr._napari.widgets.verify_panel import VerifyWidget


class DynaCLRWidget(QWidget):
    """Predict DynaCLR embeddings for a plate (or open a store) and explore them in the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(viewer)
        self.viewer = self.session.viewer
        self.yml_config = None
        self.store_without_config, self.store_yml = False, None  # (see gallery_config)
        self.yml_worker = None  # reading a predict.yml (the Load button)
        self.worker = None
        self.cancel_event: threading.Event | None = None
        self.last_error: str | None = None
        self.last_result: workers.Finished | None = None
        self._pbar = None
        self._fov_sync = False  # the FOV list follows the session (not a user's choice)
        self._awaiting_demo = False  # Open Sample is still building the demo
        self._store_plate_chosen = False  # the user pointed the opened store at its plate
        self._store_plate_sync = False  # the store's plate field is being set by the dock (not by the user)
        self.jobs = DockJobs(self)  # ended when the dock is deleted or napari quits

        self.predict_yml = FileEdit(label="VisCy predict.yml", mode="r", filter="*.yml *.yaml")
        self.load_yml_btn = PushButton(text="Load predict.yml")
        self.ckpt = FileEdit(label="checkpoint", mode="r", filter="*.ckpt *.pt *.pth")
        self.ckpt_info = Message()
        self.plate = FileEdit(label="plate (HCS zarr)", mode="d")
        self.plate_info = Message()
        self.fovs = Select(label="FOVs to predict", choices=[])
        self.tracks = FileEdit(label="tracks folder", mode="d")
        self.tracks_source = TracksLayerSource(viewer, lambda: self.fovs.choices)  # or a Tracks layer's tracks
        self.cells_info = Message()
        self.channels = LineEdit(label="source channels", value="")
        self.z_start = SpinBox(label="z start", value=0, min=0, max=10000)
        self.z_stop = SpinBox(label="z stop (excl.)", value=1, min=1, max=10000)
        self.patch = SpinBox(label="patch (initial YX)", value=160, min=8, max=4096)
        self.final_patch = SpinBox(label="patch (final YX)", value=160, min=8, max=4096)
        self.batch_size = SpinBox(label="batch size", value=32, min=1, max=4096)
        self.device = ComboBox(label="device", choices=("auto", "cpu", "cuda"), value="auto",
                               tooltip="one device: the first GPU when there is one (auto, cuda), else the CPU; "
                                       "the command line predicts on several")
        self.normalization = ComboBox(label="normalisation", choices=predict_form.NORMALIZATIONS[1:],
                                      value="fov_statistics")
        self.umap = CheckBox(text="UMAP at the end", value=True)
        self.pca = CheckBox(text="PCA at the end", value=True)
        self.output = FileEdit(label="output store", mode="w", filter="*.zarr")
        self.overwrite = CheckBox(text="overwrite", value=False)
        self.run_btn = PushButton(text="Run")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.store = FileEdit(label="embedding store", mode="d")
        self.open_btn = PushButton(text="Open embeddings")
        self.show_fov = ComboBox(label="show FOV", choices=[])
        # shown when an opened store's plate is not where the store records it: choosing it shows the images
        self.store_plate = FileEdit(label="plate of the store", mode="d")
        self.store_plate_info = Message()
        self.status = Message("ready")
        self.allow_nonfinite = CheckBox(
            text="allow non-finite values", value=False,
            tooltip="write NaN rows for cells whose patch or embedding is not finite (and read missing chunks "
                    "as 0) instead of refusing the run")
        keep_button_text(self.predict_yml, self.ckpt, self.plate, self.tracks, self.output, self.store,
                         self.store_plate)
        # every page scrolls when the dock is short (a laptop's screen, a second dock below it); the pages after
        # Predict are made in later event-loop turns (or when first shown or used): see ScrollingTabs
        self.tabs = ScrollingTabs(self)
        self.predict_scroll, self.advanced = predict_form.page(self)
        self.tabs.addTab(self.predict_scroll, "Predict")
        for title, build in predict_form.later_pages(self):
            self.tabs.add_later(build, title)
        # the data packages (pandas: the pages need it): a thread, after the dock's first paint; the pages after it
        self.jobs.import_packages(self)
        self.tabs.build_later(*predict_form.later_imports(), after=predict_form.explore_then_plot(self))
        footer = QHBoxLayout()
        footer.addWidget(self.run_btn.native)
        footer.addWidget(self.cancel_btn.native)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs, stretch=1)
        layout.addLayout(footer)
        layout.addWidget(self.status.native)

        self.load_yml_btn.clicked.connect(lambda: self.load_predict_yml(wait=False))
        self.patch.changed.connect(lambda v: setattr(self.final_patch, "value", min(self.final_patch.value, v)))
        self.run_btn.clicked.connect(lambda: self.run())
        self.cancel_btn.clicked.connect(lambda: self.cancel())
        self.open_btn.clicked.connect(lambda: self.open_embeddings())
        self.show_fov.changed.connect(self._on_show_fov)
        self.store_plate.changed.connect(self._on_store_plate)
        self.checks = InputChecks(self)  # checkpoint, plate and cells, checked as they are chosen
        self.opener = StoreOpener(self, self.session, self.jobs, opened=self._use_store_fields,
                                  shown=self._store_shown, failed=lambda exc: self._fail(error_message(exc)),
                                  finished=self._open_finished)
        self.session.table_changed.connect(self._refresh_fovs)
        self.session.fov_changed.connect(self._on_fov_changed)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        for layer in viewer.layers:
            self._prefill_from(layer.metadata)

    # the pages after Predict (each made when first asked for, if the dock has not made it yet)
    explore: EmbeddingView = property(lambda self: self.tabs.page("Explore"))
    cells: CellsView = property(lambda self: self.tabs.page("Cells"))
    verify: VerifyWidget = property(lambda self: self.tabs.page("Verify"))
    conditions: ConditionsView = property(lambda self: self.tabs.page("Conditions"))
    time: TimeView = property(lambda self: self.tabs.page("Time"))

    # ------------------------------------------------------------------ inputs

    @while_alive
    def _on_layer_inserted(self, event) -> None:
        self._prefill_from(getattr(event.value, "metadata", {}) or {})

    def _prefill_from(self, meta: dict) -> None:
        """Sample data layers carry the demo paths, a plate opened by our reader its path; fill empty
        fields from them."""
        plate = meta.get("dynaclr_plate")
        if plate and field_path(self.plate.value) is None:
            self.plate.value = plate
        demo = meta.get("dynaclr_demo")
        if not demo:
            return
        from napari_dynaclr._napari.sample_data import demo_complete, when_demo_ready

        folder = Path(demo["config"]).parent
        if not demo_complete(folder):  # Open Sample is still building it: fill the fields once it is there
            if not self._awaiting_demo:
                self._awaiting_demo = True
                self.status.value = "waiting for the demo's files (see napari's activity dock)…"
                when_demo_ready(folder, lambda: self._demo_ready(meta))
            return
        if field_path(self.predict_yml.value) is None and demo.get("config"):
            self.predict_yml.value = demo["config"]
            self.load_predict_yml()
        if field_path(self.store.value) is None and demo.get("output"):
            self.store.value = demo["output"]

    def _demo_ready(self, meta: dict) -> None:
        if alive(self):
            self._awaiting_demo = False
            self.status.value = "ready"
            self._prefill_from(meta)

    def load_predict_yml(self, path=None, wait: bool = True, quiet: bool = False):
        """Fill every field from a VisCy predict.yml (its normalisations are kept as they are). *wait*: read it
        on this thread and return whether it loaded (scripts); else (the Load button, the demo's prefill) read
        it in a worker — its first read imports the config's packages, seconds on a busy laptop — and return
        the worker (None without a path)."""
        path = field_path(path) or field_path(self.predict_yml.value)
        if path is None:
            show_error("choose a predict.yml first")
            return False if wait else None
        if wait:
            from napari_dynaclr.core.predict_yml import load_predict_yaml

            try:
                cfg = load_predict_yaml(path)
            except DynaclrError as exc:
                self._fail(error_message(exc))
                return False
            self._use_predict_yml(path, cfg)
            return True
        if not quiet:  # (quiet: an opened store's own predict.yml; the status is the store's)
            self.status.value = f"reading {path.name}…"
        self.load_yml_btn.enabled = False
        worker = self.yml_worker = thread_job(read_predict_yml)(path)

        def loaded(cfg) -> None:
            if worker is self.yml_worker:  # (only the latest read counts)
                self._use_predict_yml(path, cfg, quiet)

        def failed(exc: BaseException) -> None:
            if worker is self.yml_worker:
                self._fail(error_message(exc))

        def done() -> None:
            if worker is self.yml_worker:
                self.yml_worker = None
                self.load_yml_btn.enabled = True

        return self.jobs.start(worker, returned=loaded, errored=failed, finished=done)

    def _use_predict_yml(self, path: Path, cfg, quiet: bool = False) -> None:
        self.yml_config = cfg
        self.predict_yml.value = path
        predict_form.fill_from_yml(self, cfg)
        if not quiet:
            self.status.value = f"loaded {Path(path).name}"

    @property
    def is_boc(self) -> bool:
        """Whether the loaded predict.yml's data source is one the plate fields do not edit (a Bag-of-Channels
        cell index: VisCy's MultiExperimentDataModule)."""
        return not predict_form.edits_plate_fields(self.yml_config)

    def build_config(self, require_output: bool = True):
        """The run's config from the fields (see :func:`.predict_form.read_config`)."""
        return predict_form.read_config(self, require_output)

    def inspect_checkpoint(self):
        """Check the checkpoint in a worker; returns the worker (see :class:`InputChecks`)."""
        return self.checks.inspect_checkpoint()

    def preview_cells(self):
        """Plan the run in a worker and show its cells; returns the worker or None (see :class:`InputChecks`)."""
        return self.checks.preview_cells()

    # ------------------------------------------------------------------ run

    def _set_running(self, running: bool) -> None:
        self.run_btn.enabled = not running
        self.open_btn.enabled = not running
        self.cancel_btn.enabled = running

    def _fail(self, msg: str) -> None:
        """Show *msg* (already in the dock's words: :func:`error_message`) as the run's error."""
        self.last_error = msg
        show_error(msg)
        self.status.value = f"error: {msg}"

    def run(self):
        """Start a prediction worker; returns it (or None when the settings are invalid)."""
        if self.worker is not None:
            show_error("a job is already running")
            return None
        from napari_dynaclr.core.output import check_output_path

        try:
            cfg = self.build_config()
            # the output may never be an input or anything but an embedding store (checked again, and
            # locked, by the run itself)
            check_output_path(cfg.output_path, cfg.overwrite, cfg.input_paths())
            self.store_without_config = False  # the store to come is this form's run
        except DynaclrError as exc:
            self._fail(error_message(exc))
            return None
        self.last_error = None
        self.last_result = None
        self.checks.preview_timer.stop()
        if self.yml_config is not None and self.yml_config.asks_several_devices():
            show_info("the napari plugin predicts on one device; for several, run "
                      "`napari-dynaclr predict -c predict.yml` on the command line")
        self.cancel_event = threading.Event()
        worker = thread_job(workers.prediction_job)(cfg, self.device.value, self.cancel_event)
        self._run_cfg = cfg
        self.worker = worker
        self._set_running(True)
        self.status.value = "loading checkpoint and planning…"
        from napari_dynaclr.core.output import clean_after_kill

        return self.jobs.start(worker, self.cancel_event, on_stop=lambda out=cfg.output_path: clean_after_kill(out),
                               yielded=self._on_event, returned=self._on_finished, errored=self._on_error,
                               finished=self._on_worker_done)

    def _start_progress(self, n_batches: int, worker) -> None:
        if worker is not None and worker is self.worker and self._pbar is None and alive(self):
            self._pbar = progress(total=n_batches, desc="DynaCLR prediction")

    def cancel(self) -> None:
        """Stop the run (the work process is killed); nothing is written."""
        if self.cancel_event is not None:
            workers.cancel_job(self.cancel_event)
            self.status.value = "cancelling…"

    def _on_event(self, ev) -> None:
        from napari_dynaclr.predict.events import Planned, Stage

        if ev is None or self.worker is None:  # a heartbeat, or a late event of a finished run
            return
        if isinstance(ev, workers.Warned):
            show_warning(ev.text(DOCK))
        elif isinstance(ev, Planned):
            from napari_dynaclr._napari.cellmodel.table import cell_table

            self.status.value = f"predicting {len(ev.obs)} cells in {ev.n_batches} batches on {ev.device} (one device)"
            # the progress bar in its own event-loop turn: each GUI-thread slice stays short
            QTimer.singleShot(0, lambda n=ev.n_batches, w=self.worker: self._start_progress(n, w))
            table = cell_table(ev.obs)
            table["preview_0"] = float("nan")
            table["preview_1"] = float("nan")
            src = self._run_cfg.source
            # the previewed cells: keep their layers
            if not self.session.adopt_result(table, plate_path=src.data_path, tracks_path=src.tracks_path):
                self.session.set_table(table, plate_path=src.data_path, tracks_path=src.tracks_path,
                                       fov_name=self.session.fov_name)
            # where the cells now are: the plot's first paint with them in a turn of its own
            QTimer.singleShot(1, lambda: alive(self) and self.tabs.setCurrentWidget(self.explore))
        elif isinstance(ev, workers.Batch):
            if self.cancel_event is not None and self.cancel_event.is_set():
                return  # cancelled: batches still queued are no result (the preview stays cleared)
            self.status.value = f"batch {ev.index + 1}/{ev.n_batches}"
            self.session.update_rows(ev.start, ev.stop, {"preview_0": ev.preview[:, 0], "preview_1": ev.preview[:, 1]})
            if self._pbar is not None:  # (napari's progress bar may process events: the rows first)
                self._pbar.update(1)
        elif isinstance(ev, Stage):
            self.status.value = f"{ev.name}…"
            if ev.name == "writing":
                self.cancel_btn.enabled = False
        if self.worker is None:  # the run ended while this event was handled (nested event processing)
            self._set_running(False)

    def _on_finished(self, res: workers.Finished) -> None:
        from napari_dynaclr._napari.cellmodel.table import cell_table

        self.last_result = res
        src = self._run_cfg.source
        adata = res.adata
        table = cell_table(adata.obs, dict(adata.obsm))
        if not self.session.adopt_result(table, adata=adata, store_path=res.output_path, plate_path=src.data_path,
                                         tracks_path=src.tracks_path):
            self.session.set_table(table, adata=adata, store_path=res.output_path, plate_path=src.data_path,
                                   tracks_path=src.tracks_path, fov_name=self.session.fov_name,
                                   color_column=self.session.color_column)
        self.store.value = res.output_path
        show_info(f"wrote {adata.n_obs} cells to {res.output_path} in {res.seconds:.1f} s")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.last_error = None
            self.explore.clear_preview()  # the preview it streamed is no result
            show_info("prediction cancelled; nothing was written")
            return
        self._fail(error_message(exc))

    def _on_worker_done(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.cancel_event = None
        err = self.last_error
        self._set_running(False)
        self.status.value = f"ready (last run failed: {err})" if err else "ready"

    # ------------------------------------------------------------------ open a store

    def open_embeddings(self, path=None, use_fields: bool = True, plate=None):
        """Load an existing store in a worker, with *plate* or the plate and tracks of the fields (unless
        *use_fields* is False) or else those the store records; returns the worker, which runs until the
        store is shown. A large store is shown in steps; only the latest open counts (see
        :mod:`~napari_dynaclr._napari.widgets.open_store`)."""
        path = field_path(path) or field_path(self.store.value)
        if path is None:
            show_error("choose an 'embedding store' first")
            return None
        if self.worker is not None:
            show_error("a prediction is running: cancel it before opening a store")
            return None
        chosen = field_path(plate)  # the plate chosen for this store (its field), else the fields' or the store's
        plate, tracks = (field_path(self.plate.value), field_path(self.tracks.value)) if use_fields else (None, None)
        if chosen is not None:
            plate = chosen
        elif self._store_plate_chosen:  # another store: its own plate, found or offered again
            self._store_plate_chosen = False
            self._store_plate_sync = True
            self.store_plate.value = ""
            self._store_plate_sync = False
        self.store.value = path
        self.status.value = f"opening {path.name}…"
        self.open_btn.enabled = False
        self.run_btn.enabled = False
        return self.opener.open(path, plate, tracks)

    def gallery_config(self):
        """The settings the Cells gallery cuts patches with: the run's (an opened store's predict.yml, loaded from
        the path it records; a store that records none, VisCy's own, needs it loaded here)."""
        if self.store_without_config and (self.yml_config is None or self.store_yml == self.predict_yml.value):
            raise ConfigError("this store records no predict.yml of its run: load the run's predict.yml in the "
                              "Predict tab, so that the gallery cuts the cells' patches as the run did")
        return self.build_config(require_output=False)

    def _use_store_fields(self, opened: workers.OpenedStore) -> None:
        recorded = recorded_config(opened)  # the run's predict.yml: its settings are the gallery's
        self.store_without_config = recorded is None
        if recorded is not None and (self.yml_config is None or field_path(self.predict_yml.value) != recorded):
            self.store_yml = recorded  # (a later store that records none must not use it: gallery_config)
            self.load_predict_yml(recorded, wait=False, quiet=True)
        self._offer_store_plate(opened)
        if opened.plate_error:
            self._fail(opened.plate_error)  # the cells are shown all the same, without images
        if opened.plate is not None and field_path(self.plate.value) is None:  # the store's own plate and tracks
            self.plate.value = opened.plate.path
            if opened.tracks_path is not None and field_path(self.tracks.value) is None:
                self.tracks.value = opened.tracks_path

    def _offer_store_plate(self, opened: workers.OpenedStore) -> None:
        """A store whose recorded plate is not found (moved away from it): say so once, naming the recorded
        path, and show the field that points at the plate (hidden again for a store whose plate is found)."""
        recorded = store_plate_not_found(opened)
        self.store_plate_box.setVisible(recorded is not None or self._store_plate_chosen)
        if recorded is None:
            return
        name = self.store.value.name if field_path(self.store.value) else "the store"
        show_warning(f"{name}: its plate is not at {recorded} (moved?); the cells are shown without images. "
                     "Choose the plate under 'plate of the store' to see them.")
        self.store_plate_info.value = f"✗ {opened.inputs.reason()}"

    def _on_store_plate(self, value) -> None:
        """The plate chosen for the opened store: open the store again with it."""
        plate = field_path(value)
        if plate is None or self._store_plate_sync:
            return
        self._store_plate_chosen = True
        self.store_plate_info.value = f"opening {plate.name}…"
        self.open_embeddings(plate=plate)

    def _store_shown(self, path: Path, opened: workers.OpenedStore) -> None:
        self.tabs.setCurrentWidget(self.explore)  # where the cells now are
        if self._store_plate_chosen and opened.plate is not None:
            self.store_plate_info.value = f"✓ showing the images of {opened.plate.path}"
        self.status.value = f"opened {path.name}: {len(opened.table)} cells"

    def _open_finished(self) -> None:
        if self.worker is None:
            self._set_running(False)

    # ------------------------------------------------------------------ FOV switching

    @while_alive
    def _refresh_fovs(self) -> None:
        names = self.session.fov_names()
        self._fov_sync = True
        self.show_fov.choices = names
        if self.session.fov_name in names:
            self.show_fov.value = self.session.fov_name
        self._fov_sync = False

    @while_alive
    def _on_fov_changed(self, name: str) -> None:
        self._fov_sync = True
        if name in self.show_fov.choices:
            self.show_fov.value = name
        self._fov_sync = False

    def _on_show_fov(self, name) -> None:
        if self._fov_sync or name is None or name == self.session.fov_name:
            return
        self.session.show_fov(name)
