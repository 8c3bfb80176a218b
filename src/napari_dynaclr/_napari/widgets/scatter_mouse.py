"""The scatter's mouse: pan/zoom, lasso and box selection, click and hover (a mixin of
:class:`napari_dynaclr._napari.widgets.scatter.ScatterCanvas`).

A press-and-drag in lasso or box mode draws its outline and, on release, emits ``lasso_finished`` with the
polygon in data coordinates; a lasso closes on release wherever it is released (also next to its start).
A press released without moving is a click (``point_clicked``); hover is throttled to one look-up per timer
interval.
"""

from __future__ import annotations

import numpy as np

from napari_dynaclr._napari import plotting

#: a press that moves farther than this (screen px) is a drag, not a click
CLICK_SLOP_PX = 3


class ScatterMouse:
    """Mouse handling of the scatter; the canvas provides ``canvas``, ``view``, ``xy``, the signals and the
    ``lasso_line`` overlay."""

    # ------------------------------------------------------------------ interaction

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.mode = mode
        self.view.camera.interactive = mode == "pan/zoom"

    def to_data(self, canvas_pos) -> np.ndarray:
        tr = self.canvas.scene.node_transform(self.view.scene)
        return np.asarray(tr.map(np.asarray(canvas_pos, dtype=float)[:2])[:2], dtype=float)

    def to_canvas(self, data_pos) -> np.ndarray:
        tr = self.view.scene.node_transform(self.canvas.scene)
        return np.asarray(tr.map(np.asarray(data_pos, dtype=float)[:2])[:2], dtype=float)

    def pixel_size(self) -> tuple[float, float]:
        """Data units per screen pixel along x and y."""
        a, b, c = self.to_data((0, 0)), self.to_data((1, 0)), self.to_data((0, 1))
        return abs(b[0] - a[0]) or 1.0, abs(c[1] - a[1]) or 1.0

    def pick(self, data_pos, radius_px: float = 8.0) -> int:
        """Index of the plotted point nearest to *data_pos* within *radius_px* screen pixels, or −1."""
        if self._grid is None or self._grid.xy.shape[0] != len(self.xy):
            self._grid = plotting.PointGrid(self.xy)
        return self._grid.nearest(data_pos, radius_px, pixel_scale=self.pixel_size())

    def hover(self, data_pos) -> int:
        """Show the read-out of the point under *data_pos* (data coordinates); return its index or −1."""
        i = self.pick(data_pos) if len(self.xy) else -1
        if i != self.hovered:
            self.hovered = i
            text = ""
            if i >= 0:
                text = self.describe(i) if self.describe is not None else f"cell {i}"
            self.hover_label.text = text
            self.point_hovered.emit(i)
        return i

    def _do_hover(self, event=None) -> None:
        pos, self._hover_pos = self._hover_pos, None
        if pos is not None:
            self.hover(self.to_data(pos))

    def _on_press(self, event):
        if event.button != 1:
            return
        self._press = np.asarray(event.pos, dtype=float)
        self._travel = 0.0
        if self.mode != "pan/zoom":
            self._drag = [self.to_data(event.pos)]

    def _on_move(self, event):
        if self._drag is None:
            if not event.buttons:  # hover: throttled to one look-up per timer interval
                self._hover_pos = event.pos
                if not self._hover_timer.isActive():
                    self._hover_timer.start()
            return
        if self._press is not None:  # how far the drag went from where it started, in screen pixels
            self._travel = max(self._travel, float(np.abs(np.asarray(event.pos, float)[:2] - self._press[:2]).max()))
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
        self._hide("lasso_line")
        if press is None:
            return
        # a drag that went somewhere is a lasso/box even when released where it started (a closed loop)
        last = float(np.abs(np.asarray(event.pos, dtype=float)[:2] - press[:2]).max())
        moved = max(self._travel, last) > CLICK_SLOP_PX
        if drag is not None and moved:
            if self.mode == "box" and len(drag) == 2:
                a, p = drag
                poly = np.array([a, [p[0], a[1]], p, [a[0], p[1]]])
            else:  # the lasso closes on release: the last point joins the first
                poly = np.asarray(drag + [self.to_data(event.pos)])
            self.lasso_finished.emit(poly)
        elif not moved:
            self.point_clicked.emit(self.pick(self.to_data(event.pos)))
