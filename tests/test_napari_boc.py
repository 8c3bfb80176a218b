"""A Bag-of-Channels model through the DynaCLR dock: VisCy's BoC predict.yml loaded as-is, the run streams
with progress and writes VisCy's numbers; the explorer tells the markers apart (one embedding per cell and
marker) and filters by marker."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA
from napari_fixtures import wait_worker

PLUGIN = "napari-dynaclr"
CASE = "boc2d_mip"


@pytest.fixture
def boc_dock(make_napari_viewer, conformance_ckpt, monkeypatch):
    from napari_dynaclr._napari.widgets import main as main_widget

    errors = []
    monkeypatch.setattr(main_widget, "show_error", errors.append)
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    assert main.load_predict_yml(DATA / CASE / "predict.yml")
    main.ckpt.value = conformance_ckpt(CASE)
    return viewer, main, errors


def test_a_boc_predict_yml_runs_in_the_dock_and_equals_viscy(boc_dock, tmp_path, qtbot, reference_arrays):
    import anndata as ad

    viewer, main, errors = boc_dock
    assert main.is_boc and not main.plate.enabled and not main.channels.enabled
    assert main.plate_info.value.startswith("Bag of Channels: samples from cell_index.parquet")
    out = tmp_path / "boc.zarr"
    main.output.value, main.device.value, main.batch_size.value = out, "cpu", 16
    main.umap.value = main.pca.value = False
    events = []
    worker = main.run()
    worker.yielded.connect(lambda ev: ev is None or events.append(type(ev).__name__))
    wait_worker(qtbot, worker, 150_000)
    assert errors == [] and main.last_error is None
    assert events[0] == "Planned" and events.count("Batch") == 6  # 84 samples / 16, streamed
    adata, ref = ad.read_zarr(out), reference_arrays(CASE)
    assert adata.n_obs == 84 and np.abs(adata.X - ref["features"]).max() <= 1e-4
    np.testing.assert_array_equal(adata.obs["marker"].astype(str).to_numpy(), ref["obs_marker"])
    # the explorer: coloured by marker, filtered by marker
    view = main.explore
    assert main.tabs.currentWidget() is view and main.session.color_column == "marker"
    markers = sorted(set(ref["obs_marker"].tolist()))
    assert view.has_markers and view.marker_row.visible and list(view.marker.choices)[1:] == markers
    # no PCA/UMAP asked for: the scatter shows a PCA computed in the work process, never pixel positions
    qtbot.waitUntil(lambda: int(np.isfinite(view.scatter.xy).all(axis=1).sum()) == 84, timeout=120_000)
    assert view.axes() == ("PCA_0", "PCA_1")
    view.marker.value = markers[0]
    shown = np.isfinite(view.scatter.xy).all(axis=1)
    assert shown.sum() == (ref["obs_marker"] == markers[0]).sum() and shown.sum() < 84
    assert set(main.session.table["marker"].astype(str)[shown]) == {markers[0]}


def test_loading_a_classic_yml_after_a_boc_one_gives_the_fields_back(boc_dock, demo_inputs, qtbot):  # noqa: F811
    from napari_fixtures import load_yml

    viewer, main, errors = boc_dock
    load_yml(qtbot, main, demo_inputs["config"])
    assert not main.is_boc and main.plate.enabled and main.channels.enabled and errors == []
    assert main.build_config(require_output=False).source.source_channel == ["Phase3D", "RFP"]
