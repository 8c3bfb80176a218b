"""The embedding view dock: a linked 2-D scatter of all cells plus reductions, clustering, annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit, PushButton, SpinBox
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_dynaclr._napari import cellmodel, plotting
from napari_dynaclr._napari.marker_channels import ALL_MARKERS, show_marker
from napari_dynaclr._napari.session import get_session
from napari_dynaclr._napari.widgets._forms import Message, form, keep_button_text, scrolling, section, while_alive
from napari_dynaclr._napari.widgets._jobs import DockJobs
from napari_dynaclr._napari.widgets.embedding_actions import EmbeddingActions
from napari_dynaclr._napari.widgets.scatter import DENSITY_MODES, ScatterCanvas
from napari_dynaclr.core.reductions import CLUSTERINGS, available_reductions

if TYPE_CHECKING:
    import napari.viewer

COLORMAPS = ("viridis", "magma", "plasma", "turbo", "twilight", "gray")


class EmbeddingView(EmbeddingActions, QWidget):
    """Scatter of every cell (UMAP by default, else PCA), linked to the viewer's image layers."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(viewer)
        self.viewer = self.session.viewer
        self._scatter: ScatterCanvas | None = None  # made by the property below, on first use or a turn later
        self.x_axis = ComboBox(label="x", choices=[])
        self.y_axis = ComboBox(label="y", choices=[])
        self.color = ComboBox(label="colour by", choices=[])
        self.cmap = ComboBox(label="colormap", choices=COLORMAPS, value="viridis")
        self.mode = ComboBox(label="mouse", choices=ScatterCanvas.MODES, value="pan/zoom")
        self.density = ComboBox(label="density", choices=DENSITY_MODES, value="auto")
        self.marker = ComboBox(label="marker", choices=[ALL_MARKERS], value=ALL_MARKERS,
                               tooltip="Bag-of-Channels stores: each cell has one embedding per marker")
        self.has_markers = False
        self.op = ComboBox(label="selection", choices=("replace", "add", "subtract"), value="replace")
        self.clear_btn = PushButton(text="Clear selection")
        self.status = Message("no cells yet: run a prediction or open embeddings")
        self.reduction = ComboBox(label="reduction", choices=available_reductions(), value="UMAP")
        self.reduce_input = ComboBox(label="on", choices=("features (X)", "projections"), value="features (X)")
        self.reduce_btn = PushButton(text="Compute reduction")
        self.clustering = ComboBox(label="clustering", choices=CLUSTERINGS, value="KMeans")
        self.n_clusters = SpinBox(label="k (KMeans)", value=6, min=1, max=200)
        self.min_size = SpinBox(label="min size (HDBSCAN)", value=10, min=2, max=100000)
        self.cluster_btn = PushButton(text="Cluster")
        self.save_results = CheckBox(text="also save results to the store", value=False)
        self.class_name = LineEdit(label="class", value="class 1")
        self.assign_btn = PushButton(text="Assign selection to class")
        self.csv_path = FileEdit(label="annotations CSV", mode="w", filter="*.csv")
        self.export_btn = PushButton(text="Export CSV")
        self.import_btn = PushButton(text="Import CSV")
        self.save_ann_btn = PushButton(text="Save annotations to store")
        keep_button_text(self.csv_path)
        self.controls = Container(widgets=[  # every control, for whoever wants to walk them
            self.x_axis, self.y_axis, self.color, self.cmap, self.mode, self.density, self.marker, self.op,
            self.clear_btn,
            self.status,
            self.reduction, self.reduce_input, self.reduce_btn, self.clustering, self.n_clusters,
            self.min_size, self.cluster_btn, self.save_results, self.class_name, self.assign_btn,
            self.csv_path, self.export_btn, self.import_btn, self.save_ann_btn,
        ], labels=False)
        # the marker filter's row (shown for Bag-of-Channels tables only), made after `controls`: a widget has
        # one parent, and the row must hold the drop-down itself, not only its label
        self.marker_row = Container(widgets=[self.marker])
        self.marker_row.margins = (0, 0, 0, 0)
        self.marker_row.visible = False
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(form([("x", self.x_axis), ("y", self.y_axis), ("colour by", self.color),
                            ("colormap", self.cmap), ("density", self.density), self.marker_row]))
        lay.addWidget(section("Select", form([("mouse", self.mode), ("selection", self.op), self.clear_btn])))
        self.reduce_box = QCollapsible("Reduce and cluster")
        self.reduce_box.addWidget(form([
            ("reduction", self.reduction), ("on", self.reduce_input), self.reduce_btn,
            ("clustering", self.clustering), ("k (KMeans)", self.n_clusters),
            ("min size (HDBSCAN)", self.min_size), self.cluster_btn, self.save_results,
        ]))
        self.annotate_box = QCollapsible("Annotate")
        self.annotate_box.addWidget(form([
            ("class", self.class_name), self.assign_btn, ("annotations CSV", self.csv_path),
            self.export_btn, self.import_btn, self.save_ann_btn,
        ]))
        lay.addWidget(self.reduce_box)
        lay.addWidget(self.annotate_box)
        lay.addStretch(1)
        self._plot_slot = QWidget()  # where the plot goes once made
        self._plot_slot.setMinimumSize(240, 240)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self._plot_slot, stretch=3)
        layout.addWidget(self.status.native)
        layout.addWidget(scrolling(page), stretch=2)
        self.worker = None
        self.jobs = DockJobs(self)  # ended when the dock is deleted or napari quits
        self.jobs.import_packages(self)  # (opened alone: pandas… in a thread, not as the dock opens)
        self._traj_rows = np.empty(0, dtype=np.int64)
        self._updating = False
        self.preview_cleared = False  # a cancelled run's streamed preview is hidden until new coordinates come
        self.awaiting_embedding = False  # the table has no 2-D embedding (yet): nothing plotted, never pixels
        self.pca_worker = None

        self.x_axis.changed.connect(self._on_axes_chosen)
        self.marker.changed.connect(self._replot)
        # the chosen marker's channel image and cells in the FOV shown (again after a FOV switch)
        self.marker.changed.connect(lambda m: show_marker(self.session, m))
        self.session.fov_changed.connect(self._on_fov)
        self.y_axis.changed.connect(self._on_axes_chosen)
        self.color.changed.connect(self._on_color)
        self.cmap.changed.connect(self._on_color)
        self.mode.changed.connect(lambda v: self.scatter.set_mode(v))
        self.density.changed.connect(lambda v: self.scatter.set_density(v))
        self.clear_btn.clicked.connect(lambda: self.session.select([]))
        self.reduce_btn.clicked.connect(self.compute_reduction)
        self.cluster_btn.clicked.connect(self.compute_clusters)
        self.assign_btn.clicked.connect(self.assign_selection)
        self.export_btn.clicked.connect(self.export_csv)
        self.import_btn.clicked.connect(self.import_csv)
        self.save_ann_btn.clicked.connect(self.save_annotations)
        # the plot is made in the event-loop turn after this view (≈ 0.1 s): the dock that holds it shows sooner
        self._plot_timer = QTimer(self)
        self._plot_timer.setSingleShot(True)
        self._plot_timer.setInterval(0)
        self._plot_timer.timeout.connect(lambda: self.scatter)
        self._plot_timer.start()
        self.viewer.events.theme.connect(self._on_theme)
        s = self.session
        s.table_changed.connect(self._on_table)
        s.rows_changed.connect(self._on_rows)
        s.columns_changed.connect(self._on_columns)
        s.colors_changed.connect(self._on_colors)
        s.selection_changed.connect(self._on_selection)
        s.highlight_changed.connect(self._on_highlight)
        s.frame_changed.connect(self._on_frame)
        if s.table is not None:
            self._on_table()

    # ------------------------------------------------------------------ plotting

    @property
    def scatter(self) -> ScatterCanvas:
        """The plot (a vispy canvas), made on first use or in the event-loop turn after the view."""
        if self._scatter is None:
            self._plot_timer.stop()
            sc = ScatterCanvas(parent=self)
            sc.native.setMinimumSize(240, 240)
            sc.describe = self._describe
            sc.set_mode(self.mode.value)
            sc.density_mode = self.density.value
            sc.set_theme(plotting.theme_colors(self.viewer.theme))
            sc.lasso_finished.connect(self.select_polygon)
            sc.point_clicked.connect(self._on_point_clicked)
            self.layout().replaceWidget(self._plot_slot, sc.native)
            self._plot_slot.deleteLater()
            self._scatter = sc  # (a table shown earlier was plotted by _replot, the first to use the plot)
        return self._scatter

    @while_alive
    def _on_theme(self, event=None) -> None:
        """napari's theme changed (View > theme, the settings): the plot follows."""
        if self._scatter is not None:
            self._scatter.set_theme(plotting.theme_colors(self.viewer.theme))

    def axes(self) -> tuple[str, str]:
        return self.x_axis.value, self.y_axis.value

    def set_axes(self, x: str, y: str) -> None:
        self._updating = True
        self.x_axis.value, self.y_axis.value = x, y
        self._updating = False
        self._replot()

    def xy(self) -> np.ndarray:
        t = self.session.table
        x, y = self.axes()
        if t is None or x is None or y is None:
            return np.empty((0, 2), dtype=np.float32)
        xy = np.column_stack([t[x].to_numpy(dtype=np.float32), t[y].to_numpy(dtype=np.float32)])
        if self.awaiting_embedding or (self.preview_cleared and (x.startswith("preview_")
                                                                 or y.startswith("preview_"))):
            xy[:] = np.nan
        marker = self.marker.value
        if marker not in (None, ALL_MARKERS) and "marker" in t.columns:  # the other markers' rows are hidden
            xy[t["marker"].astype(str).to_numpy() != marker] = np.nan
        return xy

    def _refresh_markers(self) -> None:
        """A Bag-of-Channels table has one row per cell and marker: offer a marker filter."""
        t = self.session.table
        markers = cellmodel.column_values(t["marker"]) if t is not None and "marker" in t.columns else []
        self.marker.choices = [ALL_MARKERS, *markers]
        self.has_markers = len(markers) > 1
        self.marker_row.visible = self.has_markers
        if self.marker.value not in self.marker.choices:
            self.marker.value = ALL_MARKERS

    def _refresh_choices(self) -> None:
        t = self.session.table
        if t is None:
            return
        self._updating = True
        coords = cellmodel.coordinate_columns(t)
        old = self.axes()
        self.x_axis.choices = coords
        self.y_axis.choices = coords
        self.color.choices = [c for c in t.columns if c != "cell_index"]
        if old[0] in coords and old[1] in coords:
            self.x_axis.value, self.y_axis.value = old
        if self.session.color_column in self.color.choices:
            self.color.value = self.session.color_column
        self._updating = False

    def clear_preview(self) -> None:
        """A cancelled run: the preview it streamed (a PCA of its first batches) is no result; the plot
        hides it and says so until new coordinates arrive (another run, a store)."""
        self.preview_cleared = True
        if self.session.table is not None:
            self._replot()

    def _on_axes_chosen(self, *_):
        if not self._updating:  # the user's own axes: plotted, whatever they are
            self.awaiting_embedding = False
        self._replot()

    @while_alive
    def _on_fov(self, _name=None) -> None:
        show_marker(self.session, self.marker.value)

    @while_alive
    def _on_table(self) -> None:
        self.preview_cleared = False
        t = self.session.table
        self._refresh_choices()
        self._updating = True
        x, y = cellmodel.default_axes(t)
        self.awaiting_embedding = not is_embedding_axis(x)
        if self.awaiting_embedding:
            self._start_first_pca()
        self.x_axis.value, self.y_axis.value = x, y
        self._refresh_markers()
        self._updating = False
        self._replot()
        self._marker_colours()

    @while_alive
    def _on_columns(self) -> None:
        self._refresh_choices()
        had = self.has_markers
        self._refresh_markers()
        if self.has_markers and not had:
            self._replot()
            self._marker_colours()

    def _marker_colours(self) -> None:
        if self.has_markers and self.session.color_column in (None, "t"):
            self.color_by("marker")  # one embedding per cell and marker: tell the markers apart first
        self._on_selection()
        self._on_highlight(self.session.highlighted)

    def _replot(self, *_):
        if self._updating or self.session.table is None:
            return
        self.scatter.set_labels(*self.axes())
        self.scatter.set_points(self.xy(), self.session.colors)
        self.scatter.set_key(self._color_key())
        self._on_selection()
        self._on_frame(self.session.fov_name, self.session.current_t)
        self._on_highlight(self.session.highlighted)

    @while_alive
    def _on_rows(self, start: int, stop: int) -> None:
        self.preview_cleared = False
        t = self.session.table
        x, y = self.axes()
        if x not in t.columns or y not in t.columns:
            self._refresh_choices()
            self._on_table()
            return
        self.scatter.set_points(self.xy(), self.session.colors, reset_view=True)
        self._update_status()

    def _on_color(self, *_):
        if self._updating or self.session.table is None or self.color.value is None:
            return
        try:
            self.session.color_by(self.color.value, self.cmap.value)
        except cellmodel.ExploreError as exc:
            show_error(str(exc))

    def color_by(self, column: str) -> None:
        self.color.value = column
        if self.session.color_column != column:
            self.session.color_by(column, self.cmap.value)

    @while_alive
    def _on_colors(self) -> None:
        self._show_color_choice()
        self.scatter.set_colors(self.session.colors, self._color_key())
        self._on_frame(self.session.fov_name, self.session.current_t)

    def _show_color_choice(self) -> None:
        """The colour-by and colormap controls say what the plot draws, whoever changed the colours (this
        view, the classifier, Verify, a script)."""
        s = self.session
        self._updating = True
        try:
            if s.table is not None and s.color_column in s.table.columns:
                if s.color_column not in self.color.choices:
                    self.color.choices = [c for c in s.table.columns if c != "cell_index"]
                self.color.value = s.color_column
            if s.colormap in self.cmap.choices:
                self.cmap.value = s.colormap
        finally:
            self._updating = False

    def _color_key(self) -> dict | None:
        s = self.session
        if s.table is None or s.color_column not in s.table.columns:
            return None
        return plotting.color_key(s.table[s.color_column], s.colormap, colors=s.colors, codes=s.color_codes())

    def _describe(self, row: int) -> str:
        """Hover read-out of a scatter point: FOV, track, t, cluster, class, colour value."""
        s = self.session
        return "" if s.table is None else plotting.describe_row(s.table, row, s.color_column)

    # ------------------------------------------------------------------ selection and linking

    def select_polygon(self, polygon, mode: str | None = None) -> np.ndarray:
        """Select the cells inside *polygon* (data coordinates of the current axes)."""
        mask = cellmodel.points_in_polygon(self.xy(), np.asarray(polygon))
        return self.session.select(np.flatnonzero(mask), mode or self.op.value)

    def select_box(self, corner0, corner1, mode: str | None = None) -> np.ndarray:
        mask = cellmodel.points_in_box(self.xy(), corner0, corner1)
        return self.session.select(np.flatnonzero(mask), mode or self.op.value)

    @while_alive
    def _on_selection(self) -> None:
        self.scatter.show_selected(self.session.selected)
        self._update_status()

    def _update_status(self) -> None:
        t = self.session.table
        if t is None:
            return
        if self.preview_cleared and any(a and a.startswith("preview_") for a in self.axes()):
            self.status.value = "run cancelled: its preview is cleared (run again or open a store)"
            return
        if self.awaiting_embedding:
            self.status.value = (f"{len(t)} cells: computing a PCA of their embeddings (the store has no "
                                 "PCA/UMAP)…" if self.pca_worker is not None else
                                 f"{len(t)} cells, no embeddings yet: run the prediction, or choose x and y")
            return
        n_done = self.scatter.n_plotted
        self.status.value = f"{n_done}/{len(t)} cells plotted, {len(self.session.selected)} selected"

    def _on_point_clicked(self, i: int) -> None:
        if i >= 0:
            self.session.goto_row(i)

    @while_alive
    def _on_highlight(self, row: int) -> None:
        self.scatter.show_highlight(row)
        s = self.session
        if row < 0 or s.table is None:
            self._traj_rows = np.empty(0, dtype=np.int64)
            self.scatter.show_trajectory([])
            return
        fov, tid = str(s.table["fov_name"].iat[row]), int(s.table["track_id"].iat[row])
        branches = cellmodel.track_trajectory(s.table, fov, tid)
        self._traj_rows = np.unique(np.concatenate(branches)) if branches else np.empty(0, dtype=np.int64)
        self.scatter.show_trajectory(branches, self._cursor_rows())

    def _cursor_rows(self) -> np.ndarray:
        if not len(self._traj_rows):
            return self._traj_rows
        t = self.session.table["t"].to_numpy()[self._traj_rows]
        return self._traj_rows[t == self.session.current_t]

    @while_alive
    def _on_frame(self, fov, t) -> None:
        s = self.session
        if s.frames is None or fov is None:
            return
        self.scatter.show_now(s.frames.rows(fov, t))
        if len(self._traj_rows):
            self.scatter.show_cursor(self._cursor_rows())


def is_embedding_axis(column: str) -> bool:
    """A column of a 2-D embedding (a reduction or a run's streamed preview), not a pixel position."""
    return any(column.startswith(p + "_") for p in ("UMAP", "PHATE", "PCA", "preview"))
