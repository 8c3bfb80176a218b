"""The napari plugin's Qt-free jobs: the preview plan, the run's garbage-collector pause, and the
end-of-run reductions with a limited BLAS pool (all without a viewer)."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest
from napari_fixtures import demo_inputs  # noqa: F401

from napari_dynaclr import jobs
from napari_dynaclr.config import load_predict_yaml
from napari_dynaclr.engine import prediction_events, run_prediction
from napari_dynaclr.errors import PlateError


def _drain(events):
    while True:
        try:
            next(events)
        except StopIteration as stop:
            return stop.value


def test_preview_is_the_runs_plan(demo_inputs):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"])
    table = jobs.preview_cells(cfg)
    _, adata = run_prediction(dataclasses.replace(cfg, pca_kwargs=None), device="cpu", write=False)
    obs = adata.obs.reset_index(drop=True)
    assert len(table) == adata.n_obs == 52
    for col in ("fov_name", "track_id", "t", "id", "y", "x"):
        np.testing.assert_array_equal(table[col].astype(str).to_numpy(), obs[col].astype(str).to_numpy())
    # no checkpoint needed; excluded FOVs are left out, like in the run
    first = str(table["fov_name"].iat[0])
    fewer = jobs.preview_cells(dataclasses.replace(cfg, ckpt_path=None, exclude_fovs=[first]))
    assert first not in set(fewer["fov_name"].astype(str)) and 0 < len(fewer) < len(table)


def test_preview_reports_bad_inputs(demo_inputs):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"])
    with pytest.raises(PlateError, match="z_range"):
        jobs.preview_cells(dataclasses.replace(cfg, z_range=(0, 5)))


def test_full_collections_paused_for_the_run_only(monkeypatch):
    before = gc.get_threshold()
    with jobs.full_collections_paused():
        paused = gc.get_threshold()
        assert paused[:2] == before[:2] and paused[2] >= 2**30  # young collections go on
        with jobs.full_collections_paused():  # a second, concurrent run shares the pause
            assert gc.get_threshold() == paused
        assert gc.get_threshold() == paused
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), jobs.full_collections_paused():
        raise RuntimeError("a failed run")
    assert gc.get_threshold() == before  # given back on errors too
    monkeypatch.setenv("NAPARI_DYNACLR_GC_PAUSE", "0")
    with jobs.full_collections_paused():
        assert gc.get_threshold() == before


def test_job_restores_the_collector_when_closed(demo_inputs, tmp_path):  # noqa: F811
    import threading

    before = gc.get_threshold()
    cfg = dataclasses.replace(load_predict_yaml(demo_inputs["config"]), output_path=tmp_path / "x.zarr",
                              batch_size=8)
    job = jobs.prediction_job(cfg, "cpu", threading.Event())
    assert type(next(job)).__name__ == "Planned"
    assert gc.get_threshold()[2] >= 2**30
    job.close()  # the widget's worker quitting
    assert gc.get_threshold() == before and not (tmp_path / "x.zarr").exists()


def test_reductions_with_one_blas_thread_match(demo_inputs):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"])
    _, ref = run_prediction(cfg, device="cpu", write=False)
    _, limited = _drain(prediction_events(cfg, "cpu", write=False, reduction_blas_threads=1))
    np.testing.assert_array_equal(limited.X, ref.X)
    # PCA's sign and last digits may depend on the BLAS pool; the projection itself does not
    a, b = ref.obsm["X_pca"], limited.obsm["X_pca"]
    signs = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a, b * signs, atol=1e-4)
