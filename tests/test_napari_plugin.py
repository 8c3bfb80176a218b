"""pytest-qt tests of the napari plugin (make_napari_viewer under Xvfb)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import cellmodel
from napari_dynaclr.core.tracks import INDEX_COLUMNS
from napari_fixtures import *  # noqa: F403
from napari_fixtures import SMALL_SPEC, load_yml, wait_worker

PLUGIN = "napari-dynaclr"
RUN_TIMEOUT_MS = 150_000


@pytest.fixture
def docked(make_napari_viewer):
    """A shown viewer with the DynaCLR dock docked through the manifest; *view* is its Explore tab."""
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    return viewer, main, main.explore


def _errors(monkeypatch):
    from napari_dynaclr._napari.widgets import embedding_view
    from napari_dynaclr._napari.widgets import main as main_widget

    seen = []
    monkeypatch.setattr(main_widget, "show_error", seen.append)
    monkeypatch.setattr(embedding_view, "show_error", seen.append)
    return seen


def _open_store(qtbot, main, store, plate=None, tracks=None):
    if plate is not None:
        main.plate.value = plate
        main.tracks.value = tracks
    worker = main.open_embeddings(store)
    wait_worker(qtbot, worker, 60_000)
    return main.session


def test_widgets_dock_through_manifest(docked):
    viewer, main, view = docked
    from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView
    from napari_dynaclr._napari.widgets.main import DynaCLRWidget

    assert isinstance(main, DynaCLRWidget) and isinstance(view, EmbeddingView)
    assert main.session is view.session  # one session per viewer, despite napari's viewer proxy
    assert main.status.value == "ready"


def test_full_run_streams_and_writes_store(docked, demo_inputs, tmp_path, qtbot, monkeypatch):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    assert main.channels.value == "Phase3D, RFP" and main.patch.value == 64
    out = tmp_path / "run.zarr"
    main.output.value = out
    main.device.value = "cpu"
    main.batch_size.value = 16
    events, plotted = [], []
    worker = main.run()
    worker.yielded.connect(lambda ev: ev is None or events.append(ev))  # (None: the worker's heartbeat)
    main.session.rows_changed.connect(lambda a, b: plotted.append(len(view.scatter.xy)))
    wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
    assert errors == [] and main.last_error is None
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Planned" and kinds.count("Batch") == 4  # 52 cells / 16
    assert plotted and all(n == 52 for n in plotted)  # rows streamed into the scatter per batch
    assert out.is_dir() and main.last_result.output_path == out
    import anndata as ad

    adata = ad.read_zarr(out)
    assert adata.n_obs == 52 and "X_pca" in adata.obsm
    s = main.session
    assert s.store_path == out and len(s.table) == 52
    pts, trk = s.points_layer, s.tracks_layer
    fov_cells = (adata.obs["fov_name"].astype(str) == s.fov_name).sum()
    assert len(pts.data) == fov_cells == len(trk.features)
    feats = pts.features
    for col in [*[c for c in INDEX_COLUMNS if c in adata.obs], "frame", "cell_index", "PCA_0", "PCA_1", "selection",
                "cluster", "annotation"]:
        assert col in feats.columns, col
    for col in ("fov_name", "selection", "cluster", "annotation"):
        assert isinstance(feats[col].dtype, pd.CategoricalDtype), col
    np.testing.assert_array_equal(feats["frame"], feats["t"])
    np.testing.assert_array_equal(pts.data[:, 0], feats["t"])
    # the Tracks layer keeps our (track_id, t) order, so features and colours stay aligned
    np.testing.assert_array_equal(trk.data[:, 0], trk.features["track_id"])
    np.testing.assert_array_equal(trk.features["cell_index"], feats["cell_index"])
    obs_pca = adata.obsm["X_pca"][feats["cell_index"].to_numpy(), 0]
    np.testing.assert_allclose(feats["PCA_0"], obs_pca, rtol=1e-5)
    assert [layer.name for layer in s.image_layers] == [f"{s.fov_name} Phase3D", f"{s.fov_name} RFP"]
    assert s.image_layers[0].data.shape == (SMALL_SPEC.timepoints, *SMALL_SPEC.size)  # T, Y, X (Z=1 dropped)
    assert view.axes() == ("PCA_0", "PCA_1") and len(view.scatter.xy) == 52
    assert main.status.value == "ready" and main.run_btn.enabled and not main.cancel_btn.enabled


def test_cancel_mid_run_leaves_no_store(docked, demo_inputs, tmp_path, qtbot, monkeypatch):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    out = tmp_path / "cancelled.zarr"
    main.output.value = out
    main.device.value = "cpu"
    main.batch_size.value = 1  # 52 batches: the run is still going when the first one reaches the dock
    batches = []

    def on_event(ev):
        if type(ev).__name__ == "Batch":
            batches.append(ev.index)
            if len(batches) == 1:
                main.cancel_btn.clicked.emit()  # the Cancel button

    worker = main.run()
    worker.yielded.connect(on_event)
    wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
    assert errors == []
    assert 1 <= len(batches) < 52  # stopped between batches
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial store either
    assert main.last_result is None and main.worker is None
    assert main.status.value == "ready" and main.run_btn.enabled


def test_a_crash_of_the_work_process_is_one_notification_and_the_dock_recovers(docked, demo_inputs, tmp_path,
                                                                               qtbot, monkeypatch):
    """The work process dies mid-run (the OOM killer, a segfault): one error notification, nothing at the
    output path, the dock ready again, and the next run works."""
    import os
    import signal

    from napari_dynaclr._napari.workers import work_process

    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    out = tmp_path / "crashed.zarr"
    main.output.value = out
    main.device.value = "cpu"
    main.batch_size.value = 4

    def on_event(ev):
        if type(ev).__name__ == "Batch" and work_process().pid:
            os.kill(work_process().pid, signal.SIGKILL)

    worker = main.run()
    worker.yielded.connect(on_event)
    wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
    assert len(errors) == 1 and "work process stopped unexpectedly (killed by SIGKILL)" in errors[0]
    assert not out.exists() and main.worker is None and main.run_btn.enabled
    assert main.status.value.startswith("ready")
    main.batch_size.value = 32
    worker = main.run()
    wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
    assert len(errors) == 1 and out.exists() and main.last_result is not None


def test_bad_channel_shows_error_and_recovers(docked, demo_inputs, tmp_path, qtbot, monkeypatch):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    main.output.value = tmp_path / "bad.zarr"
    main.device.value = "cpu"
    main.channels.value = "Phase3D, GFP"
    # with the yml's per-channel normalisations the config itself is refused, before any worker
    assert main.run() is None and "RFP" in errors[-1]
    assert main.run_btn.enabled and main.worker is None
    main.normalization.value = "fov_statistics"  # now the config is valid and the run fails on GFP
    errors.clear()
    worker = main.run()
    assert worker is not None, errors
    wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
    assert len(errors) == 1 and "GFP" in errors[0] and "Phase3D" in errors[0]
    assert not (tmp_path / "bad.zarr").exists()
    assert main.worker is None and main.run_btn.enabled and not main.cancel_btn.enabled
    assert main.status.value.startswith("ready")
    # invalid settings are refused up front, without a worker
    main.fovs.value = []
    assert main.run() is None and "FOV" in errors[-1]


def test_preview_shows_cells_and_the_run_keeps_its_layers(docked, demo_inputs, tmp_path, qtbot, monkeypatch):
    """Choosing the inputs plans the run without a model and shows its cells; the run then fills those
    layers (the same layer objects) instead of building new ones."""
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    worker = main.preview_cells()
    wait_worker(qtbot, worker, 60_000)
    s = main.session
    assert main.cells_info.value == "52 cells in 2 FOVs to predict"
    assert s.is_preview and len(s.table) == 52 and s.adata is None
    layers_before = [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]
    assert all(layer is not None for layer in layers_before) and len(viewer.layers) == 5
    main.output.value = tmp_path / "run.zarr"
    main.device.value = "cpu"
    main.batch_size.value = 32
    worker = main.run()
    wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
    assert errors == [] and main.last_error is None
    assert [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer] == layers_before
    assert all(a is b for a, b in zip([*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer],
                                      layers_before, strict=True))
    assert not s.is_preview and s.adata is not None and "PCA_0" in s.points_layer.features
    assert "preview_0" not in s.points_layer.features  # the stream's columns leave with the stream
    # no preview replaces shown embeddings
    assert main.preview_cells() is None and main.cells_info.value == ""
    assert s.adata is not None and s.points_layer is layers_before[-2]


def test_preview_reports_bad_inputs_in_place(docked, demo_inputs, qtbot, monkeypatch):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    main.normalization.value = "fov_statistics"
    main.channels.value = "Phase3D, GFP"
    worker = main.preview_cells()
    wait_worker(qtbot, worker, 60_000)
    assert main.cells_info.value.startswith("✗") and "GFP" in main.cells_info.value
    assert "Phase3D" in main.cells_info.value  # the available channels are listed
    assert errors == [] and main.session.table is None and len(viewer.layers) == 0


def test_plate_is_read_in_a_worker_and_the_yml_selects_the_fovs(docked, demo_inputs, tmp_path, qtbot,
                                                                  monkeypatch):
    """The plate's layout is read off the GUI thread; a predict.yml's fit_exclude_fovs selects the FOVs in
    the list, and applies while the plate is still being read."""
    import yaml

    viewer, main, view = docked
    errors = _errors(monkeypatch)
    doc = yaml.safe_load(demo_inputs["config"].read_text())
    init = doc["data"]["init_args"]
    init.update(data_path=str(demo_inputs["plate"]), tracks_path=str(demo_inputs["tracks"]),
                fit_exclude_fovs=["A/1/1"])
    doc["ckpt_path"] = None
    yml = tmp_path / "predict.yml"
    yml.write_text(yaml.safe_dump(doc))
    assert main.load_predict_yml(yml)
    worker = main.checks.plate_worker
    assert worker is not None and main.plate_info.value == "reading the plate…"
    assert main.build_config(require_output=False).exclude_fovs == ["A/1/1"]  # the yml's, until it is read
    wait_worker(qtbot, worker, 60_000)
    assert main.plate_info.value.startswith("2 FOVs in 1 wells; channels: Phase3D, RFP")
    assert list(main.fovs.choices) == ["A/1/0", "A/1/1"] and list(main.fovs.value) == ["A/1/0"]
    assert main.build_config(require_output=False).exclude_fovs == ["A/1/1"]
    preview = main.preview_cells()
    wait_worker(qtbot, preview, 60_000)
    assert main.cells_info.value == "26 cells in 1 FOV to predict" and errors == []
    # a plate that is not one: said in place, the FOV list emptied
    bad = tmp_path / "not-a-plate"
    bad.mkdir()
    main.plate.value = bad  # read once the typing pauses (the failing read itself takes ~20 ms: wait for its word)
    qtbot.waitUntil(lambda: main.plate_info.value.startswith("✗"), timeout=60_000)
    assert "not-a-plate" in main.plate_info.value
    assert list(main.fovs.choices) == [] and errors == []


def test_open_store_without_checkpoint(docked, demo_store, demo_inputs, qtbot, monkeypatch):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    assert main.ckpt.value is None or str(main.ckpt.value) in ("", ".")
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    assert errors == []
    assert len(s.table) == 52 and s.adata is not None
    assert view.axes() == ("UMAP_0", "UMAP_1")  # UMAP by default when present
    assert s.points_layer is not None and len(s.image_layers) == 2
    assert main.show_fov.choices == ("A/1/0", "A/1/1")
    # switching FOV swaps the image and overlays
    main.show_fov.value = "A/1/1"
    assert s.fov_name == "A/1/1"
    assert s.image_layers[0].name == "A/1/1 Phase3D"
    assert (s.points_layer.features["fov_name"] == "A/1/1").all()
    names = [layer.name for layer in viewer.layers]
    assert not any(n.startswith("A/1/0") for n in names)


def test_a_deleted_dock_no_longer_follows_the_session(docked, demo_store, demo_inputs, qtbot, monkeypatch):
    """The session outlives its docks, and a dock's Python object can outlive its Qt widget (napari closing
    while a run streams batches into the session): a deleted dock's slots do nothing, the others still
    answer."""
    from napari_dynaclr._napari.widgets._forms import alive
    from napari_dynaclr._napari.widgets._jobs import is_running

    viewer, main, view = docked
    errors = _errors(monkeypatch)
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    dock, side = viewer.window.add_plugin_dock_widget(PLUGIN, "Embedding view")
    assert side.session is s
    job = side.compute_reduction("PCA")  # its worker reports after the dock is gone
    viewer.window.remove_dock_widget(dock)
    side.deleteLater()  # (as napari's window does to its docks when it closes)
    qtbot.waitUntil(lambda: not alive(side), timeout=60_000)  # (its Python object is still held here)
    qtbot.waitUntil(lambda: not is_running(job), timeout=60_000)
    s.rows_changed.emit(0, 3)
    s.table_changed.emit()
    s.columns_changed.emit()
    s.colors_changed.emit()
    s.select([0, 1])
    s.highlight(0)
    s.frame_changed.emit(s.fov_name, 0)
    assert errors == [] and list(view.scatter.selected_rows()) == [0, 1]


def test_fov_switch_refills_the_layers_like_a_fresh_build(docked, demo_store, demo_inputs, qtbot):
    """Switching FOV keeps the layer objects (no 0.1–0.5 s layer builds) and leaves them exactly as a
    fresh build would: data, features, colours, borders, sizes, names, image data and contrast."""
    viewer, main, view = docked
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    s.select(np.flatnonzero(s.table["fov_name"].astype(str) == "A/1/1")[:3])
    s.highlight(int(np.flatnonzero(s.table["fov_name"].astype(str) == "A/1/1")[0]))
    before = [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]

    def state():
        pts, trk, hl = s.points_layer, s.tracks_layer, s.highlight_layer
        return {
            "points": pts.data.copy(), "features": pts.features.reset_index(drop=True).copy(),
            "face": pts.face_color.copy(), "border": pts.border_color.copy(), "size": pts.size.copy(),
            "border_width": np.asarray(pts.border_width).copy(), "tracks": trk.data.copy(),
            "track_features": trk.features.reset_index(drop=True).copy(), "graph": dict(trk.graph),
            "track_colors": np.asarray(trk.track_colors).copy(), "highlight": hl.data.copy(),
            "names": [layer.name for layer in viewer.layers],
            "images": [(tuple(im.data.shape), tuple(im.contrast_limits), tuple(im.scale), im.metadata["dynaclr_fov"])
                       for im in s.image_layers],
        }

    main.show_fov.value = "A/1/1"
    refilled = state()
    assert [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer] == before
    assert all(a is b for a, b in zip([*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer], before))
    for layer in [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]:
        viewer.layers.remove(layer)  # the user deletes them: a fresh build of the same FOV
    s.show_fov("A/1/1")
    fresh = state()
    assert refilled["names"] == fresh["names"] and refilled["images"] == fresh["images"]
    assert refilled["graph"] == fresh["graph"]
    for key in ("points", "face", "border", "size", "border_width", "tracks", "track_colors", "highlight"):
        np.testing.assert_array_equal(refilled[key], fresh[key], err_msg=key)
    pd.testing.assert_frame_equal(refilled["features"], fresh["features"])
    pd.testing.assert_frame_equal(refilled["track_features"], fresh["track_features"])
    assert len(fresh["highlight"]) and (fresh["border"] != fresh["border"][0]).any()  # the checks see something


def test_open_store_finds_plate_from_uns(docked, demo_store, qtbot, monkeypatch):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    s = _open_store(qtbot, main, demo_store)
    assert errors == []
    # the store records the plate path relative to the config folder; without it we still get overlays
    assert s.points_layer is not None and len(view.scatter.xy) == 52


def test_plates_are_opened_off_the_gui_thread(docked, demo_store, demo_inputs, tmp_path, qtbot, monkeypatch):
    """Opening a plate walks every well and FOV (1.5–1.9 s for a 96-well plate here): the plate field,
    the preview and opening a store do it in their workers, and the viewer shows that same plate."""
    import threading

    from napari_dynaclr.core import plate as plate_module

    viewer, main, view = docked
    errors = _errors(monkeypatch)
    opened_on = []
    real_init = plate_module.Plate.__init__

    def init(self, *args, **kwargs):
        opened_on.append(threading.current_thread() is threading.main_thread())
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(plate_module.Plate, "__init__", init)
    load_yml(qtbot, main, demo_inputs["config"])
    wait_worker(qtbot, main.preview_cells(), 60_000)
    s = main.session
    assert s.is_preview and s.plate is not None and len(s.image_layers) == 2
    n_preview = len(opened_on)
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    assert not s.is_preview and s.plate is not None and len(s.image_layers) == 2
    assert len(opened_on) > n_preview >= 2 and not any(opened_on), opened_on
    assert errors == []
    # a plate that cannot be opened: one message naming it, the cells shown without images
    bad = tmp_path / "gone.zarr"
    s = _open_store(qtbot, main, demo_store, bad, demo_inputs["tracks"])
    assert len(errors) == 1 and "gone.zarr" in errors[0]
    assert s.plate is None and s.image_layers == [] and len(s.table) == 52 and s.points_layer is not None


def test_lasso_selects_cells_inside_and_highlights_layers(docked, demo_store, demo_inputs, qtbot):
    viewer, main, view = docked
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    xy = view.xy()
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    # a triangle over the lower-left half of the cloud
    a, b, c = lo - 0.01, np.array([hi[0] + 0.01, lo[1] - 0.01]), np.array([lo[0] - 0.01, hi[1] + 0.01])
    tri = np.array([a, b, c])
    u = (xy - a) / (hi - lo + 0.02)
    expected = np.flatnonzero((u[:, 0] > 0) & (u[:, 1] > 0) & (u[:, 0] + u[:, 1] < 1))
    assert 0 < len(expected) < 52
    rows = view.select_polygon(tri, mode="replace")
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(np.flatnonzero(s.table["selection"].cat.codes == 1), expected)
    assert isinstance(s.table["selection"].dtype, pd.CategoricalDtype)
    feats = s.points_layer.features
    sel_layer = feats["cell_index"].isin(expected).to_numpy()
    np.testing.assert_array_equal(feats["selection"].astype(int).to_numpy(), sel_layer.astype(int))
    np.testing.assert_array_equal(s.tracks_layer.features["selection"].astype(int).to_numpy(), sel_layer.astype(int))
    border = s.points_layer.border_color
    assert np.allclose(border[sel_layer], [1.0, 0.85, 0.0, 1.0])
    assert not np.allclose(border[~sel_layer], [1.0, 0.85, 0.0, 1.0])
    np.testing.assert_array_equal(view.scatter.selected_rows(), expected)
    ring = view.scatter.sel_inner._data  # the selection overlay: white-ringed markers on the selected cells
    np.testing.assert_allclose(ring["a_position"][:, :2], view.xy()[expected])
    assert np.allclose(ring["a_fg_color"], (1.0, 1.0, 1.0, 1.0))
    # add / subtract modes and box selection
    box_rows = view.select_box(lo - 1, hi + 1, mode="subtract")
    assert len(box_rows) == 0
    # the same through the mouse path: the canvas signal delivers the polygon
    view.scatter.lasso_finished.emit(tri)
    np.testing.assert_array_equal(s.selected, expected)


def test_image_click_highlights_scatter_point(docked, demo_store, demo_inputs, qtbot):
    viewer, main, view = docked
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    viewer.dims.set_point(0, 2)
    assert s.current_t == 2
    rows = s.frames.rows(s.fov_name, 2)

    def track_points(r):
        return len(cellmodel.track_trajectory(s.table, s.fov_name, int(s.table["track_id"].iat[r]))[0])

    row = next(int(r) for r in rows if track_points(r) >= 2)  # a track with a trajectory to draw
    y, x = s.table["y"].iat[row], s.table["x"].iat[row]

    import wrapt
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    class Click:  # what napari passes to viewer mouse callbacks
        def __init__(self, kind):
            self.type, self.button, self.pos, self.position = kind, 1, (10, 10), (2, y + 2, x - 1)
            self.modifiers = ()

    # a click as napari's canvas delivers it: press, then release without moving (napari wraps the event in a
    # proxy whose target the release replaces)
    mouse_press_callbacks(viewer, wrapt.ObjectProxy(Click("mouse_press")))
    assert s.highlighted != row
    mouse_release_callbacks(viewer, Click("mouse_release"))
    assert s.highlighted == row
    hl = view.scatter.highlight
    assert hl.visible and np.allclose(view.scatter.shown_markers("highlight")["xy"], view.xy()[[row]])
    assert len(s.highlight_layer.data) >= 1  # the track is ringed in the image
    # its trajectory is drawn in embedding space with a marker at the current t
    assert view.scatter.trajectory.visible
    assert view.scatter.cursor.visible
    np.testing.assert_allclose(view.scatter.shown_markers("cursor")["xy"][0], view.xy()[row])
    # selecting a point in the Points layer does the same
    other = int(next(r for r in rows if int(r) != row))
    pos = int(np.flatnonzero(s.points_layer.features["cell_index"].to_numpy() == other)[0])
    s.points_layer.selected_data = {pos}
    assert s.highlighted == other


def test_scatter_click_moves_viewer_to_cell(docked, demo_store, demo_inputs, qtbot):
    viewer, main, view = docked
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    target = int(np.flatnonzero((s.table["fov_name"] == "A/1/1") & (s.table["t"] == 3))[0])
    view.scatter.point_clicked.emit(target)
    assert s.fov_name == "A/1/1" and s.highlighted == target
    assert int(round(viewer.dims.point[0])) == 3
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (s.table["y"].iat[target], s.table["x"].iat[target]))
    # pick() maps a data position to the nearest plotted point
    assert view.scatter.pick(view.xy()[target], radius_px=50) in (
        target, *np.flatnonzero(np.all(view.xy() == view.xy()[target], axis=1)))


def test_time_step_emphasises_current_cells(docked, demo_store, demo_inputs, qtbot):
    viewer, main, view = docked
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    for t in (0, 3, 1):
        viewer.dims.set_point(0, t)
        rows = s.frames.rows(s.fov_name, t)
        np.testing.assert_allclose(view.scatter.shown_markers("now")["xy"], view.xy()[rows])


def test_colour_by_column(docked, demo_store, demo_inputs, qtbot):
    viewer, main, view = docked
    s = _open_store(qtbot, main, demo_store, demo_inputs["plate"], demo_inputs["tracks"])
    view.color_by("track_id")  # categorical
    rows = s.overlay.rows
    expected = cellmodel.column_colors(s.table["track_id"])
    np.testing.assert_allclose(s.points_layer.face_color, expected[rows], atol=1e-6)
    np.testing.assert_allclose(s.tracks_layer.track_colors, expected[rows], atol=1e-6)
    np.testing.assert_allclose(view.scatter.colors, expected)
    view.color_by("UMAP_0")  # continuous
    np.testing.assert_allclose(view.scatter.colors, cellmodel.column_colors(s.table["UMAP_0"]))


def test_clustering_reduction_and_annotations(docked, demo_copy, demo_inputs, tmp_path, qtbot, monkeypatch):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    s = _open_store(qtbot, main, demo_copy, demo_inputs["plate"], demo_inputs["tracks"])
    view.n_clusters.value = 3
    view.save_results.value = True
    worker = view.compute_clusters("KMeans")
    wait_worker(qtbot, worker, 60_000)
    save = view.worker
    wait_worker(qtbot, save, 60_000)
    assert errors == []
    assert isinstance(s.points_layer.features["cluster"].dtype, pd.CategoricalDtype)
    assert s.table["cluster"].nunique() == 3 and s.color_column == "cluster"
    import anndata as ad

    assert ad.read_zarr(demo_copy).obs["cluster"].nunique() == 3
    view.save_results.value = False
    worker = view.compute_reduction("PCA")
    wait_worker(qtbot, worker, 60_000)
    assert view.axes() == ("PCA_0", "PCA_1")
    # annotations: selection → named class → CSV → re-import → store
    s.select([0, 1, 2])
    view.class_name.value = "dividing"
    assert view.assign_selection() == 3
    assert list(s.points_layer.features["annotation"].cat.categories) == ["", "dividing"]
    csv = tmp_path / "ann.csv"
    assert view.export_csv(csv) == 3
    s.add_columns({"annotation": pd.Categorical([""] * len(s.table), categories=[""])})
    assert view.import_csv(csv) == 3
    assert (s.table["annotation"].astype(str).iloc[:3] == "dividing").all()
    worker = view.save_annotations()
    wait_worker(qtbot, worker, 60_000)
    assert (ad.read_zarr(demo_copy).obs["annotation"].astype(str).iloc[:3] == "dividing").all()


def test_sample_data_prefills_widget(make_napari_viewer, demo_inputs, tmp_path, monkeypatch):
    cache = tmp_path / "demo"
    shutil.copytree(Path(demo_inputs["config"]).parent, cache)
    monkeypatch.setenv("NAPARI_DYNACLR_CACHE", str(cache))
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "dynaclr_demo")
    kinds = sorted(type(layer).__name__ for layer in viewer.layers)
    assert kinds == ["Image", "Image", "Tracks"]
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    assert Path(main.predict_yml.value) == cache / "predict.yml"
    assert main.channels.value == "Phase3D, RFP"


def test_widget_construction_stays_light():
    code = textwrap.dedent(
        """
        import sys
        import napari
        from napari_dynaclr._napari.widgets.main import DynaCLRWidget
        from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView
        v = napari.Viewer(show=False)
        DynaCLRWidget(v); EmbeddingView(v)
        print([m for m in ("torch", "lightning", "timm", "umap") if m in sys.modules])
        v.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("target, needle", [("plate", "is the input plate"), ("tracks", "is the input tracks"),
                                            ("config", "is the input config")])
def test_the_dock_never_writes_over_an_input(docked, demo_inputs, qtbot, monkeypatch, target, needle):
    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    main.output.value = demo_inputs[target]
    main.overwrite.value = True
    before = sorted(p.name for p in Path(demo_inputs[target]).parent.iterdir())
    assert main.run() is None
    assert len(errors) == 1 and needle in errors[0]
    assert sorted(p.name for p in Path(demo_inputs[target]).parent.iterdir()) == before


def test_the_dock_names_its_checkbox_and_refuses_a_second_writer(docked, demo_inputs, tmp_path, qtbot, monkeypatch):
    import subprocess
    import sys

    viewer, main, view = docked
    errors = _errors(monkeypatch)
    load_yml(qtbot, main, demo_inputs["config"])
    out = tmp_path / "taken.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    main.output.value = out
    main.device.value = "cpu"
    assert main.run() is None and "tick 'overwrite' in the DynaCLR dock" in errors[-1]
    main.overwrite.value = True
    assert main.run() is None and "not an embedding store" in errors[-1] and (out / "notes.txt").exists()
    # another process (a second napari, the CLI) is writing the same output: the run fails at once, naming it
    out = tmp_path / "busy.zarr"
    main.output.value = out
    code = ("import time; from napari_dynaclr.core.output import OutputGuard\n"
            f"with OutputGuard({str(out)!r}):\n    print('LOCKED', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        worker = main.run()
        wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
        assert f"another napari-dynaclr run (pid {holder.pid}" in errors[-1]
        assert not out.exists() and main.run_btn.enabled
    finally:
        holder.kill()
        holder.wait()


def test_typing_a_checkpoint_path_checks_it_once(docked, demo_inputs, qtbot, monkeypatch):
    """Each keystroke in a path field does not start a check: the check runs once the typing pauses, and
    only the latest check's result is shown (no '✗ checkpoint not found: /w' while typing)."""
    from napari_dynaclr._napari import workers

    viewer, main, view = docked
    checked = []
    real = workers.inspect_checkpoint

    def spy(path, *args, **kwargs):
        checked.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(workers, "inspect_checkpoint", spy)
    edit = main.ckpt.line_edit.native
    edit.setFocus()
    qtbot.keyClicks(edit, str(demo_inputs["checkpoint"]))  # one keystroke after the other
    assert main.checks.ckpt_timer.isActive() and checked == [] and main.ckpt_info.value == ""
    qtbot.waitUntil(lambda: main.ckpt_info.value.startswith("✓"), timeout=60_000)
    assert checked == [str(demo_inputs["checkpoint"])]


def _dynaclr_docks(viewer) -> list:
    from napari_dynaclr._napari.widgets.main import DynaCLRWidget

    return [w for w in viewer.window.dock_widgets.values() if isinstance(w, DynaCLRWidget)]


def _plugins_menu_entry(viewer, text: str = "DynaCLR"):
    """The Plugins menu's entry that docks the DynaCLR dock (napari's menu, as a user clicks it)."""

    def walk(menu):
        for action in menu.actions():
            if action.menu() is not None:
                yield from walk(action.menu())
            elif action.text().replace("&", "") == text:
                yield action

    (entry,) = walk(viewer.window.plugins_menu)
    return entry


def test_one_dynaclr_dock_per_viewer_whatever_opens_it(make_napari_viewer, demo_store, qtbot):
    """File > Open, then Plugins > DynaCLR, then File > Open again: one DynaCLR dock, shown by the open, its
    title not doubled."""
    viewer = make_napari_viewer(show=True)
    assert viewer.open(str(demo_store), plugin=PLUGIN) == []
    qtbot.waitUntil(lambda: len(_dynaclr_docks(viewer)) == 1, timeout=60_000)  # docked by the reader
    (main,) = _dynaclr_docks(viewer)
    qtbot.waitUntil(lambda: main.opener.worker is not None, timeout=60_000)
    wait_worker(qtbot, main.opener.worker, 60_000)
    entry = _plugins_menu_entry(viewer)
    entry.trigger()  # napari's menu toggles a dock it has: hidden, not a second one
    assert _dynaclr_docks(viewer) == [main] and not main.isVisible()
    first = main.opener.worker
    assert viewer.open(str(demo_store), plugin=PLUGIN) == []
    qtbot.waitUntil(lambda: main.opener.worker is not first, timeout=60_000)  # the same dock opens it, shown
    wait_worker(qtbot, main.opener.worker, 60_000)
    assert _dynaclr_docks(viewer) == [main]
    qtbot.waitUntil(main.isVisible, timeout=60_000)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    assert widget is main and dock.windowTitle() != "DynaCLR (DynaCLR)"
    entry.trigger()
    entry.trigger()  # hidden and shown again from the menu: still the one dock
    assert _dynaclr_docks(viewer) == [main] and main.isVisible()


def test_a_store_away_from_its_plate_says_so_and_shows_the_plate_chosen(make_napari_viewer, demo_inputs, qtbot,
                                                                        tmp_path):
    """Predict the demo into another folder, move the demo's folder, File > Open the store: one warning naming
    the recorded plate, no error, the cells without images and a plate field; choosing the plate shows it."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.predict.run import run_prediction

    inputs = tmp_path / "inputs"
    shutil.copytree(Path(demo_inputs["config"]).parent, inputs, ignore=shutil.ignore_patterns("*.zarr.lock"))
    store = tmp_path / "elsewhere" / "e.zarr"
    store.parent.mkdir()
    cfg = load_predict_yaml(inputs / "predict.yml").with_overrides(output_path=store, umap_kwargs=None)
    run_prediction(cfg, device="cpu")
    recorded = inputs / "plate.zarr"
    moved = tmp_path / "moved"
    inputs.rename(moved)
    viewer = make_napari_viewer(show=True)
    before = len(notification_manager.records)
    assert viewer.open(str(store), plugin=PLUGIN) == []
    main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")[1]
    qtbot.waitUntil(lambda: main.opener.worker is not None, timeout=60_000)
    wait_worker(qtbot, main.opener.worker, 60_000)
    assert len(main.session.table) == 52 and not any(layer.name.endswith("Phase3D") for layer in viewer.layers)
    notes = notification_manager.records[before:]
    assert [n.severity for n in notes] == [NotificationSeverity.WARNING], [str(n.message) for n in notes]
    assert str(recorded) in str(notes[0].message)
    main.tabs.setCurrentIndex(0)
    qtbot.waitUntil(main.store_plate.native.isVisible, timeout=60_000)
    first = main.opener.worker
    main.store_plate.value = moved / "plate.zarr"  # the user points the store at its plate
    qtbot.waitUntil(lambda: main.opener.worker is not first, timeout=60_000)
    wait_worker(qtbot, main.opener.worker, 60_000)
    qtbot.waitUntil(lambda: "A/1/0 Phase3D" in viewer.layers, timeout=60_000)
    assert len(main.session.table) == 52 and main.last_error is None
    assert [n for n in notification_manager.records[before:] if n.severity >= NotificationSeverity.ERROR] == []


def test_the_load_button_reads_the_predict_yml_off_the_gui_thread(docked, demo_inputs, qtbot, monkeypatch):
    """Its first read imports the config's packages (seconds on a busy laptop): never on the GUI thread."""
    import threading

    from napari_dynaclr.core import predict_yml

    viewer, main, view = docked
    threads = []
    real = predict_yml.load_predict_yaml

    def load(path):
        threads.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(predict_yml, "load_predict_yaml", load)
    main.predict_yml.value = demo_inputs["config"]
    main.load_yml_btn.native.click()
    qtbot.waitUntil(lambda: main.status.value == "loaded predict.yml", timeout=60_000)
    assert threads and threading.main_thread() not in threads
    assert main.channels.value == "Phase3D, RFP" and main.patch.value == 64 and main.load_yml_btn.enabled
