"""The Cells tab: what is this region of the embedding? A gallery of the selected cells as the model saw them,
a clicked cell's nearest neighbours, a live linear classifier from the annotations, temporal smoothness.

A click never changes the selection: a clicked cell's nearest neighbours are a highlight of their own (the
session's ``neighbours``: white rings in the image, the gallery shows them); *Select these neighbours* makes them
the selection, and *Undo selection* restores the selection before the last change. Every job starts through
:meth:`~napari_dynaclr._napari.widgets._jobs.DockJobs.start` with ``latest=`` its name: a newer gallery,
neighbours, classifier or smoothness request cancels the older one, whose result is never shown.

The heavy work runs in the plugin's work process (:mod:`napari_dynaclr.predict.gallery` cuts the patches with
the run's own plan, reader and normalisation; :mod:`napari_dynaclr.evaluate` does the rest, as VisCy
defines it); the results come back as ``features`` columns of the session's table (``predicted_<task>``,
``predicted_<task>_proba``, ``smoothness``), so the image layers and the scatter can be coloured by them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtGui import QIcon, QPixmap
from qtpy.QtWidgets import QListView, QListWidget, QListWidgetItem, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_dynaclr._napari import cellmodel, workers
from napari_dynaclr._napari.cellmodel import UNASSIGNED
from napari_dynaclr._napari.classifier_report import classifier_summary
from napari_dynaclr._napari.session import get_session
from napari_dynaclr._napari.tiles import composite
from napari_dynaclr._napari.widgets._forms import Message, alive, form, scrolling, while_alive
from napari_dynaclr._napari.widgets._jobs import DockJobs, thread_job
from napari_dynaclr._napari.widgets.cells_gallery import GALLERY_SIZE, gallery_cells, qimage
from napari_dynaclr.errors import Cancelled, DynaclrError

if TYPE_CHECKING:
    import napari.viewer

TILE_PX = 80
DEFAULT_COLORS = ((1.0, 1.0, 1.0), (1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0))


class CellsView(QWidget):
    """Gallery, neighbours, classifier and smoothness for the session's cells (see the module)."""

    def __init__(self, viewer: napari.viewer.Viewer, config: Callable | None = None, parent=None):
        super().__init__(parent)
        self.session = get_session(viewer)
        self.viewer = self.session.viewer
        self._config = config  # () -> PredictConfig of the Predict tab (the gallery cuts patches with it)
        self.jobs = DockJobs(self)
        self._token = None  # the session table the work process holds as its matrix
        self._skip_neighbours = False
        self.tile_rows: list[int] = []  # the cell-table row of each gallery tile, in tile order
        self.classifier: dict | None = None
        self.smoothness: dict | None = None

        # gallery
        self.projection = ComboBox(label="z", choices=("middle slice", "max projection"), value="middle slice",
                                   tooltip="how a 3-D patch is shown (the model sees the whole z window)")
        self.follow_selection = CheckBox(text="follow the selection", value=True)
        self.gallery_btn = PushButton(text="Show the selection")
        self.pick_column = ComboBox(label="select by", choices=["cluster"], value="cluster",
                                    tooltip="select every cell whose column has the value (a cluster, a class…)")
        self.pick_value = ComboBox(label="value", choices=[])
        self.pick_btn = PushButton(text="Select these cells")
        self.track_btn = PushButton(text="Select the highlighted cell's track")
        self.undo_btn = PushButton(text="Undo selection", enabled=False,
                                   tooltip="restore the selection before the last change")
        self.gallery_info = Message("select cells in the scatter (lasso/box), or click a cell for its neighbours")
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListView.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(TILE_PX, TILE_PX))
        self.gallery.setResizeMode(QListView.ResizeMode.Adjust)
        self.gallery.setMovement(QListView.Movement.Static)
        self.gallery.setUniformItemSizes(True)
        self.gallery.setWordWrap(True)
        self.gallery.setGridSize(QSize(TILE_PX + 14, TILE_PX + 36))
        self.gallery.setMinimumHeight(2 * TILE_PX + 40)
        self.gallery.itemClicked.connect(self._on_tile)
        # neighbours
        self.k = SpinBox(label="k", value=10, min=1, max=500)
        self.metric = ComboBox(label="metric", choices=("cosine", "euclidean"), value="cosine")
        self.follow_clicks = CheckBox(text="neighbours of each clicked cell", value=True,
                                      tooltip="shown as white rings and in the gallery; the selection stays")
        self.neighbours_btn = PushButton(text="Neighbours of the highlighted cell")
        self.select_neighbours_btn = PushButton(text="Select these neighbours", enabled=False)
        self.neighbours_info = Message("")
        # classifier
        self.task = ComboBox(label="labels", choices=["annotation"], value="annotation",
                             tooltip="the categorical column whose classes train the classifier")
        self.live = CheckBox(text="retrain after each change", value=True)
        self.train_btn = PushButton(text="Train classifier")
        self.save_pred_btn = PushButton(text="Save predictions to the store", enabled=False)
        self.classifier_info = Message("assign cells to two or more classes (Explore > Annotate)")
        self.classifier_warning = Message("")
        self.classifier_warning.visible = False
        # smoothness
        self.smooth_metric = ComboBox(label="metric", choices=("cosine", "euclidean"), value="cosine")
        self.order = ComboBox(label="order", choices=("time", "stored"), value="time",
                              tooltip="time: a track's rows sorted by t; stored: VisCy's order (the store's rows)")
        self.group_by = ComboBox(label="per group", choices=["(none)"], value="(none)")
        self.smooth_btn = PushButton(text="Compute smoothness")
        self.smooth_info = Message("")
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 1.8), tight_layout=True)
        self.plot = FigureCanvasQTAgg(self.figure)
        self.plot.setMinimumHeight(150)
        self.plot.setVisible(False)

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(form([("select by", self.pick_column), ("value", self.pick_value), self.pick_btn,
                            self.track_btn, self.undo_btn, ("z", self.projection), self.follow_selection,
                            self.gallery_btn, self.gallery_info]))
        lay.addWidget(self.gallery, stretch=1)
        self.neighbours_box = QCollapsible("Nearest neighbours")
        self.neighbours_box.addWidget(form([("k", self.k), ("metric", self.metric), self.follow_clicks,
                                            self.neighbours_btn, self.neighbours_info, self.select_neighbours_btn]))
        self.classifier_box = QCollapsible("Classifier (from annotations)")
        self.classifier_box.addWidget(form([("labels", self.task), self.live, self.train_btn, self.classifier_info,
                                            self.classifier_warning, self.save_pred_btn]))
        self.smooth_box = QCollapsible("Temporal smoothness")
        smooth = form([("metric", self.smooth_metric), ("order", self.order), ("per group", self.group_by),
                       self.smooth_btn, self.smooth_info])
        smooth.layout().addRow(self.plot)
        self.smooth_box.addWidget(smooth)
        for box in (self.neighbours_box, self.classifier_box, self.smooth_box):
            lay.addWidget(box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(scrolling(page))

        self._gallery_timer = QTimer(self)
        self._gallery_timer.setSingleShot(True)
        self._gallery_timer.setInterval(300)
        self._gallery_timer.timeout.connect(lambda: self.show_gallery())
        self._train_timer = QTimer(self)
        self._train_timer.setSingleShot(True)
        self._train_timer.setInterval(300)
        self._train_timer.timeout.connect(lambda: self.train())
        self.gallery_btn.clicked.connect(lambda: self.show_gallery())
        self.pick_column.changed.connect(lambda _: self._refresh_values())
        self.pick_btn.clicked.connect(lambda: self.select_where())
        self.track_btn.clicked.connect(lambda: self.select_track())
        self.undo_btn.clicked.connect(lambda: self.session.undo_selection())
        self.select_neighbours_btn.clicked.connect(lambda: self.session.select_neighbours())
        self.neighbours_btn.clicked.connect(lambda: self.neighbours())
        self.train_btn.clicked.connect(lambda: self.train())
        self.save_pred_btn.clicked.connect(lambda: self.save_predictions())
        self.smooth_btn.clicked.connect(lambda: self.compute_smoothness())
        s = self.session
        s.selection_changed.connect(self._on_selection)
        s.highlight_changed.connect(self._on_highlight)
        s.neighbours_changed.connect(self._on_neighbours)
        s.table_changed.connect(self._on_table)
        s.columns_changed.connect(self._on_columns)
        self._annotation_state = None
        if s.table is not None:
            self._on_table()

    # ------------------------------------------------------------------ plumbing

    def _matrix(self):
        """The embeddings: an array, or a store's ``X`` that the job reads in its thread (``np.asarray``)."""
        adata = self.session.adata
        if adata is None:
            raise DynaclrError("no embeddings yet: run a prediction or open a store first")
        return adata.X

    def _start(self, name: str, job, args, on_done, on_error):
        """Run *job* in a worker, the newest of its *name* (an older one is cancelled, its result dropped:
        ``DockJobs.start(latest=name)``). Returns the worker."""
        cancel = threading.Event()
        worker = thread_job(job)(*args, cancel=cancel)

        def failed(exc):
            if not isinstance(exc, Cancelled):
                on_error(str(exc) if isinstance(exc, DynaclrError) else f"{type(exc).__name__}: {exc}")

        return self.jobs.start(worker, cancel, latest=name, returned=on_done, errored=failed)

    def worker(self, name: str):
        """The running worker of *name* (gallery, neighbours, classifier, smoothness), or None."""
        return self.jobs.latest(name)

    @while_alive
    def _on_table(self) -> None:
        self._token = uuid.uuid4().hex  # a new table: a new matrix for the work process
        self.tile_rows = []
        self.gallery.clear()
        self.classifier = self.smoothness = None
        self._annotation_state = None
        self.select_neighbours_btn.enabled = False
        self.undo_btn.enabled = False
        self.classifier_warning.visible = False
        self._on_columns()

    @while_alive
    def _on_columns(self) -> None:
        t = self.session.table
        if t is None:
            return
        pickable = [c for c in t.columns if (isinstance(t[c].dtype, pd.CategoricalDtype) or t[c].dtype == object)
                    and c != "selection"]
        if list(self.pick_column.choices) != pickable:
            self.pick_column.choices = pickable or ["cluster"]
        self._refresh_values()
        cats = [c for c in t.columns if isinstance(t[c].dtype, pd.CategoricalDtype)
                and c not in ("selection", "cluster") and not c.startswith("predicted_")]
        self.task.choices = cats or ["annotation"]
        groups = ["(none)"] + [c for c in t.columns if (isinstance(t[c].dtype, pd.CategoricalDtype)
                                                         or t[c].dtype == object) and c not in ("selection",)]
        self.group_by.choices = groups
        state = self._labels_state()
        if self.live.value and state is not None and state != self._annotation_state:
            self._annotation_state = state
            self._train_timer.start()

    # ------------------------------------------------------------------ gallery

    @while_alive
    def _on_selection(self) -> None:
        self.undo_btn.enabled = self.session.can_undo_selection
        if self.follow_selection.value:
            self._gallery_timer.start()

    def show_gallery(self, rows=None, what: str = "selected cells"):
        """Tiles of the selected cells (or *rows*, described as *what*) as the model received them: at most 64,
        chosen to cover them, nearest their centre first. Returns the worker (None when there is nothing to
        show)."""
        s = self.session
        self._gallery_timer.stop()  # a pending follow-the-selection request is older than this one
        rows = np.asarray(s.selected if rows is None else rows, dtype=np.int64)
        if s.table is None or not len(rows):
            self.gallery.clear()
            self.tile_rows = []
            self.gallery_info.value = f"no {what}"
            return None
        if self._config is None:
            self.gallery_info.value = "✗ the gallery cuts patches with the DynaCLR dock's Predict settings"
            return None
        try:
            cfg = self._config()
            X = self._matrix()
        except DynaclrError as exc:
            self.gallery_info.value = f"✗ {exc} (the gallery cuts patches with the Predict tab's settings)"
            return None
        keys = s.table[workers.gallery_keys(s.table)].iloc[rows].assign(row=rows).reset_index(drop=True)
        self.gallery_info.value = f"cutting the patches of {min(len(rows), GALLERY_SIZE)} cells…"
        return self._start("gallery", gallery_cells, (cfg, self._token, X, keys, self.projection.value),
                           lambda result: self._show_tiles(result, what),
                           lambda msg: setattr(self.gallery_info, "value", f"✗ {msg}"))

    def _colors(self, n_channels: int) -> list:
        layers = self.session.image_layers
        if len(layers) == n_channels:
            try:
                return [tuple(layer.colormap.map(np.array([1.0]))[0][:3]) for layer in layers]
            except Exception:  # noqa: BLE001 - a layer without a usable colormap: the defaults
                pass
        return list(DEFAULT_COLORS)

    def _show_tiles(self, result, what: str) -> None:
        rows, n_selected, index, patches = result
        tiles = composite(patches, self._colors(patches.shape[1]))
        self.gallery.clear()
        for row, (_, cell), rgb in zip(rows, index.iterrows(), tiles, strict=True):
            item = QListWidgetItem(QIcon(QPixmap.fromImage(qimage(rgb))),
                                   f"{cell['fov_name']}\ntr {int(cell['track_id'])} t {int(cell['t'])}")
            item.setData(Qt.ItemDataRole.UserRole, int(row))
            item.setToolTip(f"FOV {cell['fov_name']}, track {int(cell['track_id'])}, t {int(cell['t'])}: "
                            "click to go to the cell")
            self.gallery.addItem(item)
        self.tile_rows = [int(r) for r in rows]
        sample = "all" if len(rows) == n_selected else f"{len(rows)} representative of"
        self.gallery_info.value = (f"{sample} {n_selected} {what}, nearest their centre first "
                                   "(normalised as the model received them)")

    def _refresh_values(self) -> None:
        t, col = self.session.table, self.pick_column.value
        values = [] if t is None or col not in t.columns else cellmodel.column_values(t[col])
        if list(self.pick_value.choices) != values:
            self.pick_value.choices = values

    def select_where(self, column: str | None = None, value: str | None = None) -> int:
        """Select every cell whose *column* is *value* (a cluster, an annotation class, a marker…); the gallery
        follows. Returns how many."""
        t = self.session.table
        column = column or self.pick_column.value
        value = self.pick_value.value if value is None else value
        if t is None or column not in t.columns or value is None:
            return 0
        rows = np.flatnonzero(t[column].astype(str).to_numpy() == str(value))
        self.session.select(rows)
        return len(rows)

    def select_track(self) -> int:
        """Select every timepoint of the highlighted cell's track (its lineage too); the gallery follows."""
        s = self.session
        if s.table is None or s.highlighted is None or s.highlighted < 0:
            self.gallery_info.value = "click a cell in the image or the scatter first"
            return 0
        cell = s.table.iloc[s.highlighted]
        branches = cellmodel.track_trajectory(s.table, str(cell["fov_name"]), int(cell["track_id"]))
        rows = np.unique(np.concatenate(branches)) if branches else np.array([s.highlighted])
        s.select(rows)
        return len(rows)

    def _on_tile(self, item) -> None:
        row = item.data(Qt.ItemDataRole.UserRole)
        if row is None:
            return
        self._skip_neighbours = True  # going to a tile's cell must not replace the selection shown
        try:
            self.session.goto_row(int(row))
        finally:
            self._skip_neighbours = False

    # ------------------------------------------------------------------ neighbours

    @while_alive
    def _on_highlight(self, row: int) -> None:
        if row >= 0 and self.follow_clicks.value and not self._skip_neighbours and self.session.adata is not None:
            self.neighbours(row)

    @while_alive
    def _on_neighbours(self) -> None:
        self.select_neighbours_btn.enabled = len(self.session.neighbours) > 0

    def neighbours(self, row: int | None = None):
        """Find the k nearest cells of the highlighted cell (or *row*) in feature space, over every FOV and
        timepoint: the session's neighbours (rings in the image), shown in the gallery; the selection stays
        (*Select these neighbours* selects them). Returns the worker."""
        s = self.session
        row = s.highlighted if row is None else int(row)
        if s.table is None or row is None or row < 0:
            self.neighbours_info.value = "click a cell in the image or the scatter first"
            return None
        try:
            X = self._matrix()
        except DynaclrError as exc:
            self.neighbours_info.value = f"✗ {exc}"
            return None
        metric, k = self.metric.value, self.k.value

        def done(result):
            rows, dist = result
            self.session.set_neighbours(row, rows)
            cell = self.session.table.iloc[row]
            far = f"; farthest at {dist[-1]:.3g}" if len(dist) else ""
            self.neighbours_info.value = (f"{len(rows)} nearest of {cell['fov_name']} track {int(cell['track_id'])} "
                                          f"t {int(cell['t'])} ({metric}{far}): white rings; the selection stays")
            self.show_gallery(np.concatenate([[row], rows]), what="cells: a clicked cell and its neighbours")

        self.neighbours_info.value = "searching…"
        return self._start("neighbours", workers.neighbours_job, (self._token, X, metric, row, k), done,
                           lambda msg: setattr(self.neighbours_info, "value", f"✗ {msg}"))

    # ------------------------------------------------------------------ classifier

    def _labels(self) -> tuple[str, np.ndarray] | None:
        t = self.session.table
        task = self.task.value
        if t is None or task not in t.columns:
            return None
        values = t[task].astype(object).to_numpy()
        values = np.where(pd.isna(values) | (values == UNASSIGNED), None, values)
        return task, values

    def _labels_state(self):
        t, task = self.session.table, self.task.value
        if t is None or task not in t.columns:
            return None
        return task, cellmodel.column_fingerprint(t[task])

    def train(self):
        """Train VisCy's linear classifier on the labelled cells (a cell and a track split) in the work process
        and put its prediction for every cell into the table. Returns the worker."""
        t, task = self.session.table, self.task.value
        if t is None or task not in t.columns:
            self.classifier_info.value = "no labels: assign cells to classes in Explore > Annotate"
            return None
        classes = cellmodel.label_classes(t[task], UNASSIGNED)  # (no string per cell: a new table asks this too)
        if len(classes) < 2:
            self.classifier_info.value = f"label cells of two or more classes in '{task}' (now: {len(classes)})"
            return None
        task, labels = self._labels()
        try:
            X = self._matrix()
        except DynaclrError as exc:
            self.classifier_info.value = f"✗ {exc}"
            return None
        from napari_dynaclr.evaluate import track_groups

        groups = track_groups(self.session.table)
        self.classifier_info.value = f"training on {sum(v is not None for v in labels)} labelled cells…"
        return self._start("classifier", workers.classify_job, (self._token, X, labels, groups, task),
                           lambda result: self._show_classifier(task, result),
                           lambda msg: setattr(self.classifier_info, "value", f"✗ {msg}"))

    def _show_classifier(self, task: str, result: dict) -> None:
        self.classifier = {**result, "task": task}
        proba = np.asarray(result["proba"], dtype=np.float64)
        predicted = pd.Categorical(pd.Series(result["predicted"]).astype(object).where(
            pd.notna(pd.Series(result["predicted"])), UNASSIGNED).astype(str))
        best = np.nanmax(np.where(np.isfinite(proba), proba, -np.inf), axis=1) if proba.size else proba
        s, column = self.session, f"predicted_{task}"
        s.add_columns({column: predicted, f"predicted_{task}_proba": np.where(np.isfinite(best), best, np.nan)})
        # coloured by it in a turn of its own (the layers, the plot and its key are redrawn), after the new columns'
        table = s.table
        QTimer.singleShot(1, lambda: alive(self) and s.table is table and column in table and s.color_by(column))
        text, warning = classifier_summary(task, result)
        self.classifier_info.value = text
        self.classifier_warning.value = warning or ""
        self.classifier_warning.visible = warning is not None
        self.save_pred_btn.enabled = self.session.store_path is not None

    def save_predictions(self):
        """Write ``obs["predicted_<task>"]``, ``obsm["predicted_<task>_proba"]`` and
        ``uns["predicted_<task>_classes"]`` into the session's store (replaced atomically). Returns the worker."""
        s = self.session
        if self.classifier is None or s.adata is None or s.store_path is None:
            show_error("train a classifier on a store first")
            return None
        from napari_dynaclr.evaluate import store_predictions

        adata, path, result, task = s.adata, s.store_path, self.classifier, self.classifier["task"]
        inputs = s.input_paths(with_store=False)

        def write():
            from napari_dynaclr.core.store import as_anndata, write_store

            whole = as_anndata(adata)  # (an opened store is read now, in this worker)
            # the work process's prediction of every cell (napari's process holds no model, nor scikit-learn)
            store_predictions(whole, result["predicted"], result["proba"], result["classes"], task)
            return write_store(whole, path, overwrite=True, inputs=inputs)

        return self.jobs.start(thread_job(write)(), returned=lambda p: show_info(f"wrote predicted_{task} into {p}"),
                               errored=lambda exc: show_error(str(exc)))

    # ------------------------------------------------------------------ smoothness

    def compute_smoothness(self):
        """VisCy's temporal smoothness of the embeddings (and per group) in the work process: the two distance
        distributions plotted, the statistics shown, a per-track ``smoothness`` column. Returns the worker."""
        s = self.session
        try:
            X = self._matrix()
        except DynaclrError as exc:
            self.smooth_info.value = f"✗ {exc}"
            return None
        obs = s.adata.obs.copy()
        group = None if self.group_by.value in (None, "(none)") else self.group_by.value
        if group is not None and group not in obs.columns:
            obs[group] = s.table[group].astype(str).to_numpy()
        self.smooth_info.value = "computing…"
        return self._start("smoothness", workers.smoothness_job,
                           (self._token, X, obs, self.smooth_metric.value, self.order.value, group),
                           self._show_smoothness, lambda msg: setattr(self.smooth_info, "value", f"✗ {msg}"))

    def _show_smoothness(self, result: dict) -> None:
        self.smoothness = result
        st = result["stats"]
        text = (f"smoothness score {st['smoothness_score']:.3f} (adjacent {st['adjacent_frame_mean']:.3g} / random "
                f"{st['random_frame_mean']:.3g}; lower is smoother), dynamic range {st['dynamic_range']:.3g}; "
                "column 'smoothness' = each track's score")
        for name, g in result["groups"].items():
            text += f"\n{name}: {g['smoothness_score']:.3f}"
        self.smooth_info.value = text
        self.session.add_columns({"smoothness": np.asarray(result["per_row"], dtype=np.float32)})
        self.figure.clf()
        ax = self.figure.add_subplot(111)
        bins = np.histogram_bin_edges(np.concatenate([result["adjacent"], result["random"]]), bins=40)
        ax.hist(result["random"], bins=bins, alpha=0.6, color="#888888", label="random pairs", density=True)
        ax.hist(result["adjacent"], bins=bins, alpha=0.7, color="#3b8bd6", label="adjacent frames", density=True)
        ax.set_xlabel(f"{self.smooth_metric.value} distance (z-scored features)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        self.plot.setVisible(True)
        self.plot.draw_idle()

