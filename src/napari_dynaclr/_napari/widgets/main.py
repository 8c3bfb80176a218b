"""The main dock: choose checkpoint, plate, tracks and settings; predict in a worker; open stores.

The run is :func:`napari_dynaclr._napari.workers.prediction_job` — the CLI's engine, in the plugin's work
process — driven by a napari generator thread worker: a napari progress bar advances per batch, cells
stream into the layers and the scatter, Cancel kills the work process and nothing is written, errors
(a crash of the work process too) become notifications and the widget returns to ready. napari's
process never imports torch. The GUI predicts on one device (the first GPU, or the CPU).

As soon as the plate and tracks are chosen, the widget plans the run in a worker (no model:
:func:`napari_dynaclr._napari.workers.preview_cells`), says how many cells will be predicted (or what is wrong
with the inputs) and shows the first FOV with those cells. The run then fills these layers instead
of building new ones, so the viewer stays responsive while it streams.
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
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QHBoxLayout,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_dynaclr._napari import workers
from napari_dynaclr._napari.session import get_session
from napari_dynaclr._napari.widgets._forms import Message, alive, form, keep_button_text, scrolling, section
from napari_dynaclr._napari.widgets._jobs import DockJobs
from napari_dynaclr._napari.widgets.cells_view import CellsView
from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView
from napari_dynaclr._napari.widgets.verify_panel import VerifyWidget
from napari_dynaclr.errors import Cancelled, DynaclrError

if TYPE_CHECKING:
    import napari.viewer

#: how the dock's messages tell the user to allow a replacement (the CLI says "pass --overwrite")
OVERWRITE_HINT = "tick 'overwrite' in the DynaCLR dock"
#: the pause between two steps of showing a large store (see ``open_embeddings``)
STEP_MS = 1
NORMALIZATIONS = ("from predict.yml", "fov_statistics", "dataset_statistics", "timepoint_statistics", "none")


#: the command line's words in the engine's messages, and the dock's controls that do the same
GUI_WORDS = (
    ("pass --overwrite", OVERWRITE_HINT),
    ("pass --allow-nonfinite", "tick 'allow non-finite values' (Predict > Advanced settings)"),
    ("(--allow-nonfinite)", "('allow non-finite values')"),
    ("try --precision 32-true", "set trainer precision: 32-true in the predict.yml"),
    ("give --output (or EmbeddingWriter output_path)", "choose an 'output store'"),
    ("give --ckpt-path (or ckpt_path in the config)", "choose a 'checkpoint'"),
)


def gui_wording(message: str) -> str:
    """*message* with the command line's flags replaced by the dock's controls."""
    for cli, gui in GUI_WORDS:
        message = message.replace(cli, gui)
    return message


def _message(exc: BaseException) -> str:
    if isinstance(exc, DynaclrError):
        return gui_wording(str(exc))
    return f"{type(exc).__name__}: {exc}"


def _path(value) -> Path | None:
    if value is None:
        return None
    s = str(value)
    return None if s in ("", ".") else Path(s)


class DynaCLRWidget(QWidget):
    """Predict DynaCLR embeddings for a plate (or open a store) and explore them in the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(viewer)
        self.viewer = self.session.viewer
        self.yml_config = None
        self.worker = None
        self.cancel_event: threading.Event | None = None
        self.last_error: str | None = None
        self.last_result: workers.Finished | None = None
        self._pbar = None
        self.jobs = DockJobs(self)  # ended when the dock is deleted or napari quits
        self._inspect_worker = None
        self._inspect_cancel: threading.Event | None = None

        self.predict_yml = FileEdit(label="VisCy predict.yml", mode="r", filter="*.yml *.yaml")
        self.load_yml_btn = PushButton(text="Load predict.yml")
        self.ckpt = FileEdit(label="checkpoint", mode="r", filter="*.ckpt *.pt *.pth")
        self.ckpt_info = Message()
        self.plate = FileEdit(label="plate (HCS zarr)", mode="d")
        self.plate_info = Message()
        self.fovs = Select(label="FOVs to predict", choices=[])
        self.tracks = FileEdit(label="tracks folder", mode="d")
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
        self.normalization = ComboBox(label="normalisation", choices=NORMALIZATIONS[1:], value="fov_statistics")
        self.umap = CheckBox(text="UMAP at the end", value=True)
        self.pca = CheckBox(text="PCA at the end", value=True)
        self.output = FileEdit(label="output store", mode="w", filter="*.zarr")
        self.overwrite = CheckBox(text="overwrite", value=False)
        self.run_btn = PushButton(text="Run")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.store = FileEdit(label="embedding store", mode="d")
        self.open_btn = PushButton(text="Open embeddings")
        self.show_fov = ComboBox(label="show FOV", choices=[])
        self.status = Message("ready")
        self.allow_nonfinite = CheckBox(
            text="allow non-finite values", value=False,
            tooltip="write NaN rows for cells whose patch or embedding is not finite (and read missing chunks "
                    "as 0) instead of refusing the run")
        keep_button_text(self.predict_yml, self.ckpt, self.plate, self.tracks, self.output, self.store)
        self.explore = EmbeddingView(viewer)
        self.cells = CellsView(viewer, config=lambda: self.build_config(require_output=False))
        self.verify = VerifyWidget(viewer)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self._predict_tab(), "Predict")
        self.tabs.addTab(self.explore, "Explore")
        self.tabs.addTab(self.cells, "Cells")
        self.tabs.addTab(self.verify, "Verify")
        footer = QHBoxLayout()
        footer.addWidget(self.run_btn.native)
        footer.addWidget(self.cancel_btn.native)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs, stretch=1)
        layout.addLayout(footer)
        layout.addWidget(self.status.native)

        self.load_yml_btn.clicked.connect(lambda: self.load_predict_yml())
        # typing a path checks it once the typing pauses; only the latest check's result is shown
        self._ckpt_timer = self._debounce(self.inspect_checkpoint)
        self._plate_timer = self._debounce(self._on_plate)
        self.ckpt.changed.connect(lambda _: self._ckpt_timer.start())
        self.plate.changed.connect(lambda _: self._plate_timer.start())
        self.patch.changed.connect(lambda v: setattr(self.final_patch, "value", min(self.final_patch.value, v)))
        self.run_btn.clicked.connect(lambda: self.run())
        self.cancel_btn.clicked.connect(lambda: self.cancel())
        self.open_btn.clicked.connect(lambda: self.open_embeddings())
        self.show_fov.changed.connect(self._on_show_fov)
        self._preview_worker = None
        self._preview_token = None
        self._preview_timer = QTimer(self)  # the inputs change in bursts (a predict.yml sets them all)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(300)
        self._preview_timer.timeout.connect(self._on_preview_timer)
        self._plate_worker = None  # reading the plate's layout
        self._open_worker = None  # opening a store (runs until the store is shown)
        self._open_token = None  # the latest open; an earlier one's result is discarded
        self._fovs_plate: Path | None = None  # the plate the FOV list describes
        for w in (self.plate, self.tracks, self.fovs, self.channels, self.z_start, self.z_stop, self.patch,
                  self.final_patch):
            w.changed.connect(lambda _: self._preview_timer.start())
        self.session.table_changed.connect(self._refresh_fovs)
        self.session.fov_changed.connect(self._on_fov_changed)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        for layer in viewer.layers:
            self._prefill_from(layer.metadata)

    def _debounce(self, slot, ms: int = 400) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(ms)
        timer.timeout.connect(lambda: slot())
        return timer

    def _predict_tab(self) -> QWidget:
        """Inputs, the advanced settings (collapsed), the output and opening a store: scrolls vertically
        only, and fits any dock width from 320 px."""
        inputs = form([
            ("VisCy predict.yml", self.predict_yml), self.load_yml_btn,
            ("checkpoint", self.ckpt), self.ckpt_info,
            ("plate (HCS zarr)", self.plate), self.plate_info,
            ("FOVs to predict", self.fovs),
            ("tracks folder", self.tracks), self.cells_info,
        ])
        advanced = QCollapsible("Advanced settings")
        advanced.addWidget(form([
            ("source channels", self.channels), ("z start", self.z_start), ("z stop (excl.)", self.z_stop),
            ("patch (initial YX)", self.patch), ("patch (final YX)", self.final_patch),
            ("batch size", self.batch_size), ("device", self.device), ("normalisation", self.normalization),
            self.umap, self.pca, self.allow_nonfinite,
        ]))
        self.advanced = advanced
        output = form([("output store", self.output), self.overwrite])
        opened = form([("embedding store", self.store), self.open_btn, ("show FOV", self.show_fov)])
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(section("Inputs", inputs))
        lay.addWidget(advanced)
        lay.addWidget(section("Output", output))
        lay.addWidget(section("Open a store", opened))
        lay.addStretch(1)
        self.predict_scroll = scrolling(page)
        return self.predict_scroll

    # ------------------------------------------------------------------ inputs

    def _on_layer_inserted(self, event) -> None:
        self._prefill_from(getattr(event.value, "metadata", {}) or {})

    def _prefill_from(self, meta: dict) -> None:
        """Sample data layers carry the demo paths, a plate opened by our reader its path; fill empty
        fields from them."""
        plate = meta.get("dynaclr_plate")
        if plate and _path(self.plate.value) is None:
            self.plate.value = plate
        demo = meta.get("dynaclr_demo")
        if not demo:
            return
        from napari_dynaclr._napari.sample_data import demo_complete, when_demo_ready

        folder = Path(demo["config"]).parent
        if not demo_complete(folder):  # Open Sample is still building it: fill the fields once it is there
            if not getattr(self, "_awaiting_demo", False):
                self._awaiting_demo = True
                self.status.value = "waiting for the demo's files (see napari's activity dock)…"
                when_demo_ready(folder, lambda: self._demo_ready(meta))
            return
        if _path(self.predict_yml.value) is None and demo.get("config"):
            self.predict_yml.value = demo["config"]
            self.load_predict_yml()
        if _path(self.store.value) is None and demo.get("output"):
            self.store.value = demo["output"]

    def _demo_ready(self, meta: dict) -> None:
        if self._alive():
            self._awaiting_demo = False
            self.status.value = "ready"
            self._prefill_from(meta)

    def load_predict_yml(self, path=None) -> bool:
        """Fill every field from a VisCy predict.yml (its normalisations are kept as they are)."""
        from napari_dynaclr.core.predict_yml import load_predict_yaml

        path = _path(path) or _path(self.predict_yml.value)
        if path is None:
            show_error("choose a predict.yml first")
            return False
        try:
            cfg = load_predict_yaml(path)
        except DynaclrError as exc:
            self._fail(str(exc))
            return False
        self.yml_config = cfg
        self.predict_yml.value = path
        self._set_classic(not self.is_boc)
        if self.is_boc:
            self._load_boc(cfg)
        else:
            self._load_classic(cfg)
        self.batch_size.value = cfg.batch_size
        self.device.value = cfg.accelerator if cfg.accelerator in self.device.choices else "auto"
        self.umap.value = cfg.umap_kwargs is not None
        self.pca.value = cfg.pca_kwargs is not None
        if cfg.output_path is not None:
            self.output.value = cfg.output_path
            self.overwrite.value = cfg.overwrite
        self.allow_nonfinite.value = cfg.allow_nonfinite
        if cfg.ckpt_path is not None:
            self.ckpt.value = cfg.ckpt_path
            self._ckpt_timer.stop()
            self.inspect_checkpoint()
        self.status.value = f"loaded {Path(path).name}"
        return True

    @property
    def is_boc(self) -> bool:
        """Whether the loaded predict.yml is a Bag-of-Channels one (MultiExperimentDataModule)."""
        from napari_dynaclr.core.boc import BocConfig

        return isinstance(self.yml_config, BocConfig)

    def _set_classic(self, on: bool) -> None:
        """The classic data fields apply to TripletDataModule configs only."""
        for w in (self.plate, self.fovs, self.tracks, self.channels, self.z_start, self.z_stop, self.patch,
                  self.final_patch, self.normalization):
            w.enabled = on

    def _load_boc(self, cfg) -> None:
        source = cfg.cell_index_path or cfg.collection_path or cfg.data_path
        self.plate_info.value = (f"Bag-of-Channels predict.yml: samples from {Path(str(source)).name} (one per cell, "
                                 "timepoint and channel; z window from focus, pixel-size rescaling, VisCy's "
                                 "normalisation); the plate, tracks and patch fields are not used")
        self.cells_info.value = ""

    def _load_classic(self, cfg) -> None:
        self.normalization.choices = NORMALIZATIONS
        self.normalization.value = "from predict.yml"
        self.plate.value = cfg.data_path
        self._plate_timer.stop()  # read now (selected as this predict.yml selects its FOVs)
        self._on_plate()
        self.tracks.value = cfg.tracks_path
        self.channels.value = ", ".join(cfg.source_channel)
        self.z_stop.value = cfg.z_range[1]
        self.z_start.value = cfg.z_range[0]
        self.patch.value = cfg.initial_yx_patch_size[0]
        self.final_patch.value = cfg.patch_size[0]

    def _yml_selection(self, plate: Path | None) -> tuple[list[str] | None, list[str] | None]:
        """The loaded predict.yml's ``fit_include_wells`` / ``fit_exclude_fovs`` when it names *plate*."""
        base = self.yml_config
        if base is None or self.is_boc or plate is None or Path(base.data_path) != plate:
            return None, None
        return base.include_wells, base.exclude_fovs

    def _on_plate(self):
        """Read the plate's layout in a worker (a large plate on a network drive takes seconds), then list
        its FOVs, selected as the predict.yml selects them (all without one). Returns the worker."""
        from napari_dynaclr.core.plate import plate_info

        path = _path(self.plate.value)
        self._fovs_plate = None  # the FOV list does not describe the chosen plate (yet)
        if path is None:
            self._plate_worker = None
            return None
        self.plate_info.value = "reading the plate…"
        worker = thread_worker(plate_info, ignore_errors=True)(path, *self._yml_selection(path))

        def done(info):
            if worker is not self._plate_worker or not self._alive():
                return
            self._plate_worker = None
            t, _, z, y, x = info["shape"]
            self.plate_info.value = (f"{len(info['fovs'])} FOVs in {len(info['wells'])} wells; channels: "
                                     f"{', '.join(info['channels'])}; TZYX {t}×{z}×{y}×{x} {info['dtype']}")
            self.fovs.choices = info["fovs"]
            self.fovs.value = info["selected"]
            self._fovs_plate = path
            self.z_stop.max = max(z, 1)
            if not self.channels.value:
                self.channels.value = ", ".join(info["channels"])
            self._preview_timer.start()

        def failed(exc):
            if worker is not self._plate_worker or not self._alive():
                return
            self._plate_worker = None
            self.plate_info.value = f"✗ {_message(exc)}"
            self.fovs.choices = []
            self._preview_timer.start()

        worker.returned.connect(done)
        worker.errored.connect(failed)
        self._plate_worker = worker
        self.jobs.start(worker)
        return worker

    def inspect_checkpoint(self):
        """Check the checkpoint in a worker: show the (inferred) config and whether all keys match."""
        path = _path(self.ckpt.value)
        if path is None:
            return None
        self.ckpt_info.value = "checking…"
        encoder = self.yml_config.encoder if self.yml_config is not None else None
        if self._inspect_cancel is not None:  # only the latest check counts
            workers.cancel_job(self._inspect_cancel)
        cancel = self._inspect_cancel = threading.Event()
        worker = thread_worker(workers.inspect_checkpoint, ignore_errors=True)(path, encoder, cancel)

        def done(text):
            if worker is self._inspect_worker and self._alive():
                self.ckpt_info.value = f"✓ {text}"

        def failed(exc):
            if worker is self._inspect_worker and self._alive() and not isinstance(exc, Cancelled):
                self.ckpt_info.value = f"✗ {_message(exc)}"

        worker.returned.connect(done)
        worker.errored.connect(failed)
        self._inspect_worker = worker
        self.jobs.start(worker, cancel)
        return worker

    def build_config(self, require_output: bool = True):
        """The run's config from the fields (on top of a loaded predict.yml), always on one device: a
        :class:`~napari_dynaclr.core.config.PredictConfig`, or for a Bag-of-Channels predict.yml its
        :class:`~napari_dynaclr.core.boc.BocConfig` with the dock's run settings."""
        from napari_dynaclr.core.config import PredictConfig, default_normalizations

        run = self._run_fields(require_output)
        if self.is_boc:  # its samples come from its cell index / collection
            return self.yml_config.with_overrides(**run)
        channels = [c.strip() for c in self.channels.value.split(",") if c.strip()]
        plate, tracks = _path(self.plate.value), _path(self.tracks.value)
        if plate is None or tracks is None:
            raise DynaclrError("choose a plate and a tracks folder")
        if plate == self._fovs_plate:  # the FOV list shows this plate: it is the selection
            all_fovs, chosen = list(self.fovs.choices), list(self.fovs.value or [])
            if not chosen:
                raise DynaclrError("select at least one FOV to predict")
            include_wells, exclude = None, [f for f in all_fovs if f not in chosen] or None
        else:  # the plate is still being read: the predict.yml's selection (or every FOV)
            include_wells, exclude = self._yml_selection(plate)
        norm, base = self.normalization.value, self.yml_config
        if norm == "from predict.yml" and base is not None:
            normalizations = base.normalizations
        elif norm in ("none", "from predict.yml"):
            normalizations = [] if norm == "none" else default_normalizations(channels)
        else:
            normalizations = default_normalizations(channels, norm)
        patch, final = self.patch.value, self.final_patch.value
        if base is None:
            base = PredictConfig.plain(plate, tracks, channels, (self.z_start.value, self.z_stop.value), patch)
        return base.with_overrides(
            data_path=plate, tracks_path=tracks, source_channel=channels,
            z_range=(self.z_start.value, self.z_stop.value),
            initial_yx_patch_size=(patch, patch), final_yx_patch_size=(final, final),
            normalizations=normalizations, exclude_fovs=exclude, include_wells=include_wells, **run,
        )

    def _run_fields(self, require_output: bool) -> dict:
        """How to run, whatever the data: checkpoint, output, batch size, device (one), reductions."""
        from napari_dynaclr.core.reduce import DEFAULT_PCA_KWARGS, DEFAULT_UMAP_KWARGS

        output = _path(self.output.value)
        if output is None and require_output:
            raise DynaclrError("choose an output store path")
        base = self.yml_config
        umap_kwargs = pca_kwargs = None
        if self.umap.value:
            umap_kwargs = base.umap_kwargs if base is not None and base.umap_kwargs else dict(DEFAULT_UMAP_KWARGS)
        if self.pca.value:
            pca_kwargs = base.pca_kwargs if base is not None and base.pca_kwargs else dict(DEFAULT_PCA_KWARGS)
        return {"batch_size": self.batch_size.value, "ckpt_path": _path(self.ckpt.value), "output_path": output,
                "overwrite": self.overwrite.value, "allow_nonfinite": self.allow_nonfinite.value,
                "accelerator": self.device.value, "devices": 1, "num_nodes": 1, "strategy": "auto",
                "umap_kwargs": umap_kwargs, "pca_kwargs": pca_kwargs}

    # ------------------------------------------------------------------ preview

    def _alive(self) -> bool:
        return alive(self)

    def _on_preview_timer(self) -> None:
        # otherwise the plate's layout restarts the timer when it arrives
        if self._plate_worker is None and not self._plate_timer.isActive():
            self.preview_cells()

    def preview_cells(self):
        """Plan the run in a worker (no model): report how many cells it will predict, or what is wrong
        with the inputs, and show them. Only while the viewer holds no embeddings (nothing or a preview);
        returns the worker (or None)."""
        self._preview_timer.stop()
        if self.worker is not None or self.is_boc:  # a run shows its own cells; a BoC yml has no plate fields
            return None
        if self.session.table is not None and not self.session.is_preview:
            # embeddings are shown (and the embedding view may be computing on them): leave them alone
            self.cells_info.value = ""
            return None
        if _path(self.plate.value) is None or _path(self.tracks.value) is None:
            self.cells_info.value = ""
            return None
        try:
            cfg = self.build_config(require_output=False)
        except DynaclrError as exc:
            self.cells_info.value = f"✗ {exc}"
            return None
        token = self._preview_token = object()  # only the latest preview counts
        worker = thread_worker(workers.preview_cells, ignore_errors=True)(cfg, keep_plate=True)

        def done(result):
            table, plate = result
            if token is not self._preview_token or not self._alive():
                plate.close()
                return
            n_fovs = table["fov_name"].nunique()
            self.cells_info.value = f"{len(table)} cells in {n_fovs} FOV{'s' * (n_fovs != 1)} to predict"
            s = self.session
            if self.worker is not None or not (s.table is None or s.is_preview):  # (the user moved on)
                plate.close()
                return
            s.set_table(table, plate=plate, tracks_path=cfg.tracks_path, fov_name=s.fov_name, preview=True)

        def failed(exc):
            if token is self._preview_token and self._alive():
                self.cells_info.value = f"✗ {_message(exc)}"

        worker.returned.connect(done)
        worker.errored.connect(failed)
        self.cells_info.value = "finding the cells…"
        self._preview_worker = worker
        self.jobs.start(worker)
        return worker

    # ------------------------------------------------------------------ run

    def _set_running(self, running: bool) -> None:
        self.run_btn.enabled = not running
        self.open_btn.enabled = not running
        self.cancel_btn.enabled = running

    def _fail(self, msg: str) -> None:
        msg = gui_wording(msg)
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
            check_output_path(cfg.output_path, cfg.overwrite, cfg.input_paths(), OVERWRITE_HINT)
        except DynaclrError as exc:
            self._fail(str(exc))
            return None
        self.last_error = None
        self.last_result = None
        self._preview_timer.stop()
        if self.yml_config is not None and self.yml_config.asks_several_devices():
            show_info("the napari plugin predicts on one device; for several, run "
                      "`napari-dynaclr predict -c predict.yml` on the command line")
        self.cancel_event = threading.Event()
        worker = thread_worker(workers.prediction_job, ignore_errors=True)(cfg, self.device.value, self.cancel_event)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_finished)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_worker_done)
        self._run_cfg = cfg
        self.worker = worker
        self._set_running(True)
        self.status.value = "loading checkpoint and planning…"
        from napari_dynaclr.core.output import clean_after_kill

        self.jobs.start(worker, self.cancel_event, on_stop=lambda out=cfg.output_path: clean_after_kill(out))
        return worker

    def _start_progress(self, n_batches: int, worker) -> None:
        if worker is not None and worker is self.worker and self._pbar is None and self._alive():
            self._pbar = progress(total=n_batches, desc="DynaCLR prediction")

    def cancel(self) -> None:
        """Stop the run (the work process is killed); nothing is written."""
        if self.cancel_event is not None:
            workers.cancel_job(self.cancel_event)
            self.status.value = "cancelling…"

    def _on_event(self, ev) -> None:
        from napari_dynaclr.predict.run import Planned, Stage

        if ev is None or self.worker is None:  # a heartbeat, or a late event of a finished run
            return
        if isinstance(ev, workers.Warned):
            show_warning(gui_wording(ev.message))
        elif isinstance(ev, Planned):
            from napari_dynaclr._napari.explore import cell_table

            self.status.value = f"predicting {len(ev.obs)} cells in {ev.n_batches} batches on {ev.device} (one device)"
            # the progress bar in its own event-loop turn: each GUI-thread slice stays short
            QTimer.singleShot(0, lambda n=ev.n_batches, w=self.worker: self._start_progress(n, w))
            table = cell_table(ev.obs)
            table["preview_0"] = float("nan")
            table["preview_1"] = float("nan")
            cfg = self._run_cfg
            # the previewed cells: keep their layers
            if not self.session.adopt_result(table, plate_path=cfg.data_path, tracks_path=cfg.tracks_path):
                self.session.set_table(table, plate_path=cfg.data_path, tracks_path=cfg.tracks_path,
                                       fov_name=self.session.fov_name)
            self._ensure_embedding_view()
        elif isinstance(ev, workers.Batch):
            self.status.value = f"batch {ev.index + 1}/{ev.n_batches}"
            if self._pbar is not None:
                self._pbar.update(1)
            self.session.update_rows(ev.start, ev.stop, {"preview_0": ev.preview[:, 0], "preview_1": ev.preview[:, 1]})
        elif isinstance(ev, Stage):
            self.status.value = f"{ev.name}…"
            if ev.name == "writing":
                self.cancel_btn.enabled = False
        if self.worker is None:  # the run ended while this event was handled (nested event processing)
            self._set_running(False)

    def _on_finished(self, res: workers.Finished) -> None:
        from napari_dynaclr._napari.explore import cell_table

        self.last_result = res
        cfg = self._run_cfg
        adata = res.adata
        table = cell_table(adata.obs, dict(adata.obsm))
        if not self.session.adopt_result(table, adata=adata, store_path=res.output_path, plate_path=cfg.data_path,
                                         tracks_path=cfg.tracks_path):
            self.session.set_table(table, adata=adata, store_path=res.output_path, plate_path=cfg.data_path,
                                   tracks_path=cfg.tracks_path, fov_name=self.session.fov_name,
                                   color_column=self.session.color_column)
        self.store.value = res.output_path
        show_info(f"wrote {adata.n_obs} cells to {res.output_path} in {res.seconds:.1f} s")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.last_error = None
            show_info("prediction cancelled; nothing was written")
            return
        self._fail(_message(exc))

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

    def open_embeddings(self, path=None, use_fields: bool = True):
        """Load an existing store in a worker, with the plate and tracks of the fields (unless
        *use_fields* is False) or else those the store records; returns the worker, which runs until the
        store is shown.

        A table of up to :data:`~napari_dynaclr._napari.session.ASYNC_CELLS` cells is shown at once
        (``set_table``). A larger one never blocks the GUI thread for long: the worker also builds the frame
        index, colours and the first FOV's napari layers (:func:`~napari_dynaclr._napari.session.prepare_table`),
        and the GUI thread puts them into the viewer one step per event-loop turn
        (:meth:`~napari_dynaclr._napari.session.ExplorerSession.install`), each step started by a single-shot
        timer once the previous one (and the paint it caused) is done. Only the latest
        open counts: an earlier one still reading is discarded, one still showing stops at its next step."""
        from napari_dynaclr._napari.session import ASYNC_CELLS

        path = _path(path) or _path(self.store.value)
        if path is None:
            show_error("choose an 'embedding store' first")
            return None
        if self.worker is not None:
            show_error("a prediction is running: cancel it before opening a store")
            return None
        plate, tracks = (_path(self.plate.value), _path(self.tracks.value)) if use_fields else (None, None)
        self.store.value = path
        self.status.value = f"opening {path.name}…"
        s = self.session
        shown = threading.Event()  # the worker runs until the store is shown (or its result is stale)
        token = self._open_token = object()  # only the latest open counts
        worker = thread_worker(workers.open_store_job, ignore_errors=True)(
            path, plate, tracks, ASYNC_CELLS, s.color_column, s.colormap, shown)
        steps = []
        # each step in its own event-loop turn, after the paint the previous one caused: a timer, not a queued
        # call (Qt delivers posted events, paints included, before it looks at timers and input again)
        turn = QTimer(self)
        turn.setSingleShot(True)
        turn.setInterval(STEP_MS)

        def current() -> bool:
            return token is self._open_token and self._alive()

        def use_fields_of(opened: workers.OpenedStore) -> None:
            if opened.plate_error:
                self._fail(opened.plate_error)  # the cells are shown all the same, without images
            if opened.plate is not None and _path(self.plate.value) is None:  # the store's own plate and tracks
                self.plate.value = opened.plate.path
                if opened.tracks_path is not None and _path(self.tracks.value) is None:
                    self.tracks.value = opened.tracks_path

        def shown_now(opened: workers.OpenedStore) -> None:
            self._ensure_embedding_view()
            self.status.value = f"opened {path.name}: {len(opened.table)} cells"

        def step() -> None:
            """One step of showing a large store, in this event-loop turn; then the next one is scheduled."""
            if not current() or not steps:
                shown.set()
                return
            try:
                next(steps[0])
            except StopIteration:
                shown.set()
                if s.table is steps[1].table:  # (else a newer table took over)
                    shown_now(steps[1])
                return
            except Exception as exc:  # a step failed: say so; the next open or FOV switch rebuilds the layers
                shown.set()
                self._fail(_message(exc))
                return
            turn.start()

        turn.timeout.connect(step)

        def yielded(item) -> None:
            if not isinstance(item, workers.OpenedStore):
                return
            if not current():  # a newer open (or the dock is gone): drop this one
                shown.set()
                if item.plate is not None:
                    item.plate.close()
                return
            use_fields_of(item)
            steps[:] = [s.install(item.prepared, adata=item.adata, store_path=path, plate=item.plate,
                                  tracks_path=item.tracks_path), item]
            step()

        def done(opened: workers.OpenedStore) -> None:
            if opened.prepared is not None:  # shown in steps (or discarded) already
                return
            if not current():
                if opened.plate is not None:
                    opened.plate.close()
                return
            use_fields_of(opened)
            s.set_table(opened.table, adata=opened.adata, store_path=path, plate=opened.plate,
                        tracks_path=opened.tracks_path)
            shown_now(opened)

        def finished() -> None:
            if token is self._open_token and self.worker is None and self._alive():
                self._set_running(False)

        worker.yielded.connect(yielded)
        worker.returned.connect(done)
        worker.errored.connect(lambda exc: self._fail(_message(exc)) if current() else None)
        worker.finished.connect(finished)
        self.open_btn.enabled = False
        self.run_btn.enabled = False
        self._open_worker = worker
        self.jobs.start(worker)
        return worker

    # ------------------------------------------------------------------ FOV switching

    def _refresh_fovs(self) -> None:
        names = self.session.fov_names()
        self._fov_sync = True
        self.show_fov.choices = names
        if self.session.fov_name in names:
            self.show_fov.value = self.session.fov_name
        self._fov_sync = False

    def _on_fov_changed(self, name: str) -> None:
        self._fov_sync = True
        if name in self.show_fov.choices:
            self.show_fov.value = name
        self._fov_sync = False

    def _on_show_fov(self, name) -> None:
        if getattr(self, "_fov_sync", False) or name is None or name == self.session.fov_name:
            return
        self.session.show_fov(name)

    def _ensure_embedding_view(self) -> None:
        """Show the Explore tab, where the cells now are."""
        self.tabs.setCurrentWidget(self.explore)
