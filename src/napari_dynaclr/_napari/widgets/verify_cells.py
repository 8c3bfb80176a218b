"""The Verify panel's table of the worst cells: sortable (by the numbers, not their text), at least
:data:`MIN_VISIBLE_ROWS` rows tall, each row keyed to its cell in the report."""

from __future__ import annotations

import math

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from napari_dynaclr._napari.widgets.verify_plots import fmt

#: How many of the worst cells the table lists.
MAX_TABLE_ROWS = 500
#: the table always shows at least this many rows without scrolling
MIN_VISIBLE_ROWS = 6
#: columns are as wide as their text in this many rows (the worst first; Qt measures every item otherwise)
WIDTH_ROWS = 100
#: numbers are right-aligned (made once: an enum ``|`` per item cost ≈ 10 % of filling 500 rows)
NUMBER_ALIGNMENT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


class NumItem(QTableWidgetItem):
    """A table cell that shows formatted text and sorts by its number."""

    def __init__(self, value: float, text: str | None = None):
        self.value = float(value) if value is not None else float("nan")
        super().__init__(text if text is not None else fmt(self.value))
        self.setTextAlignment(NUMBER_ALIGNMENT)

    def __lt__(self, other):
        a, b = self.value, getattr(other, "value", float("nan"))
        if math.isnan(a):
            return not math.isnan(b)  # NaN sorts first (lowest)
        if math.isnan(b):
            return False
        return a < b


class WorstCellsTable(QTableWidget):
    """The worst cells of a report, worst (|Δ|/tol) first; the first column's items carry the row of
    ``report.cells`` (``Qt.UserRole``)."""

    def __init__(self, parent=None):
        super().__init__(0, 0, parent)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setResizeContentsPrecision(WIDTH_ROWS)
        self.setMinimumHeight(self.height_for_rows(MIN_VISIBLE_ROWS))

    def height_for_rows(self, n: int) -> int:
        """The height that shows *n* rows, the header and a horizontal scroll bar."""
        row = self.verticalHeader().defaultSectionSize()
        bar = self.horizontalScrollBar().sizeHint().height()
        return self.horizontalHeader().sizeHint().height() + n * row + bar + 2 * self.frameWidth()

    def fill(self, report) -> None:
        judged = report.judged_arrays
        keys = report.rows.key_columns
        cols = keys + [f"{k}:max_abs" for k in judged] + [f"{judged[0]}:cosine", "tol_ratio"]
        labels = keys + [f"{k} max|Δ|" for k in judged] + [f"{judged[0]} cos", "|Δ|/tol"]
        worst = report.worst_cells(MAX_TABLE_ROWS)
        self.setSortingEnabled(False)
        self.blockSignals(True)
        self.clearContents()
        self.setColumnCount(len(cols))
        self.setHorizontalHeaderLabels(labels)
        self.setRowCount(len(worst))
        text = set(report.text_columns)  # fov_name, a Bag-of-Channels store's experiment: strings
        for i, (idx, rec) in enumerate(zip(worst.index, worst[cols].itertuples(index=False))):
            for j, (col, v) in enumerate(zip(cols, rec)):
                if col in text:
                    item = QTableWidgetItem(str(v))
                elif col in keys:
                    item = NumItem(v, str(int(v)) if float(v).is_integer() else str(v))
                elif col.endswith(":cosine"):
                    item = NumItem(v, fmt(v, ".6f"))
                else:
                    item = NumItem(v)
                if j == 0:
                    item.setData(Qt.UserRole, int(idx))
                if col == "tol_ratio" and v > 1:
                    item.setForeground(QColor("#ef5350"))
                self.setItem(i, j, item)
        self.resizeColumnsToContents()
        self.blockSignals(False)
        self.setSortingEnabled(True)
        self.sortItems(len(cols) - 1, Qt.DescendingOrder)

    def selected_report_row(self) -> int | None:
        """The ``report.cells`` row of the selected table row, or None."""
        model = self.selectionModel()
        rows = model.selectedRows() if model is not None else []
        if not rows:
            return None
        return int(self.item(rows[0].row(), 0).data(Qt.UserRole))
