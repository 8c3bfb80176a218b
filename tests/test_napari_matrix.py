"""The matrix of issue 21 (item 5): store kinds × entry paths × views, tried as a user tries them.

One viewer per store kind (:mod:`matrix_stores`); in it the store is opened by each entry path in turn (File >
Open = ``viewer.open(path, plugin=…)`` on the fresh viewer, the Plugins menu = ``add_plugin_dock_widget``
then open, the dock's open-store form = its field and its button), and after each open every view is tried:
the overlays on the image (Points and Tracks layers with the cells, the plate's image layers), Explore (the
scatter shows an embedding of every cell), Cells (a clicked cell gets its neighbours and a gallery) and
Verify (PASS against VisCy's reference in tests/data). In each cell of the matrix: no error notification.

Each cell's outcome is recorded; a store kind whose cells fail for behaviour that is not there yet is marked
``xfail(strict=True, raises=KnownGaps)``: the test raises :class:`KnownGaps` only when exactly the known cells
fail, so a cell that starts to pass (the behaviour landed: remove its entry) or a new failure turns it red.
"""

from __future__ import annotations

import numpy as np
import pytest

from matrix_stores import KINDS, build
from napari_fixtures import wait_worker

PLUGIN = "napari-dynaclr"
TIMEOUT_MS = 120_000
#: the neighbours and the gallery of a few cells (the work process is warm after the first)
CELLS_TIMEOUT_MS = 30_000
ENTRIES = ("file_open", "plugins_menu", "dock_form")
VIEWS = ("overlays", "image", "explore", "cells", "verify")


class KnownGaps(AssertionError):
    """Exactly the known cells of a store kind failed (the kind's xfail)."""


#: store kind -> {(entry, view): the cause found in the code}; none left (the gallery cuts with the run's
#: predict.yml, recorded by the store or loaded by the user; a store without a reduction starts on a PCA)
GAPS: dict[str, dict[tuple[str, str], str]] = {}


def _kind(kind: str):
    if kind in GAPS:
        causes = "; ".join(sorted(set(GAPS[kind].values())))
        return pytest.param(kind, marks=pytest.mark.xfail(strict=True, raises=KnownGaps, reason=causes))
    return kind


@pytest.fixture
def error_notes():
    """Every error notification napari shows (ours through ``show_error`` and uncaught exceptions alike)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen = []

    def on_note(note) -> None:
        if note.severity == NotificationSeverity.ERROR:
            seen.append(str(note.message))

    notification_manager.notification_ready.connect(on_note)
    yield seen
    notification_manager.notification_ready.disconnect(on_note)


# ---------------------------------------------------------------------------------------------- entry paths


def _wait_open(qtbot, main, before, path) -> None:
    """Wait for the open that an entry path started (a worker other than *before*) to show *path*."""
    qtbot.waitUntil(lambda: main.opener.worker is not None and main.opener.worker is not before, timeout=60_000)
    wait_worker(qtbot, main.opener.worker, TIMEOUT_MS)
    qtbot.waitUntil(lambda: main.session.store_path == path and main.session.table is not None, timeout=60_000)


def _file_open(viewer, qtbot, main, path):
    viewer.open(path, plugin=PLUGIN)
    from napari_fixtures import reader_dock

    main = reader_dock(viewer, qtbot)  # the reader docks the DynaCLR dock in a later event-loop turn
    _wait_open(qtbot, main, None, path)
    return main


def _plugins_menu(viewer, qtbot, main, path):
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    before = main.opener.worker
    main.open_embeddings(path)
    _wait_open(qtbot, main, before, path)
    return main


def _dock_form(viewer, qtbot, main, path):
    before = main.opener.worker
    main.store.value = path
    main.open_btn.clicked.emit()  # the "Open embeddings" button
    _wait_open(qtbot, main, before, path)
    return main


OPEN = {"file_open": _file_open, "plugins_menu": _plugins_menu, "dock_form": _dock_form}


# ---------------------------------------------------------------------------------------------------- views


def _overlays(viewer, qtbot, main, store, step):
    s = main.session
    fov_cells = int((s.table["fov_name"].astype(str) == s.fov_name).sum())
    assert s.points_layer is not None and s.points_layer in viewer.layers, "no Points layer"
    assert s.tracks_layer is not None and s.tracks_layer in viewer.layers, "no Tracks layer"
    assert len(s.points_layer.data) == fov_cells > 0, (len(s.points_layer.data), fov_cells)


def _image(viewer, qtbot, main, store, step):
    s = main.session
    assert s.image_layers and all(layer in viewer.layers for layer in s.image_layers), \
        f"no plate image ({main.status.value!r})"


def _explore(viewer, qtbot, main, store, step):
    view, s = main.explore, main.session
    obs = set(s.adata.obs.columns) if s.adata is not None else {"x", "y", "z", "t"}
    # (an embedding the store lacks may be computed after the open: wait for it)
    _until(qtbot, lambda: not set(view.axes()) & obs,
           lambda: "the scatter shows obs columns {}, {}, not an embedding".format(*view.axes()))
    qtbot.waitUntil(lambda: len(view.scatter.xy) == store.n_cells, timeout=TIMEOUT_MS)
    assert int(np.isfinite(view.scatter.xy).all(axis=1).sum()) == store.n_cells


def _cells(viewer, qtbot, main, store, step):
    s, cells = main.session, main.cells
    main.tabs.setCurrentWidget(cells)
    cells.k.value = 5
    row = int(np.flatnonzero(s.table["fov_name"].astype(str) == s.fov_name)[step])  # a new cell per entry path
    before = sorted(s.selected.tolist())
    s.highlight(row)  # what a click on a cell in the image or the scatter does

    def state() -> str:
        return (f"row {row}, neighbours of {s.neighbours_of}: {sorted(s.neighbours.tolist())}, selected "
                f"{sorted(s.selected.tolist())}, tiles {sorted(cells.tile_rows)}, neighbours "
                f"{cells.neighbours_info.value!r}, gallery {cells.gallery_info.value!r}")

    _until(qtbot, lambda: s.neighbours_of == row and len(s.neighbours) == 5
           or cells.neighbours_info.value.startswith("✗"), state)
    assert cells.neighbours_info.value.startswith("5 nearest of"), state()
    assert sorted(s.selected.tolist()) == before, state()  # a click never changes the selection
    chosen = sorted([row, *s.neighbours.tolist()])
    if store.kind == "viscy" and main.yml_config is None:  # VisCy's store records no predict.yml: the gallery
        # asks for it, the user loads it (and it stays loaded for the later entry paths' opens of that store)
        _until(qtbot, lambda: cells.gallery_info.value.startswith("✗"), state)
        assert "records no predict.yml" in cells.gallery_info.value, state()
        assert main.load_predict_yml(store.path.parent / "predict.yml")
        cells.show_gallery(np.array(chosen))
    _until(qtbot, lambda: sorted(cells.tile_rows) == chosen or cells.gallery_info.value.startswith("✗"), state)
    assert not cells.gallery_info.value.startswith("✗"), cells.gallery_info.value
    assert cells.gallery.count() == len(chosen)
    main.cells.select_neighbours_btn.native.click()  # the explicit action: the neighbours become the selection
    assert sorted(s.selected.tolist()) == chosen, state()


def _until(qtbot, condition, state) -> None:
    """Wait for *condition*; on a timeout say what was there instead."""
    try:
        qtbot.waitUntil(condition, timeout=CELLS_TIMEOUT_MS)
    except Exception:  # noqa: BLE001 - pytest-qt's TimeoutError: re-raised with the state
        raise AssertionError(f"timed out: {state()}") from None


def _verify(viewer, qtbot, main, store, step):
    panel = main.verify
    main.tabs.setCurrentWidget(panel)
    assert panel.prediction_combo.currentData() == "session", panel.prediction_combo.currentText()
    panel.reference_edit.setText(str(store.reference))
    panel.report, panel.last_error = None, None
    assert panel.run() is not None, panel.last_error
    qtbot.waitUntil(lambda: panel.state == "ready" and (panel.report is not None or bool(panel.last_error)),
                    timeout=TIMEOUT_MS)
    assert panel.report is not None, panel.last_error
    assert panel.report.passed and panel.verdict_label.text().startswith("PASS"), panel.verdict_label.text()


CHECK = {"overlays": _overlays, "image": _image, "explore": _explore, "cells": _cells, "verify": _verify}


# ---------------------------------------------------------------------------------------------------- matrix


@pytest.mark.parametrize("kind", [_kind(k) for k in KINDS])
def test_matrix(kind, make_napari_viewer, conformance_ckpt, tmp_path, qtbot, error_notes):
    store = build(kind, tmp_path, conformance_ckpt(KINDS[kind][0]))
    viewer = make_napari_viewer(show=True)
    main, failed = None, {}
    for step, entry in enumerate(ENTRIES):
        notes = len(error_notes)
        try:
            main = OPEN[entry](viewer, qtbot, main, store.path)
        except Exception as exc:  # noqa: BLE001 - the cell's outcome, reported below
            failed.update({(entry, view): f"open: {exc}" for view in VIEWS})
            continue
        for view in VIEWS:
            try:
                CHECK[view](viewer, qtbot, main, store, step)
                new = error_notes[notes:]
                assert not new, f"error notification: {new}"
            except Exception as exc:  # noqa: BLE001 - the cell's outcome, reported below
                failed[(entry, view)] = f"{type(exc).__name__}: {exc}"
            notes = len(error_notes)
    table = "\n".join(f"{kind} {entry} {view}: {'FAIL ' + failed[(entry, view)] if (entry, view) in failed else 'pass'}"
                      for entry in ENTRIES for view in VIEWS)
    print(table)
    known = GAPS.get(kind, {})
    unexpected = {cell: why for cell, why in failed.items() if cell not in known}
    assert not unexpected, f"cells that fail:\n{table}"
    fixed = sorted(set(known) - set(failed))
    assert not fixed, f"known gaps that now pass (remove them from GAPS): {fixed}\n{table}"
    if failed:
        raise KnownGaps(f"the known gaps of {kind}:\n{table}")
