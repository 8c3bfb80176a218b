"""The scatter through the Explore dock: what a user's mouse and the dock's controls do to the plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import explore

pytest.importorskip("pytestqt")


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"fov_name": rng.choice(["A/1/0", "B/2/1"], n), "track_id": rng.integers(1, 50, n),
                        "t": rng.integers(0, 9, n), "id": np.arange(n), "parent_track_id": -1, "parent_id": -1,
                        "y": rng.uniform(0, 100, n), "x": rng.uniform(0, 100, n)})
    return explore.cell_table(obs, {"X_umap": rng.normal(size=(n, 2)).astype(np.float32)})


@pytest.fixture
def view(make_napari_viewer, qtbot):
    from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView

    viewer = make_napari_viewer(show=True)
    view = EmbeddingView(viewer)
    viewer.window.add_dock_widget(view, name="Embedding view")
    return view


def _plot_ready(qtbot, sc) -> None:
    """The plot is on screen and its axes follow the camera (to_canvas maps data to where the mouse is)."""
    def ready():
        r = sc.view.camera.rect
        (x0, x1) = sorted(sc.x_axis.domain)
        return sc.native.isVisible() and sc.view.size[0] > 50 and abs(x0 - r.left) <= sc.pixel_size()[0] \
            and abs(x1 - r.right) <= sc.pixel_size()[0]
    qtbot.waitUntil(ready, timeout=60_000)


def _mouse_path(sc, points, release_at) -> None:
    ev = sc.canvas.events
    ev.mouse_press(pos=points[0], button=1, buttons=[1], modifiers=())
    for p in points[1:]:
        ev.mouse_move(pos=p, button=1, buttons=[1], modifiers=(), press_event=None)
    ev.mouse_release(pos=release_at, button=1, buttons=[], modifiers=())


def test_a_lasso_released_near_its_start_closes_and_selects_what_it_encloses(view, qtbot):
    s = view.session
    s.set_table(_table(85))
    sc = view.scatter
    _plot_ready(qtbot, sc)
    view.mode.value = "lasso"
    xy = view.xy()
    centre = sc.to_canvas(np.median(xy, axis=0))
    radius = 0.3 * min(sc.view.size)
    angles = np.linspace(0, 2 * np.pi, 40)
    loop = [centre + radius * np.array([np.cos(a), np.sin(a)]) for a in angles]
    _mouse_path(sc, loop[:-1], release_at=loop[0] + np.array([1.5, 1.0]))  # released 2 px from its start
    polygon = np.array([sc.to_data(p) for p in loop])
    inside = np.flatnonzero(explore.points_in_polygon(xy, polygon))
    assert len(inside) >= 10
    chosen = set(s.selected.tolist())
    # equal up to cells within 2 px of the drawn line (screen pixels back to data)
    on_screen = np.array([sc.to_canvas(p) for p in xy])
    near_line = np.flatnonzero(np.abs(np.hypot(*(on_screen - centre).T) - radius) < 2)
    assert chosen ^ set(inside.tolist()) <= set(near_line.tolist())
