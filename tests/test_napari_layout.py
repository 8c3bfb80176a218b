"""The DynaCLR dock at a laptop's size (1366×768), a monitor's (1920×1080) and squeezed to 320 px: every
button shows its whole text, nothing scrolls sideways, long messages wrap instead of widening the dock."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QAbstractButton, QScrollArea, QWidget

from napari_fixtures import demo_inputs, demo_store, wait_worker  # noqa: F401

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
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1366, 768)
    dock, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    main.ckpt_info.value = LONG
    main.plate_info.value = "✗ " + LONG
    main.advanced.expand(animate=False)
    assert main.minimumSizeHint().width() <= 320
    dock.setMaximumWidth(320)
    _settle(qtbot, main, lambda: dock.width() <= 320)
    assert main.width() <= 320
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
