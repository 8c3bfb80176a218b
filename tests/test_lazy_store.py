"""The explorer reads embedding stores without building an AnnData (``core.store.LazyStore``): the same obs
columns, obsm, uns and X as ``anndata.read_zarr``, and the same cell table; the AnnData on demand."""

from __future__ import annotations

import threading
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import explore
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
    pd.testing.assert_frame_equal(explore.cell_table(lazy.obs, lazy.obsm),
                                  explore.cell_table(full.obs, dict(full.obsm)))


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


def test_reading_a_large_store_in_a_thread_never_holds_the_gil_long(tmp_path):
    """What the open's worker does beside napari's GUI thread: the main thread, ticking every millisecond,
    is never kept waiting for long (``anndata.read_zarr`` keeps it 0.1–0.3 s at a time for 10⁶ rows). The
    bound is loose (a loaded CI machine); the point is no string per row."""
    rng = np.random.default_rng(2)
    n = 400_000
    obs = _obs(n, rng)
    adata = build_anndata(obs, rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32))
    adata.obsm["X_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    path = write_store(adata, tmp_path / "big.zarr")
    del adata

    def waits(job) -> float:
        th = threading.Thread(target=job)
        longest, last = 0.0, time.perf_counter()
        th.start()
        while th.is_alive():
            time.sleep(0.001)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now
        th.join()
        return longest

    lazy_wait = min(waits(lambda: explore.FrameIndex(explore.cell_table(LazyStore(path).obs))) for _ in range(2))
    full_wait = min(waits(lambda: read_store(path)) for _ in range(2))
    print(f"longest wait: lazy {lazy_wait * 1000:.0f} ms, anndata {full_wait * 1000:.0f} ms")
    assert lazy_wait < full_wait, (lazy_wait, full_wait)
