"""The napari plugin's Qt-free jobs (no viewer): the preview plan, and the work process that runs the
model and the reductions outside napari's process (its requests, cancel, crashes and exit)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import workers
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.core.reduce import compute_clusters, compute_reduction
from napari_dynaclr.core.store import read_store
from napari_dynaclr.errors import Cancelled, PlateError, WorkerCrashed
from napari_dynaclr.predict.client import ChildProcess
from napari_dynaclr.predict.run import run_prediction
from work_process_waits import alive, in_umap, poll


def _drain(gen, on_item=None):
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_item is not None:
            on_item(item)


def test_preview_is_the_runs_plan(demo_inputs):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"])
    table = workers.preview_cells(cfg)
    _, adata = run_prediction(cfg.with_overrides(pca_kwargs=None), device="cpu", write=False)
    obs = adata.obs.reset_index(drop=True)
    assert len(table) == adata.n_obs == 52
    for col in ("fov_name", "track_id", "t", "id", "y", "x"):
        np.testing.assert_array_equal(table[col].astype(str).to_numpy(), obs[col].astype(str).to_numpy())
    # no checkpoint needed; excluded FOVs are left out, like in the run
    first = str(table["fov_name"].iat[0])
    fewer = workers.preview_cells(cfg.with_overrides(ckpt_path=None, exclude_fovs=[first]))
    assert first not in set(fewer["fov_name"].astype(str)) and 0 < len(fewer) < len(table)
    # for a viewer: the plan's plate stays open (its FOVs are the selected ones)
    kept, plate = workers.preview_cells(cfg.with_overrides(exclude_fovs=[first]), keep_plate=True)
    try:
        pd.testing.assert_frame_equal(kept, fewer)
        assert [f.name for f in plate.fovs] == sorted(set(fewer["fov_name"].astype(str)))
        assert plate.fov(str(fewer["fov_name"].iat[0])).image.shape[0] == 4
    finally:
        plate.close()


def test_preview_does_not_load_the_model_stack(demo_inputs):  # noqa: F811
    """Planning needs the plate and tracks only: the first preview in a session must not wait for torch."""
    code = textwrap.dedent(f"""
        import sys
        from napari_dynaclr._napari import workers
        from napari_dynaclr.core.predict_yml import load_predict_yaml
        n = len(workers.preview_cells(load_predict_yaml({str(demo_inputs["config"])!r})))
        print(n, [m for m in ("torch", "lightning", "timm") if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(None, 1) == ["52", "[]\n"]


def test_preview_reports_bad_inputs(demo_inputs):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"])
    with pytest.raises(PlateError, match="z_range"):
        workers.preview_cells(cfg.with_overrides(z_range=(0, 5)))


def test_prediction_job_equals_the_cli_and_its_store(demo_inputs, tmp_path):  # noqa: F811
    """The GUI's run (in the work process) gives the CLI's numbers, writes the same store, and the AnnData
    rebuilt from the streamed batches is the store's content."""
    cfg = load_predict_yaml(demo_inputs["config"]).with_overrides(output_path=tmp_path / "gui.zarr",
                              umap_kwargs={"n_components": 2, "n_neighbors": 15}, batch_size=16)
    kinds = []
    done = _drain(workers.prediction_job(cfg, "cpu"), lambda ev: ev is None or kinds.append(type(ev).__name__))
    assert kinds[0] == "Planned" and kinds.count("Batch") == 4 and "Stage" in kinds
    _, ref = run_prediction(cfg.with_overrides(output_path=tmp_path / "cli.zarr"), device="cpu")
    stored = read_store(tmp_path / "gui.zarr")
    for adata in (done.adata, stored):
        np.testing.assert_array_equal(adata.X, ref.X)
        pd.testing.assert_frame_equal(adata.obs, ref.obs)
        assert sorted(adata.obsm) == sorted(ref.obsm) == ["X_pca", "X_projections", "X_umap"]
        np.testing.assert_allclose(adata.obsm["X_umap"], ref.obsm["X_umap"], atol=1e-4)
        np.testing.assert_allclose(np.abs(adata.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]), atol=1e-4)
        assert _plain(adata.uns) == _plain(ref.uns)
    assert done.output_path == tmp_path / "gui.zarr"


def _plain(value):
    """uns as plain Python (a store gives its lists back as arrays)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def test_prediction_job_predicts_on_one_device(demo_inputs, tmp_path):  # noqa: F811
    """A predict.yml asking for several devices (Lightning DDP) still runs on one in the GUI."""
    cfg = load_predict_yaml(demo_inputs["config"]).with_overrides(output_path=tmp_path / "one.zarr",
                              devices=2, accelerator="cpu", strategy="ddp", pca_kwargs=None)
    planned = []
    _drain(workers.prediction_job(cfg, "cpu"), lambda ev: planned.append(ev) if type(ev).__name__ == "Planned"
           else None)
    assert planned[0].device == "cpu"
    assert read_store(tmp_path / "one.zarr").n_obs == 52


def test_user_errors_keep_their_type_and_message(demo_inputs, tmp_path):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"]).with_overrides(output_path=tmp_path / "x.zarr",
                              exclude_fovs=["A/1/0", "A/1/1"])
    with pytest.raises(PlateError, match="no FOV|FOV"):
        _drain(workers.prediction_job(cfg, "cpu"))
    assert not (tmp_path / "x.zarr").exists()
    # the work process is still usable afterwards
    key, coords = _drain(workers.reduction_job(np.eye(6, dtype=np.float32), "PCA", n_components=2))
    assert key == "X_pca" and coords.shape == (6, 2)


def test_explorer_jobs_equal_in_process():
    X = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    key, child = _drain(workers.reduction_job(X, "UMAP"))
    ref_key, ref = compute_reduction(X, "UMAP")
    assert key == ref_key == "X_umap"
    np.testing.assert_allclose(child, ref, atol=1e-4)
    labels = _drain(workers.cluster_job(X, "KMeans", n_clusters=3))
    assert list(labels) == list(compute_clusters(X, "KMeans", n_clusters=3))


def test_closing_the_job_stops_the_run_and_writes_nothing(demo_inputs, tmp_path):  # noqa: F811
    cfg = load_predict_yaml(demo_inputs["config"]).with_overrides(output_path=tmp_path / "x.zarr",
                              batch_size=4)
    cancel = threading.Event()
    job = workers.prediction_job(cfg, "cpu", cancel)
    names = []
    while "Batch" not in names:
        names.append(type(next(job)).__name__)
    pid = workers.work_process().pid
    workers.cancel_job(cancel)  # the Cancel button (or napari closing the dock)
    with pytest.raises(Cancelled):
        _drain(job)
    assert pid is not None and not alive(pid)
    assert list(tmp_path.iterdir()) == []
    # the next request starts a new work process
    assert _drain(workers.reduction_job(np.eye(5, dtype=np.float32), "PCA"))[0] == "X_pca"
    assert workers.work_process().pid not in (None, pid)


def test_a_cancel_from_another_thread_still_leaves_nothing(demo_inputs, tmp_path, monkeypatch):  # noqa: F811
    """The Cancel button kills the work process on the GUI thread while the job's thread notices the cancel:
    the job must wait for that death before cleaning up, or the dying process's lock file stays behind."""
    from napari_dynaclr.predict import client

    real_kill = client._kill
    job_thread_kills = threading.Event()

    def ordered_kill(proc):  # the GUI thread's kill waits until the job's thread has got there first
        if threading.current_thread().name == "cancel-button":
            job_thread_kills.wait(60)
        else:
            job_thread_kills.set()
        real_kill(proc)

    monkeypatch.setattr(client, "_kill", ordered_kill)
    cfg = load_predict_yaml(demo_inputs["config"]).with_overrides(output_path=tmp_path / "x.zarr",
                              batch_size=4)
    cancel = threading.Event()
    job = workers.prediction_job(cfg, "cpu", cancel)
    names = []
    while "Batch" not in names:
        names.append(type(next(job)).__name__)
    button = threading.Thread(target=workers.cancel_job, args=(cancel,), name="cancel-button")
    button.start()
    with pytest.raises(Cancelled):
        _drain(job)
    button.join()
    assert job_thread_kills.is_set()  # the order this test is about happened
    assert list(tmp_path.iterdir()) == []  # no lock file, no partial store


def test_cancel_of_an_abandoned_request_frees_the_process():
    """A napari worker aborted at quit never resumes its generator: cancelling its request must still
    kill the process and let the next request through."""
    child = ChildProcess(heartbeat=0.05)
    cancel = threading.Event()
    gen = child.stream("reduce", np.random.default_rng(0).normal(size=(20000, 64)).astype(np.float32), "UMAP", {},
                       cancel=cancel)
    next(gen)  # in flight; the generator is then never resumed
    pid = child.pid
    assert poll(lambda: in_umap(pid))
    child.cancel(cancel)
    assert not alive(pid)
    assert child.call("reduce", np.eye(4, dtype=np.float32), "PCA", {"n_components": 2})[0] == "X_pca"
    assert child.pid not in (None, pid)
    child.close()
    del gen


def test_a_cancelled_request_resumed_late_leaves_the_next_requests_process_alone():
    """A cancelled job's thread may resume its generator only after the next request started a new process (a
    busy machine: a checkpoint check replaced by a newer one, then the prediction): it must not kill that one.
    (Seen: a Bag-of-Channels prediction in the dock failed with 'the work process stopped unexpectedly (killed by
    SIGKILL)'.)"""
    child = ChildProcess(heartbeat=0.05)
    cancel = threading.Event()
    late = child.stream("reduce", np.random.default_rng(0).normal(size=(20000, 64)).astype(np.float32), "UMAP", {},
                        cancel=cancel)
    next(late)  # in flight
    first = child.pid
    assert poll(lambda: in_umap(first))
    child.cancel(cancel)  # the Cancel button, on another thread than the job's
    assert not alive(first)
    assert child.call("reduce", np.eye(4, dtype=np.float32), "PCA", {"n_components": 2})[0] == "X_pca"
    second = child.pid
    assert second not in (None, first)
    with pytest.raises(Cancelled):
        _drain(late)  # the cancelled job's thread gets there only now
    assert child.pid == second and alive(second)
    assert child.call("reduce", np.eye(4, dtype=np.float32), "PCA", {"n_components": 2})[0] == "X_pca"
    assert child.pid == second  # served by the same process: nothing was killed under it
    child.close()


def test_a_crash_of_the_work_process_is_one_error_and_it_recovers():
    child = ChildProcess(heartbeat=0.05)
    X = np.random.default_rng(0).normal(size=(20000, 64)).astype(np.float32)
    gen = child.stream("reduce", X, "UMAP", {})
    next(gen)
    assert poll(lambda: in_umap(child.pid))  # busy in the request
    os.kill(child.pid, signal.SIGSEGV)  # stands for a segfault in a native library, or the OOM killer
    with pytest.raises(WorkerCrashed, match="SIGSEGV"):
        _drain(gen)
    assert child.call("reduce", np.eye(4, dtype=np.float32), "PCA", {"n_components": 2})[0] == "X_pca"
    child.close()
    assert child.pid is None


def test_cancel_kills_a_child_that_ignores_sigterm():
    """napari (or CI) started with SIGTERM ignored passes that on to the child: cancel must still end it."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = ChildProcess(heartbeat=0.05)
    try:
        child.call("reduce", np.eye(4, dtype=np.float32), "PCA", {"n_components": 2})  # starts ignoring SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    pid = child.pid
    cancel = threading.Event()
    threading.Thread(target=lambda: poll(lambda: in_umap(pid)) and cancel.set(), daemon=True).start()
    with pytest.raises(Cancelled):
        child.call("reduce", np.random.default_rng(0).normal(size=(20000, 64)).astype(np.float32), "UMAP", {},
                   cancel=cancel)
    assert not alive(pid)
    child.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_work_process_ends_when_naparis_process_is_killed(tmp_path):
    """napari killed (kill -9, a crash) while the work process is in a long UMAP, which sends nothing until it
    is done: the work process must end at once (its watchdog sees napari's end of its standard input close),
    not minutes later at its next message."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(textwrap.dedent("""
        import time
        import numpy as np
        from napari_dynaclr.predict.client import ChildProcess
        child = ChildProcess()
        X = np.random.default_rng(0).normal(size=(20000, 32)).astype(np.float32)
        gen = child.stream("reduce", X, "UMAP", {"n_epochs": 100000})  # minutes of work, no message until done
        next(gen)
        while child.pid is None:
            next(gen)
        print("CHILD", child.pid, flush=True)
        for _ in gen:
            pass
    """))
    proc = subprocess.Popen([sys.executable, str(launcher)], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        line = proc.stdout.readline()
        assert line.startswith("CHILD"), line
        pid = int(line.split()[1])
        assert poll(lambda: in_umap(pid)), "the work process never started its UMAP"
        assert alive(pid)
        proc.kill()  # SIGKILL: nothing of napari's process runs after this
        killed = time.monotonic()
        proc.wait()
        gone = poll(lambda: not alive(pid))
        print(f"the work process ended {time.monotonic() - killed:.3f} s after its parent was killed")
        assert gone, "the work process outlived napari's process"
    finally:
        proc.kill()
        proc.wait()
        if pid is not None and alive(pid):  # (the failure above: do not leave it running)
            os.kill(pid, signal.SIGKILL)


def test_the_work_process_runs_the_package_module_not_the_users_script(tmp_path):
    """napari scripts rarely have a main guard: the work process must not run them again, and leaving the
    interpreter while it works must not wait for it or leave it behind."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent("""
        import threading, time
        import numpy as np
        from napari_dynaclr._napari import workers
        print("SCRIPT RAN", flush=True)
        p = workers.work_process()
        print("pca:", p.call("reduce", np.eye(4, dtype=np.float32), "PCA", {"n_components": 2})[0], flush=True)
        print("pid:", p.pid, flush=True)
        big = np.random.default_rng(0).normal(size=(20000, 32)).astype(np.float32)
        # minutes of UMAP: the interpreter must leave without waiting for it
        threading.Thread(target=lambda: p.call("reduce", big, "UMAP", {"n_epochs": 100000}), daemon=True).start()
        while "llvmlite" not in open(f"/proc/{p.pid}/maps").read():  # the work process is in its UMAP
            time.sleep(0.05)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("SCRIPT RAN") == 1 and "pca: X_pca" in out.stdout
    pid = int(out.stdout.split("pid:")[1].split()[0])
    assert poll(lambda: not alive(pid))  # the long UMAP was killed at exit


def test_a_runtime_error_in_a_generator_job_reaches_the_dock(qtbot):
    """superqt's generator worker swallows a RuntimeError (no ``errored``, no ``finished``): every job the
    docks start (``thread_job``) raises it as a plain error instead, so the dock hears of it and its job ends."""
    from napari_dynaclr._napari.widgets._jobs import is_running, start_job, thread_job

    def job(n):
        yield 1
        if n:
            raise RuntimeError("the disk went away")
        return n

    assert list(workers.in_thread(job)(0)) == [1]
    with pytest.raises(Exception, match="RuntimeError: the disk went away") as raised:
        list(workers.in_thread(job)(1))
    assert not isinstance(raised.value, RuntimeError)
    errors, finished = [], []
    worker = thread_job(job)(1)
    worker.errored.connect(lambda exc: errors.append(str(exc)))
    worker.finished.connect(lambda: finished.append(1))
    start_job(worker)
    qtbot.waitUntil(lambda: bool(finished), timeout=60_000)
    assert errors == ["RuntimeError: the disk went away"] and not is_running(worker)


def test_a_job_that_never_returns_does_not_keep_the_process_from_exiting():
    """napari closed while a job still reads in its thread (a store's read waits on zarr's event loop, which
    zarr's exit handler stops): the interpreter must still exit. PyQt destroyed the plugin's pool at exit and
    ``~QThreadPool`` waited for that worker for ever (the guest session's verify mode hung on a loaded machine)."""
    script = textwrap.dedent("""
        import threading
        from qtpy.QtWidgets import QApplication
        app = QApplication([])
        from napari_dynaclr._napari.widgets._jobs import start_job, thread_job
        entered, never = threading.Event(), threading.Event()

        def job():
            entered.set()
            never.wait()

        start_job(thread_job(job)())
        assert entered.wait(60)
        print("RUNNING", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "RUNNING" in out.stdout, out.stderr[-2000:]


def test_two_jobs_reading_data_for_the_first_time_at_once(demo_inputs, demo_store):  # noqa: F811
    """A plate check and a store open started together in a fresh napari process: both import zarr for the
    first time. In two threads at once, zarr's modules (which import each other) came half-initialised
    (``ImportError: cannot import name 'StorePath'``, ``KeyError: 'zarr'``, every time); the docks' jobs import
    the data packages one thread at a time."""
    script = textwrap.dedent(f"""
        import sys, threading
        from napari_dynaclr._napari import workers
        from napari_dynaclr.core.plate import plate_info
        from napari_dynaclr.core.store import LazyStore
        assert "zarr" not in sys.modules
        errors = []

        def job(read):
            def run():
                try:
                    read()
                except BaseException as exc:
                    errors.append(repr(exc))
            return threading.Thread(target=workers.in_thread(run))

        jobs = [job(lambda: plate_info({str(demo_inputs["plate"])!r})),
                job(lambda: len(LazyStore({str(demo_store)!r}).obs))]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join()
        print("ERRORS", errors)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERRORS []" in out.stdout, out.stdout[-2000:]
