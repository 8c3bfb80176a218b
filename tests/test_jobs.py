"""The napari plugin's Qt-free jobs (no viewer): the preview plan, the one-off garbage-collector freeze,
and the end-of-run reductions off the GUI's GIL (UMAP in a child process, PCA with one BLAS thread)."""

from __future__ import annotations

import dataclasses
import gc
import threading

import numpy as np
import pandas as pd
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
    # for a viewer: the plan's plate stays open (its FOVs are the selected ones)
    kept, plate = jobs.preview_cells(dataclasses.replace(cfg, exclude_fovs=[first]), keep_plate=True)
    try:
        pd.testing.assert_frame_equal(kept, fewer)
        assert [f.name for f in plate.fovs] == sorted(set(fewer["fov_name"].astype(str)))
        assert plate.fov(str(fewer["fov_name"].iat[0])).image.shape[0] == 4
    finally:
        plate.close()


def test_preview_does_not_load_the_model_stack(demo_inputs):  # noqa: F811
    """Planning needs the plate and tracks only: the first preview in a session must not wait for torch."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        from napari_dynaclr import jobs
        from napari_dynaclr.config import load_predict_yaml
        n = len(jobs.preview_cells(load_predict_yaml({str(demo_inputs["config"])!r})))
        print(n, [m for m in ("torch", "lightning", "timm") if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(None, 1) == ["52", "[]\n"]


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


def test_heap_frozen_again_once_the_model_stack_is_loaded(monkeypatch):
    """A preview needs no torch, so the first freeze may come before the model stack: the freeze after
    the checkpoint check (or at the run's start) must then take torch's objects too, once."""
    monkeypatch.delenv("NAPARI_DYNACLR_GC_FREEZE", raising=False)
    monkeypatch.setattr(jobs, "_HEAP_FROZEN", False)
    monkeypatch.setattr(jobs, "_LONG_LIVED", {"napari layer code"})
    jobs.freeze_long_lived_heap()
    first = gc.get_freeze_count()
    jobs.freeze_long_lived_heap()  # nothing new loaded: nothing done
    assert gc.get_freeze_count() == first
    model_state = [[i] for i in range(5000)]  # stands for torch's module-level objects
    jobs._LONG_LIVED.add("model stack")
    jobs.freeze_long_lived_heap()
    second = gc.get_freeze_count()
    assert second >= first + len(model_state)
    later = [[i] for i in range(5000)]
    jobs.freeze_long_lived_heap()
    assert gc.get_freeze_count() == second and len(later) == 5000


def test_closing_the_job_stops_the_run(demo_inputs, tmp_path):  # noqa: F811
    import threading

    cfg = dataclasses.replace(load_predict_yaml(demo_inputs["config"]), output_path=tmp_path / "x.zarr",
                              batch_size=8)
    job = jobs.prediction_job(cfg, "cpu", threading.Event())
    assert type(next(job)).__name__ == "Planned"
    assert type(next(job)).__name__ == "Batch"
    job.close()  # the widget's worker quitting
    assert list(tmp_path.iterdir()) == []


def test_gui_reductions_match_the_cli_and_run_umap_in_a_child(demo_inputs, monkeypatch):  # noqa: F811
    import multiprocessing

    cfg = dataclasses.replace(load_predict_yaml(demo_inputs["config"]),
                              umap_kwargs={"n_components": 2, "n_neighbors": 15})
    _, ref = run_prediction(cfg, device="cpu", write=False)
    seen = []
    real = jobs._child_pool
    monkeypatch.setattr(jobs, "_child_pool", lambda: (seen.append(1), real())[1])
    _, gui = _drain(prediction_events(cfg, "cpu", write=False, reduce=jobs.gui_reductions(threading.Event())))
    assert seen  # UMAP went to the child process
    assert list(gui.obsm) == list(ref.obsm)  # VisCy's order: X_umap, then X_pca
    np.testing.assert_array_equal(gui.X, ref.X)
    np.testing.assert_allclose(gui.obsm["X_umap"], ref.obsm["X_umap"], atol=1e-4)
    # PCA's sign and last digits may depend on the BLAS pool; the projection itself does not
    a, b = ref.obsm["X_pca"], gui.obsm["X_pca"]
    np.testing.assert_allclose(a, b * np.sign((a * b).sum(axis=0)), atol=1e-4)
    assert multiprocessing.active_children()  # kept for the next run (numba compiles once)


def test_gui_reductions_cancel_kills_the_child(demo_inputs):  # noqa: F811
    """Also when the child ignores SIGTERM, as it does when napari (or CI) was started with SIGTERM
    ignored: the disposition is inherited through spawn's fork and exec."""
    import multiprocessing
    import signal

    from napari_dynaclr.errors import Cancelled
    from napari_dynaclr.store import build_anndata

    cfg = dataclasses.replace(load_predict_yaml(demo_inputs["config"]),
                              umap_kwargs={"n_components": 2, "n_neighbors": 15})
    X = np.random.default_rng(0).normal(size=(8000, 64)).astype(np.float32)
    obs = __import__("pandas").DataFrame({"fov_name": ["A/1/0"] * len(X), "track_id": 0, "t": 0, "id": 0,
                                          "y": 0.0, "x": 0.0})
    adata = build_anndata(obs, X, X[:, :8], cfg.embedding_key, {})
    jobs.stop_child_pool()
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        jobs.run_in_child(int, "1")  # the child starts now, ignoring SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    with pytest.raises(Cancelled):
        jobs.gui_reductions(cancel)(adata, cfg)
    assert jobs._CHILD_POOL is None and "X_umap" not in adata.obsm
    for proc in multiprocessing.active_children():
        proc.join(timeout=10)
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_view_reduction_in_the_child_equals_in_process():
    from napari_dynaclr.explore import compute_reduction

    X = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    key, child = jobs.compute_reduction(X, "UMAP")
    ref_key, ref = compute_reduction(X, "UMAP")
    assert key == ref_key == "X_umap"
    np.testing.assert_allclose(child, ref, atol=1e-4)
    assert jobs.compute_reduction(X, "PCA")[0] == "X_pca"


def test_child_does_not_rerun_an_unguarded_script_and_exit_kills_it(tmp_path):
    """napari scripts rarely have a main guard: the spawned child must not run them again, and leaving
    the interpreter while the child works must not wait for it."""
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent("""
        import threading, time
        from napari_dynaclr import jobs
        print("SCRIPT RAN", flush=True)
        print("abs:", jobs.run_in_child(abs, -3), flush=True)
        threading.Thread(target=lambda: jobs.run_in_child(time.sleep, 600), daemon=True).start()
        time.sleep(2)
    """))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("SCRIPT RAN") == 1 and "abs: 3" in out.stdout
    assert seconds < 60  # the 600 s task was killed at exit
