"""The explorer session of one napari viewer: the cell table, the shown FOV's layers, and the links.

Both docks (the main widget and the embedding view) share one :class:`ExplorerSession` per viewer
(:func:`get_session`). It owns the image/Tracks/Points layers of the shown FOV and keeps them in step
with the cell table; it emits psygnal signals the scatter listens to. No Qt here — only napari layers,
all touched on the GUI thread.

Helpers other widgets may reuse (e.g. the verify panel):

- :func:`goto_cell(viewer, fov_name, t, y, x) <goto_cell>` — show that FOV, step to *t*, centre on (y, x).
- :func:`color_cells_by(viewer, column, colormap) <color_cells_by>` — colour layers and scatter by a
  cell-table column (categorical → cycle, continuous → colormap).

**Large tables open in steps.** :meth:`ExplorerSession.set_table` does everything at once on the GUI thread
(fine up to :data:`ASYNC_CELLS` cells). Above that, opening a store takes seconds of work that must not block
the GUI: :func:`prepare_table` (Qt-free, for a worker thread) builds the frame index, the colours, the shown
FOV's overlay and its napari layer *objects* (layers are models: building one touches no viewer), and
:meth:`ExplorerSession.install` puts them into the viewer one step per event-loop turn (each step one layer,
the highlight, Points and Tracks layers first hidden, then shown in their own turns, so that no turn both
inserts a layer and draws it for the first time). A newer ``set_table``/``show_fov``/``install`` makes a
running install stale (a generation counter): it stops at its next step, and the newer call takes over the
session's layers.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from psygnal import Signal

from napari_dynaclr._napari import cellmodel, layers
from napari_dynaclr._napari.cellmodel.colors import SELECTED_BORDER

PLAIN_BORDER = np.array([1.0, 1.0, 1.0, 0.0], dtype=np.float32)
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: tables with more cells than this open through :func:`prepare_table` (a worker) + :meth:`ExplorerSession.install`
#: (GUI steps); smaller ones through :meth:`ExplorerSession.set_table` at once (≈ 0.1–0.3 s at 20,000 cells)
ASYNC_CELLS = 20_000
#: napari layers are made by one worker at a time: two opens preparing at once made them concurrently, and
#: napari's first use of its unit registry (and dask's graph of one plate read twice) is not thread-safe
_MAKING_LAYERS = threading.Lock()


@dataclasses.dataclass
class PreparedTable:
    """A cell table with what showing it needs, built off the GUI thread by :func:`prepare_table`."""

    table: pd.DataFrame
    frames: cellmodel.FrameIndex
    fov_names: list[str]
    color_column: str
    colormap: str
    colors: np.ndarray
    fov_name: str | None = None  # the FOV the layers show (None: no cells)
    overlay: layers.FovOverlay | None = None
    image_layers: list = dataclasses.field(default_factory=list)
    tracks_layer: object = None  # napari layers, not in any viewer; Tracks and Points hidden
    points_layer: object = None
    highlight_layer: object = None


class ExplorerSession:
    """Cell table + shown FOV + selection/highlight state for one viewer."""

    table_changed = Signal()  # a new table: rebuild views
    rows_changed = Signal(int, int)  # rows [start, stop) got coordinates (streaming)
    columns_changed = Signal()  # columns were added (reductions, clusters)
    colors_changed = Signal()
    selection_changed = Signal()
    highlight_changed = Signal(int)  # cell-table row, −1 for none
    frame_changed = Signal(str, int)  # shown FOV, current t
    fov_changed = Signal(str)

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self.table: pd.DataFrame | None = None
        self.frames: cellmodel.FrameIndex | None = None
        self.adata = None
        self.store_path: Path | None = None
        self.plate_path: Path | None = None
        self.tracks_path: Path | None = None
        self.plate = None
        self.fov_name: str | None = None
        self.overlay: layers.FovOverlay | None = None
        self.image_layers: list = []
        self.points_layer = None
        self.tracks_layer = None
        self.highlight_layer = None
        self.color_column = "t"
        self.colormap = "viridis"
        self.colors: np.ndarray | None = None
        self.selected = np.empty(0, dtype=np.int64)
        self.highlighted = -1
        self.current_t = 0
        self.is_preview = False  # the table holds the cells a run would predict, no embeddings yet
        self.click_radius_px = 20.0
        self._syncing = False
        self._generation = 0  # bumped by set_table, show_fov and install: a running install is then stale
        self._fov_names: tuple = (None, [])  # (table, its FOV names)
        self._leaving: list = []  # layers of the previous table an install has still to remove
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.mouse_drag_callbacks.append(self._on_mouse_drag)

    @property
    def viewer(self):
        return self._viewer()

    def input_paths(self, with_store: bool = True) -> dict[str, Path | None]:
        """What the session reads (the dock's saves and exports never write into these): its plate and tracks
        folders, and with *with_store* its embedding store."""
        paths = {"plate": self.plate_path, "tracks": self.tracks_path}
        if with_store:
            paths["store"] = self.store_path
        return paths

    @property
    def n_cells(self) -> int:
        return 0 if self.table is None else len(self.table)

    # ------------------------------------------------------------------ data

    def set_table(self, table: pd.DataFrame, adata=None, store_path=None, plate_path=None,
                  tracks_path=None, fov_name: str | None = None, color_column: str | None = None,
                  preview: bool = False, plate=None) -> None:
        """Show a new cell table (and, with a plate, the images of *fov_name* or the first FOV).

        *plate*: the plate already open (a :class:`~napari_dynaclr.core.plate.Plate` opened in a worker; the
        session closes it), instead of opening *plate_path* here — seconds for a 96-well plate.
        ``preview=True``: the cells a run would predict, before it starts; a run whose plan holds the
        same cells then keeps these layers (:meth:`adopt_result`) instead of building new ones.
        All on the GUI thread at once: for tables above :data:`ASYNC_CELLS` cells, see :meth:`install`."""
        self._generation += 1
        self._set_state(table, adata, store_path, plate_path, tracks_path, preview, plate)
        col = color_column or (self.color_column if self.color_column in table.columns else "t")
        self.color_column = col
        self.colors = cellmodel.column_colors(table[col], self.colormap)
        self.table_changed.emit()
        fovs = self.fov_names()
        if fovs:
            self.show_fov(fov_name if fov_name in fovs else fovs[0])
        else:
            self._remove_layers()

    def _set_state(self, table, adata, store_path, plate_path, tracks_path, preview, plate, frames=None) -> None:
        self._close_plate()
        self.overlay = None  # the layers stay until show_fov (it refills them when they fit)
        self.is_preview = preview
        self.table = table
        self.frames = frames if frames is not None else cellmodel.FrameIndex(table)
        self.adata = adata
        self.store_path = Path(store_path) if store_path else None
        if plate is not None:
            plate_path = plate.path
        self.plate_path = Path(plate_path) if plate_path else None
        self.tracks_path = Path(tracks_path) if tracks_path else None
        self.selected = np.flatnonzero(np.asarray(table["selection"].cat.codes) == 1)
        self.highlighted = -1
        if plate is not None:
            self.plate = plate
        elif self.plate_path is not None:
            from napari_dynaclr.core.plate import Plate

            self.plate = Plate(self.plate_path)

    def install(self, prepared: PreparedTable, adata=None, store_path=None, plate=None,
                tracks_path=None) -> Iterator[None]:
        """Show a table prepared by :func:`prepare_table` (what :meth:`set_table` does), one short GUI-thread
        step per ``next()``: the caller runs each step in its own event-loop turn.

        Step 1 makes the table and the prepared layers the session's (the views rebuild; the layers are not
        yet in the viewer, but colouring, selecting or adding columns already reaches them); then the
        previous layers leave the viewer (together, in one step); then each new layer is added, hidden but
        the images; then the highlight, Points and Tracks layers are shown, each in its own step; then the
        selection and highlight are applied (and the Points layer made the active one); the last step
        announces the FOV and the current frame. A newer ``set_table``, ``show_fov`` or ``install`` makes this
        one stale: it ends at its next step and adds nothing more. *plate*: the open plate (the session
        closes it)."""
        self._generation += 1
        gen = self._generation
        viewer = self.viewer
        # the shown layers leave at the next step; until then the session still owns them (a newer call removes them)
        self._leaving = [layer for layer in (*self._leaving, self.highlight_layer, self.points_layer, self.tracks_layer,
                                             *self.image_layers) if layer is not None and layer in viewer.layers]
        self._set_state(prepared.table, adata, store_path, None, tracks_path, False, plate, frames=prepared.frames)
        self._fov_names = (prepared.table, prepared.fov_names)
        col = self.color_column if self.color_column in prepared.table.columns else "t"  # as set_table chooses
        colors = prepared.colors
        if (col, self.colormap) != (prepared.color_column, prepared.colormap):  # (changed while it was prepared)
            colors = cellmodel.column_colors(prepared.table[col], self.colormap)
        self.color_column, self.colors = col, colors
        self.image_layers, self.tracks_layer, self.points_layer, self.highlight_layer = [], None, None, None
        if prepared.overlay is not None:
            self.fov_name = prepared.fov_name
            self.overlay = prepared.overlay
            self.image_layers = list(prepared.image_layers)
            self.tracks_layer, self.points_layer = prepared.tracks_layer, prepared.points_layer
            self.highlight_layer = prepared.highlight_layer
            if self.points_layer is not None:
                if colors is not prepared.colors:
                    self.tracks_layer.track_colors = colors[prepared.overlay.rows]
                    self.points_layer.face_color = colors[prepared.overlay.rows]
                self.points_layer.selected_data.events.items_changed.connect(self._on_points_selected)
        self.table_changed.emit()
        yield
        if gen != self._generation:
            return
        if self._leaving:
            # all in one step: painted between two removals, a lone remaining layer (an additive image, an empty
            # highlight) crashed software OpenGL here. napari collects garbage at each removal (≈ 0.2 s each with
            # a 10⁶-cell table in memory): reopening costs that block once per shown layer.
            leaving, self._leaving = self._leaving, []
            for layer in leaving:
                if layer in viewer.layers:
                    viewer.layers.remove(layer)
            yield
        if prepared.overlay is None:
            return
        new = [*prepared.image_layers, prepared.tracks_layer, prepared.points_layer, prepared.highlight_layer]
        for layer in new:
            if gen != self._generation:
                return
            if self._owns(layer) and layer not in viewer.layers:
                viewer.layers.append(layer)
                yield
        # shown one per turn, each first paint alone: the empty highlight layer first, while nothing else is drawn
        # (its first paint builds napari's Points programs and renders the canvas's glyphs: napari's Points always
        # draw a text visual), then the Points, then the Tracks (whose lines are the costliest draw, repeated in
        # every later paint). Measured under software OpenGL, 10⁵ cells in the FOV: ≈ 130, 65 and 95 ms.
        for layer in (prepared.highlight_layer, prepared.points_layer, prepared.tracks_layer):
            if gen != self._generation:
                return
            if self._owns(layer) and not layer.visible:
                layer.visible = True
                yield
        if gen != self._generation:
            return
        self._apply_selection_borders()
        self._update_highlight_layer()
        if self.points_layer is not None and self.points_layer in viewer.layers:
            viewer.layers.selection.active = self.points_layer  # (napari builds the layer's controls)
        yield
        if gen != self._generation:
            return
        self.fov_changed.emit(self.fov_name)
        self.current_t = -1
        self._on_step()

    def _owns(self, layer) -> bool:
        """Whether *layer* is still one of the session's layers (the user may delete one mid-install)."""
        return layer is not None and (layer is self.tracks_layer or layer is self.points_layer
                                      or layer is self.highlight_layer
                                      or any(layer is image for image in self.image_layers))

    def adopt_result(self, table: pd.DataFrame, adata=None, store_path=None, plate_path=None,
                     tracks_path=None) -> bool:
        """The shown cells again, with other columns (a run's plan after a preview, a run's result
        after its stream). Keep the layers and the user's selection, clusters and annotations; bring
        the columns of the layers' features in line with *table* (no layer rebuild, no GUI stall).
        Returns False (nothing changed) when *table* does not hold the shown cells in the same order (or,
        when given, comes from another plate or tracks folder)."""
        old = self.table
        if old is None or self.overlay is None or len(old) != len(table):
            return False
        for given, shown in ((plate_path, self.plate_path), (tracks_path, self.tracks_path)):
            if given is not None and (shown is None or Path(given).resolve() != shown.resolve()):
                return False
        for col in ("track_id", "t"):
            if not np.array_equal(old[col].to_numpy(), table[col].to_numpy()):
                return False
        if not np.array_equal(old["fov_name"].astype(str).to_numpy(), table["fov_name"].astype(str).to_numpy()):
            return False
        for col in ("selection", "cluster", "annotation"):
            if col in old.columns:
                table[col] = old[col].to_numpy() if not isinstance(old[col].dtype, pd.CategoricalDtype) else old[col]
        new_cols = [c for c in table.columns if c not in old.columns]
        self.table = table
        self.adata = adata
        self.store_path = Path(store_path) if store_path else None
        self.is_preview = False
        for layer in (self.points_layer, self.tracks_layer):
            if layer is not None:
                stale = [c for c in layer.features.columns if c not in table.columns]
                layer.features.drop(columns=stale, inplace=True)
        self._push_features(new_cols)
        self.table_changed.emit()
        col = self.color_column if self.color_column in table.columns else "t"
        if col != self.color_column or col not in old.columns or not old[col].equals(table[col]):
            self.color_by(col)  # (unchanged colours are not pushed again: no layer redraw)
        return True

    def fov_names(self) -> list[str]:
        """The table's FOVs in order of appearance (remembered per table)."""
        if self.table is None:
            return []
        if self._fov_names[0] is not self.table:
            self._fov_names = (self.table, cellmodel.table_fov_names(self.table))
        return list(self._fov_names[1])

    def update_rows(self, start: int, stop: int, values: dict[str, np.ndarray]) -> None:
        """Streaming: fill columns for rows [start, stop) and refresh layers and views."""
        for col, vals in values.items():
            if col not in self.table.columns:
                self.table[col] = np.full(len(self.table), np.nan, dtype=np.float32)
            self.table.iloc[start:stop, self.table.columns.get_loc(col)] = vals
        if self.overlay is not None:
            self._push_features(list(values))
        self.rows_changed.emit(start, stop)

    def add_columns(self, columns: dict[str, object]) -> None:
        """Add or replace whole columns (reductions, clusters, annotations) everywhere."""
        for col, vals in columns.items():
            self.table[col] = vals
        self._push_features(list(columns))
        self.columns_changed.emit()
        if self.color_column in columns:
            self.color_by(self.color_column)

    def _push_features(self, cols: list[str]) -> None:
        """Copy table columns into the overlay layers' features (same rows, same order)."""
        if self.overlay is None:
            return
        rows = self.overlay.rows
        for layer in (self.points_layer, self.tracks_layer):
            if layer is None:
                continue
            feats = layer.features
            for col in cols:
                vals = self.table[col]
                if isinstance(vals.dtype, pd.CategoricalDtype):
                    codes = np.asarray(vals.cat.codes)[rows]
                    feats[col] = pd.Categorical.from_codes(codes, categories=vals.cat.categories)
                else:
                    feats[col] = vals.to_numpy()[rows]

    # ------------------------------------------------------------------ FOV layers

    def show_fov(self, fov_name: str) -> None:
        """Swap the image and overlays to *fov_name* (the cell table stays).

        The layers of the previous FOV are refilled in place when they fit (same channels, same
        dimensions): building napari layers anew costs 0.1–0.5 s each under software OpenGL."""
        self._generation += 1
        self.fov_name = str(fov_name)
        fov = None
        if self.plate is not None:
            try:
                fov = self.plate.fov(self.fov_name)
            except Exception:
                fov = None
        if fov is not None:
            images = layers.fov_image_layers(fov, self.plate.channel_names)
            z, scale = fov.shape[2] > 1, layers.image_scale(fov)
        else:
            images, z, scale = [], False, (1.0, 1.0, 1.0)
        ov = layers.fov_overlay(self.table, self.fov_name, z=z, scale=scale)
        if not self._refill_layers(images, ov, scale):
            self._build_layers(images, ov, scale)
        self._apply_selection_borders()
        self._update_highlight_layer()
        if self.points_layer is not None:
            self.viewer.layers.selection.active = self.points_layer
        self.fov_changed.emit(self.fov_name)
        self.current_t = -1
        self._on_step()

    def _build_layers(self, images: list, ov, scale) -> None:
        viewer = self.viewer
        self._remove_layers()
        self.overlay = ov
        for data, kwargs, _ in images:
            self.image_layers.append(viewer.add_image(data, **kwargs))
        if not len(ov.rows):
            return
        kwargs = fov_layer_kwargs(ov, scale, self.fov_name)
        self.tracks_layer = viewer.add_tracks(ov.tracks, **kwargs["tracks"])
        self.tracks_layer.track_colors = self.colors[ov.rows]
        self.points_layer = viewer.add_points(ov.points, face_color=self.colors[ov.rows], **kwargs["points"])
        self.points_layer.selected_data.events.items_changed.connect(self._on_points_selected)
        self.highlight_layer = viewer.add_points(np.empty((0, ov.points.shape[1])), **kwargs["highlight"])

    def _refill_layers(self, images: list, ov, scale) -> bool:
        """Put another FOV into the shown layers (False, nothing changed, when they do not fit)."""
        shown = [*self.image_layers, self.tracks_layer, self.points_layer, self.highlight_layer]
        if (not len(ov.rows) or self._leaving or any(layer is None for layer in shown)
                or any(layer not in self.viewer.layers for layer in shown)
                or len(images) != len(self.image_layers)
                or any(layer.data.ndim != data.ndim for layer, (data, _, _) in zip(self.image_layers, images))
                or self.points_layer.data.shape[1] != ov.points.shape[1]):
            return False
        self._syncing = True
        try:
            self.overlay = ov
            for layer, (data, kwargs, _) in zip(self.image_layers, images):
                layer.data = data
                _set_scale(layer, kwargs["scale"])
                if "contrast_limits" in kwargs:
                    layer.contrast_limits = kwargs["contrast_limits"]
                else:
                    layer.reset_contrast_limits()
            colors = self.colors[ov.rows]
            tracks = self.tracks_layer
            tracks.data = ov.tracks
            tracks.features = ov.features.copy()
            tracks.graph = ov.graph
            tracks.track_colors = colors
            points = self.points_layer
            points.selected_data = set()
            points.data = ov.points
            points.features = ov.features.copy()
            points.face_color = colors
            self.highlight_layer.data = np.empty((0, ov.points.shape[1]))
            for layer, (_, kwargs, _) in zip(self.image_layers, images):
                layer.name, layer.metadata = kwargs["name"], kwargs["metadata"]
            for layer, suffix in ((tracks, "tracks"), (points, "cells"), (self.highlight_layer, "highlight")):
                _set_scale(layer, scale)
                layer.name = f"{self.fov_name} {suffix}"
                layer.metadata = {**layer.metadata, "dynaclr_fov": self.fov_name}
        finally:
            self._syncing = False
        return True

    def _remove_layers(self) -> None:
        viewer = self.viewer
        leaving, self._leaving = self._leaving, []
        for layer in [*leaving, *self.image_layers, self.tracks_layer, self.points_layer, self.highlight_layer]:
            if layer is not None and layer in viewer.layers:
                viewer.layers.remove(layer)
        self.image_layers, self.tracks_layer, self.points_layer, self.highlight_layer = [], None, None, None
        self.overlay = None

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer is self.points_layer:
            self.points_layer = None
        elif layer is self.tracks_layer:
            self.tracks_layer = None
        elif layer is self.highlight_layer:
            self.highlight_layer = None
        elif layer in self.image_layers:
            self.image_layers.remove(layer)

    def _close_plate(self) -> None:
        if self.plate is not None:
            self.plate.close()
        self.plate = None

    # ------------------------------------------------------------------ colour

    def color_by(self, column: str, colormap: str | None = None) -> None:
        """Colour scatter, Points and Tracks by a table column (continuous → colormap, else cycle)."""
        if self.table is None:
            return
        if column not in self.table.columns:
            raise cellmodel.ExploreError(f"no column {column!r} in the cell table")
        self.colormap = colormap or self.colormap
        self.color_column = column
        self.colors = cellmodel.column_colors(self.table[column], self.colormap)
        if self.overlay is not None and len(self.overlay.rows):
            colors = self.colors[self.overlay.rows]
            if self.points_layer is not None:
                self.points_layer.face_color = colors
            if self.tracks_layer is not None:
                self.tracks_layer.track_colors = colors
        self.colors_changed.emit()

    # ------------------------------------------------------------------ selection / highlight

    def select(self, rows, mode: str = "replace") -> np.ndarray:
        """Set the selected cells (cell-table rows); ``mode`` is replace, add or subtract."""
        mask = np.zeros(len(self.table), dtype=bool)
        if mode in ("add", "subtract"):
            mask[self.selected] = True
        mask[np.asarray(rows, dtype=np.int64)] = mode != "subtract"
        rows = np.flatnonzero(mask)
        self.selected = rows
        self.table["selection"] = cellmodel.selection_column(len(self.table), rows)
        self._push_features(["selection"])
        self._apply_selection_borders()
        self.selection_changed.emit()
        return rows

    def _apply_selection_borders(self) -> None:
        if self.points_layer is None or self.overlay is None:
            return
        mask = np.zeros(len(self.table), dtype=bool)
        mask[self.selected] = True
        sel = mask[self.overlay.rows]
        self.points_layer.border_color = np.where(sel[:, None], SELECTED_BORDER, PLAIN_BORDER)

    def highlight(self, row: int) -> None:
        """Highlight one cell (cell-table row; −1 clears) in the image and the scatter."""
        self.highlighted = int(row)
        self._update_highlight_layer()
        self.highlight_changed.emit(self.highlighted)

    def _update_highlight_layer(self) -> None:
        if self.highlight_layer is None or self.overlay is None:
            return
        row = self.highlighted
        if row < 0 or str(self.table["fov_name"].iat[row]) != self.fov_name:
            self.highlight_layer.data = np.empty((0, self.overlay.points.shape[1]))
            return
        tid = self.table["track_id"].iat[row]
        on_track = self.table["track_id"].to_numpy()[self.overlay.rows] == tid
        self.highlight_layer.data = self.overlay.points[on_track]

    def _on_points_selected(self, event=None) -> None:
        if self._syncing or self.points_layer is None or self.overlay is None:
            return
        sel = sorted(self.points_layer.selected_data)
        if sel:
            self.highlight(int(self.overlay.rows[sel[0]]))

    def click_at(self, world_position) -> int:
        """Highlight the cell of the shown FOV nearest to a world position at the current t."""
        if self.overlay is None or self.table is None:
            return -1
        scale = np.asarray(self.overlay.scale)
        rows = self.frames.rows(self.fov_name, self.current_t)
        if not len(rows):
            return -1
        pos = np.asarray(world_position, dtype=float)[-2:]
        sy, sx = scale[-2], scale[-1]
        xy = np.column_stack([self.table["x"].to_numpy()[rows] * sx, self.table["y"].to_numpy()[rows] * sy])
        i = cellmodel.nearest_point(xy, (pos[1], pos[0]), self.click_radius_px, pixel_scale=(sx, sy))
        if i < 0:
            return -1
        self.highlight(int(rows[i]))
        return int(rows[i])

    def _on_mouse_drag(self, viewer, event):
        if self.overlay is None or event.button != 1:
            return
        mode = getattr(viewer.layers.selection.active, "mode", "pan_zoom")
        if mode not in ("pan_zoom", "select"):
            return
        start = np.asarray(event.pos, dtype=float)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = moved or np.abs(np.asarray(event.pos) - start).max() > 3
            yield
        if not moved and mode == "pan_zoom":
            self.click_at(event.position)

    # ------------------------------------------------------------------ time and navigation

    def _time_axis(self) -> int:
        ndim = self.viewer.dims.ndim
        n = len(self.overlay.scale) if self.overlay is not None else 3
        return max(0, ndim - n)

    def _on_step(self, event=None) -> None:
        if self.overlay is None:
            return
        viewer = self.viewer
        axis = self._time_axis()
        t = int(round(viewer.dims.point[axis] / (self.overlay.scale[0] or 1.0)))
        if t != self.current_t:
            self.current_t = t
            self.frame_changed.emit(self.fov_name, t)

    def goto(self, fov_name: str, t: int, y: float, x: float) -> None:
        """Show *fov_name*, step the time slider to *t* and centre the camera on (y, x) pixels."""
        if self.table is not None and str(fov_name) != self.fov_name and str(fov_name) in self.fov_names():
            self.show_fov(str(fov_name))
        viewer = self.viewer
        scale = self.overlay.scale if self.overlay is not None else (1.0, 1.0, 1.0)
        viewer.dims.set_point(self._time_axis(), float(t) * scale[0])
        camera(viewer).center = (float(y) * scale[-2], float(x) * scale[-1])

    def goto_row(self, row: int) -> None:
        r = self.table.iloc[int(row)]
        self.goto(str(r["fov_name"]), int(r["t"]), float(r["y"]), float(r["x"]))
        self.highlight(int(row))

    # ------------------------------------------------------------------ annotations

    def assign_selection(self, name: str) -> int:
        """Put the selected cells into annotation class *name*; return how many."""
        cellmodel.assign_class(self.table, self.selected, name)
        self.add_columns({"annotation": self.table["annotation"]})
        return len(self.selected)


def fov_layer_kwargs(ov, scale, fov_name: str) -> dict[str, dict]:
    """The keyword arguments of the Tracks, Points and highlight layers of a FOV (colours apart), as the
    session builds them at once (:meth:`ExplorerSession.show_fov`) or in a worker (:func:`prepare_table`)."""
    meta = {"dynaclr_fov": fov_name}
    labels = layers.axis_labels(ov.points.shape[1])
    return {
        "tracks": dict(graph=ov.graph, features=ov.features.copy(), scale=scale, name=f"{fov_name} tracks",
                       tail_length=8, tail_width=2, blending="translucent", metadata=dict(meta), axis_labels=labels),
        "points": dict(features=ov.features.copy(), scale=scale, name=f"{fov_name} cells", size=14,
                       border_color=PLAIN_BORDER, border_width=0.25, border_width_is_relative=True, opacity=0.8,
                       metadata=dict(meta), axis_labels=labels),
        "highlight": dict(scale=scale, name=f"{fov_name} highlight", size=30, face_color="transparent",
                          border_color="cyan", border_width=0.12, border_width_is_relative=True, symbol="ring",
                          metadata=dict(meta), axis_labels=labels),
    }


def prepare_table(table: pd.DataFrame, plate=None, fov_name: str | None = None, color_column: str | None = None,
                  colormap: str = "viridis") -> PreparedTable:
    """Everything :meth:`ExplorerSession.install` needs to show *table* (Qt-free: for a worker thread): the
    frame index, the FOV names, the colours (*color_column* when the table has it, else ``t``), and, for
    *fov_name* (or the first FOV), the overlay and its napari layer objects — one image layer per channel of
    *plate* (an open :class:`~napari_dynaclr.core.plate.Plate`, or None), the Tracks and Points layers
    and the highlight layer (all three hidden: the install shows them in turns of their own). No viewer is touched."""
    import napari.layers

    names = cellmodel.table_fov_names(table)
    col = color_column if color_column in table.columns else "t"
    colors = cellmodel.column_colors(table[col], colormap)
    out = PreparedTable(table, cellmodel.FrameIndex(table), names, col, colormap, colors)
    if not names:
        return out
    out.fov_name = str(fov_name) if fov_name in names else names[0]
    fov = None
    if plate is not None:
        try:
            fov = plate.fov(out.fov_name)
        except Exception:
            fov = None
    if fov is not None:
        images = layers.fov_image_layers(fov, plate.channel_names)
        z, scale = fov.shape[2] > 1, layers.image_scale(fov)
    else:
        images, z, scale = [], False, (1.0, 1.0, 1.0)
    ov = layers.fov_overlay(table, out.fov_name, z=z, scale=scale)
    out.overlay = ov
    with _MAKING_LAYERS:
        out.image_layers = [napari.layers.Image(data, **kwargs) for data, kwargs, _ in images]
        if not len(ov.rows):
            out.tracks_layer = out.points_layer = out.highlight_layer = None
            return out
        kwargs = fov_layer_kwargs(ov, scale, out.fov_name)
        out.tracks_layer = napari.layers.Tracks(ov.tracks, visible=False, **kwargs["tracks"])
        out.tracks_layer.track_colors = colors[ov.rows]
        out.points_layer = napari.layers.Points(ov.points, face_color=colors[ov.rows], visible=False,
                                                **kwargs["points"])
        out.highlight_layer = napari.layers.Points(np.empty((0, ov.points.shape[1])), visible=False,
                                                   **kwargs["highlight"])
    return out


def _set_scale(layer, scale) -> None:
    """Set a layer's scale only when it changes: each set re-slices and redraws (≈ 20 ms)."""
    if not np.allclose(layer.scale, scale):
        layer.scale = scale


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9 (``viewer.camera`` is deprecated)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def get_session(viewer) -> ExplorerSession:
    """The viewer's explorer session (created on first use).

    napari hands widgets a ``PublicOnlyProxy`` of the viewer; the session is keyed by (and holds) the
    real viewer so every dock of one viewer shares it.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    sess = _SESSIONS.get(viewer)
    if sess is None:
        sess = ExplorerSession(viewer)
        _SESSIONS[viewer] = sess
    return sess


def goto_cell(viewer, fov_name: str, t: int, y: float, x: float) -> None:
    """Move *viewer* to a cell: show its FOV (when loaded in the explorer), time *t*, centre on (y, x)."""
    sess = get_session(viewer)
    if sess.table is not None:
        sess.goto(fov_name, t, y, x)
        key = cellmodel.fov_mask(sess.table, fov_name) & (sess.table["t"].to_numpy() == int(t))
        rows = np.flatnonzero(key)
        if len(rows):
            d = (sess.table["y"].to_numpy()[rows] - y) ** 2 + (sess.table["x"].to_numpy()[rows] - x) ** 2
            sess.highlight(int(rows[np.argmin(d)]))
        return
    axis = max(0, viewer.dims.ndim - 3)
    viewer.dims.set_point(axis, float(t))
    camera(viewer).center = (float(y), float(x))


def color_cells_by(viewer, column: str, colormap: str | None = None) -> None:
    """Colour the explorer's layers and scatter by a cell-table column."""
    get_session(viewer).color_by(column, colormap)
