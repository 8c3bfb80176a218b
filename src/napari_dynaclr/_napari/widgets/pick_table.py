"""A read-only table of results whose rows lead somewhere: clicking a row calls back with its index."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem


def pick_table(headers: Sequence[str], on_pick: Callable[[int], object], min_height: int = 140) -> QTableWidget:
    """A table with *headers*, one whole row selectable at a time; *on_pick(row)* when the user picks one."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setMinimumHeight(min_height)

    def picked() -> None:
        rows = table.selectionModel().selectedRows()
        if rows:
            on_pick(rows[0].row())

    table.itemSelectionChanged.connect(picked)
    return table


def fill_rows(table: QTableWidget, rows: Sequence[Sequence[str]]) -> None:
    """Show *rows* (texts) in *table*, replacing what it showed, without calling its pick callback."""
    table.blockSignals(True)
    table.clearSelection()
    table.setRowCount(len(rows))
    for i, texts in enumerate(rows):
        for j, text in enumerate(texts):
            table.setItem(i, j, QTableWidgetItem(text))
    table.blockSignals(False)
    table.resizeColumnsToContents()
