"""Small pieces the docks share: forms that fit a narrow dock, wrapping status lines, file fields read as paths."""

from __future__ import annotations

import functools
from pathlib import Path

from magicgui.widgets import FileEdit, Label
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QFrame, QGroupBox, QScrollArea, QSizePolicy, QVBoxLayout, QWidget


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
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(page)
    return scroll


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
