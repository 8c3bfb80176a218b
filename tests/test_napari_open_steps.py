"""Opening a large store in steps (issue 12: the GUI thread never blocked > 200 ms while a 10⁶-cell store
opens): the worker builds the layers, the GUI thread inserts them one per event-loop turn. Reached the way a
user reaches it: the dock through the manifest, the reader through ``viewer.open``. The demo store has 52
cells; ``ASYNC_CELLS`` is lowered so that it takes the large-store path."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import session as session_module
from napari_fixtures import *  # noqa: F403
from napari_fixtures import reader_dock, wait_worker

PLUGIN = "napari-dynaclr"


@pytest.fixture
def docked(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    return viewer, main


@pytest.fixture
def errors(monkeypatch):
    from napari_dynaclr._napari.widgets import main as main_widget

    seen = []
    monkeypatch.setattr(main_widget, "show_error", seen.append)
    return seen


@pytest.fixture
def steps(monkeypatch):
    """Lower the threshold (every table opens in steps) and record where the layers were prepared and how
    many steps each install took."""
    monkeypatch.setattr(session_module, "ASYNC_CELLS", 10)
    seen = {"prepared_on_main": [], "installs": []}
    real_prepare, real_install = session_module.prepare_table, session_module.ExplorerSession.install

    def prepare(*args, **kwargs):
        seen["prepared_on_main"].append(threading.current_thread() is threading.main_thread())
        return real_prepare(*args, **kwargs)

    def install(self, *args, **kwargs):
        n = [0]
        seen["installs"].append(n)
        for _ in real_install(self, *args, **kwargs):
            n[0] += 1
            yield

    monkeypatch.setattr(session_module, "prepare_table", prepare)
    monkeypatch.setattr(session_module.ExplorerSession, "install", install)
    return seen


def _state(viewer, s) -> dict:
    pts, trk, hl = s.points_layer, s.tracks_layer, s.highlight_layer
    return {
        "names": [layer.name for layer in viewer.layers], "visible": [layer.visible for layer in viewer.layers],
        "active": viewer.layers.selection.active.name, "fov": s.fov_name, "n_cells": len(s.table),
        "points": pts.data.copy(), "features": pts.features.reset_index(drop=True).copy(),
        "face": pts.face_color.copy(), "border": pts.border_color.copy(), "size": pts.size.copy(),
        "tracks": trk.data.copy(), "track_features": trk.features.reset_index(drop=True).copy(),
        "graph": dict(trk.graph), "track_colors": np.asarray(trk.track_colors).copy(), "highlight": hl.data.copy(),
        "scales": [tuple(layer.scale) for layer in viewer.layers],
        "images": [(tuple(im.data.shape), tuple(im.contrast_limits), im.colormap.name, im.blending,
                    im.metadata["dynaclr_fov"]) for im in s.image_layers],
        "dims": (viewer.dims.ndim, tuple(viewer.dims.range), tuple(viewer.dims.axis_labels)),
    }


def _assert_same(a: dict, b: dict) -> None:
    for key in ("names", "visible", "active", "fov", "n_cells", "graph", "scales", "images", "dims"):
        assert a[key] == b[key], key
    for key in ("points", "face", "border", "size", "tracks", "track_colors", "highlight"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    pd.testing.assert_frame_equal(a["features"], b["features"])
    pd.testing.assert_frame_equal(a["track_features"], b["track_features"])


def _open(qtbot, main, store, plate=None, tracks=None):
    if plate is not None:
        main.plate.value, main.tracks.value = plate, tracks
    worker = main.open_embeddings(store)
    wait_worker(qtbot, worker, 60_000)
    return main.session


def test_a_large_open_builds_in_a_worker_and_ends_like_set_table(docked, demo_store, demo_inputs, qtbot, steps,
                                                                  errors, monkeypatch):
    viewer, main = docked
    s = _open(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    assert errors == []
    assert steps["prepared_on_main"] == [False]  # the layers were built in the worker
    # step 1 (table), 5 insertions (2 images, tracks, points, highlight), 3 reveals, selection, the last step
    assert [n[0] for n in steps["installs"]] == [10]
    assert main.status.value == "opened embeddings.zarr: 52 cells" and main.open_btn.enabled
    assert main.tabs.currentWidget() is main.explore and len(main.explore.scatter.xy) == 52
    assert main.show_fov.choices == ("A/1/0", "A/1/1") and main.show_fov.value == "A/1/0"
    assert all(layer.visible for layer in viewer.layers)
    s.select(np.flatnonzero(s.table["fov_name"].astype(str) == "A/1/0")[:3])
    s.highlight(int(np.flatnonzero(s.table["fov_name"].astype(str) == "A/1/0")[0]))
    stepped = _state(viewer, s)
    stepped_layers = [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]

    # the same store through set_table at once, into fresh layers
    monkeypatch.setattr(session_module, "ASYNC_CELLS", 10_000)
    for layer in [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]:
        viewer.layers.remove(layer)  # the user deletes them: the next open builds fresh ones
    s = _open(qtbot, main, demo_store)
    assert steps["prepared_on_main"] == [False] and len(steps["installs"]) == 1  # not in steps this time
    assert not any(a is b for a, b in zip([*s.image_layers, s.tracks_layer, s.points_layer], stepped_layers))
    s.select(np.flatnonzero(s.table["fov_name"].astype(str) == "A/1/0")[:3])
    s.highlight(int(np.flatnonzero(s.table["fov_name"].astype(str) == "A/1/0")[0]))
    _assert_same(stepped, _state(viewer, s))
    # and the stepped layers work like the others: a FOV switch refills them
    main.show_fov.value = "A/1/1"
    assert s.fov_name == "A/1/1" and (s.points_layer.features["fov_name"] == "A/1/1").all()


def test_the_reader_opens_a_large_store_in_steps(make_napari_viewer, demo_store, qtbot, steps):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(demo_store), plugin=PLUGIN)
    main = reader_dock(viewer, qtbot)  # the one the reader docked
    wait_worker(qtbot, main.opener.worker, 60_000)
    s = main.session
    assert steps["prepared_on_main"] == [False] and len(steps["installs"]) == 1
    assert len(s.table) == 52 and s.points_layer in viewer.layers and s.tracks_layer in viewer.layers
    names = [layer.name for layer in viewer.layers]
    assert len(names) == len(set(names)) and "A/1/0 cells" in names and "A/1/0 tracks" in names
    assert all(layer.visible for layer in viewer.layers)


def test_a_second_open_discards_the_first(docked, demo_store, demo_inputs, qtbot, steps, errors):
    viewer, main = docked
    main.plate.value, main.tracks.value = demo_inputs["plate"], demo_inputs["tracks"]
    first = main.open_embeddings(demo_store)
    second = main.open_embeddings(demo_store)
    wait_worker(qtbot, first, 60_000)
    wait_worker(qtbot, second, 60_000)
    assert len(main.session.table) == 52
    assert errors == [] and len(steps["installs"]) == 1  # the first result was dropped, unshown
    names = [layer.name for layer in viewer.layers]
    assert sorted(names) == sorted(["A/1/0 Phase3D", "A/1/0 RFP", "A/1/0 tracks", "A/1/0 cells", "A/1/0 highlight"])
    assert all(layer.visible for layer in viewer.layers) and main.open_btn.enabled
    assert main.status.value == "opened embeddings.zarr: 52 cells"


def test_a_second_open_refills_the_shown_layers(docked, demo_store, demo_inputs, qtbot, steps, errors):
    """The layers of the previous open fit the new store's first FOV: they stay (the same objects, refilled as a
    FOV switch refills them, none removed: napari collects garbage at each removal) and end as the first open
    left them, in fewer steps."""
    viewer, main = docked
    s = _open(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    first = _state(viewer, s)
    shown = [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]
    main.show_fov.value = "A/1/1"  # another FOV in the layers: the open shows the first one again
    s = _open(qtbot, main, demo_store)
    assert errors == [] and [n[0] for n in steps["installs"]] == [10, 3]  # table, refill, selection, the last
    assert [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer] == shown
    assert all(a is b for a, b in zip(list(viewer.layers), shown))
    _assert_same(first, _state(viewer, s))
    assert main.show_fov.value == "A/1/0" and main.status.value == "opened embeddings.zarr: 52 cells"


def test_what_changes_before_the_refill_reaches_the_refilled_layers(docked, demo_store, demo_inputs, qtbot, steps,
                                                                     errors, monkeypatch):
    """Between the table's step and the refill (the kept layers wait, with no overlay), a new column and a
    recolour change the table alone; the refill brings both into the layers."""
    viewer, main = docked
    s = _open(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    stepping = session_module.ExplorerSession.install

    def install(self, *args, **kwargs):
        for i, _ in enumerate(stepping(self, *args, **kwargs)):
            if i == 0:
                self.add_columns({"score": np.arange(len(self.table), dtype=np.float64)})
                self.color_by("score")
            yield

    monkeypatch.setattr(session_module.ExplorerSession, "install", install)
    s = _open(qtbot, main, demo_store)
    assert errors == [] and [n[0] for n in steps["installs"]] == [10, 3]
    rows = s.overlay.rows
    np.testing.assert_array_equal(s.points_layer.features["score"].to_numpy(), rows.astype(np.float64))
    np.testing.assert_array_equal(s.tracks_layer.features["score"].to_numpy(), rows.astype(np.float64))
    np.testing.assert_allclose(s.points_layer.face_color, s.colors[rows])
    assert s.color_column == "score"


@pytest.mark.parametrize("interrupt", ["open", "fov"])
@pytest.mark.parametrize("kept", [True, False])
def test_an_open_or_fov_switch_during_the_steps_makes_them_stale(docked, demo_store, demo_inputs, qtbot, steps,
                                                                 errors, monkeypatch, interrupt, kept):
    """A second open (or a FOV switch) during an install takes over: the first adds nothing more, no layer is
    doubled. *kept*: the shown layers fit the new store and are refilled (interrupted after the table's step,
    before the refill); else (the user deleted an image layer) they are replaced (interrupted after the
    install's third step: the old layers gone, a new one in)."""
    viewer, main = docked
    main.plate.value, main.tracks.value = demo_inputs["plate"], demo_inputs["tracks"]
    s = _open(qtbot, main, demo_store)  # layers to refill or replace
    if not kept:
        viewer.layers.remove(s.image_layers[0])
    shown = [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]
    stepping = session_module.ExplorerSession.install
    later = []
    at = 0 if kept else 2

    def install(self, *args, **kwargs):
        for i, _ in enumerate(stepping(self, *args, **kwargs)):
            if i == at and not later:
                later.append(main.open_embeddings(demo_store) if interrupt == "open" else self.show_fov("A/1/1"))
            yield

    monkeypatch.setattr(session_module.ExplorerSession, "install", install)
    wait_worker(qtbot, main.open_embeddings(demo_store), 60_000)
    if interrupt == "open":
        wait_worker(qtbot, later[0], 60_000)
    assert errors == [] and len(later) == 1
    first, *rest = steps["installs"][1:]
    if interrupt == "fov":
        assert first[0] == at + 1 and rest == []  # it stopped at its next step
    elif kept:  # the second refills the same layers
        assert len(rest) == 1 and rest[0][0] == 3
    else:  # it went on until the second result arrived (or ended), the second shows its own layers
        assert len(rest) == 1 and rest[0][0] >= 8
    fov = "A/1/0" if interrupt == "open" else "A/1/1"
    names = [layer.name for layer in viewer.layers]
    assert sorted(names) == sorted(f"{fov} {n}" for n in ("Phase3D", "RFP", "tracks", "cells", "highlight"))
    assert all(layer.visible for layer in viewer.layers)
    assert s.fov_name == fov and set(s.points_layer.features["fov_name"].astype(str)) == {fov}
    assert all(layer in viewer.layers for layer in (*s.image_layers, s.tracks_layer, s.points_layer,
                                                      s.highlight_layer))
    assert (s.points_layer in shown) == kept


def test_a_crash_while_preparing_is_one_notification_and_the_dock_recovers(docked, demo_store, qtbot, steps,
                                                                         errors, monkeypatch):
    viewer, main = docked

    def broken(*args, **kwargs):
        raise RuntimeError("no layers today")

    monkeypatch.setattr(session_module, "prepare_table", broken)
    _open(qtbot, main, demo_store)
    assert len(errors) == 1 and "no layers today" in errors[0]
    assert main.open_btn.enabled and main.run_btn.enabled and len(viewer.layers) == 0
    monkeypatch.undo()  # and the next open works
    monkeypatch.setattr(session_module, "ASYNC_CELLS", 10)
    s = _open(qtbot, main, demo_store)
    assert len(s.table) == 52 and s.points_layer in viewer.layers and len(errors) == 1
