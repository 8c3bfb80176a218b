"""A FOV switch in the shown layers (:meth:`~napari_dynaclr._napari.session.ExplorerSession.show_fov`): the image,
Tracks, Points and highlight layers of the previous FOV are refilled in place when they fit, never removed and
built anew (napari collects garbage at each removal, 0.1–0.3 s with a large table in memory, and building a
layer costs 0.1–0.5 s under software OpenGL).

* a FOV the open plate lacks keeps the image layers, hidden, empty and named so
  (:func:`~napari_dynaclr._napari.layers.refill_images`); the next FOV with images shows them again;
* a FOV of more than :data:`STEP_FOV_ROWS` cells gets its Tracks layer in later event-loop turns: hidden at
  once, refilled in the next two turns (after the paint of the images and Points: its track data, then its
  features, graph and colours), shown in the turn after (its first paint alone). A newer FOV switch or table
  makes the pending steps stale (the session's generation);
* a refill that adds more than :data:`STEP_FOV_ROWS` points to the Points layer (a store of large FOVs opened
  after the demo, a switch to a much larger FOV) fills it hidden and shows it in the next turn: napari's Points
  layer grows in one call of 75–110 ms (it coerces every point's symbol again), and the first paint of the new
  points then falls in a turn of its own (docs/performance.md; a switch between FOVs of about the same size
  gained nothing measurable this way, and keeps its Points shown).

An open of a store whose first FOV fits the shown layers refills them the same way
(:meth:`~napari_dynaclr._napari.session.ExplorerSession.install`).
"""

from __future__ import annotations

import numpy as np

from napari_dynaclr._napari import layers

#: a FOV switch to a FOV of more cells than this refills its Tracks layer in later event-loop turns
STEP_FOV_ROWS = 20_000


class FovRefill:
    """The refill half of the session's layer binder (a mixin of the session: its layers, overlay, colours,
    plate, viewer, ``_generation`` and ``_syncing``)."""

    _hidden: dict  # the session's layers a refill hid, by attribute name ("points_layer"): their visibility

    def _refill_layers(self, images: list, ov, scale, made=None) -> bool:
        """Put another FOV into the shown layers (False, nothing changed, when they do not fit). *made*: a Points
        layer of *ov* made in a worker thread (:func:`~napari_dynaclr._napari.layers.prepare_table`): its
        features are napari's copy of the overlay's, already consolidated by pandas there, so that napari's
        copy here does not merge a 10⁵-row frame's blocks again on the GUI thread."""
        if not self._layers_fit(images, ov):
            return False
        self._syncing = True
        try:
            self.overlay = ov
            layers.refill_images(self.image_layers, images, self.fov_name)
            points = self.points_layer
            if len(ov.rows) - len(points.data) > STEP_FOV_ROWS:
                self._hide("points_layer")
            points.selected_data = set()
            points.data = ov.points
            points.features = ov.features if made is None else made.features  # (napari copies it)
            points.face_color = self.colors[ov.rows]
            self.highlight_layer.data = np.empty((0, ov.points.shape[1]))
            named = ((self.tracks_layer, "tracks"), (points, "cells"), (self.highlight_layer, "highlight"))
            for layer, suffix in named:
                layers.set_scale(layer, scale)
                layer.name = f"{self.fov_name} {suffix}"
                layer.metadata = {**layer.metadata, "dynaclr_fov": self.fov_name}
            if len(ov.rows) > STEP_FOV_ROWS:
                self._refill_tracks_later()
            else:
                self._refill_tracks()
                self._unhide("points_layer", "tracks_layer")  # (hidden by a switch whose later turns went stale)
        finally:
            self._syncing = False
        return True

    def _layers_fit(self, images: list, ov) -> bool:
        """Whether the shown layers can show a FOV of these image layer tuples and this overlay (same channels and
        dimensions; no image layers for a FOV the open plate lacks) by a refill."""
        shown = [*self.image_layers, self.tracks_layer, self.points_layer, self.highlight_layer]
        return not (not len(ov.rows) or self._leaving or any(layer is None for layer in shown)
                    or any(layer not in self.viewer.layers for layer in shown)
                    or (len(images) != len(self.image_layers) and (images or self.plate is None))
                    or any(layer.data.ndim != data.ndim for layer, (data, _, _) in zip(self.image_layers, images))
                    or self.points_layer.data.shape[1] != ov.points.shape[1])

    def _refill_tracks(self, part: str = "all") -> None:
        """The shown overlay's tracks into the Tracks layer (its features: the Points layer's, same rows). *part*
        "data": the track data alone (napari empties the layer's features and graph), "rest": the features,
        graph and colours, "all": both."""
        ov, tracks = self.overlay, self.tracks_layer
        if part in ("all", "data"):
            tracks.data = ov.tracks
        if part in ("all", "rest"):
            tracks.features = self.points_layer.features  # (napari copies it: the layers share no frame)
            tracks.graph = ov.graph
            tracks.track_colors = self.colors[ov.rows]

    def _hide(self, name: str) -> None:
        """Hide the session's layer *name* (``"points_layer"``, ``"tracks_layer"``) until :meth:`_unhide`; the
        visibility it had before the first of switches in a row stays the one it gets back (the user's choice).
        Kept by name, not by layer: a layer the user deletes meanwhile is not held."""
        layer = getattr(self, name)
        self._hidden.setdefault(name, layer.visible)
        layer.visible = False

    def _unhide(self, *names: str) -> None:
        """The session's layers *names* as visible as they were before a refill hid them."""
        for name in names:
            layer, visible = getattr(self, name), self._hidden.pop(name, None)
            if layer is not None and visible is not None:
                layer.visible = visible

    def _refill_tracks_later(self) -> None:
        """Hide the Tracks layer now; refill it in the next two event-loop turns, show it in the turn after (and
        before them, in a turn of its own, show a Points layer the refill hid)."""
        from qtpy.QtCore import QTimer

        gen, tracks = self._generation, self.tracks_layer
        self._hide("tracks_layer")

        def steps():
            if "points_layer" in self._hidden:  # (the new points' first paint, a turn after their refill)
                self._unhide("points_layer")
                yield
            for part in ("data", "rest"):  # (napari builds the tracks from the data, then the graph: a turn each)
                self._syncing = True
                try:
                    self._refill_tracks(part)
                finally:
                    self._syncing = False
                yield
            self._unhide("tracks_layer")

        todo = steps()

        def step() -> None:
            if (gen == self._generation and tracks is self.tracks_layer and self.points_layer is not None
                    and next(todo, True) is None):  # (the user may delete a layer meanwhile)
                QTimer.singleShot(1, step)

        QTimer.singleShot(1, step)
