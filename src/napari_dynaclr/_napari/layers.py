"""Qt-free builders for the napari layers of one FOV: lazy image channels, Tracks and Points.

All three share one world frame: the image's TZYX scale (Z dropped when the FOV has one slice),
with tracks and points in the same axes. Overlay rows are sorted by (track_id, t) — the order the
napari Tracks layer stores its data in — so the Points and Tracks layers of a FOV have the same
rows in the same order, and ``features["cell_index"]`` maps each row back to the cell table.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from napari_dynaclr._napari.cellmodel.table import fov_mask

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
    """Row numbers of *fov_name*'s cells, sorted by (track_id, t)."""
    sub = table.index[fov_mask(table, fov_name)]
    part = table.loc[sub, ["track_id", "t"]]
    order = np.lexsort((part["t"].to_numpy(), part["track_id"].to_numpy()))
    return np.asarray(sub, dtype=np.int64)[order]


def lineage_graph(track_ids: np.ndarray, parent_ids: np.ndarray) -> dict[int, list[int]]:
    """napari Tracks ``graph`` ({child: [parent]}) from parent_track_id, only parents that exist."""
    present = set(int(t) for t in np.unique(track_ids))
    pairs = pd.DataFrame({"c": track_ids, "p": parent_ids}).drop_duplicates("c")
    return {int(c): [int(p)] for c, p in zip(pairs["c"], pairs["p"], strict=True)
            if int(p) in present and int(p) != int(c)}


def fov_overlay(table: pd.DataFrame, fov_name: str, z: bool = False,
                scale: tuple[float, ...] | None = None) -> FovOverlay:
    """Points/Tracks data, lineage graph and features of one FOV's cells.

    With ``z=True`` the overlays get a Z axis (the ``z`` column when present, else 0).
    """
    rows = fov_rows(table, fov_name)
    sub = table.iloc[rows]
    cols = [sub["t"].to_numpy(dtype=np.float64)]
    if z:
        cols.append(sub["z"].to_numpy(dtype=np.float64) if "z" in sub.columns else np.zeros(len(sub)))
    cols += [sub["y"].to_numpy(dtype=np.float64), sub["x"].to_numpy(dtype=np.float64)]
    points = np.stack(cols, axis=1) if len(sub) else np.empty((0, len(cols)))
    tracks = np.column_stack([sub["track_id"].to_numpy(dtype=np.float64), points]) if len(sub) else \
        np.empty((0, len(cols) + 1))
    graph = lineage_graph(sub["track_id"].to_numpy(), sub["parent_track_id"].to_numpy()) if len(sub) else {}
    features = sub.reset_index(drop=True)
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
