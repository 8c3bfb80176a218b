"""The explorer reads embedding stores without building an AnnData (``core.store.LazyStore``): the same obs
columns, obsm, uns and X as ``anndata.read_zarr``, and the same cell table; the AnnData on demand."""

from __future__ import annotations

import threading

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import cellmodel
from napari_dynaclr.core.store import LazyStore, StoreMatrix, as_anndata, build_anndata, read_store, write_store
from napari_dynaclr.errors import StoreError


def _obs(n: int, rng) -> pd.DataFrame:
    return pd.DataFrame({
        "fov_name": rng.choice(["B/2/0", "A/1/0", "A/1/10"], n),
        "track_id": rng.integers(0, 50, n), "t": rng.integers(0, 20, n), "id": np.arange(n),
        "parent_track_id": -1, "parent_id": -1, "y": rng.integers(0, 256, n), "x": rng.integers(0, 256, n),
    })


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    adata = build_anndata(_obs(n, rng), rng.normal(size=(n, 12)).astype(np.float32),
                          rng.normal(size=(n, 4)).astype(np.float32),
                          uns={"data_path": "plate.zarr", "tracks_path": "tracks"})
    adata.obsm["X_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    adata.obs["annotation"] = pd.Categorical(rng.choice(["", "mitosis", "interphase"], n))
    adata.obs["score"] = rng.normal(size=n)
    return write_store(adata, tmp_path / "cells.zarr")


def test_lazy_store_holds_what_anndata_reads(store):
    lazy, full = LazyStore(store), ad.read_zarr(store)
    assert lazy.n_obs == full.n_obs and list(lazy.obs.columns) == list(full.obs.columns)
    assert lazy.obs.index.equals(pd.RangeIndex(full.n_obs))  # row numbers, not a string per row
    pd.testing.assert_frame_equal(lazy.obs, full.obs.reset_index(drop=True))
    assert sorted(lazy.obsm) == sorted(full.obsm)
    for key in full.obsm:
        np.testing.assert_array_equal(lazy.obsm[key], full.obsm[key])
    assert lazy.uns == {"data_path": "plate.zarr", "tracks_path": "tracks"}
    assert isinstance(lazy.X, StoreMatrix) and len(lazy.X) == full.n_obs and lazy.X.shape == full.X.shape
    np.testing.assert_array_equal(np.asarray(lazy.X), full.X)
    assert np.asarray(lazy.X, dtype=np.float64).dtype == np.float64
    mine = np.array(lazy.X, copy=True)
    mine[:] = 0
    assert np.asarray(lazy.X).any()  # a copy asked for is a copy: the kept X is unchanged


def test_the_cell_table_is_the_same_as_from_an_anndata(store):
    lazy, full = LazyStore(store), read_store(store)
    pd.testing.assert_frame_equal(cellmodel.cell_table(lazy.obs, lazy.obsm),
                                  cellmodel.cell_table(full.obs, dict(full.obsm)))


def test_load_reads_the_anndata_once_from_any_thread(store):
    lazy = LazyStore(store)
    got = []
    threads = [threading.Thread(target=lambda: got.append(lazy.load())) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 3 and all(a is got[0] for a in got) and as_anndata(lazy) is got[0]
    assert list(got[0].obs_names[:3]) == ["0", "1", "2"]
    plain = read_store(store)
    assert as_anndata(plain) is plain


def test_a_folder_that_is_no_store_is_refused_by_name(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        LazyStore(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="plain"):
        LazyStore(tmp_path / "plain")


def test_a_store_without_the_cell_key_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    adata = ad.AnnData(X=rng.normal(size=(5, 3)).astype(np.float32),
                       obs=pd.DataFrame({"cell": list("abcde")}, index=[str(i) for i in range(5)]))
    path = tmp_path / "other.zarr"
    adata.write_zarr(path)
    with pytest.raises(StoreError, match="fov_name"):
        LazyStore(path)


def test_the_explorers_read_makes_no_string_per_row(store):
    """What the open's worker does beside napari's GUI thread: no Python string per row (``anndata.read_zarr``
    builds and checks a string index, holding the GIL for 0.1–0.3 s at a time at 10⁶ rows): the obs read and the
    cell table built from it hold numbers and categoricals only, rows numbered by a range. (How long the GUI
    thread waits: ``benchmarks/bench_store_open.py``.)"""
    full = ad.read_zarr(store)
    assert pd.api.types.is_string_dtype(full.obs.index.dtype)  # anndata's own read: one string per row
    lazy = LazyStore(store).obs
    table = cellmodel.cell_table(lazy)
    cellmodel.FrameIndex(table)
    for frame in (lazy, table):
        assert isinstance(frame.index, pd.RangeIndex)
        strings = [c for c in frame.columns if not isinstance(frame[c].dtype, pd.CategoricalDtype)
                   and (frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c].dtype))]
        assert strings == [], strings


def test_x_goes_to_a_work_process_as_a_reference_to_its_store(store):
    """Pickled (as a request to a work process carries it), an opened store's X is its store's path: a few hundred
    bytes whatever the matrix, read where it is unpickled; a store written again since is refused by name."""
    import pickle

    lazy = LazyStore(store)
    np.asarray(lazy.X)  # read here too (kept): still sent as a reference
    sent = pickle.dumps(lazy.X)
    assert len(sent) < 1_000  # (the 500 × 12 matrix alone is 24,000 bytes)
    np.testing.assert_array_equal(np.asarray(pickle.loads(sent), dtype=np.float32), ad.read_zarr(store).X)
    rng = np.random.default_rng(1)
    write_store(build_anndata(_obs(40, rng), rng.normal(size=(40, 12)).astype(np.float32),
                              rng.normal(size=(40, 4)).astype(np.float32)), store, overwrite=True)
    with pytest.raises(StoreError, match="written again since it was opened"):
        np.asarray(pickle.loads(sent))
