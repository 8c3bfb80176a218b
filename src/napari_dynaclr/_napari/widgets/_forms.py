"""Small pieces the docks share: forms that fit a narrow dock, wrapping status lines, file fields read as paths."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import FileEdit, Label
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QFormLayout,
    QFrame,
    QGroupBox,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)


class Message(Label):
    """A status line that wraps (and never widens the dock); its whole text is its tooltip too."""

    def __init__(self, value: str = ""):
        super().__init__(value=value)
        native = self.native
        native.setWordWrap(True)
        native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    @property
    def value(self) -> str:
        return Label.value.fget(self)

    @value.setter
    def value(self, text) -> None:
        Label.value.fset(self, text)
        self.native.setToolTip(str(text))


def field_path(value) -> Path | None:
    """A file field's value as a path; None when it is empty (magicgui shows an empty one as ".")."""
    if value is None:
        return None
    s = str(value)
    return None if s in ("", ".") else Path(s)


def keep_button_text(*edits: FileEdit) -> None:
    """A file field gives up width from its text box, never from its dialog button's label."""
    for edit in edits:
        edit.choose_btn.tooltip = edit.choose_btn.text  # "Choose directory", "Select file"…
        edit.choose_btn.text = "Browse…"
        button = edit.choose_btn.native
        button.setSizePolicy(QSizePolicy.Policy.Fixed, button.sizePolicy().verticalPolicy())


def form(rows) -> QWidget:
    """A form that puts each label above its field when the dock is too narrow for both on one line."""
    box = QWidget()
    layout = QFormLayout(box)
    layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    layout.setContentsMargins(4, 4, 4, 4)
    for row in rows:
        if isinstance(row, tuple):
            layout.addRow(row[0], row[1].native)
        else:
            layout.addRow(row.native)
    return box


def section(title: str, body: QWidget) -> QGroupBox:
    """*body* under a titled frame."""
    group = QGroupBox(title)
    lay = QVBoxLayout(group)
    lay.setContentsMargins(2, 6, 2, 2)
    lay.addWidget(body)
    return group


def scrolling(page: QWidget) -> QScrollArea:
    """*page* in a scroll area that scrolls vertically only (the page always gets the dock's width)."""
    return _PageScroll(page)


class ScrollingTabs(QTabWidget):
    """Tabs whose pages scroll vertically when the dock is shorter than a page: a page's results (plots,
    tables) never make the dock taller than a laptop's screen. A page that scrolls already is added as it is.
    :meth:`widget`, :meth:`currentWidget`, :meth:`setCurrentWidget` and :meth:`indexOf` speak of the pages as
    they were added, not of the scroll areas around them.

    A page added with :meth:`add_later` is made when it is first shown or asked for (:meth:`widget`,
    :meth:`page`), or by :meth:`build_later`, one page per event-loop turn: a dock opens without making all its
    pages in one turn (the GUI thread is never blocked by all of them at once)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pending: list[QScrollArea] = []  # the scroll areas of pages still to make, in tab order
        self._steps: list[Callable[[], object]] = []  # build_later's steps still to run
        self._after: Callable[[], bool] = lambda: True
        self._later = QTimer(self)
        self._later.timeout.connect(self._build_next)
        self.currentChanged.connect(self.widget)  # a tab shown: its page is made before it is painted

    def addTab(self, page: QWidget, title: str) -> int:  # noqa: N802 (Qt's names)
        if not isinstance(page, QScrollArea):
            page = _PageScroll(page)
            page.around_a_page = True
        return super().addTab(page, title)

    def add_later(self, build: Callable[[], QWidget], title: str) -> int:
        """A tab whose page *build()* makes when it is first needed (see the class)."""
        area = _PageScroll(QWidget())
        area.around_a_page = True
        area.build = build
        self._pending.append(area)
        return super().addTab(area, title)

    def build_later(self, *first: Callable[[], object], after: Callable[[], bool] = lambda: True) -> None:
        """Once *after()* holds (checked every 20 ms: e.g. another staged job of the dock is over, so that their
        slices do not add up in one turn), run the steps *first* (e.g. imports the pages need), then make the
        pages still to make: one step or page per event-loop turn."""
        self._steps.extend(first)
        self._after = after
        self._later.start(0)

    def _build_next(self) -> None:
        if not self._after():
            self._later.setInterval(20)
            return
        self._later.setInterval(0)
        if self._steps:
            self._steps.pop(0)()
        elif self._pending:
            self._make(self._pending[0])
        else:
            self._later.stop()

    def _make(self, area: QScrollArea) -> None:
        build, area.build = area.build, None
        self._pending.remove(area)
        area.set_page(build())

    @property
    def pending(self) -> int:
        """How many pages are still to make."""
        return len(self._pending)

    def widget(self, index: int) -> QWidget | None:
        area = super().widget(index)
        if getattr(area, "build", None) is not None:
            self._make(area)
        return area.widget() if getattr(area, "around_a_page", False) else area

    def page(self, title: str) -> QWidget:
        """The page of the tab *title* (made now if it is still to make)."""
        index = next(i for i in range(self.count()) if self.tabText(i) == title)
        return self.widget(index)

    def currentWidget(self) -> QWidget | None:  # noqa: N802
        return self.widget(self.currentIndex())

    def indexOf(self, page: QWidget) -> int:  # noqa: N802
        for i in range(self.count()):  # (a page still to make is not *page*: it is left unmade)
            area = super().widget(i)
            if (area.widget() if getattr(area, "around_a_page", False) else area) is page:
                return i
        return -1

    def setCurrentWidget(self, page: QWidget) -> None:  # noqa: N802
        if (index := self.indexOf(page)) >= 0:
            self.setCurrentIndex(index)


class _PageScroll(QScrollArea):
    """A vertical scroll area around a page: as narrow as the page and its scroll bar allow (the page is never
    cut on the right), as short as a few lines of it."""

    around_a_page = False  # made by ScrollingTabs (not added as a page itself)
    build = None  # ScrollingTabs.add_later: makes the page

    def __init__(self, page: QWidget):
        super().__init__()
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.set_page(page)

    def set_page(self, page: QWidget) -> None:
        """Show *page* (the page before it, if any, is deleted)."""
        self.setWidget(page)
        page.installEventFilter(self)
        self.updateGeometry()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the page's minimum width changed (its style, its contents): so did ours
        return super().eventFilter(obj, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        hint = super().minimumSizeHint()
        page = self.widget().minimumSizeHint().width()
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self)
        return QSize(max(hint.width(), page + bar), hint.height())


def while_alive(slot):
    """A dock's slot for the session's signals: ignored once Qt has deleted the dock. The session outlives
    its docks, and a dock's Python object can outlive its Qt widget (napari closing while a run streams its
    batches: the embedding view's combo boxes were gone when the next batch arrived)."""

    @functools.wraps(slot)
    def run(self, *args):
        if alive(self):
            return slot(self, *args)
        return None

    return run


def alive(widget) -> bool:
    """False once Qt has deleted *widget* (a worker may report after its dock or the viewer closed)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def after_first_paint(widget: QWidget, fn: Callable[[], object], fallback_ms: int = 1000) -> None:
    """Call *fn* once, in the event-loop turn after *widget*'s first paint: e.g. start a thread that would compete
    with that paint for the GIL. Qt's layout and paint call into Python again and again (napari's event filter,
    widgets' size hints and paint events), and each call waits up to the interpreter's switch interval (5 ms) for
    a thread running Python: a dock's first paint beside a thread importing pandas took 100–400 ms, ≈ 25 ms
    without it. A widget that is not shown in the next turn (a viewer never shown) runs *fn* then; one that
    never paints (a zero size), *fallback_ms* later."""
    _FirstPaint(widget, fn, fallback_ms)


class _FirstPaint(QObject):
    """:func:`after_first_paint`'s watcher: a child of the widget (gone with it, and *fn* never called)."""

    def __init__(self, widget: QWidget, fn: Callable[[], object], fallback_ms: int):
        super().__init__(widget)
        self._widget, self._fn = widget, fn
        widget.installEventFilter(self)
        self._timers = []
        for ms, slot in ((0, self._unless_shown), (fallback_ms, self._fire)):
            timer = QTimer(self)
            timer.setSingleShot(True)
            timer.timeout.connect(slot)
            timer.start(ms)
            self._timers.append(timer)

    def _unless_shown(self) -> None:
        if not self._widget.isVisible():
            self._fire()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        # (getattr: at the interpreter's exit Python clears this object's attributes while Qt, tearing down a
        # widget that never ran an event loop, still delivers its events; an exception here aborts PyQt6)
        if getattr(self, "_fn", None) is not None and obj is self._widget and event.type() == QEvent.Type.Paint:
            self._timers[1].start(0)  # (the fallback, now: the turn after this paint)
        return False

    def _fire(self) -> None:
        if self._fn is None:
            return
        fn, self._fn = self._fn, None
        self._widget.removeEventFilter(self)
        for timer in self._timers:
            timer.stop()
        fn()


def in_turns(parent, steps, current: Callable[[], bool], done: Callable[[bool], object],
             failed: Callable[[Exception], object], interval_ms: int = 1) -> None:
    """Run ``next(steps)`` once per event-loop turn while *current()* holds (a single-shot timer owned by
    *parent*, not a queued call: Qt delivers posted events, paints included, before it looks at timers again, so
    the paint a step caused comes before the next step). Then *done(True)* when the steps ran out, *done(False)*
    when they went stale, or *failed(exc)* when a step raised."""
    turn = QTimer(parent)
    turn.setSingleShot(True)
    turn.setInterval(interval_ms)

    def step() -> None:
        error = None
        try:
            if current():
                next(steps)
                turn.start()
                return
            completed = False
        except StopIteration:
            completed = True
        except Exception as exc:  # noqa: BLE001 - the caller says it in place
            error = exc
        if alive(turn):
            turn.deleteLater()
        if error is not None:
            failed(error)
        else:
            done(completed)

    turn.timeout.connect(step)
    step()
