"""The DynaCLR dock at a laptop's size (1366×768), a monitor's (1920×1080) and squeezed to 320 px: every
button shows its whole text, nothing scrolls sideways, long messages wrap instead of widening the dock. On a
1366×768 laptop it fits in every state (after a run, a failed verify, a classifier, with a second dock below
it): its pages scroll instead of making the window taller than the screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from qtpy.QtWidgets import QAbstractButton, QScrollArea, QWidget

from napari_fixtures import load_yml, wait_worker

PLUGIN = "napari-dynaclr"
LONG = ("✓ ContrastiveEncoder convnext_tiny, in_stack_depth 15, stem_kernel_size (5, 4, 4), embedding_dim 768, "
        "projection_dim 32; all 215 keys match /a/very/long/path/to/the/checkpoint/folder/epoch=123-step=45678.ckpt")


def _problems(main) -> list[str]:
    """What a user could not read or reach in the dock's current tab."""
    found = []
    for button in main.findChildren(QAbstractButton):
        if not button.isVisible() or not button.text():
            continue
        left = button.mapTo(main, button.rect().topLeft()).x()
        if button.width() < button.sizeHint().width():
            found.append(f"{button.text()!r} is {button.width()} px wide, its text needs {button.sizeHint().width()}")
        if left < 0 or left + button.width() > main.width():
            found.append(f"{button.text()!r} reaches past the dock ({left}+{button.width()} > {main.width()})")
    for area in main.findChildren(QScrollArea):
        if not area.isVisible():
            continue
        if area.horizontalScrollBar().isVisible():
            found.append(f"{type(area.widget()).__name__} scrolls sideways")
        need = area.widget().minimumSizeHint().width()
        if need > area.viewport().width():
            found.append(f"{type(area.widget()).__name__} needs {need} px, has {area.viewport().width()}")
    return found


def _settle(qtbot, main, ready=lambda: True):
    """Wait until *ready()* holds and the dock is laid out: Qt lays widgets out in posted events, so the layout is
    done when handling the pending events three times over moves and resizes nothing in the dock."""
    seen = []

    def settled():
        if not ready():
            seen.clear()
            return False
        seen.append([(w.isVisible(), w.geometry().getRect()) for w in [main, *main.findChildren(QWidget)]])
        del seen[:-3]
        return len(seen) == 3 and seen[0] == seen[1] == seen[2]

    qtbot.waitUntil(settled, timeout=60_000)


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_every_tab_is_readable_at_screen_size(make_napari_viewer, qtbot, size):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*size)
    dock, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    main.ckpt_info.value = LONG  # a checked checkpoint's one-line summary must not widen the form
    main.advanced.expand(animate=False)
    _settle(qtbot, main, lambda: tuple(viewer.window.geometry()[2:]) == size)
    assert [main.tabs.tabText(i) for i in range(main.tabs.count())] == [
        "Predict", "Explore", "Cells", "Verify", "Conditions", "Time"]
    assert main.width() <= size[0] // 2  # a dock, not half the screen
    for i in range(main.tabs.count()):
        main.tabs.setCurrentIndex(i)
        _settle(qtbot, main)
        assert _problems(main) == [], main.tabs.tabText(i)
    assert main.ckpt_info.native.toolTip() == LONG  # the whole text, wherever it wraps


def test_every_tab_is_readable_at_320_px(make_napari_viewer, qtbot):
    """320 px and a vertical scroll bar: on a laptop's screen the pages scroll (see the tests below)."""
    from qtpy.QtWidgets import QStyle

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1366, 768)
    dock, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    main.ckpt_info.value = LONG
    main.plate_info.value = "✗ " + LONG
    main.advanced.expand(animate=False)
    narrow = 320 + main.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
    assert main.minimumSizeHint().width() <= narrow
    dock.setMaximumWidth(narrow)
    _settle(qtbot, main, lambda: dock.width() <= narrow)
    assert main.width() <= narrow
    for i in range(main.tabs.count()):
        main.tabs.setCurrentIndex(i)
        _settle(qtbot, main)
        assert _problems(main) == [], main.tabs.tabText(i)


def test_advanced_settings_start_collapsed_and_results_go_to_explore(make_napari_viewer, qtbot, demo_store):  # noqa: F811
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    _settle(qtbot, main)
    assert main.tabs.currentWidget() is main.predict_scroll
    assert not main.advanced.isExpanded() and main.batch_size.native.visibleRegion().isEmpty()
    assert main.run_btn.native.isVisible() and main.ckpt.native.isVisible()
    wait_worker(qtbot, main.open_embeddings(demo_store), 60_000)  # an opened store (or a run) shows its cells
    assert main.tabs.currentWidget() is main.explore
    main.tabs.setCurrentIndex(0)
    _settle(qtbot, main)
    assert main.run_btn.native.isVisible() and main.cancel_btn.native.isVisible()  # below the tabs


# ---------------------------------------------------------------- a 1366×768 laptop, whatever has run

#: the DynaCLR dock's minimum height, whatever has run: it leaves room on a 768 px screen for napari's menu and
#: status bars and a second plugin's dock below it
MAX_DOCK_HEIGHT = 500
LAPTOP = (1366, 768)
DATA = Path(__file__).parent / "data"


def _laptop(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*LAPTOP)
    dock, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    _settle(qtbot, main, lambda: tuple(viewer.window.geometry()[2:]) == LAPTOP)
    return viewer, dock, main


def _overflow(viewer, dock, main, qtbot) -> list[str]:
    """What does not fit a 1366×768 screen in each tab of the dock (empty: everything fits)."""
    found = []
    window = main.window()  # napari's main window (Qt's public parent chain)
    for i in range(main.tabs.count()):
        main.tabs.setCurrentIndex(i)
        _settle(qtbot, main)
        tab = main.tabs.tabText(i)
        need = dock.minimumSizeHint().height()
        if need > MAX_DOCK_HEIGHT:
            found.append(f"{tab}: the dock needs {need} px")
        height = viewer.window.geometry()[3]
        if height > LAPTOP[1]:
            found.append(f"{tab}: the window is {height} px tall")
        for button in (main.run_btn.native, main.cancel_btn.native):
            bottom = button.mapTo(window, button.rect().bottomLeft()).y()
            if not button.isVisible() or bottom > min(window.height(), LAPTOP[1]):
                found.append(f"{tab}: {button.text()} is off the screen (bottom at {bottom} px)")
    return found


@pytest.fixture(scope="module")
def failing_reference(tmp_path_factory) -> Path:
    """The dev2d reference with one value moved beyond VisCy's contract: a verify against it fails."""
    import warnings

    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata = ad.read_zarr(DATA / "dev2d" / "reference.zarr")
        X = adata.X.copy()
        X[40, 100] += 0.5
        adata.X = X
        path = tmp_path_factory.mktemp("failing") / "perturbed.zarr"
        with ad.settings.override(zarr_write_format=2):
            adata.write_zarr(path)
    return path


def test_the_dock_fits_a_laptop_after_a_run_and_a_failed_verify(make_napari_viewer, qtbot, demo_inputs,  # noqa: F811
                                                                 failing_reference, tmp_path):
    viewer, dock, main = _laptop(make_napari_viewer, qtbot)
    main.advanced.expand(animate=False)
    assert _overflow(viewer, dock, main, qtbot) == []
    load_yml(qtbot, main, demo_inputs["config"])
    main.output.value = tmp_path / "run.zarr"
    main.device.value = "cpu"
    worker = main.run()
    assert worker is not None
    wait_worker(qtbot, worker, 300_000)
    assert main.last_error is None and main.last_result is not None
    assert _overflow(viewer, dock, main, qtbot) == []
    panel = main.verify
    panel.prediction_combo.setCurrentIndex(panel.prediction_combo.findData("file"))
    panel.prediction_edit.setText(str(failing_reference))
    panel.reference_edit.setText(str(DATA / "dev2d" / "reference.zarr"))
    assert panel.run() is not None
    qtbot.waitUntil(lambda: panel.state == "ready" and panel.report is not None, timeout=120_000)
    assert not panel.report.passed and panel.cells_table.rowCount() > 0
    main.tabs.setCurrentIndex(main.tabs.indexOf(panel))
    assert _overflow(viewer, dock, main, qtbot) == []


def test_the_dock_fits_a_laptop_after_a_classifier_with_a_second_dock_below(
        make_napari_viewer, qtbot, demo_store, demo_inputs):  # noqa: F811
    import numpy as np
    import pandas as pd

    viewer, dock, main = _laptop(make_napari_viewer, qtbot)
    other, _ = viewer.window.add_plugin_dock_widget(PLUGIN, "Embedding view")  # a plot dock below ours
    wait_worker(qtbot, main.open_embeddings(demo_store), 60_000)
    assert _overflow(viewer, dock, main, qtbot) == []
    s, cells = main.session, main.cells
    cells.follow_clicks.value = False
    truth = pd.read_csv(demo_inputs["truth"])
    table = s.table.merge(truth, on=["fov_name", "track_id", "t"], how="left")
    for kind, name in (("A", "round"), ("B", "elongated")):
        s.select(np.flatnonzero(table["cell_type"].to_numpy() == kind)[::2])
        main.explore.assign_selection(name)
    qtbot.waitUntil(lambda: cells.worker("classifier") is not None, timeout=120_000)
    wait_worker(qtbot, cells.worker("classifier"), 120_000)
    assert "predicted_annotation" in s.table.columns
    assert _overflow(viewer, dock, main, qtbot) == []
    assert other.isVisible() and other.height() >= 150  # the other plugin's plot is not squeezed to a strip


# ---------------------------------------------------------------- opening the dock in steps


def test_the_dock_opens_with_one_page_and_makes_the_others_in_later_turns(make_napari_viewer, qtbot):
    """Opening the dock makes the Predict page only; Explore, Cells, Verify, Conditions and Time (and the
    plotting library they import) follow in later event-loop turns, so that no turn makes them all."""
    from napari_dynaclr._napari.widgets.cells_view import CellsView
    from napari_dynaclr._napari.widgets.conditions_view import ConditionsView
    from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView
    from napari_dynaclr._napari.widgets.time_view import TimeView
    from napari_dynaclr._napari.widgets.verify_panel import VerifyWidget

    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    assert main.tabs.pending == 5  # made in no turn of their own yet
    qtbot.waitUntil(lambda: main.tabs.pending == 0, timeout=60_000)
    pages = [main.tabs.widget(i) for i in range(1, main.tabs.count())]
    assert [type(p) for p in pages] == [EmbeddingView, CellsView, VerifyWidget, ConditionsView, TimeView]
    assert [main.explore, main.cells, main.verify, main.conditions, main.time] == pages
    assert main.explore.scatter.ready  # the later pages wait for the Explore plot's staged first paint


def test_a_page_shown_or_used_before_its_turn_is_made_then(make_napari_viewer, qtbot):
    from napari_dynaclr._napari.widgets.cells_view import CellsView
    from napari_dynaclr._napari.widgets.time_view import TimeView

    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    main.tabs.setCurrentIndex(main.tabs.count() - 1)  # the Time tab, clicked at once
    assert isinstance(main.tabs.currentWidget(), TimeView) and main.tabs.pending == 4
    cells = main.cells  # used by a script
    assert isinstance(cells, CellsView) and main.tabs.pending == 3
    assert main.tabs.indexOf(cells) == 2 and main.cells is cells
    qtbot.waitUntil(lambda: main.tabs.pending == 0, timeout=60_000)
    assert main.cells is cells and main.tabs.widget(main.tabs.count() - 1) is main.time  # made once


def test_scrolling_tabs_make_pages_one_turn_each_once_allowed(qtbot):
    from qtpy.QtWidgets import QLabel

    from napari_dynaclr._napari.widgets._forms import ScrollingTabs

    tabs = ScrollingTabs()
    qtbot.addWidget(tabs)
    done, allowed, asked = [], [], []
    tabs.addTab(QLabel("first"), "first")
    for name in ("a", "b"):
        tabs.add_later(lambda name=name: done.append(name) or QLabel(name), name)
    tabs.build_later(lambda: done.append("step"), after=lambda: asked.append(1) or bool(allowed))
    qtbot.waitUntil(lambda: len(asked) >= 3)  # (turns have passed: nothing runs before *after* holds)
    assert done == [] and tabs.pending == 2
    allowed.append(True)
    qtbot.waitUntil(lambda: tabs.pending == 0)
    assert done == ["step", "a", "b"]
    assert [tabs.widget(i).text() for i in range(3)] == ["first", "a", "b"]
