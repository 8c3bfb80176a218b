"""Helpers for the napari plugin tests (``from napari_fixtures import wait_worker, …``); the demo fixtures
(``demo_inputs``, ``demo_store``, ``demo_copy``) are in conftest.py, built once a session."""

from __future__ import annotations

import timm  # noqa: E402,F401

# The test process itself (not the plugin: napari's process never imports torch) builds checkpoints and
# runs the CLI engine. Load torch and timm before any test opens an OpenGL context: Mesa's llvmpipe maps
# libLLVM, and triton (probed by torch) crashes when its own LLVM is loaded after it.
import torch  # noqa: E402,F401

from conftest import SMALL_SPEC  # noqa: F401 - (re-exported)

__all__ = ["SMALL_SPEC", "wait_worker", "load_yml", "reader_dock"]


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
