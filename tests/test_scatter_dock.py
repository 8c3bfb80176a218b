"""The scatter through the Explore dock: what a user's mouse and the dock's controls do to the plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import cellmodel

pytest.importorskip("pytestqt")

import napari_fixtures  # noqa: E402,F401 (torch loaded before any test opens an OpenGL context)


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"fov_name": rng.choice(["A/1/0", "B/2/1"], n), "track_id": rng.integers(1, 50, n),
                        "t": rng.integers(0, 9, n), "id": np.arange(n), "parent_track_id": -1, "parent_id": -1,
                        "y": rng.uniform(0, 100, n), "x": rng.uniform(0, 100, n)})
    return cellmodel.cell_table(obs, {"X_umap": rng.normal(size=(n, 2)).astype(np.float32)})


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
    inside = np.flatnonzero(cellmodel.points_in_polygon(xy, polygon))
    assert len(inside) >= 10
    chosen = set(s.selected.tolist())
    # equal up to cells within 2 px of the drawn line (screen pixels back to data)
    on_screen = np.array([sc.to_canvas(p) for p in xy])
    near_line = np.flatnonzero(np.abs(np.hypot(*(on_screen - centre).T) - radius) < 2)
    assert chosen ^ set(inside.tolist()) <= set(near_line.tolist())


def test_the_colour_controls_say_what_the_plot_draws_whoever_recoloured(view, qtbot):
    """The classifier (Cells tab) and Verify recolour through the session: the dock's colour-by and colormap
    controls follow, and the key's title is the same column."""
    s = view.session
    table = _table(120)
    s.set_table(table)
    sc = view.scatter
    rng = np.random.default_rng(1)
    predicted = pd.Categorical(rng.choice(["interphase", "mitosis"], len(table)))
    s.add_columns({"annotation": pd.Categorical([""] * len(table)), "predicted_annotation": predicted})
    view.color_by("annotation")
    assert view.color.value == "annotation" == sc.key.texts()[0]
    s.color_by("predicted_annotation")  # what training a classifier does
    assert view.color.value == "predicted_annotation" == s.color_column == sc.key.texts()[0]
    assert set(sc.key.texts()[1:]) == {"interphase", "mitosis"}
    s.add_columns({"score": rng.normal(size=len(table)).astype(np.float32)})
    s.color_by("score", "magma")  # what "Colour cells by |Δ|" does
    assert (view.color.value, view.cmap.value) == ("score", "magma") and sc.key.kind == "continuous"
    np.testing.assert_allclose(sc.key.key["lut"], cellmodel.colormap_lut("magma"))
    view.color.value = "t"  # and the control still drives the plot
    assert s.color_column == "t" == sc.key.texts()[0] and s.colormap == "magma"


def test_hdbscan_noise_is_labelled_noise_in_the_key_with_the_colour_it_is_drawn_in(view, qtbot):
    s = view.session
    table = _table(200)
    s.set_table(table)
    labels = np.where(np.arange(len(table)) % 4 == 0, -1, np.arange(len(table)) % 3)
    s.add_columns({"cluster": pd.Categorical(labels)})  # what Cluster (HDBSCAN) adds
    view.color_by("cluster")
    key = view.scatter.key
    assert key.texts() == ["cluster", "noise", "0", "1", "2"]
    for label, swatch in zip(key.key["labels"], key.key["colors"]):  # each swatch: its cells' colour
        value = -1 if label == "noise" else int(label)
        np.testing.assert_allclose(swatch, s.colors[np.flatnonzero(labels == value)[0]])


def test_the_plot_follows_naparis_theme(view, qtbot):
    from napari.utils.theme import get_theme
    from vispy.color import Color

    def same(a, b) -> bool:
        return np.allclose(Color(a).rgba, Color(b).rgba, atol=1 / 255)

    s = view.session
    s.set_table(_table(50))
    sc = view.scatter
    for theme in ("light", "dark", "light"):
        view.viewer.theme = theme
        t = get_theme(theme)
        assert same(sc.canvas.bgcolor, t.background.as_hex())
        for text in (sc.x_axis.tick_text, sc.y_axis.title, sc.key.title, sc.hover_label):
            assert same(text.color, t.text.as_hex())
    light_bg, light_text = Color(get_theme("light").background.as_hex()), Color(get_theme("light").text.as_hex())
    assert light_bg.hsv[2] > 0.8 and light_text.hsv[2] < 0.3  # dark text on a light plot: readable
