"""Shared fixtures for the napari plugin tests (import them into a test module with
``from napari_fixtures import *``; the lead owns conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import timm  # noqa: E402,F401

# The test process itself (not the plugin: napari's process never imports torch) builds checkpoints and
# runs the CLI engine. Load torch and timm before any test opens an OpenGL context: Mesa's llvmpipe maps
# libLLVM, and triton (probed by torch) crashes when its own LLVM is loaded after it.
import torch  # noqa: E402,F401

from napari_dynaclr.core.synthetic import SyntheticSpec

#: 1 well × 2 FOVs × 4 timepoints, 6 cells each (+ a division): 52 cells, 2 batches of 32 — seconds on CPU
SMALL_SPEC = SyntheticSpec(wells=("A/1",), fovs_per_well=2, timepoints=4, size=(128, 128), cells_per_fov=6)

__all__ = ["demo_inputs", "demo_store", "demo_copy", "SMALL_SPEC", "wait_worker", "load_yml"]


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory) -> dict:
    """The demo (plate, tracks, checkpoint, predict.yml without UMAP) on the small spec, built once."""
    from napari_dynaclr.demo import make_demo_inputs

    return make_demo_inputs(tmp_path_factory.mktemp("napari-demo"), SMALL_SPEC, umap=False)


@pytest.fixture(scope="session")
def demo_store(demo_inputs, tmp_path_factory) -> Path:
    """An embedding store predicted by the core engine (no Qt) from the demo inputs, with PCA + UMAP."""

    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.predict.run import run_prediction

    out = tmp_path_factory.mktemp("napari-store") / "embeddings.zarr"
    cfg = load_predict_yaml(demo_inputs["config"])
    cfg = cfg.with_overrides(output_path=out, umap_kwargs={"n_components": 2, "n_neighbors": 15})
    run_prediction(cfg, device="cpu")
    return out


@pytest.fixture
def demo_copy(demo_store, tmp_path) -> Path:
    """A writable copy of the demo store (for tests that write into it)."""
    dst = tmp_path / "copy.zarr"
    shutil.copytree(demo_store, dst)
    return dst


def reader_dock(viewer, qtbot, plugin: str = "napari-dynaclr"):
    """The DynaCLR dock that opening a store with ``viewer.open`` docks (in the next event-loop turn), once
    its open has started."""
    main = viewer.window.add_plugin_dock_widget(plugin, "DynaCLR")[1]
    qtbot.waitUntil(lambda: main.opener.worker is not None, timeout=60_000)
    return main


def wait_worker(qtbot, worker, timeout: int) -> None:
    """Wait until a started worker of a dock is done and its signals were delivered.

    ``qtbot.waitSignal(worker.finished)`` connected after the start misses a worker that finishes first
    (a corrupt checkpoint fails in milliseconds): the test then hangs until the timeout. The docks' workers
    stay "running" until their ``finished`` signal reached the GUI thread, so waiting for that has no race.
    """
    from qtpy.QtWidgets import QApplication

    from napari_dynaclr._napari.widgets._jobs import is_running

    qtbot.waitUntil(lambda: not is_running(worker), timeout=max(timeout, 60_000))
    QApplication.processEvents()  # and what its handlers posted (e.g. a zero-delay timer)


def load_yml(qtbot, main, path) -> None:
    """Load a predict.yml into the main widget and wait until it has read the plate's layout."""
    assert main.load_predict_yml(path)
    if main.checks.plate_worker is not None:
        wait_worker(qtbot, main.checks.plate_worker, 60_000)
