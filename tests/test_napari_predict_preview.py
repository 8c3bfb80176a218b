"""The Predict tab's preview of the cells a run will predict is shown in steps: its layers are made one per
event-loop turn on the GUI thread (napari's first layers of a process cost it seconds on a busy laptop), then
put into the viewer one per turn; a newer preview makes the older one's pending steps stale."""

from __future__ import annotations

from napari_fixtures import load_yml, wait_worker

PLUGIN = "napari-dynaclr"


def test_a_preview_is_shown_in_steps_and_a_newer_one_makes_the_older_stale(make_napari_viewer, demo_inputs,
                                                                             qtbot, monkeypatch):
    from napari_dynaclr.core import plate as plate_module

    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    inserted, closed = [], []
    viewer.layers.events.inserted.connect(lambda e: inserted.append(e.value))
    real_close = plate_module.Plate.close

    def close(self):
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(plate_module.Plate, "close", close)
    plates = []
    load_yml(qtbot, main, demo_inputs["config"])
    qtbot.waitUntil(lambda: main.checks.preview_worker is not None, timeout=60_000)  # (the load's own preview)
    wait_worker(qtbot, main.checks.preview_worker, 60_000)
    assert len(viewer.layers) == 5 and main.session.is_preview and len(inserted) == 5
    shown = list(viewer.layers)
    inserted.clear()
    older = main.preview_cells()
    newer = []
    seen_at_result = []

    def result(item):  # the older preview's cells found: its first step (one layer made) has run
        if item is None or newer:
            return
        plates.append(item[1])
        seen_at_result.append((len(inserted), main.cells_info.value))
        newer.append(main.preview_cells())  # a newer preview: the older one's next steps are stale

    older.yielded.connect(result)
    qtbot.waitUntil(lambda: bool(newer), timeout=60_000)
    wait_worker(qtbot, older, 60_000)
    wait_worker(qtbot, newer[0], 60_000)
    # the older preview's cells were counted, but none of its layers was in the viewer yet (the old code showed
    # them all with the count)
    assert seen_at_result == [(0, "52 cells in 2 FOVs to predict")]
    assert plates[0] in closed  # stale: its plate closed, its layers never added
    s = main.session
    # none of the older preview's layers was ever added; the newer one refilled the shown layers (the same FOV of
    # the same plate: they fit), so nothing was inserted at all
    assert inserted == [] and list(viewer.layers) == shown
    assert s.is_preview and len(s.table) == 52 and s.plate is not plates[0]
    session_layers = [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]
    assert sorted(map(id, session_layers)) == sorted(map(id, shown))
    assert len(s.points_layer.data) == int((s.table["fov_name"] == s.fov_name).sum())
