"""The Cells tab driven as a user drives it: select cells → gallery → click a tile; click a cell → its
neighbours (a highlight of their own: the selection stays until *Select these neighbours*, which *Undo* takes
back); label two classes → predicted columns and how far the validation numbers can be trusted; smoothness →
the plot and a per-track column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_fixtures import *  # noqa: F403
from napari_fixtures import load_yml, wait_worker

PLUGIN = "napari-dynaclr"
TIMEOUT_MS = 120_000


@pytest.fixture
def opened(make_napari_viewer, demo_store, demo_inputs, qtbot):
    """The DynaCLR dock with the demo store open and its predict.yml loaded (the gallery's settings)."""
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    load_yml(qtbot, main, demo_inputs["config"])
    wait_worker(qtbot, main.open_embeddings(demo_store), 60_000)
    main.tabs.setCurrentWidget(main.cells)
    assert main.session.adata is not None and len(main.session.table) == 52
    return viewer, main, main.cells


def _wait(qtbot, cells, name):
    """Wait for the job *name* that the last action started (some start after a debounce timer) to end."""
    qtbot.waitUntil(lambda: cells.worker(name) is not None, timeout=TIMEOUT_MS)
    wait_worker(qtbot, cells.worker(name), TIMEOUT_MS)


def test_selection_shows_the_patches_the_model_saw_and_a_tile_goes_to_its_cell(opened, demo_inputs, qtbot):
    viewer, main, cells = opened
    s = main.session
    cells.follow_clicks.value = False
    rows = np.flatnonzero(s.table["fov_name"].astype(str) == "A/1/1")[:6]
    main.explore.select_polygon(np.array([[-1e9, -1e9], [1e9, -1e9], [1e9, 1e9], [-1e9, 1e9]]))  # a lasso
    s.select(rows)
    _wait(qtbot, cells, "gallery")
    assert sorted(cells.tile_rows) == sorted(rows.tolist()) and cells.gallery.count() == len(rows)
    assert cells.gallery_info.value.startswith("all 6 selected cells")
    # the tiles are the model's input: the run's plan, reader and normalisation cut the same numbers
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.predict.batches import load_batch
    from napari_dynaclr.predict.gallery import model_inputs
    from napari_dynaclr.predict.plan import plan_prediction

    cfg = load_predict_yaml(demo_inputs["config"])
    keys = s.table[["fov_name", "track_id", "t"]].iloc[rows[:2]]
    index, patches = model_inputs(cfg, keys)
    plan = plan_prediction(cfg)  # the run: its batches (percentile scaling is pooled over a batch, as VisCy's)
    try:
        have = plan.cells.reset_index(drop=True)
        for i, (_, cell) in enumerate(index.iterrows()):
            j = have.index[(have["fov_name"].astype(str) == cell["fov_name"]) & (have["track_id"] == cell["track_id"])
                           & (have["t"] == cell["t"])][0]
            batch = load_batch(plan, j // cfg.batch_size).numpy()
            np.testing.assert_array_equal(patches[i], batch[j % cfg.batch_size][:, 0])
    finally:
        plan.close()
    # clicking a tile takes the viewer to that cell
    target = cells.tile_rows[2]
    cells.gallery.itemClicked.emit(cells.gallery.item(2))
    assert s.highlighted == target and s.fov_name == "A/1/1"
    assert int(viewer.dims.current_step[0]) == int(s.table["t"].iat[target])


def test_a_large_selection_shows_a_representative_sample(opened, qtbot, monkeypatch):
    from napari_dynaclr._napari.widgets import cells_gallery

    viewer, main, cells = opened
    monkeypatch.setattr(cells_gallery, "GALLERY_SIZE", 8)
    cells.follow_clicks.value = False
    main.session.select(np.arange(40))
    _wait(qtbot, cells, "gallery")
    assert len(cells.tile_rows) == 8 and set(cells.tile_rows) <= set(range(40))
    assert cells.gallery_info.value.startswith("8 representative of 40 selected cells")


def test_clicking_a_cell_shows_its_neighbours_and_keeps_the_selection(opened, qtbot):
    """A click never destroys a selection: the clicked cell's nearest neighbours are their own highlight (rings
    in the image, the gallery); *Select these neighbours* selects them, *Undo selection* brings the lasso back."""
    viewer, main, cells = opened
    s = main.session
    cells.k.value = 5
    X = np.asarray(s.adata.X, dtype=np.float64)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    nearest = sorted(np.argsort(1 - unit @ unit[3])[:6].tolist())  # itself and its 5 nearest (cosine)
    lasso = [10, 11, 12, 40]
    s.select(lasso)
    s.highlight(3)  # what a click in the image or the scatter does
    qtbot.waitUntil(lambda: len(s.neighbours) == 5, timeout=TIMEOUT_MS)
    assert sorted([s.neighbours_of, *s.neighbours.tolist()]) == nearest
    assert s.selected.tolist() == lasso  # the selection is the user's
    assert cells.neighbours_info.value.startswith("5 nearest of") and "selection stays" in cells.neighbours_info.value
    qtbot.waitUntil(lambda: sorted(cells.tile_rows) == nearest, timeout=TIMEOUT_MS)  # the gallery shows them
    assert s.selected.tolist() == lasso
    # the neighbours in the shown FOV are ringed in the image, beside the clicked cell's track
    fov = s.table["fov_name"].astype(str).to_numpy()
    shown = [r for r in s.neighbours.tolist() if fov[r] == s.fov_name]
    same_track = s.table["track_id"].to_numpy() == s.table["track_id"].iat[3]
    track = (fov == s.fov_name) & (fov[3] == s.fov_name) & same_track
    track_cells = int(track.sum())
    assert len(s.highlight_layer.data) == track_cells + len(set(shown) - set(np.flatnonzero(track)))
    # an explicit action selects them, and the last selection change can be undone
    assert cells.select_neighbours_btn.enabled
    cells.select_neighbours_btn.clicked.emit()
    assert sorted(s.selected.tolist()) == nearest
    assert cells.undo_btn.enabled
    cells.undo_btn.clicked.emit()
    assert s.selected.tolist() == lasso
    assert np.flatnonzero(s.table["selection"].cat.codes.to_numpy() == 1).tolist() == lasso


def test_two_labelled_classes_predict_every_cell(opened, demo_inputs, qtbot):
    """The demo has two cell types: label a few of each, the classifier (trained in the work process after
    the change) predicts every cell, as columns the layers and the scatter are coloured by."""
    viewer, main, cells = opened
    s = main.session
    cells.follow_clicks.value = False
    truth = pd.read_csv(demo_inputs["truth"])
    table = s.table.merge(truth, on=["fov_name", "track_id", "t"], how="left")
    for kind, name in (("A", "round"), ("B", "elongated")):
        s.select(np.flatnonzero(table["cell_type"].to_numpy() == kind)[::2])  # every other cell of the kind
        main.explore.assign_selection(name)
    _wait(qtbot, cells, "classifier")
    assert {"predicted_annotation", "predicted_annotation_proba"} <= set(s.table.columns)
    assert "predicted_annotation" in s.points_layer.features
    qtbot.waitUntil(lambda: s.color_column == "predicted_annotation")  # (in the event-loop turn after)
    predicted = s.table["predicted_annotation"].astype(str).to_numpy()
    want = np.where(table["cell_type"].to_numpy() == "A", "round", "elongated")
    accuracy = float((predicted == want).mean())
    assert accuracy > 0.8, accuracy
    m = cells.classifier["metrics"]
    assert set(m) == {"cell", "track"} and "val_accuracy" in m["cell"] and "val_accuracy" in m["track"]
    info = cells.classifier_info.value
    assert "cell split" in info and "track split" in info
    # how far the numbers can be trusted: the cells per class on each side, the accuracy over folds ± its spread
    for split in ("cell", "track"):
        q = cells.classifier["splits"][split]
        counts = ", ".join(f"{c} {n}" for c, n in q["val_counts"].items())
        assert f"validation: {counts}" in info
        cv = q["cross_validation"]
        assert f"cross-validated accuracy {cv['mean']:.3f} ± {cv['std']:.3f} over {cv['n_splits']} folds" in info
    assert cells.classifier_warning.visible == (cells.classifier["warning"] is not None)


def test_a_classifier_on_few_labels_says_its_validation_says_little(opened, qtbot):
    """Three labelled cells per class leave one or two per class for validation: the dock says how many and
    warns, instead of a bare "validation accuracy 1.000"."""
    viewer, main, cells = opened
    s = main.session
    cells.follow_clicks.value = False
    cells.follow_selection.value = False
    s.select([0, 1, 2])
    main.explore.assign_selection("early")
    s.select([30, 31, 32])
    main.explore.assign_selection("late")
    _wait(qtbot, cells, "classifier")
    assert cells.classifier_warning.visible
    assert "fewer than 5" in cells.classifier_warning.value and "label more cells" in cells.classifier_warning.value
    val = cells.classifier["splits"]["cell"]["val_counts"]
    assert sum(val.values()) <= 2 and f"validation: {', '.join(f'{c} {n}' for c, n in val.items())}" in \
        cells.classifier_info.value


def test_smoothness_is_plotted_and_scores_each_track(opened, qtbot):
    viewer, main, cells = opened
    s = main.session
    worker = cells.compute_smoothness()
    wait_worker(qtbot, worker, TIMEOUT_MS)
    st = cells.smoothness["stats"]
    from napari_dynaclr.evaluate import compute_smoothness

    want = compute_smoothness(np.asarray(s.adata.X), s.adata.obs, metric="cosine", order="time").stats
    assert st["smoothness_score"] == pytest.approx(want["smoothness_score"], rel=1e-12)
    assert cells.plot.isVisible() and len(cells.figure.axes[0].patches) > 0
    assert "smoothness" in s.table.columns and "smoothness" in s.points_layer.features
    per_track = s.table.groupby(["fov_name", "track_id"], observed=True)["smoothness"].nunique(dropna=False)
    assert (per_track == 1).all()  # one score per track
    assert cells.smooth_info.value.startswith("smoothness score")


def test_predictions_are_saved_into_the_store_as_viscy_writes_them(make_napari_viewer, demo_copy, demo_inputs,
                                                                     qtbot):
    import anndata as ad

    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    wait_worker(qtbot, main.open_embeddings(demo_copy), 60_000)
    s, cells = main.session, main.cells
    cells.follow_clicks.value = False
    cells.follow_selection.value = False
    s.select(np.arange(0, 10))
    main.explore.assign_selection("early")
    s.select(np.arange(30, 40))
    main.explore.assign_selection("late")
    _wait(qtbot, cells, "classifier")
    assert cells.save_pred_btn.enabled
    wait_worker(qtbot, cells.save_predictions(), 60_000)
    stored = ad.read_zarr(demo_copy)
    assert list(stored.uns["predicted_annotation_classes"]) == ["early", "late"]
    assert stored.obsm["predicted_annotation_proba"].shape == (stored.n_obs, 2)
    np.testing.assert_array_equal(stored.obs["predicted_annotation"].astype(str).to_numpy(),
                                  s.table["predicted_annotation"].astype(str).to_numpy())
    np.testing.assert_allclose(stored.obsm["predicted_annotation_proba"].max(axis=1),
                               s.table["predicted_annotation_proba"].to_numpy(), rtol=1e-12)


def test_a_class_or_a_track_is_selected_for_the_gallery(opened, qtbot):
    viewer, main, cells = opened
    s = main.session
    cells.follow_clicks.value = False
    s.select([1, 2, 3])
    main.explore.assign_selection("round")
    s.select([])
    cells.pick_column.value = "annotation"
    assert list(cells.pick_value.choices) == ["round"]
    assert cells.select_where() == 3 and sorted(s.selected.tolist()) == [1, 2, 3]
    _wait(qtbot, cells, "gallery")
    assert sorted(cells.tile_rows) == [1, 2, 3]
    # a track: every timepoint of the highlighted cell's track
    s.highlight(5)
    n = cells.select_track()
    fov, track = str(s.table["fov_name"].iat[5]), int(s.table["track_id"].iat[5])
    mine = np.flatnonzero((s.table["fov_name"].astype(str) == fov).to_numpy()
                          & (s.table["track_id"] == track).to_numpy())
    assert n >= len(mine) and set(mine) <= set(s.selected.tolist())
