"""The "Verify against reference" panel in a real napari viewer (Xvfb via pytest-xvfb)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt

pytest.importorskip("napari")

import napari_fixtures  # noqa: E402,F401 (torch loaded before any test opens an OpenGL context)
from napari_dynaclr._napari.session import camera
from napari_dynaclr._napari.widgets.verify_panel import COLOR_COLUMN, FAIL_STYLE, PASS_STYLE, VerifyWidget

DATA = Path(__file__).parent / "data"
REF = DATA / "dev2d" / "reference.zarr"
BAD_ROW, BAD_COL, BAD_DELTA = 40, 100, 0.5


def _read(path=REF):
    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return ad.read_zarr(path)


@pytest.fixture(scope="module")
def perturbed_store(tmp_path_factory) -> Path:
    """The dev2d reference with one feature of row BAD_ROW moved by BAD_DELTA (beyond VisCy's contract)."""
    import anndata as ad

    adata = _read()
    X = adata.X.copy()
    X[BAD_ROW, BAD_COL] += BAD_DELTA
    adata.X = X
    path = tmp_path_factory.mktemp("perturbed") / "perturbed.zarr"
    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata.write_zarr(path)
    return path


def _cells_layers(viewer, obs: pd.DataFrame):
    """One image + one Points layer (t, y, x) per FOV, features = the store's obs (like a tracking overlay)."""
    viewer.add_image(np.zeros((4, 256, 256), dtype=np.float32), name="image")
    out = {}
    for fov, sub in obs.groupby("fov_name", observed=True, sort=False):
        feats = sub.reset_index(drop=True)
        data = feats[["t", "y", "x"]].to_numpy(dtype=float)
        out[str(fov)] = viewer.add_points(data, features=feats, name=f"{fov} cells", size=8)
    return out


def _run(panel, qtbot, prediction=None, reference=REF):
    if prediction is not None:
        panel.prediction_combo.setCurrentIndex(panel.prediction_combo.findData("file"))
        panel.prediction_edit.setText(str(prediction))
    panel.reference_edit.setText(str(reference))
    panel.report, panel.last_error = None, None
    worker = panel.run()
    assert worker is not None
    qtbot.waitUntil(lambda: panel.state == "ready" and (panel.report is not None or bool(panel.last_error)),
                    timeout=60000)


def test_panel_fail_state_histograms_table_and_navigation(make_napari_viewer, qtbot, perturbed_store):
    viewer = make_napari_viewer()
    obs = _read().obs
    layers = _cells_layers(viewer, obs)
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    assert panel.state == "ready"
    _run(panel, qtbot, prediction=perturbed_store)
    assert panel.last_error is None
    rep = panel.report
    assert not rep.passed
    assert panel.verdict_label.text().startswith("FAIL: 72 cells aligned")
    assert panel.verdict_label.styleSheet() == FAIL_STYLE
    assert "X: 1 of 55,296 values outside" in panel.verdict_label.text()
    # per-array table: X fails, projections pass, PCA reported only
    t = panel.arrays_table
    rows = {t.item(i, 0).text(): t.item(i, 5).text() for i in range(t.rowCount())}
    assert rows == {"X (features)": "FAIL", "X_projections": "PASS", "X_pca": "reported"}
    assert t.item(0, 3).text() == f"{rep.arrays['X'].pearson:.6f}"
    # histograms: one axis per judged array, log-count bars, the X bars reach |Δ| = 0.5
    axes = panel.figure.axes
    assert [ax.get_title().split(":")[0] for ax in axes] == ["X (features)", "X_projections"]
    assert axes[0].get_yscale() == "log" and axes[0].get_xscale() == "log"
    assert axes[0].patches and axes[0].get_xlim()[1] >= BAD_DELTA
    # worst-cells table: sorted by |Δ|/tol, the edited cell first
    ct = panel.cells_table
    assert ct.rowCount() == 72 and ct.isSortingEnabled()
    bad = obs.iloc[BAD_ROW]
    first = [ct.item(0, j).text() for j in range(4)]
    assert first == [str(bad["fov_name"]), str(bad["track_id"]), str(bad["t"]), str(bad["id"])]
    assert float(ct.item(0, 4).text()) == pytest.approx(BAD_DELTA, rel=1e-3)
    ratios = [float(ct.item(i, ct.columnCount() - 1).text()) for i in range(ct.rowCount())]
    assert ratios == sorted(ratios, reverse=True)
    ct.sortItems(4, Qt.SortOrder.AscendingOrder)  # ascending by X max|Δ|: the edited cell goes last
    assert ct.item(ct.rowCount() - 1, 1).text() == str(bad["track_id"])
    # selecting the row moves the viewer: time slider, camera centre, the cell's FOV layer and point
    viewer.dims.set_point(0, 0)
    camera(viewer).center = (0.0, 0.0)
    ct.selectRow(ct.rowCount() - 1)
    assert viewer.dims.point[0] == pytest.approx(float(bad["t"]))
    assert tuple(camera(viewer).center[-2:]) == pytest.approx((float(bad["y"]), float(bad["x"])))
    layer = layers[str(bad["fov_name"])]
    assert viewer.layers.selection.active is layer
    (sel,) = layer.selected_data
    assert layer.features.iloc[sel][["track_id", "t", "id"]].tolist() == [bad["track_id"], bad["t"], bad["id"]]
    # a row of another FOV moves there
    other = next(i for i in range(ct.rowCount()) if ct.item(i, 0).text() != str(bad["fov_name"]))
    ct.selectRow(other)
    assert viewer.layers.selection.active is layers[ct.item(other, 0).text()]
    assert viewer.dims.point[0] == pytest.approx(float(ct.item(other, 2).text()))
    # colour by |Δ|: every cells layer gets the column; the edited cell is the brightest of its FOV
    assert panel.color_button.isEnabled()
    assert panel.color_cells() == 3
    feats = layer.features
    assert COLOR_COLUMN in feats.columns
    assert feats[COLOR_COLUMN].idxmax() == sel
    assert feats[COLOR_COLUMN].max() == pytest.approx(np.log10(BAD_DELTA), abs=1e-3)
    colors = layer.face_color
    others = np.delete(colors, sel, axis=0)
    assert np.allclose(others, others[0])  # all other cells of this FOV are identical (|Δ| = 0)
    assert not np.allclose(colors[sel], others[0])


def test_panel_pass_state_from_layer_prediction(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    assert [panel.prediction_combo.itemText(i) for i in range(panel.prediction_combo.count())] == ["File…"]
    # an embedding layer as the npe2 reader makes it: store path in metadata
    viewer.add_points(np.zeros((3, 2)), name="emb", metadata={"dynaclr_store": str(REF)})
    data = "layer:emb"
    assert panel.prediction_combo.findData(data) >= 0
    panel.prediction_combo.setCurrentIndex(panel.prediction_combo.findData(data))
    assert not panel.prediction_edit.isEnabled()
    _run(panel, qtbot)
    assert panel.report is not None and panel.report.passed
    assert panel.verdict_label.text().startswith("PASS: 72 cells aligned")
    assert panel.verdict_label.styleSheet() == PASS_STYLE
    assert panel.figure.axes and "exact" in panel.figure.axes[0].get_title()  # identical: all |Δ| = 0


def test_panel_contract_and_missing_rows(make_napari_viewer, qtbot, tmp_path):
    import anndata as ad

    adata = _read()
    path = tmp_path / "missing.zarr"
    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata[5:].copy().write_zarr(path)
    viewer = make_napari_viewer()
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    _run(panel, qtbot, prediction=path)
    assert not panel.report.passed and "5 only in reference" in panel.verdict_label.text()
    panel.allow_missing_check.setChecked(True)
    panel.atol_spin.setValue(1e-6)
    assert panel.contract().allow_missing and panel.contract().atol == 1e-6
    _run(panel, qtbot, prediction=path)
    assert panel.report.passed and panel.report.contract.atol == 1e-6


def test_panel_errors_are_notified_and_panel_returns_to_ready(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    assert panel.run() is None  # no prediction chosen
    assert panel.last_error == "choose a prediction store" and panel.state == "ready"
    _run(panel, qtbot, prediction=REF, reference=tmp_path / "nope.zarr")
    assert panel.report is None
    assert panel.last_error == f"embedding store not found: {tmp_path / 'nope.zarr'}"
    assert panel.verdict_label.text().startswith("Error: ")
    from napari.utils.notifications import notification_manager

    assert any(str(n.message) == f"Verify: {panel.last_error}" for n in notification_manager.records)
    assert panel.state == "ready" and panel.run_button.isEnabled()
    _run(panel, qtbot, prediction=REF, reference=REF)  # and it still works afterwards
    assert panel.report.passed


def test_panel_uses_the_explorer_session(make_napari_viewer, qtbot, perturbed_store):
    session = pytest.importorskip("napari_dynaclr._napari.session")
    from napari_dynaclr._napari import cellmodel

    viewer = make_napari_viewer()
    adata = _read(perturbed_store)
    sess = session.get_session(viewer)
    sess.set_table(cellmodel.cell_table(adata.obs, {}), adata=adata, store_path=perturbed_store)
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    assert panel.prediction_combo.currentData() == "session"
    _run(panel, qtbot)
    assert not panel.report.passed
    bad = adata.obs.iloc[BAD_ROW]
    panel.cells_table.selectRow(0)
    assert sess.fov_name == str(bad["fov_name"])
    assert sess.current_t == int(bad["t"])
    assert tuple(camera(viewer).center[-2:]) == pytest.approx((float(bad["y"]), float(bad["x"])))
    panel.color_cells()
    assert sess.color_column == COLOR_COLUMN
    assert sess.table[COLOR_COLUMN].idxmax() == BAD_ROW


def test_panel_shows_the_contract_as_written_and_every_array(make_napari_viewer, qtbot):
    """0.999 is not clipped to 0.99, 0.02 has no trailing digits, 1e-4 can be entered; identical stores say
    "all |Δ| = 0" instead of empty axes; every compared array is visible without scrolling."""
    viewer = make_napari_viewer()
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    assert [panel.atol_spin.text(), panel.rtol_spin.text(), panel.pearson_spin.text()] == ["0.02", "0.01", "0.999"]
    panel.atol_spin.setValue(1e-4)
    assert panel.atol_spin.text() == "0.0001" and panel.contract().atol == 1e-4
    assert panel.contract().min_pearson == 0.999
    panel.atol_spin.setValue(0.02)
    _run(panel, qtbot, prediction=REF, reference=REF)
    t = panel.arrays_table
    assert t.rowCount() == len(panel.report.arrays) >= 3
    rows = sum(t.rowHeight(i) for i in range(t.rowCount()))
    assert t.height() >= rows + t.horizontalHeader().height() and not t.verticalScrollBar().isVisible()
    texts = [txt.get_text() for ax in panel.figure.axes for txt in ax.texts]
    assert texts and all(x.startswith("all |Δ| = 0") for x in texts)


def test_panel_offers_the_newest_cells_in_the_viewer(make_napari_viewer, qtbot):
    from napari_dynaclr._napari import cellmodel
    from napari_dynaclr._napari.session import get_session

    viewer = make_napari_viewer()
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    assert panel.prediction_combo.currentData() == "file"
    adata = _read()
    get_session(viewer).set_table(cellmodel.cell_table(adata.obs, {}), adata=adata, store_path=REF)
    assert panel.prediction_combo.currentData() == "session"


def _shown_panel(make_napari_viewer, qtbot, width=360, height=900):
    viewer = make_napari_viewer(show=True)
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    panel.resize(width, height)  # a dock's width
    panel.show()
    qtbot.waitExposed(panel)
    return viewer, panel


def test_the_empty_panel_says_what_to_do_and_shows_no_empty_plot(make_napari_viewer, qtbot, perturbed_store):
    viewer, panel = _shown_panel(make_napari_viewer, qtbot)
    text = panel.verdict_label.text()
    assert "reference store" in text and "press Verify" in text
    assert not panel.canvas.isVisible() and not panel.cells_table.isVisible() and not panel.arrays_table.isVisible()
    _run(panel, qtbot, prediction=perturbed_store)
    assert panel.canvas.isVisible() and panel.cells_table.isVisible() and panel.arrays_table.isVisible()
    _run(panel, qtbot, prediction=perturbed_store, reference=perturbed_store.parent / "nope.zarr")  # a failed run
    assert panel.verdict_label.text().startswith("Error: ") and not panel.canvas.isVisible()


def test_histogram_labels_never_overlap_and_five_worst_cells_show(make_napari_viewer, qtbot, perturbed_store):
    """In the DynaCLR dock of a 1366×768 window (a laptop), after a FAIL."""
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    viewer.window.resize(1366, 768)
    panel = main.verify
    main.tabs.setCurrentWidget(panel)
    qtbot.waitUntil(panel.isVisible, timeout=60_000)
    _run(panel, qtbot, prediction=perturbed_store)
    fig = panel.figure
    qtbot.waitUntil(lambda: panel.canvas.width() > 200, timeout=60_000)
    panel.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        xs = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        ys = [t for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        if ax.patches:  # a histogram (an array with no |Δ| > 0 says so in words instead)
            assert len(xs) >= 2 and len(ys) >= 1  # numbers to read
        texts = xs + ys + [ax.title, ax.xaxis.label, ax.yaxis.label]
        boxes += [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            assert not ba.overlaps(bb), f"{a!r} overlaps {b!r}"
    # at least five of the worst cells in view without scrolling the table
    ct = panel.cells_table
    assert ct.rowCount() >= 5
    full = [i for i in range(ct.rowCount()) if ct.visualItemRect(ct.item(i, 0)).bottom() <= ct.viewport().height()]
    assert len(full) >= 5


def test_choosing_a_worst_cell_with_no_cells_in_the_viewer_says_what_to_do(make_napari_viewer, qtbot,
                                                                           perturbed_store):
    from napari.utils.notifications import notification_manager

    viewer, panel = _shown_panel(make_napari_viewer, qtbot)
    _run(panel, qtbot, prediction=perturbed_store)
    before = len(notification_manager.records)
    panel.cells_table.selectRow(0)
    msg = panel.goto_label.text()
    assert "not in the viewer" in msg and "Open embeddings" in msg and panel.goto_label.isVisible()
    assert any(str(n.message) == msg for n in notification_manager.records[before:])


def test_the_histograms_follow_naparis_theme(make_napari_viewer, qtbot, perturbed_store):
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer, panel = _shown_panel(make_napari_viewer, qtbot)
    _run(panel, qtbot, prediction=perturbed_store)
    for theme in ("light", "dark"):
        viewer.theme = theme
        t = get_theme(theme)
        assert to_hex(panel.figure.get_facecolor()) == t.background.as_hex()
        for ax in panel.figure.axes:
            assert to_hex(ax.get_facecolor()) == t.background.as_hex()
            assert to_hex(ax.xaxis.label.get_color()) == t.text.as_hex()
            assert all(to_hex(lbl.get_color()) == t.text.as_hex() for lbl in ax.get_xticklabels())


def test_the_histograms_are_drawn_once_after_the_report_turn_at_the_canvas_size(make_napari_viewer, qtbot,
                                                                                perturbed_store):
    """A report's histograms are drawn in a later event-loop turn, at the size the layout gives the canvas: drawn
    in the report's own turn they were drawn twice (once there, at the hidden canvas's size, and once more when
    the layout resized it), ≈ 100 ms each in the turn that also fills the tables."""
    viewer, panel = _shown_panel(make_napari_viewer, qtbot)
    _run(panel, qtbot, prediction=perturbed_store)
    report, hist = panel.report, panel.histograms
    hist.clear()
    drawn = []
    hist.canvas.mpl_connect("draw_event", lambda event: drawn.append((hist.canvas.width(), hist.canvas.height())))
    hist.show(report)
    assert drawn == [] and hist.canvas.isVisible()  # (nothing drawn in this turn)
    qtbot.waitUntil(lambda: bool(drawn), timeout=30_000)
    assert drawn[0] == (hist.canvas.width(), hist.canvas.height())
    assert [ax.get_title().split(":")[0] for ax in panel.figure.axes] == ["X (features)", "X_projections"]
