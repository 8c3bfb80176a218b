"""``_forms.after_first_paint``: what the DynaCLR dock starts after its first paint (its import thread: beside the
paint, the thread made it 100–400 ms long, Qt's calls into Python waiting for the GIL). The dock's own use is
checked in napari's process by ``tests/test_napari_guest.py`` (pandas not imported at the dock's first paint);
the Embedding view's and the Verify panel's, each opened alone, in a napari process here."""

from __future__ import annotations

import subprocess
import sys

import pytest
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget

from napari_dynaclr._napari.widgets._forms import after_first_paint


class Paints(QObject):
    """Counts *widget*'s paint events."""

    def __init__(self, widget):
        super().__init__(widget)
        self.count = 0
        widget.installEventFilter(self)

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Paint:
            self.count += 1
        return False


def test_a_shown_widget_runs_it_once_after_its_first_paint(qtbot):
    widget = QWidget()
    qtbot.addWidget(widget)
    widget.resize(200, 100)
    paints = Paints(widget)
    calls = []
    after_first_paint(widget, lambda: calls.append(paints.count), fallback_ms=60_000)
    widget.show()
    qtbot.waitUntil(lambda: bool(calls))
    assert calls[0] >= 1  # (painted before)
    seen = paints.count
    widget.update()
    qtbot.waitUntil(lambda: paints.count > seen)
    assert len(calls) == 1


def test_a_widget_never_shown_runs_it_in_the_next_turn(qtbot):
    widget = QWidget()
    qtbot.addWidget(widget)
    paints = Paints(widget)
    calls = []
    after_first_paint(widget, lambda: calls.append(paints.count), fallback_ms=60_000)
    assert calls == []  # (not at once: in the next event-loop turn)
    qtbot.waitUntil(lambda: bool(calls))
    assert calls == [0] and not widget.isVisible()


def test_a_data_package_that_fails_to_import_is_named_and_the_pages_are_made(make_napari_viewer, qtbot,
                                                                              monkeypatch):
    """The dock's thread imports the data packages first: when one fails, the dock says which, and its pages are
    still made (each fails again, by name, where it uses the package) instead of waiting for the thread forever."""
    import threading

    from napari_dynaclr._napari import workers
    from napari_dynaclr._napari.widgets import _jobs

    seen = []
    monkeypatch.setattr(_jobs, "show_error", seen.append)
    monkeypatch.setattr(workers, "DATA_PACKAGES", (*workers.DATA_PACKAGES, "no_such_package_dynaclr"))
    monkeypatch.setattr(workers, "_DOCK_IMPORTED", threading.Event())  # (as in a napari that has not tried yet)
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    qtbot.waitUntil(lambda: bool(seen), timeout=60_000)
    assert "no_such_package_dynaclr" in seen[0]
    qtbot.waitUntil(lambda: main.tabs.pending == 0, timeout=60_000)


DOCK_ALONE = r"""
import sys
import napari
from qtpy.QtCore import QEventLoop, QTimer
from napari_dynaclr._napari import workers


def wait_until(done):
    # napari's event loop runs until done() holds, checked between its turns (as qtbot.waitUntil does); the test's
    # subprocess timeout bounds it
    loop, check = QEventLoop(), QTimer()
    check.setInterval(10)
    check.timeout.connect(lambda: done() and loop.quit())
    check.start()
    if not done():
        loop.exec()
    check.stop()


viewer = napari.Viewer(show=False)
_, dock = viewer.window.add_plugin_dock_widget("napari-dynaclr", sys.argv[1])
heavy = ("pandas", "pyarrow", "matplotlib")
print("opening:", [m for m in heavy if m in sys.modules])
wait_until(workers.dock_packages_imported)  # (the dock's thread imports them)
print("then:", [m for m in heavy if m in sys.modules])
if sys.argv[1].startswith("Verify"):
    # the histograms' canvas, made in the turn after the thread (no wait at the first verify)
    wait_until(lambda: dock.plot_slot.layout().count() > 0)
    print("histograms:", dock.plot_slot.layout().count())
viewer.close()
"""


@pytest.mark.parametrize("dock", ["Embedding view", "Verify against reference"])
def test_a_plot_dock_opened_alone_imports_pandas_and_matplotlib_in_its_thread(dock, tmp_path):
    """Plugins > Embedding view or Verify against reference, in a napari that has not imported pandas: the dock
    opens without pandas, pyarrow or matplotlib (imported on napari's GUI thread as it opened: 0.5 and 1.0 s, one
    block each), and its thread imports them after."""
    script = tmp_path / "dock_alone.py"
    script.write_text(DOCK_ALONE)
    out = subprocess.run([sys.executable, str(script), dock], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "opening: []" in out.stdout, out.stdout
    assert "then: ['pandas', 'pyarrow', 'matplotlib']" in out.stdout, out.stdout
    if dock.startswith("Verify"):
        assert "histograms: 1" in out.stdout, out.stdout
