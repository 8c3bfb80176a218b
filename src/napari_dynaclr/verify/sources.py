"""The two sides of a comparison: each store (a path or an AnnData in memory) as its obs and its 2-D arrays.

A path is opened with :func:`napari_dynaclr.core.store.open_store` and read partially: obs in full, dense
arrays (``X``, ``obsm[...]``) left as lazy zarr arrays that :meth:`Source.rows` reads by rows on demand, so
two stores of 10^6 cells need memory for a few chunks, not for both arrays. Sparse matrices and 1-D arrays
are read into memory and made 2-D; data frames in ``obsm`` are left out. ``X`` holds features unless the
store has ``obsm["X_backbone"]`` and no ``obsm["X_projections"]`` (VisCy's ``embedding_key="projections"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_dynaclr.core.store import check_store_obs, open_store, read_element
from napari_dynaclr.errors import StoreError


class Source:
    """One store: obs (in memory) and its 2-D arrays, read by rows on demand."""

    def __init__(self, label: str, obs: pd.DataFrame, arrays: dict[str, Any], x_holds: str):
        self.label = label
        self.obs = obs
        self.arrays = arrays  # name -> numpy array or zarr array (2-D)
        self.x_holds = x_holds  # "features" or "projections"

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self.arrays[name].shape)

    def rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Rows *idx* (any order, repeats allowed) of array *name* as float64. A chunk that cannot be read (a
        corrupt or truncated file: blosc/zstd errors, a permission error) is a :class:`StoreError` naming the
        store and the array."""
        try:
            return self._rows(name, idx)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise RuntimeError, ValueError, OSError...
            text = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else ""
            where = "X" if name == "X" else f"obsm[{name!r}]"
            raise StoreError(f"{self.label}: cannot read {where} ({type(exc).__name__}: {text}); a chunk of the "
                             "store is corrupt or unreadable") from exc

    def _rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        arr = self.arrays[name]
        if isinstance(arr, np.ndarray):
            return np.asarray(arr[idx], dtype=np.float64)
        if len(idx) == 0:
            return np.empty((0, arr.shape[1]))
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if hi - lo <= 2 * len(idx):  # contiguous enough: read the block, pick rows
            block = np.asarray(arr[lo:hi])
            return np.asarray(block[idx - lo], dtype=np.float64)
        order = np.argsort(idx, kind="stable")
        uniq, inverse = np.unique(idx[order], return_inverse=True)
        got = np.asarray(arr.oindex[uniq, :])
        out = np.empty((len(idx), arr.shape[1]), dtype=np.float64)
        out[order] = got[inverse]
        return out


def load_source(store, label: str | None) -> Source:
    """*store* (a :class:`Source`, a store path or an AnnData) as a :class:`Source`; *label* names an AnnData."""
    if isinstance(store, Source):
        return store
    if isinstance(store, (str, Path)):
        return _from_path(Path(store))
    if hasattr(store, "obs") and hasattr(store, "obsm"):
        return _from_anndata(store, label or "<AnnData>")
    raise StoreError(f"cannot compare a {type(store).__name__}: give a store path or an AnnData")


def _x_holds(obsm_keys) -> str:
    return "projections" if "X_backbone" in obsm_keys and "X_projections" not in obsm_keys else "features"


def _dense_2d(value):
    """*value* as a 2-D numpy array (1-D made a column, sparse densified), or None (a data frame, >2-D)."""
    if hasattr(value, "toarray"):  # sparse
        value = value.toarray()
    if isinstance(value, pd.DataFrame):
        return None
    arr = np.asarray(value)
    if arr.ndim == 1:
        arr = arr[:, None]
    return arr if arr.ndim == 2 else None


def _lazy_or_dense(value):
    """A lazy 2-D zarr array from :func:`read_element` as is, anything else through :func:`_dense_2d`."""
    return value if hasattr(value, "oindex") else _dense_2d(value)


def _from_anndata(adata, label: str) -> Source:
    check_store_obs(adata.obs, label)
    arrays: dict[str, Any] = {}
    if adata.X is not None:
        arrays["X"] = _dense_2d(adata.X)
    for key in adata.obsm.keys():
        arrays[key] = _dense_2d(adata.obsm[key])
    arrays = {k: v for k, v in arrays.items() if v is not None}
    return Source(label, adata.obs.copy(), arrays, _x_holds(adata.obsm.keys()))


def _from_path(path: Path) -> Source:
    group = open_store(path)
    try:
        obs = read_element(group["obs"])
    except Exception as exc:
        raise StoreError(f"{path}: cannot read obs ({type(exc).__name__}: {str(exc)[:120]})") from exc
    check_store_obs(obs, path)
    arrays: dict[str, Any] = {}
    obsm_keys: list[str] = []
    try:
        if "X" in group:
            arrays["X"] = _lazy_or_dense(read_element(group["X"]))
        if "obsm" in group:
            for key, node in group["obsm"].members():
                obsm_keys.append(key)
                arrays[key] = _lazy_or_dense(read_element(node))
    except Exception as exc:
        raise StoreError(f"{path}: cannot read its arrays ({type(exc).__name__}: {str(exc)[:120]})") from exc
    arrays = {k: v for k, v in arrays.items() if v is not None}
    for k, v in arrays.items():
        if v.shape[0] != len(obs):
            raise StoreError(f"{path}: {k} has {v.shape[0]} rows but obs has {len(obs)}")
    return Source(str(path), obs, arrays, _x_holds(obsm_keys))
