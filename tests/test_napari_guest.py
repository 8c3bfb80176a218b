"""The plugin as a guest in napari's process: a whole napari session in a fresh process (docks from the
Plugins menu, a job, napari closed) leaves napari's process as it found it, and closing napari while any
of the plugin's jobs runs ends cleanly: napari exits, no error, no process or file left behind (how long it
takes is printed, not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "napari_session.py"
pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (pytest-xvfb provides one)")


def _session(mode, demo_inputs, demo_store, tmp_path, timeout=900):  # noqa: F811
    env = {**os.environ, "NAPARI_DYNACLR_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), mode, str(demo_inputs["config"]), str(demo_store),
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines, closing, err = [], [], []

    def read_stdout():  # the moment napari is asked to close, seen from outside
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("CLOSING"):
                closing.append(time.monotonic())

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=timeout)  # a safety net: a napari that never exits fails here, not never
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"napari's process had not exited {timeout} s after it started ({mode}): "
                    + "".join(lines)[-1000:])
    exited = time.monotonic()
    for r in readers:
        r.join(60)
    stderr = "".join(err)
    results = [json.loads(x[len("RESULT "):]) for x in lines if x.startswith("RESULT ")]
    assert proc.returncode == 0, stderr[-3000:]
    assert results, "".join(lines)[-2000:] + stderr[-3000:]
    return results[0], stderr, (exited - closing[0]) if closing else None


def _no_leftovers(out: Path) -> None:
    left = sorted(p.name for p in out.iterdir() if p.name != "cache")
    assert left in ([], ["run.zarr"]), left
    if left:  # a store at the output path is a complete one
        from napari_dynaclr.core.store import read_store

        assert read_store(out / "run.zarr").n_obs == 52


def test_a_full_session_leaves_naparis_process_as_it_found_it(demo_inputs, demo_store, tmp_path):  # noqa: F811
    result, stderr, _ = _session("full", demo_inputs, demo_store, tmp_path)
    assert result["error"] is None and result["last_error"] is None and result["notified_errors"] == []
    assert {"Planned", "Batch", "Stage"} <= set(result["events"])
    gallery = result["gallery"]
    assert gallery["gallery"] and gallery["tiles"] > 0, gallery
    assert result["classifier_info"].startswith("2 classes") and result["saved"], result["classifier_info"]
    # (a thread does it, started after the dock's first paint)
    assert result["pandas_imported"] == {"before the dock": False, "by opening it": False, "at its first paint": False}
    assert result["gc_frozen_since_start"] == 0  # nothing moved to the permanent generation
    assert result["none_modules"] == []
    assert result["limits_changed"] == {}
    # the model, UMAP, the streaming preview's PCA, the gallery's sampling and the classifier ran in the work
    # process (its result comes back without the scikit-learn model; its predictions are saved without it)
    assert result["heavy_modules"] == []
    assert result["pids"] and result["alive_pids"] == []
    assert "Traceback" not in stderr
    from napari_dynaclr.core.store import read_store

    adata = read_store(tmp_path / "run.zarr")
    assert adata.n_obs == 52 and {"X_umap", "X_pca", "predicted_annotation_proba"} <= set(adata.obsm)
    assert list(adata.uns["predicted_annotation_classes"]) == ["early", "late"]


@pytest.mark.parametrize("mode", ["preview", "checkpoint", "run", "reduction", "verify"])
def test_closing_napari_while_a_job_runs_is_clean(mode, demo_inputs, demo_store, tmp_path):  # noqa: F811
    result, stderr, seconds = _session(mode, demo_inputs, demo_store, tmp_path)
    assert result["error"] is None and result["notified_errors"] == []
    assert seconds is not None  # it was closed, and then it exited (_session waits, with a generous timeout)
    print(f"{mode}: napari exited {seconds:.2f} s after being closed "
          f"(its event loop ended after {result['run_seconds']} s)")
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
    assert result["alive_pids"] == []
    if mode == "run":
        assert "Batch" in result["events"]
    _no_leftovers(tmp_path)
