"""A Bag-of-Channels store on the plate images of its FOV, marker by marker (issue 21, item 2): one image layer
per marker's channel, every marker's cells over them, and the Explore tab's marker filter showing the chosen
marker's channel and cells (the other markers' hidden), in every FOV shown."""

from __future__ import annotations

import numpy as np
import pytest

from matrix_stores import build
from napari_fixtures import wait_worker

PLUGIN = "napari-dynaclr"


def _channel_layers(viewer, s) -> dict[str, object]:
    """channel → the viewer's image layer of the shown FOV."""
    return {layer.metadata["dynaclr_channel"]: layer for layer in s.image_layers
            if layer in viewer.layers and layer.metadata.get("dynaclr_fov") == s.fov_name}


@pytest.mark.parametrize("kind", ["boc2d_mip", "boc3d"])
def test_a_boc_store_shows_each_markers_channel_and_cells(kind, make_napari_viewer, conformance_ckpt, tmp_path,
                                                          qtbot):
    store = build(kind, tmp_path, conformance_ckpt(kind))
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    wait_worker(qtbot, main.open_embeddings(store.path), 120_000)
    s = main.session
    qtbot.waitUntil(lambda: s.store_path == store.path and s.points_layer in viewer.layers, timeout=60_000)
    channels = {e["marker"]: e["channel"] for e in s.adata.uns["dynaclr"]["experiments"].values()}
    assert len(channels) >= 2
    # the FOV's plate image of each marker's channel, named by it, and every marker's cells over them
    shown = _channel_layers(viewer, s)
    for marker, channel in channels.items():
        assert channel in shown, f"no image layer of {marker}'s channel {channel!r}: {sorted(shown)}"
        assert shown[channel].name == f"{s.fov_name} {channel}" and shown[channel].visible
    fov_rows = s.table[s.table["fov_name"].astype(str) == s.fov_name]
    assert set(s.points_layer.features["marker"].astype(str)) == set(fov_rows["marker"].astype(str))
    assert len(s.points_layer.data) == len(fov_rows) and s.points_layer.shown.all()

    def check(marker: str) -> None:
        layers = _channel_layers(viewer, s)
        for m, channel in channels.items():
            assert layers[channel].visible == (m == marker), (marker, channel, layers[channel].visible)
        mine = s.points_layer.features["marker"].astype(str).to_numpy() == marker
        assert mine.any() and np.array_equal(s.points_layer.shown, mine)

    explore = main.explore
    assert explore.marker_row.visible
    chosen = sorted(set(fov_rows["marker"].astype(str)))[-1]
    explore.marker.value = chosen
    check(chosen)
    markers = s.table["marker"].astype(str).to_numpy()
    names = s.table["fov_name"].astype(str).to_numpy()
    other = next(f for f in s.fov_names() if f != s.fov_name and (markers[names == f] == chosen).any())
    # another FOV (with cells of that marker) keeps the marker's view
    main.show_fov.value = other
    qtbot.waitUntil(lambda: s.fov_name == other and set(_channel_layers(viewer, s)) >= set(channels.values()),
                    timeout=60_000)
    check(chosen)
    explore.marker.value = "all markers"
    assert all(layer.visible for layer in _channel_layers(viewer, s).values()) and s.points_layer.shown.all()
