"""The quick lane: neighbours, a gallery, a classifier retrain and a store's first PCA are answered by a second
work process while the heavy one runs a long request; a cancel kills only the lane serving it; both lanes end
with their parent; torch is imported in the quick lane only by a request that needs it (the gallery)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from napari_dynaclr._napari import workers
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.core.reduce import compute_reduction
from napari_dynaclr.errors import Cancelled
from work_process_waits import alive, in_umap, loaded, poll

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


@pytest.fixture
def lanes():
    workers.close_work_process()
    yield workers
    workers.close_work_process()


class LongRequest:
    """A UMAP of minutes in the heavy lane, run from a thread; :meth:`cancel` ends it."""

    def __init__(self):
        self.cancel_event = threading.Event()
        self.error: list = []
        X = np.random.default_rng(0).normal(size=(20000, 32)).astype(np.float32)
        self.thread = threading.Thread(target=self._run, args=(X,), daemon=True)
        self.thread.start()
        assert poll(lambda: workers.work_process("heavy").pid is not None)
        self.pid = workers.work_process("heavy").pid
        assert poll(lambda: in_umap(self.pid)), "the heavy lane never started its UMAP"

    def _run(self, X):
        try:
            _drain(workers.reduction_job(X, "UMAP", cancel=self.cancel_event, n_epochs=100_000))
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            self.error.append(exc)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and alive(self.pid)

    def cancel(self):
        workers.cancel_job(self.cancel_event)
        self.thread.join(60)


def test_quick_requests_answer_while_the_heavy_lane_runs_a_umap(lanes, demo_inputs):  # noqa: F811
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 64)).astype(np.float32)
    labels = np.full(len(X), None, dtype=object)
    labels[:12] = ["a", "b"] * 6
    groups = np.array([f"A/1/0::{i // 3}" for i in range(len(X))], dtype=object)
    cfg = load_predict_yaml(demo_inputs["config"])
    cells = workers.preview_cells(cfg).iloc[[0, 7, 30]]
    long = LongRequest()
    try:
        assert _drain(workers.warm_job("t1", X)) is None
        quick = workers.work_process("quick").pid
        assert quick not in (None, long.pid) and not loaded(quick, "libtorch")
        rows, dist = _drain(workers.neighbours_job("t1", X, "cosine", 5, 4))
        assert len(rows) == 4 and 5 not in rows and np.all(np.diff(dist) >= 0)
        result = _drain(workers.classify_job("t1", X, labels, groups, "state"))
        assert set(result["splits"]) == {"cell", "track"}
        cell = result["splits"]["cell"]
        assert sum(cell["val_counts"].values()) == cell["n_val"] and cell["few_validation_cells"]
        assert cell["cross_validation"]["n_splits"] == 5 and result["warning"].startswith("cell split: only")
        assert result["splits"]["track"]["cross_validation"]["grouped"]
        assert not loaded(quick, "libtorch")  # neighbours and the classifier need no torch
        index, tiles = _drain(workers.gallery_job(cfg, cells[workers.gallery_keys(cells)]))
        assert len(index) == 3 and tiles.shape[:2] == (3, 2)
        key, pca = _drain(workers.embedding_pca_job(X, "t1"))
        assert key == "X_pca" and pca.shape == (len(X), 8)
        assert long.running  # all of it while the UMAP still ran
        assert workers.work_process("quick").pid == quick
        assert loaded(quick, "libtorch") and not in_umap(quick)  # the gallery's torch, no numba
    finally:
        long.cancel()
    assert isinstance(long.error[0], Cancelled) and not alive(long.pid)
    # the heavy lane's cancel left the quick lane and its matrix alone
    assert workers.work_process("quick").pid == quick
    assert len(_drain(workers.neighbours_job("t1", X, "cosine", 6, 3))[0]) == 3


def test_cancelling_a_quick_request_leaves_the_heavy_lane_running(lanes):
    long = LongRequest()
    try:
        cancel = threading.Event()
        big = np.random.default_rng(2).normal(size=(200_000, 128)).astype(np.float32)
        job = workers.embedding_pca_job(big, cancel=cancel)
        assert next(job) is None  # sent: the quick lane is serving it
        quick = workers.work_process("quick").pid
        workers.cancel_job(cancel)
        with pytest.raises(Cancelled):
            _drain(job)
        assert not alive(quick)
        assert long.running
        # a new quick request starts a new quick lane
        key, _ = _drain(workers.embedding_pca_job(np.eye(6, dtype=np.float32)))
        assert key == "X_pca" and workers.work_process("quick").pid not in (None, quick)
        assert long.running
    finally:
        long.cancel()


def test_both_lanes_end_when_their_parent_is_killed(tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(textwrap.dedent("""
        import threading
        import numpy as np
        from napari_dynaclr._napari import workers

        def drain(gen):
            for _ in gen:
                pass

        X = np.random.default_rng(0).normal(size=(4000, 16)).astype(np.float32)
        drain(workers.warm_job("t", X))
        threading.Thread(target=drain, args=(workers.reduction_job(X, "UMAP"),), daemon=True).start()
        heavy = workers.work_process("heavy")
        while heavy.pid is None:
            pass
        print("PIDS", workers.work_process("quick").pid, heavy.pid, flush=True)
        threading.Event().wait()
    """))
    proc = subprocess.Popen([sys.executable, str(launcher)], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("PIDS"), line
        pids = [int(p) for p in line.split()[1:]]
        assert all(alive(p) for p in pids)
        proc.kill()
        proc.wait()
        assert poll(lambda: not any(alive(p) for p in pids), tries=6000), "a lane outlived its parent"
    finally:
        proc.kill()
        proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_store_without_a_reduction_gets_viscys_pca_from_the_quick_lane(lanes):
    from conftest import DATA
    from napari_dynaclr._napari.cellmodel.table import add_reduction, cell_table
    from napari_dynaclr.core.store import read_store

    store = read_store(DATA / "boc2d_mip" / "reference.zarr")
    assert not {"X_pca", "X_umap", "X_phate"} & set(store.obsm)
    X = np.asarray(store.X, dtype=np.float32).copy()
    X[3] = np.nan  # a NaN embedding row gets NaN coordinates, the others are VisCy's PCA of the finite rows
    key, coords = _drain(workers.embedding_pca_job(X))
    assert key == "X_pca" and coords.shape == (store.n_obs, 8)
    np.testing.assert_allclose(coords, compute_reduction(X, "PCA", n_components=8)[1], rtol=1e-5, atol=1e-5)
    assert np.isnan(coords[3]).all() and np.isfinite(np.delete(coords, 3, axis=0)).all()
    table = cell_table(store.obs)
    assert add_reduction(table, key, coords)[:2] == ["PCA_0", "PCA_1"]
    small = _drain(workers.embedding_pca_job(np.eye(3, dtype=np.float32)))[1]
    assert small.shape == (3, 3)  # at most the matrix's size
