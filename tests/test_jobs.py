"""The napari plugin's Qt-free jobs: the preview plan, the one-off garbage-collector freeze, and the
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


def test_long_lived_heap_frozen_once(monkeypatch):
    monkeypatch.setattr(jobs, "_HEAP_FROZEN", False)
    monkeypatch.setenv("NAPARI_DYNACLR_GC_FREEZE", "0")
    before = gc.get_freeze_count()
    jobs.freeze_long_lived_heap()
    assert gc.get_freeze_count() == before and not jobs._HEAP_FROZEN  # turned off
    monkeypatch.delenv("NAPARI_DYNACLR_GC_FREEZE")
    alive = [[i] for i in range(5000)]  # tracked containers alive now get frozen
    jobs.freeze_long_lived_heap()
    frozen = gc.get_freeze_count()
    assert jobs._HEAP_FROZEN and frozen >= before + len(alive)
    later = [[i] for i in range(5000)]
    jobs.freeze_long_lived_heap()  # once per process: later objects stay with the collector
    assert gc.get_freeze_count() == frozen and len(later) == 5000


def test_closing_the_job_stops_the_run(demo_inputs, tmp_path):  # noqa: F811
    import threading

    cfg = dataclasses.replace(load_predict_yaml(demo_inputs["config"]), output_path=tmp_path / "x.zarr",
                              batch_size=8)
    job = jobs.prediction_job(cfg, "cpu", threading.Event())
    assert type(next(job)).__name__ == "Planned"
    assert type(next(job)).__name__ == "Batch"
    job.close()  # the widget's worker quitting
    assert list(tmp_path.iterdir()) == []


def test_reductions_with_one_blas_thread_match(demo_inputs):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"])
    _, ref = run_prediction(cfg, device="cpu", write=False)
    _, limited = _drain(prediction_events(cfg, "cpu", write=False, reduction_blas_threads=1))
    np.testing.assert_array_equal(limited.X, ref.X)
    # PCA's sign and last digits may depend on the BLAS pool; the projection itself does not
    a, b = ref.obsm["X_pca"], limited.obsm["X_pca"]
    signs = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a, b * signs, atol=1e-4)
