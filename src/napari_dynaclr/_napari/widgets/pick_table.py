"""A read-only table of results whose rows lead somewhere: clicking a row calls back with its index.

Qt's model/view: the rows are a list of texts behind a :class:`~qtpy.QtCore.QAbstractTableModel`, so showing
10⁴ rows (the Time tab's tracks) costs one model reset, not an item per cell built on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

#: how many rows the header looks at when it sizes the columns to their contents
SIZE_ROWS = 200


class RowsModel(QAbstractTableModel):
    """Rows of texts under *headers*, read-only."""

    def __init__(self, headers: Sequence[str], parent=None):
        super().__init__(parent)
        self._headers = list(headers)
        self._rows: list[Sequence[str]] = []

    def set_rows(self, rows: Sequence[Sequence[str]]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._headers)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        return str(self._rows[index.row()][index.column()])

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._headers[section]
        return str(section + 1)


def pick_table(headers: Sequence[str], on_pick: Callable[[int], object], min_height: int = 140) -> QTableView:
    """A table with *headers*, one whole row selectable at a time; *on_pick(row)* when the user picks one."""
    table = QTableView()
    model = RowsModel(headers, table)
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.horizontalHeader().setResizeContentsPrecision(SIZE_ROWS)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    table.setMinimumHeight(min_height)

    def picked() -> None:
        rows = table.selectionModel().selectedRows()
        if rows:
            on_pick(rows[0].row())

    table.selectionModel().selectionChanged.connect(picked)
    return table


def fill_rows(table: QTableView, rows: Sequence[Sequence[str]]) -> None:
    """Show *rows* (texts) in *table*, replacing what it showed, without calling its pick callback."""
    selection = table.selectionModel()
    selection.blockSignals(True)
    table.clearSelection()
    table.model().set_rows(rows)
    selection.blockSignals(False)
    table.resizeColumnsToContents()

