"""A whole napari session as a user has it, for tests that need napari's own process: the plugin's docks
opened from the Plugins menu, one job, then napari closed. Prints one JSON line (``RESULT {...}``) with
what the process looks like afterwards.

    python napari_session.py MODE CONFIG STORE OUT_DIR

MODE: ``full`` (a run with UMAP to the end, a gallery of its cells, then close), or close while a job runs:
``preview``, ``run``, ``reduction``, ``verify``, ``checkpoint``.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import threadpoolctl

MODE, CONFIG, STORE, OUT = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
FROZEN_BEFORE = gc.get_freeze_count()  # this interpreter may start with some (375 on a pyenv 3.12 build)
LIMITS_BEFORE = {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()}
MODULES_BEFORE = {name for name, mod in sys.modules.items() if mod is None}

import napari  # noqa: E402
from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402
from qtpy.QtCore import QEvent, QObject, QTimer  # noqa: E402

viewer = napari.Viewer()
PANDAS_BEFORE = "pandas" in sys.modules
_, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
# (the DynaCLR dock imports pandas in a thread after it opens, not on the GUI thread as napari opens it)
PANDAS_WITH_DOCK = "pandas" in sys.modules


class FirstPaint(QObject):
    """Whether pandas was imported (or being imported) when the DynaCLR dock was first painted: its thread starts
    after that paint (beside it, the thread's imports slowed the paint: Qt's calls into Python wait for the GIL)."""

    def __init__(self, widget):
        super().__init__(widget)
        self.pandas = None
        widget.installEventFilter(self)

    def eventFilter(self, obj, event):  # noqa: N802
        if event.type() == QEvent.Type.Paint and self.pandas is None:
            self.pandas = "pandas" in sys.modules
        return False


first_paint = FirstPaint(main)
view = verify = None  # the Embedding view and Verify docks: opened once the DynaCLR dock is painted (they import
# pandas as they open)
state = {"pids": set(), "events": [], "closing_at": None, "error": None, "notified_errors": []}


def on_notification(notification):
    """napari shows an exception raised in its event loop as a notification (nothing reaches stderr)."""
    if notification.severity >= NotificationSeverity.ERROR:
        state["notified_errors"].append(str(notification)[-1500:])


notification_manager.notification_ready.connect(on_notification)


def note_pid():
    from napari_dynaclr._napari.workers import work_process

    for lane in ("heavy", "quick"):  # both work processes must end with napari
        pid = work_process(lane).pid
        if pid:
            state["pids"].add(pid)


def close():
    note_pid()
    state["closing_at"] = time.time()
    print("CLOSING", flush=True)
    viewer.close()


def later(ms, fn):
    QTimer.singleShot(ms, fn)


def poll(condition, then, every=100, timeout_s=600.0, since=None):
    """Call *then* once *condition()* holds (checked on the GUI thread). *timeout_s* is a safety net against a
    hang, not a speed limit: the first UMAP compiles numba code in the work process, minutes on a busy laptop;
    the test's own net (900 s) is above it so that this one names the mode."""
    note_pid()
    since = time.monotonic() if since is None else since
    if condition():
        then()
    elif time.monotonic() - since > timeout_s:
        state["error"] = f"timed out waiting in mode {MODE} ({timeout_s:.0f} s)"
        close()
    else:
        later(every, lambda: poll(condition, then, every, timeout_s, since))


def gallery():
    """The Cells tab's gallery of every cell of the run (picked and cut in the work process), then close."""
    cells = main.cells
    state["gallery"] = cells.show_gallery(range(len(main.session.table))) is not None
    poll(lambda: cells.worker("gallery") is None and (cells.tile_rows or cells.gallery_info.value.startswith("✗")),
         lambda: (state.update(tiles=len(cells.tile_rows), gallery_info=cells.gallery_info.value), classifier()))


def classifier():
    """Two labelled classes (the classifier trains and predicts in the work process), then its predictions saved
    into the run's store, then close."""
    s, cells = main.session, main.cells
    cells.follow_selection.value = False
    n = len(s.table)
    for label, rows in (("early", range(0, n // 2, 2)), ("late", range(n // 2, n, 2))):
        s.select(list(rows))
        main.explore.assign_selection(label)

    def save():
        state["classifier_info"] = cells.classifier_info.value
        worker = cells.save_predictions()
        worker.returned.connect(lambda path: state.update(saved=str(path)))
        worker.errored.connect(lambda exc: state.update(error=f"saving the predictions: {exc}"))
        poll(lambda: "saved" in state or state["error"] is not None, lambda: later(500, close))

    poll(lambda: cells.worker("classifier") is None and "predicted_annotation" in s.table, save)


def start():
    main.load_predict_yml(CONFIG)
    main.output.value = OUT / "run.zarr"
    main.device.value = "cpu"
    if MODE == "full":
        main.umap.value = True
        main.batch_size.value = 16
        worker = main.run()
        worker.yielded.connect(lambda ev: ev is None or state["events"].append(type(ev).__name__))
        poll(lambda: main.worker is None and main.last_result is not None, gallery)
    elif MODE == "run":
        main.batch_size.value = 4
        worker = main.run()
        worker.yielded.connect(lambda ev: ev is None or state["events"].append(type(ev).__name__))
        poll(lambda: "Batch" in state["events"], close, every=20)
    elif MODE == "preview":
        main.preview_cells()
        close()
    elif MODE == "checkpoint":
        main.inspect_checkpoint()
        later(300, close)
    elif MODE == "reduction":
        worker = main.open_embeddings(STORE)
        poll(lambda: main.session.adata is not None,
             lambda: (view.compute_reduction("UMAP"), later(1500, close)))
    elif MODE == "verify":
        verify.prediction_combo.setCurrentIndex(verify.prediction_combo.findData("file"))
        verify.prediction_edit.setText(str(STORE))
        verify.reference_edit.setText(str(STORE))
        verify.run()
        close()
    else:
        raise SystemExit(f"unknown mode {MODE}")


def open_docks_then_start():
    global view, verify
    _, view = viewer.window.add_plugin_dock_widget("napari-dynaclr", "Embedding view")
    _, verify = viewer.window.add_plugin_dock_widget("napari-dynaclr", "Verify against reference")
    start()


poll(lambda: first_paint.pandas is not None, open_docks_then_start, every=10)  # (a user acts on what they see)
napari.run()
closed = time.time()


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared waits
from work_process_waits import alive  # noqa: E402

for _ in range(200):  # the work processes end with napari (each was killed and waited for): allow 10 s to show it
    if not any(alive(p) for p in state["pids"]):
        break
    time.sleep(0.05)
limits_after = {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()}
result = {
    "mode": MODE,
    "error": state["error"],
    "gallery": {k: state.get(k) for k in ("gallery", "tiles", "gallery_info")},
    "classifier_info": state.get("classifier_info"),
    "pandas_imported": {"before the dock": PANDAS_BEFORE, "by opening it": PANDAS_WITH_DOCK,
                        "at its first paint": first_paint.pandas},
    "saved": state.get("saved"),
    "events": sorted(set(state["events"])),
    "gc_frozen_since_start": gc.get_freeze_count() - FROZEN_BEFORE,
    "none_modules": sorted({name for name, mod in sys.modules.items() if mod is None} - MODULES_BEFORE),
    "limits_changed": {k: (v, limits_after.get(k)) for k, v in LIMITS_BEFORE.items() if limits_after.get(k) != v},
    # (napari itself imports numba); the engine's modules and scikit-learn (the streaming preview, the gallery's
    # sample, the classifier and its saved predictions) stay in the work process too
    "heavy_modules": [m for m in ("torch", "lightning", "timm", "torchvision", "umap", "pynndescent",
                                  "napari_dynaclr.model", "napari_dynaclr.predict.single",
                                  "napari_dynaclr.predict.lightning", "napari_dynaclr.predict.run",
                                  "napari_dynaclr.child", "sklearn") if m in sys.modules],
    "pids": sorted(state["pids"]),
    "alive_pids": [p for p in sorted(state["pids"]) if alive(p)],
    "run_seconds": round(closed - state["closing_at"], 2) if state["closing_at"] else None,
    "last_error": main.last_error,
    "notified_errors": state["notified_errors"],
}
print("RESULT " + json.dumps(result), flush=True)
