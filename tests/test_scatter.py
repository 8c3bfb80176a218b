"""The embedding scatter as a plot: axes, colour key, hover read-out, selection style, density mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import cellmodel, plotting

pytest.importorskip("pytestqt")


@pytest.fixture
def canvas(qtbot):
    from napari_dynaclr._napari.widgets.scatter import ScatterCanvas

    sc = ScatterCanvas()
    qtbot.addWidget(sc.native)
    sc.native.resize(560, 420)
    sc.native.show()
    qtbot.waitExposed(sc.native)
    yield sc
    sc.native.close()


def _cloud(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 2)) * [20.0, 1.0] + [150.0, -3.0]).astype(np.float32)


def _follows_the_view(canvas) -> bool:
    """Both axes span the camera's visible range (to a pixel): the plot is laid out for the current view."""
    r, (px, py) = canvas.view.camera.rect, canvas.pixel_size()
    (x0, x1), (y0, y1) = sorted(canvas.x_axis.domain), sorted(canvas.y_axis.domain)
    return (abs(x0 - r.left) <= px and abs(x1 - r.right) <= px and abs(y0 - r.bottom) <= py
            and abs(y1 - r.top) <= py)


def _settled(qtbot, canvas) -> None:
    qtbot.waitUntil(lambda: _follows_the_view(canvas), timeout=60_000)


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"fov_name": rng.choice(["A/1/0", "B/2/1"], n), "track_id": rng.integers(1, 50, n),
                        "t": rng.integers(0, 9, n), "id": np.arange(n), "parent_track_id": -1, "parent_id": -1,
                        "y": rng.uniform(0, 100, n), "x": rng.uniform(0, 100, n)})
    table = cellmodel.cell_table(obs, {"X_umap": _cloud(n, seed)})
    table["score"] = rng.normal(size=n).astype(np.float32)
    return table


def _tick_values(axis) -> np.ndarray:
    """The numbers the axis's tick labels show (what a reader reads)."""
    return np.array([float(t.replace("−", "-")) for t in axis.tick_labels if t.strip()])


def _shown(qtbot, canvas) -> None:
    """Wait until the staged first paint has shown the axes and the key."""
    qtbot.waitUntil(lambda: canvas.key_box.visible and all(part.visible for ax in (canvas.x_axis, canvas.y_axis)
                                                           for part in ax.parts), timeout=60_000)


def test_axes_ticks_and_labels_follow_the_data(canvas, qtbot):
    xy = _cloud(2000)
    canvas.set_points(xy, np.ones((len(xy), 4), np.float32))
    canvas.set_labels("UMAP_0", "UMAP_1")
    _settled(qtbot, canvas)
    assert canvas.x_axis.label == "UMAP_0" and canvas.y_axis.label == "UMAP_1"
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    for k, ax in enumerate((canvas.x_axis, canvas.y_axis)):
        d0, d1 = sorted(ax.domain)
        r = canvas.view.camera.rect
        v0, v1 = (r.left, r.right) if k == 0 else (r.bottom, r.top)
        px = canvas.pixel_size()[k]
        assert d0 == pytest.approx(v0, abs=px) and d1 == pytest.approx(v1, abs=px)  # the axis spans the view
        span = hi[k] - lo[k]
        assert lo[k] - 0.12 * span < d0 < lo[k] and hi[k] < d1 < hi[k] + 0.12 * span  # which shows the data
        ticks = _tick_values(ax)
        assert len(ticks) >= 3 and ticks.min() >= d0 - 1e-6 and ticks.max() <= d1 + 1e-6
        np.testing.assert_allclose(ticks, ax.tick_values)
    # the ticks follow the camera: zoom into x ∈ [140, 150]
    canvas.view.camera.set_range(x=(140, 150), y=(-4, -2), margin=0)
    _settled(qtbot, canvas)
    r, px = canvas.view.camera.rect, canvas.pixel_size()[0]
    assert 139 < r.left < 140 and 150 < r.right < 151
    assert sorted(canvas.x_axis.domain) == pytest.approx([r.left, r.right], abs=px)
    ticks = _tick_values(canvas.x_axis)
    assert ticks.min() >= 140 - px and ticks.max() <= 150 + px and len(ticks) >= 3


def test_axes_are_drawn_with_ticks_that_follow_a_zoom(canvas, qtbot):
    """The staged first paint ends with the axes shown: spine and ticks, readable numbers, the column names;
    a zoom changes the numbers (and the drawn tick marks), a resize keeps them in the axis."""
    xy = _cloud(2000)
    canvas.set_points(xy, np.ones((len(xy), 4), np.float32))
    canvas.set_labels("PHATE_0", "PHATE_1")
    _shown(qtbot, canvas)
    for ax, name in ((canvas.x_axis, "PHATE_0"), (canvas.y_axis, "PHATE_1")):
        assert ax.visible and all(part.visible for part in ax.parts)
        assert ax.title.text == name
        labels = ax.tick_labels
        assert len(labels) >= 3 and len(labels) == len(ax.tick_values)
        assert all(len(t) <= 6 for t in labels)  # short numbers: no float noise ("0.30000000000000004")
        pos = np.asarray(ax.tick_text.pos)[:, :2]
        w, h = ax.size
        along = pos[:, 1] if ax is canvas.y_axis else pos[:, 0]
        assert np.all((along >= -1) & (along <= (h if ax is canvas.y_axis else w) + 1))  # inside the axis
        assert len(ax.lines.pos) >= 2 * (1 + len(labels))  # the spine and a mark per labelled tick
    before = (list(canvas.x_axis.tick_labels), list(canvas.y_axis.tick_labels))
    marks = np.array(canvas.x_axis.lines.pos)
    canvas.view.camera.set_range(x=(150.0, 150.5), y=(-3.0, -2.99), margin=0)
    _settled(qtbot, canvas)
    x_after, y_after = _tick_values(canvas.x_axis), _tick_values(canvas.y_axis)
    assert list(canvas.x_axis.tick_labels) != before[0] and list(canvas.y_axis.tick_labels) != before[1]
    r = canvas.view.camera.rect  # the range asked for and a little margin
    assert 149.7 < r.left <= 150 and 150.5 <= r.right < 150.8 and -3.2 < r.bottom <= -3 and -2.99 <= r.top < -2.8
    assert 3 <= len(x_after) and x_after.min() >= r.left and x_after.max() <= r.right
    assert 3 <= len(y_after) and y_after.min() >= r.bottom and y_after.max() <= r.top
    assert all(len(t) <= 7 for t in canvas.y_axis.tick_labels)  # "-2.998": the step's decimals, no more
    after = np.asarray(canvas.x_axis.lines.pos)
    assert after.shape != marks.shape or not np.allclose(after, marks)  # the tick marks moved too
    # the labels follow the chosen columns
    canvas.set_labels("UMAP_1", "UMAP_0")
    assert (canvas.x_axis.label, canvas.y_axis.label) == ("UMAP_1", "UMAP_0")
    # a resize keeps the tick labels inside the (new) axis length
    canvas.native.resize(800, 600)
    qtbot.waitUntil(lambda: canvas.x_axis.size[0] > 560 and _follows_the_view(canvas), timeout=60_000)
    xs = np.asarray(canvas.x_axis.tick_text.pos)[:, 0]
    assert xs.max() <= canvas.x_axis.size[0] + 1 and len(xs) >= 3


def test_tick_helpers_give_vispys_ticks_with_clean_labels():
    """The major ticks are vispy's MaxNLocator's (inside the range, at most max_ticks); labels carry no float
    noise, no "-0", exponent notation for large and small numbers."""
    from vispy.visuals.axis import MaxNLocator

    rng = np.random.default_rng(0)
    for _ in range(500):
        span = float(rng.uniform(1.0, 10.0)) * 10.0 ** int(rng.integers(-6, 8))
        lo = float(rng.uniform(-1e3, 1e3)) * span  # offsets up to 10³ spans (an axis zoomed into its data)
        hi = lo + span
        n = int(rng.integers(2, 12))
        major, minor, step = plotting.ticks(hi, lo, n)  # either order
        for nbins in range(n - 1, n + 3):  # vispy's choice; more intervals only for two ticks inside
            theirs = np.asarray(MaxNLocator(nbins=nbins, steps=list(plotting.NICE_STEPS)).tick_values(lo, hi))
            theirs = theirs[(theirs >= lo - step * 1e-9) & (theirs <= hi + step * 1e-9)]
            if len(theirs) >= 2:
                break
        np.testing.assert_allclose(major, theirs, rtol=1e-9, atol=step * 1e-9)
        assert 2 <= len(major) and (len(major) <= n or nbins > n - 1)
        assert not np.isin(np.round(minor / step, 6), np.round(major / step, 6)).any()
    major, minor, step = plotting.ticks(0.0, 1.0, 5)
    assert step == 0.25 and plotting.tick_labels(major, step) == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert len(minor) and not np.isin(np.round(minor, 9), np.round(major, 9)).any()
    major, _, step = plotting.ticks(140.0, 150.0, 8)
    assert plotting.tick_labels(major, step) == ["140", "142", "144", "146", "148", "150"]
    major, _, step = plotting.ticks(-0.31, 0.3, 7)
    assert plotting.tick_labels(major, step) == ["-0.2", "0.0", "0.2"]  # no "-0.0"
    major, _, step = plotting.ticks(-0.1, 0.25, 8)
    assert plotting.tick_labels(major, step)[:3] == ["-0.10", "-0.05", "0.00"]  # no "-0.00"
    major, _, step = plotting.ticks(3e7, -1e7, 5)  # reversed range; large numbers in exponent notation
    assert plotting.tick_labels(major, step) == ["-1e+07", "0", "1e+07", "2e+07", "3e+07"]
    major, _, step = plotting.ticks(1e-5, 3e-5, 4)
    assert [float(t) for t in plotting.tick_labels(major, step)] == pytest.approx([1e-5, 2e-5, 3e-5])
    assert plotting.ticks(5.0, 5.0, 4)[0].size == 0 and plotting.ticks(0.0, float("nan"), 4)[0].size == 0


def test_the_first_cells_paint_compiles_no_text_shader(canvas, qtbot, monkeypatch):
    """The staged reveal draws every text of the plot (a blank one until it has words: axis titles, the key's
    title, its colour-bar ticks and legend), so the paints that first show cells with titles, a colour bar and a
    legend compile no text shader: each program is ≈ 40 ms under software OpenGL, and four of them made the first
    paint of a prediction's cells the longest GUI-thread block of the walk-through (issue 23, item 2)."""
    qtbot.waitUntil(lambda: canvas.ready, timeout=60_000)
    parser = canvas.canvas.context.shared.parser  # what turns vispy's GL commands into GL calls
    compiled = []  # the text shaders compiled (the code of a Text's fragment shader samples its font atlas)

    def parse(commands, _parse=parser.parse):
        compiled.extend(c for c in commands if c[0] == "DATA" and isinstance(c[-1], str) and "u_font_atlas" in c[-1])
        return _parse(commands)

    monkeypatch.setattr(parser, "parse", parse)
    n = 600
    score = pd.Series(np.linspace(-2.0, 6.0, n), name="score")
    canvas.set_points(_cloud(n), cellmodel.column_colors(score))
    canvas.set_labels("preview_0", "preview_1")
    canvas.set_colors(cellmodel.column_colors(score), plotting.color_key(score, "magma"))
    canvas.canvas.render()
    cats = pd.Series(pd.Categorical(np.repeat(["mitosis", "interphase", "death"], n // 3)), name="annotation")
    canvas.set_colors(cellmodel.column_colors(cats), plotting.color_key(cats))
    canvas.canvas.render()
    assert canvas.key.texts()[0] == "annotation" and canvas.x_axis.label == "preview_0"
    assert len(compiled) == 0


def test_legend_for_categories_and_colour_bar_for_continuous(canvas, qtbot):
    n = 600
    cats = pd.Series(pd.Categorical(np.repeat(["mitosis", "interphase", "death"], n // 3)), name="annotation")
    canvas.set_points(_cloud(n), cellmodel.column_colors(cats))
    canvas.set_colors(cellmodel.column_colors(cats), plotting.color_key(cats))
    assert canvas.key.kind == "categorical"
    texts = canvas.key.texts()
    assert texts[0] == "annotation" and set(texts[1:]) == {"death", "interphase", "mitosis"}
    assert canvas.key.swatches.visible and not canvas.key.bar.visible
    # the swatch colours are the colours the points got, category by category
    colors = cellmodel.column_colors(cats)
    order = list(cats.cat.categories)
    swatch = canvas.key.key["colors"]
    for i, name in enumerate(order):
        np.testing.assert_allclose(swatch[i], colors[np.flatnonzero(cats == name)[0]], atol=1e-6)
    # a continuous column: a colour bar labelled with the mapped range
    score = pd.Series(np.linspace(-2.0, 6.0, n), name="score")
    canvas.set_colors(cellmodel.column_colors(score), plotting.color_key(score, "magma"))
    lo, hi = np.percentile(score, [1, 99])
    assert canvas.key.kind == "continuous" and canvas.key.bar.visible and not canvas.key.swatches.visible
    assert canvas.key.texts() == ["score", f"{hi:.3g}", f"{(lo + hi) / 2:.3g}", f"{lo:.3g}"]
    np.testing.assert_allclose(canvas.key.key["lut"], cellmodel.colormap_lut("magma"))


def test_colour_key_truncates_many_categories():
    s = pd.Series(np.arange(30), name="track_id")
    key = plotting.color_key(s, max_categories=12)
    assert key["kind"] == "categorical" and len(key["labels"]) == 12 and key["more"] == 18
    np.testing.assert_allclose(key["colors"][:, :3], cellmodel.palette()[:12])  # 12 different colours


def test_hover_reads_out_the_cell_under_the_mouse(canvas, qtbot):
    table = _table(3000)
    table["cluster"] = pd.Categorical(np.arange(len(table)) % 4)
    xy = np.column_stack([table["UMAP_0"], table["UMAP_1"]]).astype(np.float32)
    canvas.set_points(xy, cellmodel.column_colors(table["score"]))
    canvas.describe = lambda i: plotting.describe_row(table, i, "score")
    _settled(qtbot, canvas)
    row = 1234
    cellmodel.assign_class(table, [row], "mitosis")
    pos = canvas.to_canvas(xy[row])
    hovered = []
    canvas.point_hovered.connect(hovered.append)
    canvas.canvas.events.mouse_move(pos=pos, button=None, buttons=[], modifiers=())
    qtbot.waitUntil(lambda: len(hovered) > 0, timeout=60_000)  # throttled: delivered by the timer
    expected = cellmodel.nearest_point(xy, xy[row], 8.0, canvas.pixel_size())
    assert hovered == [expected]
    r = table.iloc[expected]
    text = canvas.hover_label.text
    assert f"FOV {r['fov_name']}" in text and f"track {r['track_id']}" in text and f"t {r['t']}" in text
    assert f"score {r['score']:.4g}" in text and f"cluster {r['cluster']}" in text
    if expected == row:
        assert "class mitosis" in text
    # empty space: no read-out
    canvas.hover(xy.max(axis=0) + 1000)
    assert canvas.hovered == -1 and canvas.hover_label.text == ""


def test_point_grid_matches_brute_force():
    rng = np.random.default_rng(3)
    xy = rng.normal(size=(20000, 2)) * [5, 0.1]
    xy[::97] = np.nan
    grid = plotting.PointGrid(xy, cells=64)
    for target in rng.normal(size=(200, 2)) * [5, 0.1]:
        for radius, scale in ((8.0, (0.05, 0.001)), (1.0, (0.01, 0.0001)), (50.0, (1.0, 0.02))):
            assert grid.nearest(target, radius, scale) == cellmodel.nearest_point(xy, target, radius, scale)


def test_selection_style_is_no_category_or_colormap_colour(canvas, qtbot):
    from napari_dynaclr._napari.widgets import scatter

    palette = np.vstack([cellmodel.palette(), cellmodel.colormap_lut("viridis")[:, :3]])
    for c in (scatter.SELECTED_INNER, scatter.SELECTED_OUTER):
        assert np.linalg.norm(palette - np.asarray(c[:3]), axis=1).min() > 0.25
    xy = _cloud(500)
    canvas.set_points(xy, cellmodel.column_colors(pd.Series(np.arange(500) % 10, name="cluster")))
    canvas.show_selected([3, 7, 11])
    inner, outer = canvas.shown_markers("sel_inner"), canvas.shown_markers("sel_outer")
    assert canvas.sel_inner.visible and canvas.sel_outer.visible
    np.testing.assert_array_equal(inner["rows"], [3, 7, 11])
    np.testing.assert_allclose(inner["xy"], xy[[3, 7, 11]])
    assert np.allclose(inner["edge"], scatter.SELECTED_INNER)
    assert np.allclose(outer["edge"], scatter.SELECTED_OUTER) and np.allclose(np.asarray(outer["face"])[..., 3], 0)
    assert outer["size"] > inner["size"]  # the black ring lies outside the white one
    canvas.show_selected([])
    assert canvas.shown_markers("sel_inner") is None and not canvas.sel_inner.visible


def test_density_mode_switches_on_above_the_threshold_and_counts(canvas, qtbot):
    from napari_dynaclr._napari.widgets import scatter

    assert scatter.DENSITY_THRESHOLD == 100_000
    small = _cloud(scatter.DENSITY_THRESHOLD)
    canvas.set_points(small, np.ones((len(small), 4), np.float32))
    assert not canvas.density_active and canvas.base.visible and not canvas.raster.visible
    xy = _cloud(scatter.DENSITY_THRESHOLD + 1, seed=1)
    xy[:10] = np.nan  # not plotted
    xy = np.vstack([xy, _cloud(10, seed=2)])
    canvas.set_points(xy, np.ones((len(xy), 4), np.float32))
    assert canvas.density_active and canvas.raster.visible and not canvas.base.visible
    (x0, x1), (y0, y1), shape = canvas.raster_geometry
    finite = np.isfinite(xy).all(axis=1)
    ref, _, _ = np.histogram2d(xy[finite, 1], xy[finite, 0], bins=shape, range=[[y0, y1], [x0, x1]])
    counts = canvas.density_counts()
    assert counts.shape == shape and counts.sum() == finite.sum()
    assert np.abs(counts - ref).sum() <= 0.001 * finite.sum()  # bin-edge rounding only
    alpha = canvas.raster_image[..., 3]
    assert ((alpha > 0) == (counts > 0)).all()
    # log scale: opacity increases with the count, and the densest bin is opaque
    a, c = alpha[counts > 0], counts[counts > 0]
    assert alpha.max() == pytest.approx(1.0) and np.all(np.diff(a[np.argsort(c, kind="stable")]) >= -1e-6)
    lo_c, hi_c = c.min(), c.max()
    a_lo = a[c == lo_c][0]
    assert a_lo == pytest.approx(0.2 + 0.8 * np.log1p(lo_c) / np.log1p(hi_c), rel=1e-5)
    # zooming in recomputes the raster over the visible range (debounced)
    canvas.view.camera.set_range(x=(140, 160), y=(-4, -2), margin=0)
    r = canvas.view.camera.rect
    assert 139 < r.left < 140 and 160 < r.right < 161
    qtbot.waitUntil(lambda: canvas.raster_geometry[0] == pytest.approx((r.left, r.right)), timeout=60_000)
    (x0, x1), (y0, y1), _ = canvas.raster_geometry
    inside = finite & (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
    assert canvas.density_counts().sum() == inside.sum()
    # forced off / on
    canvas.set_density("off")
    assert not canvas.density_active and canvas.base.visible and not canvas.raster.visible
    canvas.set_density("on")
    canvas.set_points(small[:50], np.ones((50, 4), np.float32))
    assert canvas.density_active and canvas.density_counts().sum() == 50


def test_density_mode_colours_bins_by_their_cells(canvas, qtbot):
    n = 120_000
    xy = np.zeros((n, 2), np.float32)
    xy[: n // 2, 0] = np.random.default_rng(0).uniform(0, 1, n // 2)
    xy[n // 2:, 0] = np.random.default_rng(1).uniform(9, 10, n - n // 2)
    xy[:, 1] = np.random.default_rng(2).uniform(0, 1, n)
    colors = np.zeros((n, 4), np.float32)
    colors[: n // 2] = (1, 0, 0, 1)
    colors[n // 2:] = (0, 0, 1, 1)
    canvas.set_points(xy, colors)
    img, counts = canvas.raster_image, canvas.density_counts()
    (x0, x1), _, shape = canvas.raster_geometry
    col_x = x0 + (np.arange(shape[1]) + 0.5) * (x1 - x0) / shape[1]
    left, right = (counts > 0) & (col_x < 5)[None, :], (counts > 0) & (col_x > 5)[None, :]
    assert left.any() and right.any()
    assert np.allclose(img[left, :3], (1, 0, 0)) and np.allclose(img[right, :3], (0, 0, 1))
    canvas.set_colors(np.tile(np.float32([0, 1, 0, 1]), (n, 1)))  # recolour: the raster follows
    assert np.allclose(canvas.raster_image[counts > 0, :3], (0, 1, 0))


def test_selection_drawn_on_top_in_density_mode(canvas, qtbot):
    from napari_dynaclr._napari.widgets import scatter

    xy = _cloud(150_000)
    canvas.set_points(xy, np.ones((len(xy), 4), np.float32))
    assert canvas.density_active
    few = np.arange(0, 150_000, 5000)
    canvas.show_selected(few)
    assert canvas.sel_inner.visible and canvas.sel_outer.visible and not canvas.sel_raster.visible
    assert min(canvas.sel_inner.order, canvas.sel_outer.order) > canvas.raster.order
    np.testing.assert_allclose(canvas.shown_markers("sel_inner")["xy"], xy[few])
    many = np.flatnonzero(xy[:, 0] > 150)  # ~75 000 cells: more than the marker cap
    assert len(many) > scatter.SELECTION_MARKER_CAP
    canvas.show_selected(many)
    assert canvas.sel_raster.visible and not canvas.sel_inner.visible and canvas.sel_raster.order > canvas.raster.order
    x_range, y_range, shape = canvas.raster_geometry
    sel_counts = plotting.density_counts(plotting.density_bins(xy, x_range, y_range, shape), shape, many)
    img = canvas.selection_image
    marked = img[..., 3] > 0
    assert ((sel_counts > 0) <= marked).all()  # every bin holding a selected cell is marked
    white = np.all(img == (1, 1, 1, 1), axis=-1)
    black = np.all(img == (0, 0, 0, 1), axis=-1)
    assert white.any() and black.any() and not (black & (sel_counts > 0)).any()
    (x0, x1), _, shape = canvas.raster_geometry
    col_x = x0 + (np.arange(shape[1]) + 0.5) * (x1 - x0) / shape[1]
    assert not marked[:, col_x < 148].any()  # nothing marked left of the selected half (one bin of slack)


def _drag(canvas, a, b, qtbot):
    ev = canvas.canvas.events
    pa, pb = canvas.to_canvas(a), canvas.to_canvas(b)
    ev.mouse_press(pos=pa, button=1, buttons=[1], modifiers=())
    for f in np.linspace(0, 1, 6)[1:]:
        ev.mouse_move(pos=pa + f * (pb - pa), button=1, buttons=[1], modifiers=(), press_event=None)
    ev.mouse_release(pos=pb, button=1, buttons=[], modifiers=())


@pytest.mark.parametrize("density", ["on", "off"])
def test_box_and_lasso_select_the_right_rows_in_both_modes(canvas, qtbot, density):
    xy = _cloud(20_000)
    canvas.set_density(density)
    canvas.set_points(xy, np.ones((len(xy), 4), np.float32))
    assert canvas.density_active == (density == "on")
    polys = []
    canvas.lasso_finished.connect(polys.append)
    canvas.set_mode("box")
    a, b = np.array([140.0, -3.5]), np.array([165.0, -1.0])
    _drag(canvas, a, b, qtbot)
    assert len(polys) == 1
    rows = np.flatnonzero(cellmodel.points_in_polygon(xy, polys[0]))
    expected = np.flatnonzero(cellmodel.points_in_box(xy, a, b))
    # the mouse path maps screen pixels back to data: equal up to points within a pixel of the edge
    px = np.array(canvas.pixel_size())
    near_edge = np.flatnonzero(cellmodel.points_in_box(xy, a - px, b + px)
                               & ~cellmodel.points_in_box(xy, a + px, b - px))
    assert set(rows) ^ set(expected) <= set(near_edge) and len(rows) > 1000
    canvas.set_mode("lasso")
    _drag(canvas, a, b, qtbot)  # a lasso along a straight line: a degenerate polygon selects ~nothing
    assert len(polys) == 2 and cellmodel.points_in_polygon(xy, polys[1]).sum() < 50


def test_embedding_view_wires_labels_key_hover_and_density(make_napari_viewer, qtbot):
    from napari_dynaclr._napari.session import get_session
    from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView

    viewer = make_napari_viewer(show=True)
    view = EmbeddingView(viewer)
    viewer.window.add_dock_widget(view, name="Embedding view")
    s = get_session(viewer)
    table = _table(2000)
    table["cluster"] = pd.Categorical(np.arange(len(table)) % 3)
    s.set_table(table)
    sc = view.scatter
    assert (sc.x_axis.label, sc.y_axis.label) == ("UMAP_0", "UMAP_1")
    assert sc.key.kind == "continuous" and sc.key.texts()[0] == s.color_column == "t"
    view.color_by("cluster")
    assert sc.key.kind == "categorical" and sc.key.texts() == ["cluster", "0", "1", "2"]
    view.set_axes("UMAP_1", "UMAP_0")
    assert (sc.x_axis.label, sc.y_axis.label) == ("UMAP_1", "UMAP_0")
    row = 77
    sc.hover(view.xy()[row])
    assert sc.hovered >= 0 and sc.hover_label.text == plotting.describe_row(s.table, sc.hovered, "cluster")
    assert "cluster" in sc.hover_label.text and "FOV" in sc.hover_label.text
    assert view.density.value == "auto" and not sc.density_active
    view.density.value = "on"
    assert sc.density_active and sc.density_counts().sum() == len(table)
    rows = view.select_box((-1e9, -1e9), (1e9, 1e9))  # the dock still selects every row in density mode
    assert len(rows) == len(table) and sc.sel_inner.visible and len(sc.selected_rows()) == len(table)


def test_finite_rows_and_range_match_the_2d_reductions():
    rng = np.random.default_rng(5)
    xy = rng.normal(size=(1000, 2)).astype(np.float32)
    xy[3, 0], xy[7, 1], xy[9] = np.nan, np.inf, -np.inf
    finite = np.isfinite(xy).all(axis=1)
    np.testing.assert_array_equal(plotting.finite_rows(xy), finite)
    lo, hi = plotting.finite_range(xy)
    np.testing.assert_array_equal(lo, xy[finite].min(axis=0))
    np.testing.assert_array_equal(hi, xy[finite].max(axis=0))
    assert plotting.finite_range(np.full((4, 2), np.nan)) is None and plotting.finite_range(np.empty((0, 2))) is None


def test_large_selection_raster_in_markers_mode_follows_the_camera(canvas, qtbot):
    from napari_dynaclr._napari.widgets import scatter

    xy = _cloud(80_000)
    canvas.set_points(xy, np.ones((len(xy), 4), np.float32))
    assert not canvas.density_active
    many = np.flatnonzero(xy[:, 1] > -3.5)  # ~55 000 cells: above the marker cap
    assert len(many) > scatter.SELECTION_MARKER_CAP
    canvas.show_selected(many)
    assert canvas.sel_raster.visible and not canvas.sel_inner.visible
    before = canvas.selection_image.copy()
    canvas.view.camera.set_range(x=(100, 120), y=(-4, -3), margin=0)  # only the lower, unselected edge
    qtbot.waitUntil(lambda: not np.array_equal(canvas.selection_image, before), timeout=60_000)
    rows_y = canvas.selection_image[..., 3].any(axis=1)  # marked raster rows (bottom → top)
    r = canvas.view.camera.rect
    ys = r.bottom + (np.arange(len(rows_y)) + 0.5) * (r.top - r.bottom) / len(rows_y)
    assert rows_y.any() and not rows_y[ys < -3.5 - 0.05].any()  # re-binned for the zoomed range


def test_density_helpers_match_a_reference():
    """Bins and the raster against a per-point reference: NaN and out-of-range points are outside, the
    upper edges are exclusive, and each bin's colour is the mean of its points'."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(-1.5, 11.5, size=(5000, 2)).astype(np.float32)
    xy[::97] = np.nan
    xy[1::89, 0] = np.inf
    xy[:3] = [[0.0, 0.0], [10.0, 5.0], [5.0, 10.0]]  # the lower edge is inside, the upper edges are not
    colors = rng.uniform(size=(len(xy), 4)).astype(np.float32)
    shape = (7, 9)
    bins = plotting.density_bins(xy, (0.0, 10.0), (0.0, 10.0), shape)
    ref = np.full(len(xy), -1)
    for i, (x, y) in enumerate(xy.astype(np.float64)):
        if 0 <= x < 10 and 0 <= y < 10:
            ref[i] = int(y * shape[0] / 10) * shape[1] + int(x * shape[1] / 10)
    np.testing.assert_array_equal(bins, ref)
    assert bins[0] == 0 and bins[1] == -1 and bins[2] == -1
    img = plotting.density_image(bins, shape, colors)
    for k in np.unique(ref[ref >= 0]):
        np.testing.assert_allclose(img.reshape(-1, 4)[k, :3], colors[ref == k, :3].mean(axis=0), rtol=1e-5)
    counts = np.bincount(ref[ref >= 0], minlength=shape[0] * shape[1])
    assert np.all((img.reshape(-1, 4)[:, 3] > 0) == (counts > 0))
    np.testing.assert_array_equal(plotting.density_counts(bins, shape).ravel(), counts)
