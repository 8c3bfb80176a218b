"""``_forms.after_first_paint``: what the DynaCLR dock starts after its first paint (its import thread: beside the
paint, the thread made it 100–400 ms long, Qt's calls into Python waiting for the GIL). The dock's own use is
checked in napari's process by ``tests/test_napari_guest.py`` (pandas not imported at the dock's first paint)."""

from __future__ import annotations

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
