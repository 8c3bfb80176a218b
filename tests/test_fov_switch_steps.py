"""A FOV switch never blocks the GUI thread in one piece (issue 23 item 2): a large FOV's Tracks layer is refilled
and shown in later event-loop turns, and a FOV the plate lacks keeps the image layers (hidden, empty) instead of
removing them and building every layer anew. Reached through the dock's "show FOV" control. The demo's FOVs are
small: ``STEP_FOV_ROWS`` is lowered so that they take the large-FOV path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QTimer

from napari_dynaclr._napari import fov_refill
from napari_fixtures import *  # noqa: F403
from napari_fixtures import wait_worker

PLUGIN = "napari-dynaclr"


@pytest.fixture
def opened(make_napari_viewer, demo_store, demo_inputs, qtbot):
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    main.plate.value = demo_inputs["plate"]
    main.tracks.value = demo_inputs["tracks"]
    wait_worker(qtbot, main.open_embeddings(demo_store), 60_000)
    return viewer, main, main.session


def _tracks_state(s):
    trk = s.tracks_layer
    return trk.data.copy(), trk.features.reset_index(drop=True).copy(), dict(trk.graph), \
        np.asarray(trk.track_colors).copy()



def _turns_pass(qtbot, turns: int = 4) -> None:
    """Wait until *turns* event-loop turns have passed, each a 1 ms timer queued after the ones already pending
    (the refill's steps are such timers; a step queues the next one): a wait on the event loop, not on a time."""
    done = []

    def tick(left: int) -> None:
        if left:
            QTimer.singleShot(1, lambda: tick(left - 1))
        else:
            done.append(True)

    tick(turns)
    qtbot.waitUntil(lambda: bool(done), timeout=60_000)

def test_a_large_fov_gets_its_tracks_in_later_turns(opened, qtbot, monkeypatch):
    viewer, main, s = opened
    monkeypatch.setattr(fov_refill, "STEP_FOV_ROWS", 1)
    layers_before = [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer]
    main.show_fov.value = "A/1/1"
    assert s.fov_name == "A/1/1" and s.points_layer.name == "A/1/1 cells"
    assert not s.tracks_layer.visible  # not drawn with the previous FOV's tracks: refilled in a later turn
    qtbot.waitUntil(lambda: s.tracks_layer.visible, timeout=10_000)
    stepped = _tracks_state(s)
    assert [*s.image_layers, s.tracks_layer, s.points_layer, s.highlight_layer] == layers_before
    monkeypatch.setattr(fov_refill, "STEP_FOV_ROWS", 10**9)
    s.show_fov("A/1/0")
    s.show_fov("A/1/1")  # all at once: what the stepped switch must have reached
    at_once = _tracks_state(s)
    np.testing.assert_array_equal(stepped[0], at_once[0])
    pd.testing.assert_frame_equal(stepped[1], at_once[1])
    assert stepped[2] == at_once[2]
    np.testing.assert_allclose(stepped[3], at_once[3])
    assert len(s.tracks_layer.data) == len(s.overlay.rows) == len(s.points_layer.data)


def test_a_newer_switch_makes_a_pending_tracks_refill_stale(opened, qtbot, monkeypatch):
    viewer, main, s = opened
    monkeypatch.setattr(fov_refill, "STEP_FOV_ROWS", 1)
    main.show_fov.value = "A/1/1"
    main.show_fov.value = "A/1/0"  # before the first switch's tracks were refilled
    qtbot.waitUntil(lambda: s.tracks_layer.visible, timeout=10_000)
    _turns_pass(qtbot)  # (a stale refill, were one left, would land in these turns)
    np.testing.assert_array_equal(s.tracks_layer.data[:, 1:], s.overlay.tracks[:, 1:])
    assert s.tracks_layer.name == "A/1/0 tracks" and s.tracks_layer.visible


def test_a_fov_the_plate_lacks_keeps_the_layers(opened, qtbot):
    viewer, main, s = opened
    # a table with a third FOV that the plate does not hold (A/1/1's cells again, under another name)
    table = s.table.copy()
    extra = table[table["fov_name"].astype(str) == "A/1/1"].copy()
    extra["fov_name"] = "A/1/7"
    both = pd.concat([table, extra], ignore_index=True)
    both["fov_name"] = both["fov_name"].astype(str).astype("category")
    s.set_table(both, plate_path=s.plate_path, fov_name="A/1/0")
    images, others = list(s.image_layers), [s.tracks_layer, s.points_layer, s.highlight_layer]
    assert len(images) == 2 and all(layer.visible for layer in images)
    s.show_fov("A/1/7")
    assert s.image_layers == images and all(a is b for a, b in zip(s.image_layers, images))  # kept, not rebuilt
    assert [s.tracks_layer, s.points_layer, s.highlight_layer] == others
    assert all(not layer.visible and layer.name.endswith("(not in the plate)") for layer in images)
    assert all(layer.data.size == 1 for layer in images)  # no other FOV's pixels under this FOV's name
    assert len(s.points_layer.data) == int((both["fov_name"] == "A/1/7").sum())
    s.show_fov("A/1/0")  # back to a FOV with images: shown again, as a fresh build would show them
    assert all(a is b for a, b in zip(s.image_layers, images))
    assert all(layer.visible and layer.metadata["dynaclr_fov"] == "A/1/0" for layer in images)
    assert [layer.name for layer in images] == [f"A/1/0 {c}" for c in s.plate.channel_names]
    assert all(layer.data.shape[0] == 4 for layer in images)


def test_a_layer_deleted_before_the_tracks_refill_ends_it_quietly(opened, qtbot, monkeypatch):
    viewer, main, s = opened
    monkeypatch.setattr(fov_refill, "STEP_FOV_ROWS", 1)
    tracks = s.tracks_layer
    main.show_fov.value = "A/1/1"
    viewer.layers.remove(s.points_layer)  # the user deletes the cells layer before the next event-loop turn
    _turns_pass(qtbot)  # the pending refill's turns pass (an exception in them fails the test: pytest-qt)
    assert s.points_layer is None and tracks in viewer.layers and not tracks.visible
    main.show_fov.value = "A/1/0"  # a later switch builds the layers again
    qtbot.waitUntil(lambda: s.tracks_layer is not None and s.tracks_layer.visible, timeout=10_000)
    assert s.points_layer is not None and s.points_layer.name == "A/1/0 cells"


def _growing_pair(s) -> tuple[str, str, int]:
    """The session's table with the demo's first FOV cut to its first two frames (the demo's FOVs are of one
    size); that FOV shown. Returns it, a FOV with more cells, and how many more."""
    table = s.table
    fovs = table["fov_name"].astype(str)
    small, large = sorted(fovs.unique())[:2]
    s.set_table(table[(fovs != small) | (table["t"] < 2)].reset_index(drop=True), plate_path=s.plate_path,
                fov_name=small)
    counts = s.table["fov_name"].astype(str).value_counts()
    assert counts[large] > counts[small] and s.fov_name == small
    return small, large, int(counts[large] - counts[small])


def test_a_growing_refill_shows_its_points_a_turn_later_as_the_user_left_them(opened, qtbot, monkeypatch):
    viewer, main, s = opened
    small, large, more = _growing_pair(s)
    monkeypatch.setattr(fov_refill, "STEP_FOV_ROWS", more - 1)  # this switch adds more points than that
    points = s.points_layer
    main.show_fov.value = large
    # refilled at once (the same layer, the new FOV's points and features), painted a turn later
    assert s.points_layer is points and len(points.data) == len(s.overlay.rows)
    assert len(points.features) == len(points.data)
    assert not points.visible and not s.tracks_layer.visible
    qtbot.waitUntil(lambda: points.visible, timeout=10_000)
    qtbot.waitUntil(lambda: s.tracks_layer.visible, timeout=10_000)
    # a Points layer the user hid stays hidden through a growing switch (and the Tracks one shown)
    s.show_fov(small)
    points.visible = False
    main.show_fov.value = large
    qtbot.waitUntil(lambda: s.tracks_layer.visible, timeout=10_000)
    _turns_pass(qtbot)
    assert not points.visible


def test_a_switch_after_a_growing_one_shows_the_points_it_hid(opened, qtbot, monkeypatch):
    viewer, main, s = opened
    small, large, more = _growing_pair(s)
    monkeypatch.setattr(fov_refill, "STEP_FOV_ROWS", more - 1)
    main.show_fov.value = large
    assert not s.points_layer.visible
    monkeypatch.setattr(fov_refill, "STEP_FOV_ROWS", 10**9)  # the next switch is refilled all at once
    main.show_fov.value = small  # before the growing switch's later turns ran (they are stale now)
    assert s.points_layer.visible and s.tracks_layer.visible
    _turns_pass(qtbot)
    assert s.points_layer.visible and s.tracks_layer.visible
    assert len(s.points_layer.data) == len(s.overlay.rows) == len(s.tracks_layer.data)
