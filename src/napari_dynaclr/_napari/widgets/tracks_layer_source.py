"""The tracks of a run from a napari Tracks layer (the Predict tab's "tracks from"): one of the viewer's Tracks
layers and the FOV of the plate it belongs to, instead of a tracks folder or table.

The layer's ``data`` (``track_id, t, [z,] y, x`` in its data coordinates: pixels of the plate's full-resolution
level) and ``graph`` (child → parents: ``parent_track_id``; a merge's smallest parent) become a
:class:`~napari_dynaclr.core.track_layouts.TracksTable` of that FOV, which the run reads like a tracks folder.
``id`` and ``parent_id`` come from the layer's features when it has them (our own overlay layers, a layer made
from a VisCy or ultrack table), else each row's number and -1. One layer per run: the run predicts its FOV.
Checked before any work (:func:`layer_tracks_table`): the layer still there, a FOV chosen and in the plate,
at least one track, every point inside the FOV's image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox

from napari_dynaclr.errors import TracksError

if TYPE_CHECKING:
    pass

#: the "tracks from" choice that reads the tracks folder field
FOLDER = "the tracks folder (above)"


def layer_label(name: str) -> str:
    """How messages and the store's ``uns`` name a Tracks layer."""
    return f"napari Tracks layer '{name}'"


def fov_of_layer(layer, fov_names) -> str | None:
    """The FOV of *fov_names* a layer belongs to: its ``dynaclr_fov`` metadata (our layers), else the longest FOV
    name found in its name (e.g. ``A/1/0 tracks``); None when neither names one."""
    names = [str(f) for f in fov_names]
    meta = (getattr(layer, "metadata", None) or {}).get("dynaclr_fov")
    if meta is not None and str(meta).strip("/") in names:
        return str(meta).strip("/")
    found = [f for f in names if f in str(layer.name)]
    return max(found, key=len) if found else None


def layer_tracks_table(layer, fov_name: str | None, fov_shapes: dict):
    """The :class:`~napari_dynaclr.core.track_layouts.TracksTable` of *layer* for *fov_name*, checked against the
    plate's FOVs (*fov_shapes*: FOV name → TCZYX shape); one :class:`TracksError` naming the layer otherwise."""
    import pandas as pd

    from napari_dynaclr.core.track_layouts import TracksTable

    label = layer_label(layer.name)
    if not fov_name:
        raise TracksError(f"{label}: choose the FOV of the plate it belongs to ('FOV of the layer')")
    fov_name = str(fov_name).strip("/")
    if fov_name not in fov_shapes:
        shown = ", ".join(list(fov_shapes)[:5]) + ("…" if len(fov_shapes) > 5 else "")
        raise TracksError(f"{label}: FOV {fov_name} is not in the plate (FOVs: {shown})")
    data = np.asarray(layer.data, dtype=np.float64)
    if data.ndim != 2 or len(data) == 0:
        raise TracksError(f"{label} has no tracks")
    t_size, _, z_size, y_size, x_size = fov_shapes[fov_name]
    axes = ["t", "z", "y", "x"] if data.shape[1] == 5 else ["t", "y", "x"]
    frame = pd.DataFrame(data[:, 1:], columns=axes)
    frame.insert(0, "track_id", data[:, 0])
    for col in ("track_id", "t"):
        if not np.array_equal(frame[col], np.round(frame[col])):
            raise TracksError(f"{label}: column {col} holds non-integer values (its data must be track_id, t, "
                              "[z,] y, x with whole track ids and timepoints)")
    sizes = {"t": t_size, "z": z_size, "y": y_size, "x": x_size}
    outside = np.zeros(len(frame), dtype=bool)
    for col in axes:
        outside |= (frame[col].to_numpy() < 0) | (frame[col].to_numpy() >= sizes[col])
    if outside.any():
        first = frame[outside].iloc[0]
        at = ", ".join(f"{c}={first[c]:g}" for c in axes)
        extent = "×".join(str(sizes[c]) for c in axes)
        raise TracksError(f"{label}: {int(outside.sum())} of {len(frame)} points lie outside FOV {fov_name}'s "
                          f"image ({''.join(a.upper() for a in axes)} {extent}), e.g. track "
                          f"{int(first['track_id'])} at {at}; the layer's data must be in the plate's "
                          "full-resolution pixels")
    parents = {int(child): int(min(p)) for child, p in (layer.graph or {}).items() if len(p)}
    frame["parent_track_id"] = [parents.get(int(t), -1) for t in frame["track_id"]]
    features = getattr(layer, "features", None)
    for col, default in (("id", np.arange(len(frame))), ("parent_id", np.full(len(frame), -1))):
        have = features is not None and col in features.columns and len(features) == len(frame)
        frame[col] = features[col].to_numpy() if have else default
    frame.insert(0, "fov_name", fov_name)
    return TracksTable.from_frame(frame, label)


class TracksLayerSource:
    """The Predict tab's "tracks from" (the tracks folder, or one of *viewer*'s Tracks layers, following its
    layers) and "FOV of the layer" (the plate's FOVs, preselected from the layer). *fov_names*: a callable
    giving the plate's FOV names."""

    def __init__(self, viewer, fov_names):
        self.viewer = viewer
        self._fov_names = fov_names
        self.layer = ComboBox(label="tracks from", choices=self._layer_choices,
                              tooltip="the tracks folder, or one of the viewer's Tracks layers (one FOV)")
        self.fov = ComboBox(label="FOV of the layer", choices=lambda _: list(self._fov_names()),
                            tooltip="the plate's FOV the Tracks layer's points belong to")
        self.layer.changed.connect(self._on_layer)
        self.fov.enabled = False
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(lambda _: self.refresh())
        for layer in viewer.layers:
            layer.events.name.connect(self._renamed)

    def _layer_choices(self, _=None) -> list[str]:
        import napari.layers

        return [FOLDER, *(lay.name for lay in self.viewer.layers if isinstance(lay, napari.layers.Tracks))]

    def _on_inserted(self, event) -> None:
        event.value.events.name.connect(self._renamed)
        self.refresh()

    def _renamed(self, _=None) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Follow the viewer's layers and the plate's FOVs (a chosen layer that left falls back to the folder)."""
        try:
            self.layer.reset_choices()
            self.fov.reset_choices()
        except RuntimeError:  # the dock's widgets are deleted (the viewer closes)
            return
        self._on_layer(self.layer.value)

    @property
    def active(self) -> bool:
        """Whether the tracks come from a Tracks layer."""
        return self.layer.value not in (None, FOLDER)

    def _on_layer(self, name) -> None:
        self.fov.enabled = self.active
        if not self.active:
            return
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        fov = fov_of_layer(layer, self.fov.choices) if layer is not None else None
        if fov is not None and fov != self.fov.value:
            self.fov.value = fov

    def table(self, fov_shapes: dict):
        """The chosen layer's tracks as a table of its FOV (:func:`layer_tracks_table`)."""
        name = self.layer.value
        if name not in self.viewer.layers:
            raise TracksError(f"{layer_label(name)} is no longer in the viewer: choose another under 'tracks from'")
        return layer_tracks_table(self.viewer.layers[name], self.fov.value, fov_shapes)
