"""The plugin as a good citizen in napari: what the dock adds reaches the Points layer's ``features`` as a new
frame (napari's ``features`` event fires), a selection made in the layer becomes the dock's, columns another
plugin writes survive a FOV switch — checked on our own, and with napari-clusters-plotter's dock."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

PLUGIN = "napari-dynaclr"


def _table():
    """Two FOVs, 3 tracks × 4 timepoints each, with UMAP coordinates."""
    from napari_dynaclr._napari.cellmodel import cell_table

    rows = [(fov, track, t, -1, 20.0 * track + t, 10.0 + 5 * t) for fov in ("A/1/0", "A/1/1") for track in (1, 2, 3)
            for t in range(4)]
    obs = pd.DataFrame(rows, columns=["fov_name", "track_id", "t", "parent_track_id", "y", "x"])
    umap = np.random.default_rng(0).normal(size=(len(obs), 2))
    return cell_table(obs, {"X_umap": umap})


@pytest.fixture
def shown(make_napari_viewer):
    """The DynaCLR dock with a 24-cell table shown (FOV A/1/0)."""
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    main.session.set_table(_table())
    assert main.session.fov_name == "A/1/0" and len(main.session.points_layer.data) == 12
    return viewer, main, main.session


def _fov_rows(s, fov):
    return np.flatnonzero(s.table["fov_name"].astype(str).to_numpy() == fov)


def test_every_column_the_dock_adds_is_a_new_features_frame(shown):
    """A cluster, an annotation and the selection reach the Points layer's features through napari's
    ``features`` setter: its event fires each time, and the layer's frame is a new object."""
    viewer, main, s = shown
    points = s.points_layer
    seen = []
    points.events.features.connect(lambda event: seen.append(set(points.features.columns)))
    before = points.features
    s.add_columns({"cluster": pd.Categorical(np.arange(24) % 3 - 1)})  # what a clustering job's result does
    assert len(seen) == 1 and "cluster" in seen[-1] and points.features is not before
    np.testing.assert_array_equal(points.features["cluster"].astype(int), (s.overlay.rows % 3) - 1)
    s.select([0, 1, 2])
    main.explore.assign_selection("round")  # the Explore tab's Annotate
    assert len(seen) >= 3  # the selection column, then the annotation column
    assert (points.features["annotation"].astype(str).to_numpy()[np.isin(s.overlay.rows, [0, 1, 2])] == "round").all()
    sel = points.features["selection"].astype(int).to_numpy()
    np.testing.assert_array_equal(np.flatnonzero(sel), np.flatnonzero(np.isin(s.overlay.rows, [0, 1, 2])))
    assert len(s.tracks_layer.features.columns) == len(points.features.columns)


def test_a_selection_made_in_the_layer_becomes_the_docks(shown, qtbot):
    """napari's select tool (or a plugin) selecting points of our layer selects those cells in the dock (the
    Explore tab counts them), undoably; the dock's selection leaves as the ``selection`` features column; one
    point selected is a click: a highlight."""
    viewer, main, s = shown
    s.select([20, 21])
    points = s.points_layer
    points.selected_data = {0, 4, 5}
    want = sorted(s.overlay.rows[[0, 4, 5]].tolist())
    assert s.selected.tolist() == want
    qtbot.waitUntil(lambda: "3 selected" in main.explore.status.value, timeout=10_000)
    np.testing.assert_array_equal(np.flatnonzero(points.features["selection"].astype(int)), [0, 4, 5])
    assert s.undo_selection() and s.selected.tolist() == [20, 21]
    points.selected_data = set()  # napari empties the layer's selection on many occasions: the dock's stays
    assert s.selected.tolist() == [20, 21]
    points.selected_data = {3}  # one point (a click with the select tool): highlighted, the selection stays
    assert s.highlighted == int(s.overlay.rows[3]) and s.selected.tolist() == [20, 21]


def test_columns_another_plugin_writes_survive_a_fov_switch(shown):
    """A plugin assigning a column to the layer's features (the way napari-clusters-plotter writes
    ``SELECTED_LAYER_CLUSTER_ID``) or writing one in place (its ``MANUAL_CLUSTER_ID``): the table adopts them for
    the FOV's rows (missing elsewhere), the colour-by list offers them, and they come back with the FOV."""
    viewer, main, s = shown
    points = s.points_layer
    first = s.overlay.rows.copy()
    points.features = points.features.assign(SELECTED_LAYER_CLUSTER_ID=pd.Categorical(np.arange(12) % 2))
    assert "SELECTED_LAYER_CLUSTER_ID" in s.table.columns
    assert "SELECTED_LAYER_CLUSTER_ID" in main.explore.color.choices
    points.features["MANUAL_CLUSTER_ID"] = pd.Series(np.arange(12) % 3).astype("category")  # in place, no event
    s.show_fov("A/1/1")
    assert "MANUAL_CLUSTER_ID" in s.table.columns
    other = _fov_rows(s, "A/1/1")
    assert s.table["MANUAL_CLUSTER_ID"].iloc[other].isna().all()
    assert set(s.points_layer.features.columns) >= {"SELECTED_LAYER_CLUSTER_ID", "MANUAL_CLUSTER_ID"}
    s.show_fov("A/1/0")
    np.testing.assert_array_equal(s.overlay.rows, first)
    np.testing.assert_array_equal(s.points_layer.features["SELECTED_LAYER_CLUSTER_ID"].astype(int), np.arange(12) % 2)
    np.testing.assert_array_equal(s.points_layer.features["MANUAL_CLUSTER_ID"].astype(int), np.arange(12) % 3)
    s.color_by("MANUAL_CLUSTER_ID")  # and they colour the views
    assert s.colors.shape == (24, 4)


def test_napari_clusters_plotter_shares_the_layer_with_the_dock(shown, qtbot):
    """napari-clusters-plotter 0.11's dock on our Points layer: a selection it makes on the layer reaches our
    dock, the columns our dock adds reach its feature lists, the columns it writes survive our FOV switch."""
    from qtpy.QtWidgets import QComboBox

    viewer, main, s = shown
    _, plotter = viewer.window.add_plugin_dock_widget("napari-clusters-plotter", "Plot & select features")
    viewer.layers.selection.active = s.points_layer  # the layer it plots: the selected one
    qtbot.waitUntil(lambda: "MANUAL_CLUSTER_ID" in s.points_layer.features.columns, timeout=10_000)

    def offered():
        return {box.itemText(i) for box in plotter.findChildren(QComboBox) for i in range(box.count())}

    qtbot.waitUntil(lambda: "UMAP_0" in offered(), timeout=10_000)
    s.add_columns({"score": np.linspace(0.0, 1.0, 24)})  # e.g. a classifier's probability
    qtbot.waitUntil(lambda: "score" in offered(), timeout=10_000)
    # its selection of objects on the layer (it sets the layer's selected_data) is our dock's selection
    s.points_layer.selected_data = {1, 2}
    assert s.selected.tolist() == sorted(s.overlay.rows[[1, 2]].tolist())
    # it writes its own columns into the layer's features; they stay with the cells across a FOV switch
    qtbot.waitUntil(lambda: "SELECTED_LAYER_CLUSTER_ID" in s.table.columns, timeout=10_000)
    written = s.points_layer.features["SELECTED_LAYER_CLUSTER_ID"].astype(int).to_numpy().copy()
    assert written.sum() == 2
    s.show_fov("A/1/1")
    s.show_fov("A/1/0")
    np.testing.assert_array_equal(s.points_layer.features["SELECTED_LAYER_CLUSTER_ID"].astype(int), written)
    assert "MANUAL_CLUSTER_ID" in main.explore.color.choices
