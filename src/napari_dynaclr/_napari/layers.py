"""Qt-free builders for the napari layers of one FOV: lazy image channels, Tracks, Points and the highlight.

All share one world frame: the image's TZYX scale (Z dropped when the FOV has one slice), with tracks and
points in the same axes. Overlay rows are sorted by (track_id, t) — the order the napari Tracks layer stores
its data in — so the Points and Tracks layers of a FOV have the same rows in the same order, and
``features["cell_index"]`` maps each row back to the cell table.

:func:`fov_layers` is the one way a FOV's layers are made, at once on the GUI thread
(:meth:`~napari_dynaclr._napari.session.ExplorerSession.show_fov`) or in a worker
(:func:`~napari_dynaclr._napari.session.prepare_table`): layers are models, building one touches no viewer.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr._napari.cellmodel.colors import HIGHLIGHT_BORDER, PLAIN_BORDER, column_colors
from napari_dynaclr._napari.cellmodel.frames import FrameIndex
from napari_dynaclr._napari.cellmodel.table import fov_mask, table_fov_names

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

CHANNEL_COLORMAPS = ("gray", "magenta", "green", "cyan", "yellow", "red", "blue")


@dataclasses.dataclass
class FovOverlay:
    """Rows of one FOV in overlay order plus the layer arrays built from them."""

    fov_name: str
    rows: np.ndarray  # cell-table row numbers, in overlay order
    points: np.ndarray  # (N, D) t,[z],y,x in data (pixel) units
    tracks: np.ndarray  # (N, D+1) track_id,t,[z],y,x
    graph: dict[int, list[int]]
    features: pd.DataFrame
    scale: tuple[float, ...]  # t,[z],y,x


def fov_rows(table: pd.DataFrame, fov_name: str) -> np.ndarray:
    """Row positions of *fov_name*'s cells, sorted by (track_id, t)."""
    rows = np.flatnonzero(fov_mask(table, fov_name))
    order = np.lexsort((table["t"].to_numpy()[rows], table["track_id"].to_numpy()[rows]))
    return rows[order].astype(np.int64, copy=False)


def lineage_graph(track_ids: np.ndarray, parent_ids: np.ndarray) -> dict[int, list[int]]:
    """napari Tracks ``graph`` ({child: [parent]}) from parent_track_id (a track's first row), only parents that
    exist."""
    track_ids, parent_ids = np.asarray(track_ids), np.asarray(parent_ids)
    tracks, first = np.unique(track_ids, return_index=True)
    first = np.sort(first)  # (in row order, as the rows come)
    child, parent = track_ids[first], parent_ids[first]
    keep = np.isin(parent, tracks) & (parent != child)
    return {int(c): [int(p)] for c, p in zip(child[keep].tolist(), parent[keep].tolist(), strict=True)}


def fov_overlay(table: pd.DataFrame, fov_name: str, z: bool = False,
                scale: tuple[float, ...] | None = None) -> FovOverlay:
    """Points/Tracks data, lineage graph and features of one FOV's cells.

    With ``z=True`` the overlays get a Z axis (the ``z`` column when present, else 0).
    """
    rows = fov_rows(table, fov_name)

    def column(name: str, dtype=None) -> np.ndarray:
        return table[name].iloc[rows].to_numpy(dtype=dtype)

    names = ["t", *(["z"] if z else []), "y", "x"]
    points = np.empty((len(rows), len(names)))
    for i, name in enumerate(names):
        points[:, i] = 0.0 if name == "z" and "z" not in table.columns else column(name, np.float64)
    track_ids = column("track_id")
    tracks = np.empty((len(rows), len(names) + 1))
    tracks[:, 0] = track_ids
    tracks[:, 1:] = points
    graph = lineage_graph(track_ids, column("parent_track_id")) if len(rows) else {}
    features = table.take(rows)  # (a new frame: its index is set in place, no second copy)
    features.index = range(len(rows))
    if scale is None:
        scale = (1.0,) * points.shape[1]
    return FovOverlay(str(fov_name), rows, points, tracks, graph, features, tuple(scale))


def axis_labels(ndim: int) -> tuple[str, ...]:
    """The axis names of a FOV's layers (what napari shows on its sliders): t, [z], y, x."""
    return ("t", "y", "x") if ndim == 3 else ("t", "z", "y", "x")


def image_scale(fov) -> tuple[float, ...]:
    """World scale of a FOV image as layered: (t, y, x) for one Z slice, else (t, z, y, x)."""
    st, _, sz, sy, sx = fov.scale
    return (st, sy, sx) if fov.shape[2] == 1 else (st, sz, sy, sx)


def _contrast(fov, channel: str) -> tuple[float, float] | None:
    """Contrast limits from VisCy's normalisation metadata (no pixel reads), when present."""
    norm = fov.normalization or {}
    stats = (norm.get(channel) or {}).get("fov_statistics") or (norm.get(channel) or {}).get("dataset_statistics")
    if not stats:
        return None
    lo, hi = stats.get("p1", stats.get("min")), stats.get("p99", stats.get("max"))
    if lo is None or hi is None or not hi > lo:
        return None
    return float(lo), float(hi)


def fov_image_layers(fov, channel_names: list[str]) -> list[tuple]:
    """One lazy (dask) image layer tuple per channel: ``(data, kwargs, "image")``.

    Nothing is read here; napari reads the chunks of the shown plane. Z is dropped when the FOV has a
    single slice so T is the only slider.
    """
    import dask.array as da

    arr = fov.image
    lazy = da.from_array(arr, chunks=getattr(arr, "chunks", "auto"), asarray=False, fancy=False)
    scale = image_scale(fov)
    out = []
    for c, name in enumerate(channel_names):
        data = lazy[:, c, 0] if fov.shape[2] == 1 else lazy[:, c]
        kwargs = {
            "name": f"{fov.name} {name}",
            "scale": scale,
            "axis_labels": axis_labels(len(scale)),
            "colormap": CHANNEL_COLORMAPS[c % len(CHANNEL_COLORMAPS)],
            "blending": "additive" if c else "translucent",
            "metadata": {"dynaclr_fov": fov.name, "dynaclr_channel": name},
        }
        lims = _contrast(fov, name)
        if lims is not None:
            kwargs["contrast_limits"] = lims
        out.append((data, kwargs, "image"))
    return out


def napari_units() -> None:
    """What napari does when it makes its first layer: its transforms' units (pint's application registry, read
    in ≈ 140 ms the first time, instant after). Call it on the GUI thread, as napari does, before a thread makes
    layers (:func:`prepare_table`): the registry's lazy start is not thread-safe."""
    from napari.utils.transforms import Affine

    Affine(ndim=2)


#: napari layers are made by one thread at a time: two opens preparing at once made them concurrently, and
#: napari's first use of its unit registry (and dask's graph of one plate read twice) is not thread-safe
MAKING_LAYERS = threading.Lock()


@dataclasses.dataclass
class FovLayers:
    """The napari layers of one FOV (not in any viewer yet) and the overlay they show."""

    fov_name: str
    overlay: FovOverlay
    scale: tuple
    images: list  # one Image layer per channel
    tracks: object = None  # Tracks, Points and highlight Points (None when the FOV has no cells)
    points: object = None
    highlight: object = None  # rings: the highlighted cell's track (cyan) and its nearest neighbours (white)
    sources: list = dataclasses.field(default_factory=list)  # the image layer tuples (fov_image_layers)


def fov_source(table: pd.DataFrame, plate, fov_name: str) -> tuple[list, FovOverlay, tuple]:
    """What a FOV's layers show: its image layer tuples (:func:`fov_image_layers`; none without a plate or when
    the plate lacks the FOV), its overlay and the world scale."""
    fov = None
    if plate is not None:
        try:
            fov = plate.fov(fov_name)
        except Exception:  # noqa: BLE001 - a FOV the plate cannot open: the overlays alone
            fov = None
    if fov is not None:
        images = fov_image_layers(fov, plate.channel_names)
        z, scale = fov.shape[2] > 1, image_scale(fov)
    else:
        images, z, scale = [], False, (1.0, 1.0, 1.0)
    return images, fov_overlay(table, fov_name, z=z, scale=scale), scale


def fov_layer_kwargs(ov: FovOverlay, scale, fov_name: str) -> dict[str, dict]:
    """The keyword arguments of the Tracks, Points and highlight layers of a FOV (colours apart)."""
    meta = {"dynaclr_fov": fov_name}
    labels = axis_labels(ov.points.shape[1])
    return {
        "tracks": dict(graph=ov.graph, features=ov.features.copy(), scale=scale, name=f"{fov_name} tracks",
                       tail_length=8, tail_width=2, blending="translucent", metadata=dict(meta), axis_labels=labels),
        "points": dict(features=ov.features.copy(), scale=scale, name=f"{fov_name} cells", size=14,
                       border_color=PLAIN_BORDER, border_width=0.25, border_width_is_relative=True, opacity=0.8,
                       metadata=dict(meta), axis_labels=labels),
        "highlight": dict(scale=scale, name=f"{fov_name} highlight", size=30, face_color="transparent",
                          border_color=HIGHLIGHT_BORDER, border_width=0.12, border_width_is_relative=True,
                          symbol="ring", metadata=dict(meta), axis_labels=labels),
    }


def fov_layers(table: pd.DataFrame, plate, fov_name: str, colors: np.ndarray, hidden: bool = False) -> FovLayers:
    """Build the napari layers of *fov_name* (no viewer touched): one image layer per channel of *plate* (an open
    :class:`~napari_dynaclr.core.plate.Plate`, or None), the Tracks and Points layers coloured with *colors*
    (one RGBA per table row) and the highlight layer. *hidden*: all but the images start
    hidden (a staged install shows them in turns of their own)."""
    *_, out = fov_layer_steps(table, plate, fov_name, colors, hidden)
    return out


def fov_layer_steps(table: pd.DataFrame, plate, fov_name: str, colors: np.ndarray,
                    hidden: bool = False) -> Iterator[FovLayers | None]:
    """:func:`fov_layers` one layer per ``next()``: yields None after each layer but the last, then the
    :class:`FovLayers` (for the GUI thread, one layer per event-loop turn: the first layers of a process cost
    napari its unit registry, its shaders' sources, each 0.1–0.5 s on a busy laptop)."""
    import napari.layers

    images, ov, scale = fov_source(table, plate, fov_name)
    out = FovLayers(str(fov_name), ov, tuple(scale), [], sources=images)
    for d, kw, _ in images:
        with MAKING_LAYERS:
            out.images.append(napari.layers.Image(d, **kw))
        yield None
    if not len(ov.rows):
        yield out
        return
    kwargs = fov_layer_kwargs(ov, scale, str(fov_name))
    visible = not hidden
    with MAKING_LAYERS:
        out.tracks = napari.layers.Tracks(ov.tracks, visible=visible, **kwargs["tracks"])
        out.tracks.track_colors = colors[ov.rows]
    yield None
    with MAKING_LAYERS:
        out.points = napari.layers.Points(ov.points, face_color=colors[ov.rows], visible=visible, **kwargs["points"])
    yield None
    with MAKING_LAYERS:
        out.highlight = napari.layers.Points(np.empty((0, ov.points.shape[1])), visible=visible, **kwargs["highlight"])
    yield out


def refill_images(image_layers: list, images: list, fov_name: str) -> None:
    """Put a FOV's image layer tuples into the shown image layers; none (the plate lacks the FOV): the layers
    stay, hidden, empty and named so (removing one costs napari a garbage collection, 0.1–0.3 s)."""
    if not images:
        for layer in image_layers:
            channel = layer.metadata.get("dynaclr_channel", "")
            layer.data = np.zeros((1,) * layer.data.ndim, dtype=layer.data.dtype)
            layer.visible = False
            layer.name = f"{fov_name} {channel} (not in the plate)"
            layer.metadata = {**layer.metadata, "dynaclr_fov": fov_name, "dynaclr_missing": True}
        return
    for layer, (data, kwargs, _) in zip(image_layers, images):
        layer.data = data
        set_scale(layer, kwargs["scale"])
        if "contrast_limits" in kwargs:
            layer.contrast_limits = kwargs["contrast_limits"]
        else:
            layer.reset_contrast_limits()
        if layer.metadata.get("dynaclr_missing"):
            layer.visible = True
        layer.name, layer.metadata = kwargs["name"], kwargs["metadata"]


def set_scale(layer, scale) -> None:
    """Set a layer's scale only when it changes: each set re-slices and redraws (≈ 20 ms)."""
    if not np.allclose(layer.scale, scale):
        layer.scale = scale


@dataclasses.dataclass
class PreparedTable:
    """A cell table with what showing it needs, built off the GUI thread by :func:`prepare_table`."""

    table: pd.DataFrame
    frames: FrameIndex
    fov_names: list[str]
    color_column: str
    colormap: str
    colors: np.ndarray
    layers: FovLayers | None = None  # the first FOV's layers (None: no cells); Tracks, Points hidden

    @property
    def fov_name(self) -> str | None:
        return None if self.layers is None else self.layers.fov_name

    @property
    def overlay(self) -> FovOverlay | None:
        return None if self.layers is None else self.layers.overlay


def prepare_table(table: pd.DataFrame, plate=None, fov_name: str | None = None, color_column: str | None = None,
                  colormap: str = "viridis", with_layers: bool = True) -> PreparedTable:
    """Everything :meth:`~napari_dynaclr._napari.session.ExplorerSession.install` needs to show *table* (for a
    worker thread): the frame index, the FOV names, the colours (*color_column* when the table has it, else
    ``t``), and, for *fov_name* (or the first FOV), its napari layers (:func:`fov_layers`; the Tracks, Points
    and highlight layers hidden: the install shows them in turns of their own; *with_layers* False: none, the
    GUI thread makes them, :func:`fov_layer_steps`). No viewer is touched."""
    names = table_fov_names(table)
    col = color_column if color_column in table.columns else "t"
    colors = column_colors(table[col], colormap)
    out = PreparedTable(table, FrameIndex(table), names, col, colormap, colors)
    if names and with_layers:
        out.layers = fov_layers(table, plate, str(fov_name) if fov_name in names else names[0], colors,
                                       hidden=True)
    return out
