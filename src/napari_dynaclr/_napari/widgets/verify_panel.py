"""napari panel "Verify against reference": compare a prediction with a reference embedding store.

Pick the reference store and the prediction (the store behind the cells in the viewer, an embedding
Points layer, or a file), set the contract (defaults = VisCy's: atol 0.02, rtol 1e-2, Pearson r >= 0.999)
and press *Verify*. The comparison (:func:`napari_dynaclr.verify.compare_stores`) runs in a worker thread.
The panel then shows pass/fail and Pearson r per array, log-count histograms of |Δ| for the judged arrays
and a sortable table of the worst cells. Selecting a row moves the viewer to that cell (FOV, time,
position); *Colour cells by |Δ|* colours every cell layer by log10 of the cell's max |Δ|.

No torch import here; the heavy work is numpy/pandas in the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_dynaclr import verify
from napari_dynaclr._napari.plotting import theme_colors
from napari_dynaclr._napari.session import camera, get_session, goto_cell
from napari_dynaclr._napari.widgets._forms import scrolling
from napari_dynaclr._napari.widgets._jobs import DockJobs, thread_job
from napari_dynaclr._napari.widgets.verify_cells import NumItem, WorstCellsTable
from napari_dynaclr._napari.widgets.verify_plots import DeltaHistograms, fmt
from napari_dynaclr.errors import DynaclrError

if TYPE_CHECKING:
    import napari.viewer
    import pandas as pd  # (the panel opens without it: DockJobs.import_packages)

#: Column added to cell tables / Points features by "Colour cells by |Δ|".
COLOR_COLUMN = "verify_log10_max_abs"
PASS_STYLE = "color: white; background: #2e7d32; font-weight: bold; padding: 4px;"
FAIL_STYLE = "color: white; background: #c62828; font-weight: bold; padding: 4px;"
PLAIN_STYLE = "padding: 4px;"
EMPTY_TEXT = ("Nothing verified yet: choose the prediction (the cells in the viewer, a layer or a store) and a "
              "reference store (.zarr, e.g. VisCy's EmbeddingWriter output), then press Verify.")


class _ToleranceSpin(QDoubleSpinBox):
    """A tolerance as the user writes it: ``0.02``, ``0.999``, ``1e-4`` (up to 10 decimals, no trailing
    zeros), with steps that follow the value's magnitude."""

    def __init__(self, value: float, lo: float, hi: float):
        super().__init__()
        self.setDecimals(10)
        self.setRange(lo, hi)
        self.setStepType(QDoubleSpinBox.StepType.AdaptiveDecimalStepType)
        self.setValue(value)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("0.0000001") + 40)

    def textFromValue(self, value: float) -> str:
        return f"{value:.10g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text, pos):
        from qtpy.QtGui import QValidator

        try:
            float(text)
        except ValueError:
            return (QValidator.State.Intermediate, text, pos)
        return (QValidator.State.Acceptable, text, pos)


def _points_layers_with_cells(viewer):
    from napari.layers import Points

    for layer in viewer.layers:
        if isinstance(layer, Points) and all(c in layer.features.columns for c in verify.REQUIRED_KEYS):
            yield layer


class VerifyWidget(QWidget):
    """Dock widget: verify a prediction store against a reference store."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.jobs = DockJobs(self)
        self.report: verify.VerifyReport | None = None
        self.last_error: str | None = None
        self.state = "ready"
        self._worker = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        page = QWidget()
        outer.addWidget(scrolling(page))  # the panel scrolls: it never makes the dock taller than the screen
        layout = QVBoxLayout(page)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # labels above fields in a narrow dock
        layout.addLayout(form)

        # prediction: session / embedding layer / file
        self.prediction_combo = QComboBox()
        self.prediction_combo.currentIndexChanged.connect(self._on_source_changed)
        form.addRow("Prediction", self.prediction_combo)
        self.prediction_edit = QLineEdit()
        self.prediction_edit.setPlaceholderText("prediction store (.zarr)")
        pred_row = QHBoxLayout()
        pred_row.addWidget(self.prediction_edit)
        self.prediction_browse = QPushButton("…")
        self.prediction_browse.clicked.connect(lambda: self._browse(self.prediction_edit))
        pred_row.addWidget(self.prediction_browse)
        form.addRow("", pred_row)

        self.reference_edit = QLineEdit()
        self.reference_edit.setPlaceholderText("reference store (.zarr), e.g. VisCy's EmbeddingWriter output")
        ref_row = QHBoxLayout()
        ref_row.addWidget(self.reference_edit)
        ref_browse = QPushButton("…")
        ref_browse.clicked.connect(lambda: self._browse(self.reference_edit))
        ref_row.addWidget(ref_browse)
        form.addRow("Reference", ref_row)

        # contract
        c = verify.Contract()
        self.atol_spin = _ToleranceSpin(c.atol, 0, 1e6)
        self.rtol_spin = _ToleranceSpin(c.rtol, 0, 1e6)
        self.pearson_spin = _ToleranceSpin(c.min_pearson, -1, 1)
        form.addRow("atol (max |Δ|)", self.atol_spin)
        form.addRow("rtol", self.rtol_spin)
        form.addRow("min Pearson r", self.pearson_spin)
        self.allow_missing_check = QCheckBox("allow missing rows")
        self.judge_reductions_check = QCheckBox("judge PCA/UMAP")
        form.addRow(self.allow_missing_check)  # (a row each: side by side they squeeze at a dock's width)
        form.addRow(self.judge_reductions_check)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Verify")
        self.run_button.clicked.connect(self.run)
        self.color_button = QPushButton("Colour cells by |Δ|")
        self.color_button.setEnabled(False)
        self.color_button.clicked.connect(self.color_cells)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.color_button)
        layout.addLayout(buttons)

        self.verdict_label = QLabel(EMPTY_TEXT)
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setStyleSheet(PLAIN_STYLE)
        self.verdict_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.verdict_label)

        self.arrays_table = QTableWidget(0, 6)
        self.arrays_table.setHorizontalHeaderLabels(["array", "max |Δ|", "mean |Δ|", "Pearson r", "outside",
                                                     "verdict"])
        self.arrays_table.verticalHeader().setVisible(False)
        self.arrays_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.arrays_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.arrays_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(self.arrays_table)

        # the histograms' matplotlib canvas, made once a thread has imported matplotlib (after the panel's first
        # paint: opened alone, the panel imported it on napari's GUI thread, ≈ 1 s) or when first needed
        self._histograms: DeltaHistograms | None = None
        self.plot_slot = QWidget()
        QVBoxLayout(self.plot_slot).setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_slot)

        self.worst_label = QLabel("Worst cells (select a row to go to the cell; click a header to sort)")
        self.worst_label.setWordWrap(True)
        layout.addWidget(self.worst_label)
        self.cells_table = WorstCellsTable()
        self.cells_table.itemSelectionChanged.connect(self._on_cell_selected)
        layout.addWidget(self.cells_table, stretch=1)
        self.goto_label = QLabel("")  # what a chosen cell needs when the viewer does not hold it
        self.goto_label.setWordWrap(True)
        layout.addWidget(self.goto_label)
        self._show_results(False)
        if hasattr(viewer, "events") and hasattr(viewer.events, "theme"):
            viewer.events.theme.connect(self._on_theme)

        self.viewer.layers.events.inserted.connect(self.refresh_sources)
        self.viewer.layers.events.removed.connect(self.refresh_sources)
        get_session(self.viewer).table_changed.connect(self._on_new_cells)
        self.refresh_sources()
        self.jobs.import_packages(self, then=lambda: self.histograms)

    @property
    def histograms(self) -> DeltaHistograms:
        """The |Δ| histograms (made on first use, in napari's theme)."""
        if self._histograms is None:
            self._histograms = DeltaHistograms(theme_colors(getattr(self.viewer, "theme", None)))
            self.plot_slot.layout().addWidget(self._histograms.canvas)
            self._histograms.canvas.setVisible(self.plot_slot.isVisibleTo(self))
        return self._histograms

    figure = property(lambda self: self.histograms.figure)
    canvas = property(lambda self: self.histograms.canvas)

    def _show_results(self, shown: bool) -> None:
        """The result widgets (arrays, histograms, worst cells) only once there is a report: the empty panel
        is its form and what to do."""
        for w in (self.arrays_table, self.plot_slot, self.worst_label, self.cells_table, self.goto_label):
            w.setVisible(shown)
        if self._histograms is not None:
            self._histograms.canvas.setVisible(shown)
            if not shown:
                self._histograms.clear()
        if not shown:
            self.goto_label.setText("")

    def _on_theme(self, event=None) -> None:
        if self._histograms is None:  # (made in the theme of its time)
            return
        try:
            self._histograms.set_theme(theme_colors(self.viewer.theme))
        except RuntimeError:  # the panel's Qt side was deleted (the viewer closed)
            return

    # ------------------------------------------------------------------------------------------ inputs

    def _browse(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose an embedding store (.zarr folder)")
        if path:
            edit.setText(path)

    def refresh_sources(self, event=None) -> None:
        """Fill the prediction choices: the explorer's cells, embedding Points layers, a file."""
        current = self.prediction_combo.currentData()
        self.prediction_combo.blockSignals(True)
        self.prediction_combo.clear()
        sess = get_session(self.viewer)
        if sess.table is not None and (sess.adata is not None or sess.store_path):
            name = Path(sess.store_path).name if sess.store_path else "prediction in memory"
            self.prediction_combo.addItem(f"Cells in the viewer ({name})", "session")
        for layer in self.viewer.layers:
            store = (layer.metadata or {}).get("dynaclr_store")
            if store:
                self.prediction_combo.addItem(f"Layer {layer.name!r} ({Path(store).name})", f"layer:{layer.name}")
        self.prediction_combo.addItem("File…", "file")
        idx = self.prediction_combo.findData(current) if current is not None else -1
        self.prediction_combo.setCurrentIndex(idx if idx >= 0 else 0)
        self.prediction_combo.blockSignals(False)
        self._on_source_changed()

    def _on_new_cells(self) -> None:
        """New cells in the viewer (a run's result, an opened store): offer them as the prediction."""
        try:
            self.refresh_sources()
        except RuntimeError:  # the panel's Qt side was deleted (the viewer closed)
            return
        idx = self.prediction_combo.findData("session")
        if idx >= 0:
            self.prediction_combo.setCurrentIndex(idx)

    def _on_source_changed(self, *_):
        kind = str(self.prediction_combo.currentData() or "file").split(":", 1)[0]
        self.prediction_edit.setEnabled(kind == "file")
        self.prediction_browse.setEnabled(kind == "file")

    def contract(self) -> verify.Contract:
        return verify.Contract(
            atol=self.atol_spin.value(), rtol=self.rtol_spin.value(), min_pearson=self.pearson_spin.value(),
            allow_missing=self.allow_missing_check.isChecked(),
            judge_reductions=self.judge_reductions_check.isChecked(),
        )

    def prediction_source(self):
        """The prediction to compare: an AnnData or a store path. Raises DynaclrError when unset."""
        kind, _, name = str(self.prediction_combo.currentData() or "file").partition(":")
        if kind == "session":
            from napari_dynaclr.core.store import LazyStore

            sess = get_session(self.viewer)
            if sess.adata is not None and not isinstance(sess.adata, LazyStore):  # (a run's result, in memory)
                return sess.adata
            if sess.store_path:  # (an opened store: read from disk by the comparison)
                return Path(sess.store_path)
            raise DynaclrError("the viewer holds no prediction any more; choose a file")
        if kind == "layer":
            if name in self.viewer.layers:
                return Path(self.viewer.layers[name].metadata["dynaclr_store"])
            raise DynaclrError(f"layer {name!r} is gone; choose another prediction")
        text = self.prediction_edit.text().strip()
        if not text:
            raise DynaclrError("choose a prediction store")
        return Path(text)

    # ------------------------------------------------------------------------------------------- run

    def run(self):
        """Start the comparison in a worker; returns the worker (None when the inputs are incomplete)."""
        if self.state == "running":
            return self._worker
        try:
            prediction = self.prediction_source()
            ref_text = self.reference_edit.text().strip()
            if not ref_text:
                raise DynaclrError("choose a reference store")
            contract = self.contract()
        except DynaclrError as exc:
            self._show_error(str(exc))
            return None
        self.last_error = None
        self.state = "running"
        self.run_button.setEnabled(False)
        self.verdict_label.setStyleSheet(PLAIN_STYLE)
        self.verdict_label.setText("Comparing…")
        worker = thread_job(verify.compare_stores)(prediction, Path(ref_text), contract)
        self._worker = worker
        self.jobs.start(worker, returned=self._on_report, errored=self._on_error, finished=self._on_finished)
        return worker

    def _on_finished(self):
        self.state = "ready"
        self.run_button.setEnabled(True)
        self._worker = None

    def _on_error(self, exc: BaseException):
        msg = str(exc) if isinstance(exc, DynaclrError) else f"{type(exc).__name__}: {exc}"
        self._show_error(msg)

    def _show_error(self, msg: str):
        from napari.utils.notifications import show_error

        self.last_error = msg
        self.report = None
        self._show_results(False)
        self.color_button.setEnabled(False)
        self.verdict_label.setStyleSheet(PLAIN_STYLE)
        self.verdict_label.setText(f"Error: {msg}")
        show_error(f"Verify: {msg}")

    # ------------------------------------------------------------------------------------------ show

    def _on_report(self, report: verify.VerifyReport):
        self.report = report
        r = report.rows
        head = "PASS" if report.passed else "FAIL"
        lines = [
            f"{head}: {r.n_common:,} cells aligned; {r.n_only_in_reference:,} only in reference, "
            f"{r.n_only_in_prediction:,} only in prediction; order {'differs' if r.order_differs else 'same'}"
        ]
        lines += [f"• {f}" for f in report.failures]
        lines += [f"note: {n}" for n in report.notes]
        self.verdict_label.setText("\n".join(lines))
        self.verdict_label.setStyleSheet(PASS_STYLE if report.passed else FAIL_STYLE)
        self._show_results(True)
        self._fill_arrays(report)
        self.histograms.show(report)
        self.cells_table.fill(report)
        self.color_button.setEnabled(True)

    def _fill_arrays(self, report):
        t = self.arrays_table
        t.setRowCount(0)
        for a in report.arrays.values():
            i = t.rowCount()
            t.insertRow(i)
            verdict = "reported" if not a.judged else ("PASS" if a.passed else "FAIL")
            t.setItem(i, 0, QTableWidgetItem(a.label))
            t.setItem(i, 1, NumItem(a.max_abs))
            t.setItem(i, 2, NumItem(a.mean_abs))
            t.setItem(i, 3, NumItem(a.pearson, fmt(a.pearson, ".6f")))
            t.setItem(i, 4, NumItem(a.n_elements_outside, f"{a.n_elements_outside:,}"))
            item = QTableWidgetItem(verdict)
            if a.judged:
                item.setForeground(QColor("#66bb6a") if a.passed else QColor("#ef5350"))
            t.setItem(i, 5, item)
        # every compared array visible, without a scroll bar
        height = t.horizontalHeader().height() + 2 * t.frameWidth() + t.horizontalScrollBar().sizeHint().height()
        height += sum(t.rowHeight(i) for i in range(t.rowCount()))
        t.setFixedHeight(height)

    # ------------------------------------------------------------------------------------ navigation

    def selected_cell(self) -> pd.Series | None:
        row = self.cells_table.selected_report_row()
        if row is None or self.report is None:
            return None
        return self.report.cells.loc[row]

    def _on_cell_selected(self):
        cell = self.selected_cell()
        if cell is None:
            return
        if self.go_to_cell(cell):
            self.goto_label.setText("")
            return
        from napari.utils.notifications import show_info

        msg = (f"cell {cell['fov_name']} track {cell['track_id']} t {cell['t']} is not in the viewer: open the "
               "prediction (Predict tab > Open embeddings, or File > Open of its store) to go to it")
        self.goto_label.setText(msg)
        show_info(msg)

    def go_to_cell(self, cell: pd.Series) -> bool:
        """Move the viewer to *cell* (a row of ``report.cells``): its FOV, time and position.

        Uses the explorer's FOV view when it holds the cell; else any Points layer whose features have
        fov_name/track_id/t (the point is selected, the sliders and camera centred on it). Returns True
        when a layer holding the cell was found.
        """
        fov, track, t = str(cell["fov_name"]), cell["track_id"], cell["t"]
        cid = cell["id"] if "id" in cell.index else None
        sess = get_session(self.viewer)
        if sess.table is not None and "y" in cell.index:
            row = verify.find_cell(sess.table, fov, track, t, cid)
            if row is not None:
                goto_cell(self.viewer, fov, int(t), float(cell["y"]), float(cell["x"]))
                return True
        for layer in _points_layers_with_cells(self.viewer):
            row = verify.find_cell(layer.features, fov, track, t, cid)
            if row is None:
                continue
            layer.visible = True
            world = np.asarray(layer.data_to_world(layer.data[row]), dtype=float)
            ndim = self.viewer.dims.ndim
            axes = list(range(ndim - len(world), ndim))
            displayed = set(self.viewer.dims.displayed)
            for axis, value in zip(axes, world):
                if axis not in displayed:
                    self.viewer.dims.set_point(axis, float(value))
            shown = [value for axis, value in zip(axes, world) if axis in displayed]
            if shown:
                camera(self.viewer).center = tuple(shown[-3:])
            self.viewer.layers.selection.active = layer
            layer.selected_data = {int(row)}
            return True
        if "y" in cell.index and self.viewer.dims.ndim >= 3:  # no layer holds it: step t, centre (y, x)
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, float(t))
            camera(self.viewer).center = (float(cell["y"]), float(cell["x"]))
        return False

    def color_cells(self) -> int:
        """Colour the cells of every layer holding them by log10(max |Δ|); returns how many layers."""
        if self.report is None:
            return 0
        done = 0
        sess = get_session(self.viewer)
        own = set()
        if sess.table is not None:
            vals = _log_delta(verify.map_cell_values(self.report, sess.table, "max_abs"))
            sess.add_columns({COLOR_COLUMN: vals})
            sess.color_by(COLOR_COLUMN, "magma")
            own = {id(sess.points_layer), id(getattr(sess, "tracks_layer", None))}
            done += 1
        for layer in _points_layers_with_cells(self.viewer):
            if id(layer) in own or not len(layer.data):
                continue
            vals = _log_delta(verify.map_cell_values(self.report, layer.features, "max_abs"))
            feats = layer.features.copy()
            feats[COLOR_COLUMN] = vals
            layer.features = feats
            layer.face_colormap = "magma"
            layer.face_color = COLOR_COLUMN
            done += 1
        return done


def _log_delta(values: np.ndarray) -> np.ndarray:
    """log10(|Δ|); exact zeros and cells without a match one decade below the smallest non-zero |Δ|."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values)
    ok = np.isfinite(out)
    floor = float(out[ok].min()) - 1.0 if ok.any() else 0.0
    ceil = float(out[ok].max()) if ok.any() else 0.0
    return np.where(ok, out, np.where(np.isposinf(out), ceil, floor)).astype(np.float32)
