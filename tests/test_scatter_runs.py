"""The Explore plot around runs and opens: after a store opens its axes and key are there with the first paint
that shows the cells (they are prepared while the Explore tab is still hidden); a cancelled run's preview
does not stay on the plot."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fixtures import load_yml, wait_worker

pytest.importorskip("pytestqt")


def test_axes_and_key_are_there_with_the_first_paint_after_a_store_opens(make_napari_viewer, demo_store,  # noqa: F811
                                                                         qtbot):
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    view = main.explore
    assert main.tabs.currentWidget() is not view  # the Explore tab is behind Predict: its plot is hidden
    sc = view.scatter
    qtbot.waitUntil(lambda: sc.ready, timeout=120_000)  # what happens while the user picks a store
    assert not sc.native.isVisible()
    paints = []

    def painted(event=None):
        if sc.native.isVisible():
            axes = all(part.visible for ax in (sc.x_axis, sc.y_axis) for part in ax.parts)
            paints.append((sc.n_plotted, axes and bool(sc.x_axis.tick_labels), sc.key_box.visible, sc.key.kind))

    sc.canvas.events.draw.connect(painted)
    worker = main.open_embeddings(demo_store, use_fields=False)
    wait_worker(qtbot, worker, 120_000)
    qtbot.waitUntil(lambda: any(n > 0 for n, *_ in paints), timeout=60_000)
    first = next(p for p in paints if p[0] > 0)
    assert first[1:] == (True, True, "continuous")  # axes with tick labels and the colour bar (coloured by t)
    assert (sc.x_axis.label, sc.y_axis.label) == view.axes()


def test_cancel_clears_the_preview_the_run_streamed(make_napari_viewer, demo_inputs, tmp_path, qtbot):  # noqa: F811
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    load_yml(qtbot, main, demo_inputs["config"])
    main.output.value, main.device.value, main.batch_size.value = tmp_path / "cancelled.zarr", "cpu", 1
    view = main.explore
    previewed = []

    def on_event(ev):
        # (the preview PCA is fitted once three cells are predicted: earlier batches have none)
        if type(ev).__name__ == "Batch" and not previewed and view.scatter.n_plotted > 0:
            previewed.append(view.scatter.n_plotted)  # a preview is on the plot
            main.cancel_btn.clicked.emit()

    worker = main.run()
    worker.yielded.connect(on_event)
    wait_worker(qtbot, worker, 300_000)
    assert previewed and previewed[0] > 0 and view.axes() == ("preview_0", "preview_1")
    assert view.scatter.n_plotted == 0 and not np.isfinite(view.xy()).any()
    assert "cancelled" in view.status.value
    view.select_box((-1e9, -1e9), (1e9, 1e9))  # nothing stale to select either
    assert len(main.session.selected) == 0


def test_a_boc_store_without_reductions_starts_on_a_pca_and_filters_by_marker(make_napari_viewer, tmp_path, qtbot,
                                                                              monkeypatch):
    """VisCy's Bag-of-Channels store of tests/data (its run asked for no PCA/UMAP): the scatter never shows
    pixel positions, it shows VisCy's PCA (computed in the work process) and the marker drop-down is there."""
    import shutil

    import anndata as ad
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from conftest import DATA
    from napari_dynaclr._napari.widgets import main as main_widget

    monkeypatch.setattr(main_widget, "show_error", lambda *a: None)  # (the store's plate is not beside the copy)
    store = tmp_path / "boc.zarr"
    shutil.copytree(DATA / "boc2d_mip" / "reference.zarr", store)
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    view = main.explore
    sc = view.scatter
    plotted = []
    sc.canvas.events.draw.connect(lambda e: plotted.append((view.axes(), sc.n_plotted)))
    wait_worker(qtbot, main.open_embeddings(store, use_fields=False), 120_000)
    qtbot.waitUntil(lambda: view.axes() == ("PCA_0", "PCA_1") and sc.n_plotted == 84, timeout=120_000)
    assert not [axes for axes, n in plotted if n and not all(a.startswith("PCA_") for a in axes)]  # never pixels
    X = ad.read_zarr(store).X
    ref = PCA(n_components=8, random_state=42).fit_transform(StandardScaler().fit_transform(X))
    table = main.session.table
    for j in range(8):  # VisCy's PCA, up to each component's sign
        got = table[f"PCA_{j}"].to_numpy()
        sign = np.sign(got @ ref[:, j])
        np.testing.assert_allclose(got * sign, ref[:, j], atol=1e-3 * np.abs(ref[:, j]).max())
    # the marker filter: a usable drop-down
    markers = sorted(set(table["marker"].astype(str)))
    assert len(markers) > 1 and view.marker_row.visible and view.marker.native.isVisible()
    assert list(view.marker.choices)[1:] == markers
    view.marker.value = markers[0]
    assert sc.n_plotted == (table["marker"].astype(str) == markers[0]).sum() < 84
