"""A GPU scatter canvas (vispy ``SceneCanvas`` + ``Markers``) for up to millions of cells.

All cells are one ``Markers`` visual whose colours are replaced with one ``set_data`` call; the current
frame's cells, the selection, the highlighted cell and a track trajectory are small overlay visuals, so a
time step or a click never re-uploads the full point cloud. Lasso and box selections are hit-tested in
data coordinates with :func:`napari_dynaclr._napari.explore.points_in_polygon` (vectorised).
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal
from vispy import scene

from napari_dynaclr._napari import explore

BACKGROUND = "#262930"
SELECTED_EDGE = (1.0, 0.85, 0.0, 1.0)


class ScatterCanvas:
    """vispy scene with a base point cloud and overlays; emits ``lasso_finished`` / ``point_clicked``."""

    lasso_finished = Signal(object)  # (K, 2) polygon in data coordinates
    point_clicked = Signal(int)  # index into the plotted points (−1: empty space)

    MODES = ("pan/zoom", "lasso", "box")

    def __init__(self, parent=None):
        self.canvas = scene.SceneCanvas(keys=None, bgcolor=BACKGROUND, size=(420, 420), parent=parent)
        self.canvas.unfreeze()
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.PanZoomCamera(aspect=None)
        self.base = self._markers(order=0)
        self.now = self._markers(order=2)
        self.trajectory = scene.visuals.Line(parent=self.view.scene, width=2, connect="segments",
                                             antialias=True)
        self.trajectory.order = 3
        self.trajectory.set_gl_state(depth_test=False, blend=True)
        self.cursor = self._markers(order=4)
        self.highlight = self._markers(order=5)
        self.lasso_line = scene.visuals.Line(parent=self.view.scene, width=1.5, color="white")
        self.lasso_line.order = 6
        self.lasso_line.set_gl_state(depth_test=False, blend=True)
        self.xy = np.empty((0, 2), dtype=np.float32)
        self.colors = np.empty((0, 4), dtype=np.float32)
        self._finite = np.zeros(0, dtype=bool)
        self._selected_mask = np.zeros(0, dtype=bool)
        self.point_size = 4.0
        self.mode = "pan/zoom"
        self._drag: list | None = None
        self._press = None
        ev = self.canvas.events
        ev.mouse_press.connect(self._on_press)
        ev.mouse_move.connect(self._on_move)
        ev.mouse_release.connect(self._on_release)

    def _markers(self, order: int):
        m = scene.visuals.Markers(parent=self.view.scene, scaling="fixed", antialias=0.5)
        m.order = order
        m.set_gl_state(depth_test=False, blend=True, blend_func=("src_alpha", "one_minus_src_alpha"))
        return m

    @property
    def native(self):
        return self.canvas.native

    # ------------------------------------------------------------------ data

    def set_points(self, xy: np.ndarray, colors: np.ndarray, reset_view: bool = True) -> None:
        """Replace the point cloud (positions + colours); NaN positions are hidden."""
        xy = np.asarray(xy, dtype=np.float32)
        self.xy = xy
        self.colors = np.asarray(colors, dtype=np.float32)
        self._upload_base()
        if reset_view:
            self.reset_view()

    def _upload_base(self) -> None:
        xy = self.xy
        finite = np.isfinite(xy).all(axis=1) if len(xy) else np.zeros(0, dtype=bool)
        self._finite = finite
        if not len(xy):
            self.base.set_data(np.zeros((1, 2), np.float32), face_color=(0, 0, 0, 0), size=0, edge_width=0)
            return
        self.base.set_data(np.where(finite[:, None], xy, 0).astype(np.float32), face_color=self._face(),
                           size=self.point_size, edge_width=0, edge_color=(0, 0, 0, 0))
        self._selected_mask = np.zeros(len(xy), dtype=bool)

    def _face(self) -> np.ndarray:
        colors = self.colors
        if not self._finite.all():
            colors = colors.copy()
            colors[~self._finite, 3] = 0
        return colors

    def _update_fields(self, **fields) -> None:
        """Replace attribute columns of the base markers in place and re-upload once (no re-plot).

        vispy's ``Markers.set_data`` rebuilds and validates every attribute; for a colour or selection
        change only one or two columns of the interleaved vertex buffer change, so those are written into
        the visual's existing record array and the buffer is uploaded as is.
        """
        data = getattr(self.base, "_data", None)
        if data is None or len(data) != len(self.xy):
            self._upload_base()
            return
        for name, values in fields.items():
            data[name] = values
        self.base._vbo.set_data(data)
        self.base.update()

    def set_colors(self, colors: np.ndarray) -> None:
        """Recolour all points in place (one buffer upload)."""
        self.colors = np.asarray(colors, dtype=np.float32)
        self._update_fields(a_bg_color=self._face())

    def reset_view(self) -> None:
        finite = self.xy[np.isfinite(self.xy).all(axis=1)] if len(self.xy) else self.xy
        if not len(finite):
            return
        lo, hi = finite.min(axis=0), finite.max(axis=0)
        pad = np.maximum((hi - lo) * 0.05, 1e-3)
        self.view.camera.set_range(x=(lo[0] - pad[0], hi[0] + pad[0]), y=(lo[1] - pad[1], hi[1] + pad[1]),
                                   z=(-1.0, 1.0), margin=0)

    def _overlay(self, visual, rows, size, face=None, edge=(1, 1, 1, 1), edge_width=1.0, symbol="o"):
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            xy = self.xy[rows]
            ok = np.isfinite(xy).all(axis=1)
            rows, xy = rows[ok], xy[ok]
        if not len(rows):
            visual.visible = False
            return
        visual.visible = True
        face = self.colors[rows] if face is None else face
        visual.set_data(xy, face_color=face, edge_color=edge, size=size, edge_width=edge_width, symbol=symbol)

    def show_selected(self, rows) -> None:
        """Outline the selected points (edge colour/width columns of the base markers, in place)."""
        n = len(self.xy)
        mask = np.zeros(n, dtype=bool)
        mask[np.asarray(rows, dtype=np.int64)] = True
        edge = np.zeros((n, 4), dtype=np.float32)
        edge[mask] = SELECTED_EDGE
        self._selected_mask = mask
        self._update_fields(a_fg_color=edge, a_edgewidth=np.where(mask, 1.5, 0).astype(np.float32),
                            a_size=np.where(mask, self.point_size + 3, self.point_size).astype(np.float32))

    def selected_rows(self) -> np.ndarray:
        return np.flatnonzero(getattr(self, "_selected_mask", np.zeros(0, dtype=bool)))

    def show_now(self, rows) -> None:
        self._overlay(self.now, rows, self.point_size + 5, edge=(1, 1, 1, 0.9), edge_width=1.0)

    def show_highlight(self, row: int) -> None:
        self._overlay(self.highlight, [row] if row >= 0 else [], 18, face=(0, 0, 0, 0),
                      edge=(0.0, 1.0, 1.0, 1.0), edge_width=2.5)

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
            self.trajectory.visible = False
        self._overlay(self.cursor, list(cursor_rows), 12, face=(1, 1, 1, 1), edge=(1, 0.2, 0.2, 1),
                      edge_width=2.0, symbol="diamond")

    # ------------------------------------------------------------------ interaction

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.mode = mode
        self.view.camera.interactive = mode == "pan/zoom"

    def to_data(self, canvas_pos) -> np.ndarray:
        tr = self.canvas.scene.node_transform(self.view.scene)
        return np.asarray(tr.map(np.asarray(canvas_pos, dtype=float)[:2])[:2], dtype=float)

    def pixel_size(self) -> tuple[float, float]:
        """Data units per screen pixel along x and y."""
        a, b, c = self.to_data((0, 0)), self.to_data((1, 0)), self.to_data((0, 1))
        return abs(b[0] - a[0]) or 1.0, abs(c[1] - a[1]) or 1.0

    def pick(self, data_pos, radius_px: float = 8.0) -> int:
        """Index of the plotted point nearest to *data_pos* within *radius_px* screen pixels, or −1."""
        return explore.nearest_point(self.xy, data_pos, radius_px, pixel_scale=self.pixel_size())

    def _on_press(self, event):
        if event.button != 1:
            return
        self._press = np.asarray(event.pos, dtype=float)
        if self.mode != "pan/zoom":
            self._drag = [self.to_data(event.pos)]

    def _on_move(self, event):
        if self._drag is None:
            return
        p = self.to_data(event.pos)
        if self.mode == "lasso":
            self._drag.append(p)
            path = np.asarray(self._drag + [self._drag[0]])
        else:
            a = self._drag[0]
            self._drag = [a, p]
            path = np.array([a, [p[0], a[1]], p, [a[0], p[1]], a])
        self.lasso_line.set_data(pos=path.astype(np.float32))
        self.lasso_line.visible = True

    def _on_release(self, event):
        press, self._press = self._press, None
        drag, self._drag = self._drag, None
        self.lasso_line.visible = False
        if press is None:
            return
        moved = np.abs(np.asarray(event.pos, dtype=float) - press).max() > 3
        if drag is not None and moved:
            if self.mode == "box" and len(drag) == 2:
                a, p = drag
                poly = np.array([a, [p[0], a[1]], p, [a[0], p[1]]])
            else:
                poly = np.asarray(drag)
            self.lasso_finished.emit(poly)
        elif not moved:
            self.point_clicked.emit(self.pick(self.to_data(event.pos)))
