"""The embedding scatter: a vispy plot (axes, colour key, hover read-out) of up to millions of cells.

Two ways to draw the cells:

* **markers** — one ``Markers`` visual, every cell a dot in its colour (the default up to
  :data:`DENSITY_THRESHOLD` plotted cells);
* **density** — a 2-D histogram raster of the visible range (one bin per :attr:`ScatterCanvas.density_px`
  screen pixels): log-scaled counts as opacity, each bin tinted with the mean colour of its cells, so
  colouring by a column still reads. It is recomputed (debounced) when the camera moves and replaces the
  million-marker draw, which software OpenGL cannot do interactively.

In both modes the current frame's cells, the selection, the highlighted cell and a track trajectory are
small overlay visuals drawn on top, so a time step or a click never re-uploads the point cloud. The
selection is a double outline (white ring inside a black ring) that no category or colormap colour can
be mistaken for; a selection of more than :data:`SELECTION_MARKER_CAP` cells is drawn as a raster of the
same style (translucent white bins, a white edge and a black edge outside the selected region).

Lasso and box selections are hit-tested in data coordinates with
:func:`napari_dynaclr._napari.cellmodel.geometry.points_in_polygon` (vectorised), never on the raster.
"""

from __future__ import annotations

import functools

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QTimer
from vispy import scene
from vispy.visuals.text.text import FontManager
from vispy.visuals.transforms import STTransform

from napari_dynaclr._napari import plotting
from napari_dynaclr._napari.widgets.plot_axis import NUMBER_GLYPHS, PlotAxis
from napari_dynaclr._napari.widgets.plot_key import ColorKey
from napari_dynaclr._napari.widgets.plot_reveal import StagedReveal
from napari_dynaclr._napari.widgets.scatter_mouse import ScatterMouse

BACKGROUND = "#262930"
AXIS_COLOR = (0.75, 0.75, 0.75, 1.0)
#: the characters the key's texts are warmed with (plot_reveal): column names and category labels
KEY_GLYPHS = "abcdefghijklmnopqrstuvwxyz_"
#: selection style: a white ring inside a black ring (neither is a tab10 or viridis colour)
SELECTED_INNER = (1.0, 1.0, 1.0, 1.0)
SELECTED_OUTER = (0.0, 0.0, 0.0, 1.0)
#: density mode "auto" switches to the raster above this many plotted cells
DENSITY_THRESHOLD = 100_000
#: larger selections are drawn as a raster outline instead of markers
SELECTION_MARKER_CAP = 50_000
DENSITY_MODES = ("auto", "on", "off")


class ScatterCanvas(ScatterMouse):
    """vispy plot of the cells; emits ``lasso_finished`` / ``point_clicked`` / ``point_hovered``.

    Public API used by the embedding view: :meth:`set_points`, :meth:`set_colors` (with an optional
    colour key for the legend / colour bar), :meth:`set_labels`, :meth:`set_density`,
    :meth:`show_selected`, :meth:`show_now`, :meth:`show_highlight`, :meth:`show_trajectory`,
    :meth:`show_cursor`, :meth:`set_mode`, :meth:`pick`, :attr:`describe` (row → hover text) and
    :attr:`n_plotted`.
    """

    lasso_finished = Signal(object)  # (K, 2) polygon in data coordinates
    point_clicked = Signal(int)  # index into the plotted points (−1: empty space)
    point_hovered = Signal(int)  # index under the mouse (−1: none); throttled

    MODES = ("pan/zoom", "lasso", "box")

    def __init__(self, parent=None):
        self.canvas = scene.SceneCanvas(keys=None, bgcolor=BACKGROUND, size=(420, 420), parent=parent)
        self.canvas.unfreeze()
        grid = self.canvas.central_widget.add_grid(spacing=0, margin=2)
        # one glyph cache for the plot's own texts (each vispy Text otherwise renders its own copy of every glyph,
        # ≈ 6 ms each under software OpenGL, plus 9 for the font's metrics): the axes, the key, the read-out
        self.fonts = FontManager()
        self.y_axis = PlotAxis("left", self.fonts, color=AXIS_COLOR, label_margin=38, tick_spacing_px=40)
        self.y_axis.width_max = self.y_axis.width_min = 52
        self.x_axis = PlotAxis("bottom", self.fonts, color=AXIS_COLOR, label_margin=32, tick_spacing_px=70)
        self.x_axis.height_max = self.x_axis.height_min = 46
        grid.add_widget(self.y_axis, row=0, col=0)
        grid.add_widget(self.x_axis, row=1, col=1)
        self.view = grid.add_view(row=0, col=1, border_color=(0.4, 0.4, 0.4, 1.0))
        self.view.camera = scene.PanZoomCamera(aspect=None)
        self.key_box = grid.add_view(row=0, col=2, row_span=2)
        self.key_box.width_max = self.key_box.width_min = 96
        self.key = ColorKey(self.key_box, fonts=self.fonts)
        self.theme: dict | None = None  # napari's theme colours (set_theme); None: the built-in dark ones
        self.x_axis.link_view(self.view)
        self.y_axis.link_view(self.view)

        self.hover_label = scene.visuals.Text("", parent=self.view, color="white", font_size=7, font_manager=self.fonts,
                                              anchor_x="left", anchor_y="bottom", pos=(6, 14))
        self.hover_label.order = 10

        self.xy = np.empty((0, 2), dtype=np.float32)
        self.colors = np.empty((0, 4), dtype=np.float32)
        self._finite = np.zeros(0, dtype=bool)
        self._selected = np.empty(0, dtype=np.int64)
        self._overlays: dict[str, dict] = {}  # what each shown marker overlay draws (shown_markers)
        self._grid: plotting.PointGrid | None = None
        self._bins: np.ndarray | None = None  # density-bin index of every point for the current raster
        self._bin_geom = None  # (x_range, y_range, shape) of the current raster
        self.raster_image = np.zeros((0, 0, 4), np.float32)  # RGBA of the density raster shown
        self.selection_image = np.zeros((0, 0, 4), np.float32)  # RGBA of a large selection's raster
        self._base_stale = True  # markers not uploaded since the points/colours changed (density mode)
        self.point_size = 4.0
        self.density_mode = "auto"
        self.density_px = 2
        self.mode = "pan/zoom"
        self.describe = None  # callable(row) -> str for the hover read-out
        self.hovered = -1
        self._drag: list | None = None
        self._press = None
        self._travel = 0.0  # the farthest a press-and-drag went from its start, px
        self._hover_pos = None
        # Qt timers owned by the canvas's widget: they die with it (napari closing mid-way fires none late)
        self._hover_timer = self._timer(50, self._do_hover, single=True)
        self._density_timer = self._timer(120, self._on_camera_settled, single=True)
        ev = self.canvas.events
        ev.mouse_press.connect(self._on_press)
        ev.mouse_move.connect(self._on_move)
        ev.mouse_release.connect(self._on_release)
        self.view.scene.transform.changed.connect(self._on_camera)
        self.view.events.resize.connect(self._on_camera)
        self.key_box.events.resize.connect(lambda e: self.key.relayout())
        # the axes and the key are shown in stages (plot_reveal), also while the plot is hidden; tick labels with
        # every character numbers are written with, so a pan renders no glyph either
        stages = [(ax.lines, []) for ax in (self.y_axis, self.x_axis)]
        stages += [(ax.tick_text, [(ax.tick_text, NUMBER_GLYPHS)]) for ax in (self.y_axis, self.x_axis)]
        stages += [(ax.title, [(ax.title, "")]) for ax in (self.y_axis, self.x_axis)]
        # the key's texts with the letters of column names and category labels: the first legend (or the first
        # colour key of another column) then renders no glyph in its paint
        key = self.key  # (each of its texts in a stage of its own: one shader build per turn)
        stages.append((self.key_box, [(key.title, KEY_GLYPHS)]))
        stages.append((key.ticks, [(key.ticks, NUMBER_GLYPHS)]))
        stages.append((key.legend, [(key.labels, KEY_GLYPHS + NUMBER_GLYPHS + "…")]))
        self.reveal = StagedReveal(self.canvas, self.fonts, stages)

    def _timer(self, ms: int, slot, single: bool):
        timer = QTimer(self.canvas.native)
        timer.setInterval(ms)
        timer.setSingleShot(single)
        timer.timeout.connect(slot)
        return timer

    def set_theme(self, colors: dict) -> None:
        """Follow napari's theme: *colors* from :func:`plotting.theme_colors` (background, text, border)."""
        self.theme = dict(colors)
        self.canvas.bgcolor = colors["background"]
        self.view.border_color = colors["border"]
        for ax in (self.x_axis, self.y_axis):
            ax.set_color(colors["text"])
        self.key.set_color(colors["text"])
        self.hover_label.color = colors["text"]
        if self._made("lasso_line"):
            self.lasso_line.set_data(color=colors["text"])
        self.canvas.update()

    @property
    def ready(self) -> bool:
        """The axes and the key are shown (and drawn once): the staged first paint is over."""
        return self.reveal.ready

    def _markers(self, order: int):
        m = scene.visuals.Markers(parent=self.view.scene, scaling="fixed", antialias=0.5)
        m.set_data(np.zeros((1, 2), np.float32), face_color=(0, 0, 0, 0), size=0, edge_width=0)  # has bounds
        return self._overlay_node(m, order, blend_func=("src_alpha", "one_minus_src_alpha"))

    def _image(self, order: int):
        im = scene.visuals.Image(np.zeros((1, 1, 4), np.float32), parent=self.view.scene, clim=(0, 1),
                                 interpolation="nearest")
        im.transform = STTransform()
        im.order = order
        im.set_gl_state("translucent", depth_test=False)
        im.visible = False
        return im

    @staticmethod
    def _overlay_node(node, order: int, **gl):
        node.order = order
        node.set_gl_state(depth_test=False, blend=True, **gl)
        node.visible = False
        return node

    # The plot's visuals are made on first use (each costs 5–15 ms to make, then a shader build on its first
    # draw): the dock that holds the plot is built in a shorter turn, and a visual never needed is never made.
    # They start hidden; :meth:`_made` tells whether one exists yet (hiding one that does not is a no-op).

    @functools.cached_property
    def base(self):
        """Every cell as a marker (markers mode)."""
        return self._markers(order=0)

    @functools.cached_property
    def raster(self):
        """The density raster (density mode)."""
        return self._image(order=0)

    @functools.cached_property
    def sel_raster(self):
        """A large selection's outline raster."""
        return self._image(order=1)

    @functools.cached_property
    def sel_outer(self):
        return self._markers(order=1)

    @functools.cached_property
    def sel_inner(self):
        return self._markers(order=1)

    @functools.cached_property
    def now(self):
        """The current frame's cells of the shown FOV."""
        return self._markers(order=2)

    @functools.cached_property
    def trajectory(self):
        line = scene.visuals.Line(parent=self.view.scene, width=2, connect="segments", antialias=True)
        return self._overlay_node(line, order=3)

    @functools.cached_property
    def cursor(self):
        return self._markers(order=4)

    @functools.cached_property
    def highlight(self):
        return self._markers(order=5)

    @functools.cached_property
    def lasso_line(self):
        color = self.theme["text"] if self.theme else "white"  # the theme's text colour: visible on its background
        return self._overlay_node(scene.visuals.Line(parent=self.view.scene, width=1.5, color=color), order=6)

    def _made(self, name: str) -> bool:
        return name in self.__dict__

    def _hide(self, *names: str) -> None:
        for name in names:
            self._overlays.pop(name, None)
            if self._made(name):
                getattr(self, name).visible = False

    @property
    def native(self):
        return self.canvas.native

    @property
    def n_plotted(self) -> int:
        """Cells with finite coordinates."""
        return int(self._finite.sum())

    # ------------------------------------------------------------------ data

    def set_points(self, xy: np.ndarray, colors: np.ndarray, reset_view: bool = True) -> None:
        """Replace the point cloud (positions + colours); NaN positions are hidden."""
        xy = np.asarray(xy, dtype=np.float32)
        self.xy = xy
        self.colors = np.asarray(colors, dtype=np.float32)
        self._finite = plotting.finite_rows(xy)
        self._selected = self._selected[self._selected < len(xy)]
        self._grid = None  # built on the first hover / click
        self._bins = None
        self._base_stale = True
        if reset_view:
            self.reset_view()
        self._redraw_points()

    def set_colors(self, colors: np.ndarray, key: dict | None = None) -> None:
        """Recolour all points; *key* (:func:`plotting.color_key`) is shown as legend or colour bar."""
        self.colors = np.asarray(colors, dtype=np.float32)
        self._base_stale = True
        if key is not None:
            self.key.show(key)
        self._redraw_points()
        self._refresh_selection()

    def set_key(self, key: dict | None) -> None:
        self.key.show(key)

    def set_labels(self, x: str, y: str) -> None:
        """Axis labels (the plotted columns)."""
        self.x_axis.label = x
        self.y_axis.label = y

    def set_density(self, mode: str) -> None:
        """``"auto"`` (raster above :data:`DENSITY_THRESHOLD` cells), ``"on"`` or ``"off"``."""
        if mode not in DENSITY_MODES:
            raise ValueError(f"density must be one of {DENSITY_MODES}")
        self.density_mode = mode
        self._redraw_points()
        self._refresh_selection()

    @property
    def density_active(self) -> bool:
        if self.density_mode == "auto":
            return self.n_plotted > DENSITY_THRESHOLD
        return self.density_mode == "on"

    def _redraw_points(self) -> None:
        if self.density_active:
            self._hide("base")
            self._update_raster(rebin=self._bins is None)
        else:
            self._hide("raster")
            self._upload_base()

    def _upload_base(self) -> None:
        self.base.visible = True
        if not self._base_stale:
            return
        xy = self.xy
        if not len(xy):
            self.base.set_data(np.zeros((1, 2), np.float32), face_color=(0, 0, 0, 0), size=0, edge_width=0)
        else:
            colors = self.colors
            if not self._finite.all():
                colors = colors.copy()
                colors[~self._finite, 3] = 0
            self.base.set_data(np.where(self._finite[:, None], xy, 0).astype(np.float32), face_color=colors,
                               size=self.point_size, edge_width=0)
        self._base_stale = False

    # ------------------------------------------------------------------ density raster

    def _raster_geometry(self):
        r = self.view.camera.rect
        w, h = (max(1, int(s)) for s in self.view.size)
        shape = (min(1024, max(1, h // self.density_px)), min(1024, max(1, w // self.density_px)))
        return (float(r.left), float(r.right)), (float(r.bottom), float(r.top)), shape

    def _update_raster(self, rebin: bool = True) -> None:
        if rebin or self._bin_geom is None:
            x_range, y_range, shape = self._raster_geometry()
            if not (x_range[1] > x_range[0] and y_range[1] > y_range[0]):
                return
            self._bins = plotting.density_bins(self.xy, x_range, y_range, shape)
            self._bin_geom = (x_range, y_range, shape)
        (x0, x1), (y0, y1), shape = self._bin_geom
        img = plotting.density_image(self._bins, shape, self.colors)
        self.raster_image = img
        self.raster.set_data(img)
        self.raster.transform.scale = ((x1 - x0) / shape[1], (y1 - y0) / shape[0])
        self.raster.transform.translate = (x0, y0)
        self.raster.visible = True

    @property
    def raster_geometry(self):
        """``((x0, x1), (y0, y1), (rows, cols))`` of the density raster shown now, or None."""
        return self._bin_geom

    def density_counts(self) -> np.ndarray:
        """Cells per bin of the raster shown now ((rows along y, cols along x); empty when not in density mode)."""
        if self._bins is None or self._bin_geom is None:
            return np.zeros((0, 0), dtype=np.int64)
        return plotting.density_counts(self._bins, self._bin_geom[2])

    def _on_camera(self, event=None) -> None:
        if len(self.xy) and (self.density_active or (self._made("sel_raster") and self.sel_raster.visible)):
            self._density_timer.stop()
            self._density_timer.start()

    def _on_camera_settled(self, event=None) -> None:
        """Re-bin the rasters (density, large selection) for the range the camera settled on."""
        if not len(self.xy):
            return
        if self.density_active:
            if self._bin_geom is not None and self._raster_geometry() == self._bin_geom:
                return
            self._update_raster(rebin=True)
            self._refresh_selection()
        elif self._made("sel_raster") and self.sel_raster.visible:
            self._refresh_selection()

    def reset_view(self) -> None:
        rng = plotting.finite_range(self.xy, self._finite)
        if rng is None:
            return
        lo, hi = rng
        pad = np.maximum((hi - lo) * 0.05, 1e-3)
        self.view.camera.set_range(x=(lo[0] - pad[0], hi[0] + pad[0]), y=(lo[1] - pad[1], hi[1] + pad[1]),
                                   z=(-1.0, 1.0), margin=0)
        self._bins = None

    # ------------------------------------------------------------------ overlays

    def _overlay(self, name: str, rows, size, face=None, edge=(1, 1, 1, 1), edge_width=1.0, symbol="o"):
        """Draw the overlay markers *name* on *rows* (hidden when none is plotted)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            xy = self.xy[rows]
            ok = np.isfinite(xy).all(axis=1)
            rows, xy = rows[ok], xy[ok]
        if not len(rows):
            self._hide(name)
            return
        visual = getattr(self, name)
        visual.visible = True
        face = self.colors[rows] if face is None else face
        visual.set_data(xy, face_color=face, edge_color=edge, size=size, edge_width=edge_width, symbol=symbol)
        self._overlays[name] = {"rows": rows, "xy": xy, "size": size, "face": face, "edge": edge,
                                "edge_width": edge_width, "symbol": symbol}

    def shown_markers(self, name: str) -> dict | None:
        """What the marker overlay *name* draws now — ``"sel_inner"`` and ``"sel_outer"`` (the selection's white
        and black rings), ``"now"`` (the current frame's cells), ``"cursor"`` (the trajectory's cells at the
        current time), ``"highlight"`` (the clicked cell) — as ``{"rows", "xy", "size", "face", "edge",
        "edge_width", "symbol"}`` (plotted rows, their positions and the marker style), or None when hidden."""
        return self._overlays.get(name)

    def show_selected(self, rows) -> None:
        """Draw the selection on top: double-outlined markers, or an outlined raster when large."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) > 1 and not (rows[1:] > rows[:-1]).all():  # the session passes sorted unique rows
            rows = np.unique(rows)
        self._selected = rows
        self._refresh_selection()

    def _refresh_selection(self) -> None:
        rows = self._selected
        big = len(rows) > SELECTION_MARKER_CAP
        if big:
            self._hide("sel_outer", "sel_inner")
            geom_ok = self.density_active and self._bins is not None
            if not geom_ok:  # markers mode: bin the selection on the visible range at screen resolution
                x_range, y_range, shape = self._raster_geometry()
                bins, geom = plotting.density_bins(self.xy[rows], x_range, y_range, shape), (x_range, y_range, shape)
                counts = plotting.density_counts(bins, shape)
            else:
                geom = self._bin_geom
                counts = plotting.density_counts(self._bins, geom[2], rows)
            (x0, x1), (y0, y1), shape = geom
            self.selection_image = plotting.selection_outline(counts > 0)
            self.sel_raster.set_data(self.selection_image)
            self.sel_raster.transform.scale = ((x1 - x0) / shape[1], (y1 - y0) / shape[0])
            self.sel_raster.transform.translate = (x0, y0)
            self.sel_raster.visible = True
            return
        self._hide("sel_raster")
        p = self.point_size
        self._overlay("sel_outer", rows, p + 7, face=(0, 0, 0, 0), edge=SELECTED_OUTER, edge_width=1.5)
        self._overlay("sel_inner", rows, p + 3, edge=SELECTED_INNER, edge_width=1.5)

    def selected_rows(self) -> np.ndarray:
        return self._selected.copy()

    def show_now(self, rows) -> None:
        # filled, with a thin dark edge: not the selection's white-in-black ring
        self._overlay("now", rows, self.point_size + 4, edge=(0.08, 0.08, 0.1, 1.0), edge_width=1.0)

    def show_highlight(self, row: int) -> None:
        self._overlay("highlight", [row] if row >= 0 else [], 18, face=(0, 0, 0, 0),
                      edge=(0.0, 1.0, 1.0, 1.0), edge_width=2.5)

    def show_cursor(self, rows) -> None:
        """Diamonds on the trajectory's cells at the current time."""
        self._overlay("cursor", list(rows), 12, face=(1, 1, 1, 1), edge=(1, 0.2, 0.2, 1),
                      edge_width=2.0, symbol="diamond")

    def show_trajectory(self, branches: list[np.ndarray], cursor_rows=()) -> None:
        """Polylines through the rows of each branch (ordered by t) plus cursor markers."""
        segs = []
        for b in branches:
            pts = self.xy[np.asarray(b, dtype=np.int64)]
            pts = pts[np.isfinite(pts).all(axis=1)]
            if len(pts) >= 2:
                segs.append(np.repeat(pts, 2, axis=0)[1:-1])
        if segs:
            pos = np.concatenate(segs)
            n = len(pos) // 2
            shade = np.linspace(0.35, 1.0, n, dtype=np.float32)
            color = np.column_stack([np.full(n, 1.0), shade, 1 - shade * 0.6, np.full(n, 0.95)]).astype(np.float32)
            self.trajectory.set_data(pos=pos, color=np.repeat(color, 2, axis=0), connect="segments")
            self.trajectory.visible = True
        else:
            self._hide("trajectory")
        self.show_cursor(cursor_rows)
