"""Moving around the shown FOV: the time axis, going to a cell, and the mouse (a click → the nearest cell).

:class:`Navigation` is the part of :class:`~napari_dynaclr._napari.session.ExplorerSession` that follows and moves
the viewer: it reads napari's ``dims`` (the current time point → ``frame_changed``), moves its camera
(:meth:`~Navigation.goto`, :meth:`~Navigation.goto_row`) and turns a click in pan/zoom mode into a highlight of
the nearest cell at the current time (:meth:`~Navigation.click_at`; a drag pans as napari does).
(:func:`~napari_dynaclr._napari.session.goto_cell` is the same for other widgets.)
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal

from napari_dynaclr._napari.cellmodel import nearest_point


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9 (``viewer.camera`` is deprecated)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


class Navigation:
    """Time, camera and mouse of the session's viewer (a mixin: the session has the table, the overlay of the
    shown FOV, :meth:`highlight` and :meth:`show_fov`)."""

    frame_changed = Signal(str, int)  # shown FOV, current t
    fov_changed = Signal(str)
    #: how far (screen pixels at zoom 1) from a cell a click still picks it
    click_radius_px = 20.0

    def _connect_navigation(self, viewer) -> None:
        self.current_t = 0
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.mouse_drag_callbacks.append(self._on_mouse_drag)

    def _time_axis(self) -> int:
        ndim = self.viewer.dims.ndim
        n = len(self.overlay.scale) if self.overlay is not None else 3
        return max(0, ndim - n)

    def _on_step(self, event=None) -> None:
        if self.overlay is None:
            return
        axis = self._time_axis()
        t = int(round(self.viewer.dims.point[axis] / (self.overlay.scale[0] or 1.0)))
        if t != self.current_t:
            self.current_t = t
            self.frame_changed.emit(self.fov_name, t)

    def _announce_fov(self) -> None:
        """The shown FOV changed: say so, and announce its current frame."""
        self.fov_changed.emit(self.fov_name)
        self.current_t = -1
        self._on_step()

    def goto(self, fov_name: str, t: int, y: float, x: float) -> None:
        """Show *fov_name*, step the time slider to *t* and centre the camera on (y, x) pixels."""
        if self.table is not None and str(fov_name) != self.fov_name and str(fov_name) in self.fov_names():
            self.show_fov(str(fov_name))
        viewer = self.viewer
        scale = self.overlay.scale if self.overlay is not None else (1.0, 1.0, 1.0)
        viewer.dims.set_point(self._time_axis(), float(t) * scale[0])
        camera(viewer).center = (float(y) * scale[-2], float(x) * scale[-1])

    def goto_row(self, row: int) -> None:
        """Go to the cell of table row *row* and highlight it."""
        r = self.table.iloc[int(row)]
        self.goto(str(r["fov_name"]), int(r["t"]), float(r["y"]), float(r["x"]))
        self.highlight(int(row))

    def click_at(self, world_position) -> int:
        """Highlight the cell of the shown FOV nearest to a world position at the current t (its row, or −1)."""
        if self.overlay is None or self.table is None:
            return -1
        scale = np.asarray(self.overlay.scale)
        rows = self.frames.rows(self.fov_name, self.current_t)
        if not len(rows):
            return -1
        pos = np.asarray(world_position, dtype=float)[-2:]
        sy, sx = scale[-2], scale[-1]
        xy = np.column_stack([self.table["x"].to_numpy()[rows] * sx, self.table["y"].to_numpy()[rows] * sy])
        i = nearest_point(xy, (pos[1], pos[0]), self.click_radius_px, pixel_scale=(sx, sy))
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

