"""Embedding stores: AnnData zarr in VisCy's ``EmbeddingWriter`` layout, written atomically.

Layout (as VisCy's writer): ``X`` = features float32 (N, 768), ``obsm["X_projections"]`` float32,
``obs`` = ``fov_name`` (categorical), ``track_id, t, id, parent_track_id, parent_id, [z], y, x`` (int64),
``var`` names ``"0".."D-1"``, ``uns`` = ``data_path``/``tracks_path`` as given, zarr format 2. A classic run given
experiment metadata adds ``experiment, marker, perturbation, hours_post_perturbation`` after VisCy's columns;
``uns["dynaclr"]`` records the run's inputs (:mod:`napari_dynaclr.core.provenance`).
With ``embedding_key="projections"``, ``X`` holds projections and ``obsm["X_backbone"]`` the features.

One deliberate difference: obs names are the global row numbers ``"0".."N-1"`` (unique) instead of
VisCy's per-batch positions (``"0".."B-1"`` repeated). VisCy's readers (``anndata.read_zarr``) and every
join VisCy does use obs *columns*, so they work unchanged; unique names make the store usable by
scanpy/cellxgene without warnings.

Stores are written through :mod:`napari_dynaclr.core.output`: never over an input or anything that is not an
embedding store, one writer per output, beside the target and swapped in atomically when complete.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.core.experiment import EXPERIMENT_COLUMNS
from napari_dynaclr.core.output import check_output_path, temporary_writer, write_atomically  # noqa: F401
from napari_dynaclr.core.tracks import INDEX_COLUMNS
from napari_dynaclr.core.zattrs import is_embedding_store  # noqa: F401 (re-exported)
from napari_dynaclr.errors import StoreError


def build_anndata(obs: pd.DataFrame, features: np.ndarray, projections: np.ndarray,
                  embedding_key: str = "features", uns: Mapping | None = None, layout: str = "classic"):
    """An AnnData with VisCy's layout from obs rows (index columns) and the two embedding arrays.

    *layout* ``"classic"``: ``TripletDataModule``'s obs (int64 index columns); ``"boc"``: a Bag-of-Channels
    obs as given (``fov_name, track_id, t, parent_track_id, z, y, x, experiment, marker, perturbation,
    hours_post_perturbation, organelle, microscope`` in their own dtypes), strings categorical.
    """
    import anndata as ad

    if layout == "boc":
        obs = obs.copy()
        for col in obs.columns:
            if obs[col].dtype == object:
                obs[col] = pd.Categorical(obs[col])
    else:  # VisCy's index columns, then the experiment metadata a run was given
        index = [c for c in INDEX_COLUMNS if c in obs.columns]
        obs = obs[index + [c for c in EXPERIMENT_COLUMNS if c in obs.columns]].copy()
        obs["fov_name"] = pd.Categorical(obs["fov_name"].astype(str))
        for col in index[1:]:
            obs[col] = obs[col].astype(np.int64)
        for col in EXPERIMENT_COLUMNS:
            if col in obs.columns:
                obs[col] = obs[col].astype(np.float32) if col == "hours_post_perturbation" else pd.Categorical(
                    obs[col].astype(str))
    obs.index = pd.Index([str(i) for i in range(len(obs))])
    features = np.ascontiguousarray(features, dtype=np.float32)
    projections = np.ascontiguousarray(projections, dtype=np.float32)
    if embedding_key == "projections":
        X, obsm = projections, {"X_backbone": features}
    else:
        X, obsm = features, {"X_projections": projections}
    adata = ad.AnnData(X=X, obs=obs, obsm=obsm, uns=dict(uns or {}))
    adata.var_names = [str(i) for i in range(X.shape[1])]
    return adata


def write_store(adata, path: str | Path, overwrite: bool = False, inputs=None, guard=None,
                overwrite_hint: str | None = None) -> Path:
    """Write *adata* as zarr format 2 at *path*, atomically and never over an input or anything that is not
    an embedding store (:mod:`napari_dynaclr.core.output`); *guard*: the run's held output guard."""
    return write_atomically(Path(path), lambda tmp: write_zarr(tmp, adata), overwrite, inputs, guard,
                            overwrite_hint=overwrite_hint)


@temporary_writer
def write_zarr(tmp: Path, adata) -> None:
    """Write *adata* as an AnnData zarr (format 2) store at *tmp*, a temporary path of the safe write path."""
    import anndata as ad

    with _zarr_v2(ad):
        adata.write_zarr(tmp)


@contextlib.contextmanager
def _zarr_v2(ad):
    import warnings

    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*zarr v2.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*zarr v2.*")
        yield


#: obs columns every embedding store has (the cell key, with ``id`` when present).
REQUIRED_OBS_COLUMNS = ("fov_name", "track_id", "t")


def check_store_obs(obs: pd.DataFrame, label) -> None:
    """Raise :class:`StoreError` when *obs* (of the store *label*) lacks a required column."""
    missing = [c for c in REQUIRED_OBS_COLUMNS if c not in obs.columns]
    if missing:
        raise StoreError(f"{label} is not an embedding store: obs lacks column(s) {', '.join(missing)}")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise StoreError(f"embedding store not found: {path}")


def read_store(path: str | Path):
    """Read an embedding store (ours or VisCy's) into memory, with a clear error when it is not one."""
    import anndata as ad

    path = Path(path)
    _check_exists(path)
    try:
        adata = ad.read_zarr(path)
    except Exception as exc:
        raise StoreError(
            f"{path} is not a readable AnnData zarr store ({type(exc).__name__}: {str(exc)[:150]})"
        ) from exc
    check_store_obs(adata.obs, path)
    return adata


def open_store(path: str | Path):
    """Open an AnnData zarr store for partial reading: its root zarr group, nothing read yet.

    Raises :class:`StoreError` when *path* is missing, a file, not zarr, or not AnnData. Read its elements
    (``group["obs"]``, ``group["X"]``, the members of ``group["obsm"]``) with :func:`read_element`.
    """
    import zarr

    path = Path(path)
    _check_exists(path)
    if not path.is_dir():
        raise StoreError(f"{path} is not an AnnData zarr store (it is a file, not a folder)")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:
        raise StoreError(f"{path} is not a readable zarr store ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not is_embedding_store(path):
        raise StoreError(f"{path} is not an AnnData store (no 'encoding-type: anndata' in its attributes)")
    return group


def read_element(node):
    """One element of a store opened with :func:`open_store`: a dense 2-D array stays a lazy zarr array (index
    it to read rows); anything else (obs data frame, sparse matrix, 1-D array ...) is read by anndata."""
    import zarr
    from anndata.io import read_elem

    if isinstance(node, zarr.Array) and node.ndim == 2:
        return node
    return read_elem(node)


class LazyStore:
    """An embedding store opened to explore it, without building an AnnData.

    ``obs`` (its columns, rows numbered ``0..N-1``), ``obsm`` and ``uns`` are read at once, column by column
    through zarr: no Python string per row, so a thread reading a 10⁶-cell store beside napari's GUI thread
    never holds the GIL for long (``anndata.read_zarr`` holds it for 0.1–0.3 s at a time to build and check the
    string index). ``X`` (a :class:`StoreMatrix`) and the whole AnnData (:meth:`load`, for writing the store
    back) are read on demand, from any thread. Raises :class:`StoreError` as :func:`read_store` does.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        group = open_store(self.path)
        try:
            obs_group = group["obs"]
            index = obs_group[obs_group.attrs["_index"]]
            columns = list(obs_group.attrs.get("column-order", []))
            self.obs = pd.DataFrame({c: _column(read_element(obs_group[c])) for c in columns},
                                    index=pd.RangeIndex(index.shape[0]), copy=False)
            self.obsm = {k: np.asarray(read_element(group["obsm"][k])) for k in group["obsm"].keys()} \
                if "obsm" in group else {}
            self.uns = dict(read_element(group["uns"])) if "uns" in group else {}
            self.X = StoreMatrix(read_element(group["X"]), self.path)
        except (KeyError, ValueError, TypeError) as exc:
            raise StoreError(f"{self.path} is not a readable AnnData zarr store ({type(exc).__name__}: "
                             f"{str(exc)[:150]})") from exc
        check_store_obs(self.obs, self.path)
        self._adata = None
        self._lock = threading.Lock()

    @property
    def n_obs(self) -> int:
        return len(self.obs)

    def load(self):
        """The store as an AnnData (read once, then kept): for changing and writing it back."""
        with self._lock:
            if self._adata is None:
                self._adata = read_store(self.path)
            return self._adata


class StoreMatrix:
    """A store's ``X``, read (once, then kept) when a job turns it into an array (``np.asarray``), in the
    job's thread. Pickled, it is a :class:`StoreMatrixRef` to its store (*path*): a work process that gets it reads
    ``X`` itself, so the process that opened the store need not read, copy or send the matrix (10⁶ cells × 768
    features are 3 GB; sending even 64 MB from a napari thread, chunk by chunk, took napari's GIL back at every
    chunk for two seconds). (Only the shape tells a store written again since: one rewritten with as many cells
    is read as it is now.)"""

    def __init__(self, node, path: str | Path):
        self._node = node
        self._array = None
        self.path = Path(path)
        self.shape = tuple(node.shape)
        self.dtype = node.dtype

    def __reduce__(self):
        return StoreMatrixRef, (str(self.path), self.shape)

    def __copy__(self):  # (a copy in this process is this matrix, not a reference to read again)
        return self

    def __deepcopy__(self, memo):
        return self

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        if self._array is None:
            self._array = _dense(self._node)
        return np.array(self._array, dtype=dtype, copy=True) if copy else np.asarray(self._array, dtype=dtype)


class StoreMatrixRef:
    """The ``X`` of the store at *path*, read when turned into an array (``np.asarray``); a store whose ``X`` is no
    longer of *shape* (written again since it was opened) raises :class:`StoreError` naming it."""

    def __init__(self, path: str, shape: tuple):
        self.path = Path(path)
        self.shape = tuple(shape)

    def __array__(self, dtype=None, copy=None):
        node = read_element(open_store(self.path)["X"])
        if tuple(node.shape) != self.shape:
            raise StoreError(f"{self.path} was written again since it was opened (its X is {tuple(node.shape)}, "
                             f"was {self.shape}): open the store again")
        return np.asarray(_dense(node), dtype=dtype)


def _dense(node) -> np.ndarray:
    """A store's ``X`` node (a zarr array, or what anndata's reader gave) read into memory."""
    return np.asarray(node[...] if hasattr(node, "chunks") else node)


def _column(values):
    """One obs column as anndata reads it (a categorical, a string or number array), ready for a data frame."""
    return values if isinstance(values, pd.Categorical | pd.api.extensions.ExtensionArray) else np.asarray(values)


def as_anndata(adata):
    """*adata* itself, or the AnnData of a :class:`LazyStore` (read then)."""
    return adata.load() if isinstance(adata, LazyStore) else adata
