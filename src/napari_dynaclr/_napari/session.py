"""The explorer session of one napari viewer: the cell model, bound to the napari layers of the shown FOV.

Both docks (the main widget and the embedding view) share one :class:`ExplorerSession` per viewer
(:func:`get_session`). It *is* the viewer's :class:`~napari_dynaclr._napari.cellmodel.model.CellModel` (table,
selection, highlight, neighbours, colours, columns: Qt-free, napari-free) and the **layer binder** that mirrors it
into the shown FOV's image, Tracks, Points and highlight layers; :class:`~napari_dynaclr._napari.navigation.Navigation`
follows the time axis and the mouse. The binder connects to the model's signals first, so the layers are up to
date when a dock hears of a change. All on the GUI thread. Helpers for other widgets: :func:`goto_cell`,
:func:`color_cells_by`.

**Sharing with napari and other plugins** (docs/napari.md): columns reach the Points and Tracks layers as a
*new* ``features`` frame (napari's ``features`` event fires); the selection leaves as the ``selection`` column
and the yellow border, and two or more points selected *in* the Points layer become the model's selection; the
dock never sets ``selected_data``. Columns another plugin writes into the layer's ``features`` are adopted into
the table for the FOV's rows, so they stay across FOV switches.

**One way to build a FOV's layers**: :func:`~napari_dynaclr._napari.layers.fov_layers` (layers are models:
building one touches no viewer). :meth:`ExplorerSession.set_table` shows a table at once on the GUI thread
(fine up to :data:`ASYNC_CELLS` cells); :meth:`ExplorerSession.show_fov` refills the shown layers in place when
they fit (same channels and dimensions: building napari layers anew costs 0.1–0.5 s each under software
OpenGL), else builds them with ``fov_layers``. **Large tables open in steps**: :func:`prepare_table` (for a
worker thread) builds the frame index, the colours and the first FOV's layers, and
:meth:`ExplorerSession.install` puts them into the viewer one step per event-loop turn (each step one layer;
the highlight, Points and Tracks layers first hidden, then shown in their own turns, so that no turn both
inserts a layer and draws it for the first time). A newer ``set_table``/``show_fov``/``install`` makes a
running install stale (a generation counter): it stops at its next step, and the newer call takes over the
session's layers. napari layers are made by one thread at a time (:data:`~napari_dynaclr._napari.layers.MAKING_LAYERS`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr._napari import cellmodel, layers
from napari_dynaclr._napari.cellmodel.colors import HIGHLIGHT_BORDER, NEIGHBOUR_BORDER, PLAIN_BORDER, SELECTED_BORDER
from napari_dynaclr._napari.cellmodel.model import CellModel
from napari_dynaclr._napari.fov_refill import FovRefill
from napari_dynaclr._napari.layers import PreparedTable, prepare_table
from napari_dynaclr._napari.navigation import Navigation, camera

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

__all__ = ["ASYNC_CELLS", "ExplorerSession", "PreparedTable", "camera", "color_cells_by", "get_session",
           "goto_cell", "prepare_table"]

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: tables with more cells than this open through :func:`prepare_table` (a worker) + :meth:`ExplorerSession.install`
#: (GUI steps); smaller ones through :meth:`ExplorerSession.set_table` at once (≈ 0.1–0.3 s at 20,000 cells)
ASYNC_CELLS = 20_000
HIGHLIGHT_SIZE, NEIGHBOUR_SIZE = 30.0, 22.0


class ExplorerSession(CellModel, Navigation, FovRefill):
    """The viewer's cell model, bound to the shown FOV's layers (see the module)."""

    def __init__(self, viewer):
        super().__init__()
        self._viewer = weakref.ref(viewer)
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
        self.is_preview = False  # the table holds the cells a run would predict, no embeddings yet
        self._syncing = False  # the binder is writing into the layers: their events are its own
        self._generation = 0  # bumped by set_table, show_fov and install: a running install is then stale
        self._leaving: list = []  # layers of the previous table an install has still to remove
        self._foreign: set[str] = set()  # columns adopted from the layers' features (another plugin's)
        self._hidden: dict[str, bool] = {}  # layers a refill hid (by attribute name), their visibility before
        # the binder first: the layers are up to date when a dock hears of a change
        self.columns_set.connect(self._push_features)
        self.colors_changed.connect(self._paint_colors)
        self.selection_changed.connect(self._apply_selection_borders)
        self.highlight_changed.connect(self._update_highlight_layer)
        self.neighbours_changed.connect(self._update_highlight_layer)
        self._connect_navigation(viewer)
        viewer.layers.events.removed.connect(self._on_layer_removed)

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

    # ------------------------------------------------------------------ a table

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
        self.color_column, self.colors = self.colors_for(color_column or self.color_column)
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
        self._take_table(table, frames)
        self._foreign = set()
        self.adata = adata
        self.store_path = Path(store_path) if store_path else None
        if plate is not None:
            plate_path = plate.path
        self.plate_path = Path(plate_path) if plate_path else None
        self.tracks_path = Path(tracks_path) if tracks_path else None
        if plate is not None:
            self.plate = plate
        elif self.plate_path is not None:
            from napari_dynaclr.core.plate import Plate

            self.plate = Plate(self.plate_path)

    def install(self, prepared: PreparedTable, adata=None, store_path=None, plate=None,
                tracks_path=None, preview: bool = False) -> Iterator[None]:
        """Show a table prepared by :func:`prepare_table` (what :meth:`set_table` does), one short GUI-thread
        step per ``next()``: the caller runs each step in its own event-loop turn.

        When the shown layers fit the prepared FOV (same channels and dimensions, :meth:`_layers_fit`) they stay
        and are refilled, as a FOV switch refills them (removing a layer costs napari a garbage collection, 0.2 s
        and more): step 1 makes the table the session's (the views rebuild), step 2 refills the layers (the
        Tracks of a large FOV in later turns, :mod:`~napari_dynaclr._napari.fov_refill`). Else step 1 makes the
        table and the prepared layers the session's (the views rebuild; the layers are not yet in the viewer, but
        colouring, selecting or adding columns already reaches them); then the previous layers leave the viewer
        (together, in one step and one batch); then each new layer is added, hidden but the images; then the
        highlight, Points and Tracks layers are shown, each in its own step. Then the selection and highlight
        are applied (and the Points layer made the active one); the last step announces the FOV and the current
        frame. A newer ``set_table``, ``show_fov`` or ``install`` makes this
        one stale: it ends at its next step and adds nothing more. *plate*: the open plate (the session
        closes it). *preview*: as :meth:`set_table`'s."""
        self._generation += 1
        gen = self._generation
        viewer = self.viewer
        fl = prepared.layers
        self._set_state(prepared.table, adata, store_path, None, tracks_path, preview, plate, frames=prepared.frames)
        # the shown layers stay when they fit the prepared FOV (refilled at the next step, as a FOV switch does);
        # else they leave at the next step, and until then the session still owns them (a newer call removes them)
        refill = fl is not None and self._layers_fit(fl.sources, fl.overlay)
        if not refill:
            self._leaving = [layer for layer in (*self._leaving, *self._shown_layers()) if layer in viewer.layers]
        self._fov_names = (prepared.table, prepared.fov_names)
        col = self.color_column if self.color_column in prepared.table.columns else "t"  # as set_table chooses
        colors = prepared.colors
        if (col, self.colormap) != (prepared.color_column, prepared.colormap):  # (changed while it was prepared)
            colors = cellmodel.column_colors(prepared.table[col], self.colormap)
        self.color_column, self.colors = col, colors
        if refill:  # (the layers stay the session's; with no overlay until the refill, the binder leaves them be)
            self.fov_name = fl.fov_name
        else:
            self._take_new_layers(fl, prepared.colors)
        self.table_changed.emit()
        yield
        if gen != self._generation:
            return
        if refill and not self._refill_layers(fl.sources, fl.overlay, fl.scale, fl.points):
            # (the user deleted one meanwhile)
            self._leaving = [layer for layer in (*self._leaving, *self._shown_layers()) if layer in viewer.layers]
            self._take_new_layers(fl, prepared.colors)
            refill = False
        if refill:
            added = [c for c in self.table.columns if c not in fl.overlay.features.columns]
            if added:  # (columns added to the table since the worker built the overlay's features)
                self._push_features(added)
            yield
        elif self._leaving:
            # all in one step: painted between two removals, a lone remaining layer (an additive image, an empty
            # highlight) crashed software OpenGL here; and in one batch: napari collects garbage once per batch of
            # removals (≈ 0.2 s with napari's own objects alone) instead of once per layer.
            leaving, self._leaving = self._leaving, []
            self._remove_from_viewer(leaving)
            yield
        if fl is None:
            return
        if not refill:
            yield from self._add_new_layers(fl, gen)
        if gen != self._generation:
            return
        self._apply_selection_borders()
        self._update_highlight_layer()
        if self.points_layer is not None and self.points_layer in viewer.layers:
            viewer.layers.selection.active = self.points_layer  # (napari builds the layer's controls)
        yield
        if gen != self._generation:
            return
        self._announce_fov()

    def _remove_from_viewer(self, gone: list) -> None:
        """Remove *gone* (those still in the viewer) in one batch: napari collects garbage once per batch of
        removals, not once per layer."""
        viewer = self.viewer
        with viewer.layers.batched_update():
            for layer in gone:
                if layer in viewer.layers:
                    viewer.layers.remove(layer)

    def _shown_layers(self) -> list:
        """The session's layers (those that exist)."""
        return [layer for layer in (self.highlight_layer, self.points_layer, self.tracks_layer, *self.image_layers)
                if layer is not None]

    def _take_new_layers(self, fl: layers.FovLayers | None, colors) -> None:
        """Make the prepared layers *fl* (coloured with *colors*) the session's, painted with its colours."""
        self._take_layers(None)
        if fl is not None:
            self.fov_name = fl.fov_name
            self._take_layers(fl)
            if self.points_layer is not None and self.colors is not colors:
                self._paint_colors()

    def _add_new_layers(self, fl: layers.FovLayers, gen: int) -> Iterator[None]:
        """The steps that put the prepared layers *fl* into the viewer (see :meth:`install`)."""
        viewer = self.viewer
        new = [*fl.images, fl.tracks, fl.points, fl.highlight]
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
        for layer in (fl.highlight, fl.points, fl.tracks):
            if gen != self._generation:
                return
            if self._owns(layer) and not layer.visible:
                layer.visible = True
                yield

    def _owns(self, layer) -> bool:
        """Whether *layer* is still one of the session's layers (the user may delete one mid-install)."""
        return layer is not None and (layer is self.tracks_layer or layer is self.points_layer
                                      or layer is self.highlight_layer
                                      or any(layer is image for image in self.image_layers))

    def _take_layers(self, fl: layers.FovLayers | None) -> None:
        """Make *fl* the session's layers (None: none), listening to its Points layer."""
        self._hidden = {}
        if fl is None:
            self.image_layers, self.tracks_layer, self.points_layer, self.highlight_layer = [], None, None, None
            return
        self.overlay = fl.overlay
        self.image_layers = list(fl.images)
        self.tracks_layer, self.points_layer, self.highlight_layer = fl.tracks, fl.points, fl.highlight
        if fl.points is not None:
            fl.points.selected_data.events.items_changed.connect(self._on_points_selected)
            fl.points.events.features.connect(self._on_features)

    def adopt_result(self, table: pd.DataFrame, adata=None, store_path=None, plate_path=None,
                     tracks_path=None) -> bool:
        """The shown cells again, with other columns (a run's plan after a preview, a run's result
        after its stream). Keep the layers and the user's selection, clusters and annotations; bring
        the columns of the layers' features in line with *table* (no layer rebuild, no GUI stall).
        Returns False (nothing changed) when *table* does not hold the shown cells in the same order (or,
        when given, comes from another plate or tracks folder)."""
        import pandas as pd

        old = self.table
        if old is None or self.overlay is None or len(old) != len(table):
            return False
        for given, shown in ((plate_path, self.plate_path), (tracks_path, self.tracks_path)):
            if given is not None and (shown is None or Path(given).resolve() != shown.resolve()):
                return False
        if not all(np.array_equal(old[c].to_numpy(), table[c].to_numpy()) for c in ("track_id", "t")) or \
                not np.array_equal(old["fov_name"].astype(str).to_numpy(), table["fov_name"].astype(str).to_numpy()):
            return False
        for col in ("selection", "cluster", "annotation"):
            if col in old.columns:
                table[col] = old[col].to_numpy() if not isinstance(old[col].dtype, pd.CategoricalDtype) else old[col]
        new_cols = [c for c in table.columns if c not in old.columns]
        self.table = table
        self.adata = adata
        self.store_path = Path(store_path) if store_path else None
        self.is_preview = False
        self._push_features(new_cols, drop=[c for c in old.columns if c not in table.columns])
        self.table_changed.emit()
        col = self.color_column if self.color_column in table.columns else "t"
        if col != self.color_column or col not in old.columns or not old[col].equals(table[col]):
            self.color_by(col)  # (unchanged colours are not pushed again: no layer redraw)
        return True

    # ------------------------------------------------------------------ FOV layers

    def show_fov(self, fov_name: str) -> None:
        """Swap the image and overlays to *fov_name* (the cell table stays): the shown layers are refilled in
        place when they fit (same channels, same dimensions; a FOV the plate lacks keeps the image layers,
        hidden and empty), else built anew (:func:`layers.fov_layers`). A FOV of more than
        :data:`~napari_dynaclr._napari.fov_refill.STEP_FOV_ROWS` cells gets its Tracks layer later (fov_refill)."""
        self._generation += 1
        self._adopt_foreign()  # (what another plugin wrote into the FOV's features stays with its cells)
        self.fov_name = str(fov_name)
        images, ov, scale = layers.fov_source(self.table, self.plate, self.fov_name)
        if not self._refill_layers(images, ov, scale):
            self._remove_layers()
            fl = layers.fov_layers(self.table, self.plate, self.fov_name, self.colors)
            self._take_layers(fl)
            for layer in (*fl.images, fl.tracks, fl.points, fl.highlight):
                if layer is not None:
                    self.viewer.layers.append(layer)
        self._apply_selection_borders()
        self._update_highlight_layer()
        if self.points_layer is not None:
            self.viewer.layers.selection.active = self.points_layer
        self._announce_fov()

    def _remove_layers(self) -> None:
        leaving, self._leaving = self._leaving, []
        self._remove_from_viewer([*leaving, *self._shown_layers()])
        self._take_layers(None)
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

    # ------------------------------------------------------------------ the binder: model → layers

    def _push_features(self, cols: list[str], drop=()) -> None:
        """Give the Points and Tracks layers the table's *cols* (same rows, same order; without the columns
        *drop*) as a new ``features`` frame: napari's ``features`` event fires, other plugins see them. The
        layers' other columns (another plugin's too) stay as they are."""
        import pandas as pd

        if self.overlay is None:
            return
        rows = self.overlay.rows
        values = {}
        for col in cols:
            vals = self.table[col]
            if isinstance(vals.dtype, pd.CategoricalDtype):
                values[col] = pd.Categorical.from_codes(np.asarray(vals.cat.codes)[rows],
                                                        categories=vals.cat.categories)
            else:
                values[col] = vals.to_numpy()[rows]
        self._syncing = True
        try:
            for layer in (self.points_layer, self.tracks_layer):
                if layer is not None and len(layer.features) == len(rows):
                    feats = layer.features.copy(deep=False)  # (a new frame sharing the untouched columns)
                    stale = [c for c in drop if c in feats.columns]
                    if stale:
                        feats = feats.drop(columns=stale)
                    for col, vals in values.items():
                        feats[col] = vals
                    layer.features = feats
        finally:
            self._syncing = False

    def _paint_colors(self) -> None:
        if self.overlay is None or not len(self.overlay.rows) or self.colors is None:
            return
        colors = self.colors[self.overlay.rows]
        if self.points_layer is not None:
            self.points_layer.face_color = colors
        if self.tracks_layer is not None and len(self.tracks_layer.data) == len(colors):  # (else refilled later)
            self.tracks_layer.track_colors = colors

    def _apply_selection_borders(self) -> None:
        if self.points_layer is None or self.overlay is None:
            return
        mask = np.zeros(len(self.table), dtype=bool)
        mask[self.selected] = True
        sel = mask[self.overlay.rows]
        self.points_layer.border_color = np.where(sel[:, None], SELECTED_BORDER, PLAIN_BORDER)

    def _update_highlight_layer(self, *_) -> None:
        """The rings in the image: the highlighted cell's track (cyan), and the neighbours of the clicked cell
        that are in the shown FOV (white)."""
        if self.highlight_layer is None or self.overlay is None:
            return
        ov = self.overlay
        on = np.zeros(len(ov.rows), dtype=bool)
        row = self.highlighted
        if row >= 0 and str(self.table["fov_name"].iat[row]) == self.fov_name:
            on = self.table["track_id"].to_numpy()[ov.rows] == self.table["track_id"].iat[row]
        near = np.isin(ov.rows, self.neighbours) & ~on
        data = np.concatenate([ov.points[on], ov.points[near]])
        colors = np.concatenate([np.repeat(HIGHLIGHT_BORDER[None], on.sum(), axis=0),
                                 np.repeat(NEIGHBOUR_BORDER[None], near.sum(), axis=0)])
        sizes = np.r_[np.full(on.sum(), HIGHLIGHT_SIZE), np.full(near.sum(), NEIGHBOUR_SIZE)]
        layer = self.highlight_layer
        if not len(data) and not len(layer.data):  # (empty already, as a refill leaves it: napari's data events and
            return                                 # thumbnail refresh spared)
        layer.data = data
        if len(data):
            layer.border_color = colors
            layer.size = sizes

    # ------------------------------------------------------------------ layers → model

    def _on_points_selected(self, event=None) -> None:
        """Points selected *in* the Points layer (napari's select tool, another plugin): one point is highlighted
        (a click, which never changes the selection); two or more become the model's selection (replacing it,
        undoably). An emptied layer selection changes nothing (napari empties it on many occasions)."""
        if self._syncing or self.points_layer is None or self.overlay is None:
            return
        sel = sorted(i for i in self.points_layer.selected_data if i < len(self.overlay.rows))
        rows = self.overlay.rows[sel]
        if len(rows) == 1:
            self.highlight(int(rows[0]))
        elif len(rows) > 1 and not np.array_equal(np.sort(rows), self.selected):
            self.select(rows)

    def _on_features(self, event=None) -> None:
        if not self._syncing:
            self._adopt_foreign(announce=True)

    def _adopt_foreign(self, announce: bool = False) -> None:
        """Columns another plugin wrote into the Points layer's features (new ones, or ones adopted before)
        become table columns: the FOV's rows get the layer's values, the other rows keep theirs (missing when
        new). With *announce*, the docks hear of new columns (``columns_changed``)."""
        layer, ov = self.points_layer, self.overlay
        if layer is None or ov is None or self.table is None or len(layer.features) != len(ov.rows):
            return
        feats = layer.features
        cols = [c for c in feats.columns if isinstance(c, str) and (c not in self.table.columns or c in self._foreign)]
        new = self.adopt_columns(ov.rows, feats[cols])
        self._foreign.update(cols)
        if announce and new:
            self.columns_changed.emit()



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
