"""The cell-table model the docks share: the table, selection (with undo), highlight, neighbours, colours, columns.

:class:`CellModel` holds the state of one viewer's cells and announces every change with a psygnal signal; it
knows nothing of napari or Qt. The napari side (:class:`~napari_dynaclr._napari.session.ExplorerSession`, the
layer binder) is a :class:`CellModel` that also mirrors it into the shown FOV's layers: it connects to these
signals before any dock does, so the layers are up to date when a dock hears of a change.

- **selection** (:meth:`~CellModel.select`, replace / add / subtract): the ``selection`` column (0/1) and
  :attr:`~CellModel.selected`; :meth:`~CellModel.undo_selection` restores the selection before the last change.
- **highlight** (:meth:`~CellModel.highlight`): one cell (the one clicked), −1 for none.
- **neighbours** (:meth:`~CellModel.set_neighbours`): the nearest cells of a clicked cell, a highlight of their
  own: they never replace the selection (the Cells tab's *Select these neighbours* does that, undoably).
- **colours** (:meth:`~CellModel.color_by`): the colour column, its colormap and the RGBA colour of every cell.
- **columns** (:meth:`~CellModel.add_columns`, :meth:`~CellModel.update_rows`): reductions, clusters,
  annotations, classifier predictions; ``columns_set`` names them, then ``columns_changed`` /
  ``rows_changed`` tell the views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from psygnal import Signal

from napari_dynaclr._napari.cellmodel.annotations import assign_class
from napari_dynaclr._napari.cellmodel.colors import column_colors
from napari_dynaclr._napari.cellmodel.frames import FrameIndex
from napari_dynaclr._napari.cellmodel.table import (
    categorical_codes,
    is_categorical,
    selection_column,
    table_fov_names,
)
from napari_dynaclr.errors import ExploreError

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

_NONE = np.empty(0, dtype=np.int64)


class CellModel:
    """The cells of one viewer and what the user did with them (see the module)."""

    table_changed = Signal()  # a new table: rebuild views
    rows_changed = Signal(int, int)  # rows [start, stop) got values (streaming)
    columns_set = Signal(list)  # these columns were added or replaced (before columns_changed / rows_changed)
    columns_changed = Signal()  # columns were added (reductions, clusters, annotations)
    colors_changed = Signal()
    selection_changed = Signal()
    highlight_changed = Signal(int)  # cell-table row, −1 for none
    neighbours_changed = Signal()

    def __init__(self):
        self.table: pd.DataFrame | None = None
        self.frames: FrameIndex | None = None
        self.color_column = "t"
        self.colormap = "viridis"
        self.colors: np.ndarray | None = None
        self.selected = _NONE
        self.highlighted = -1
        self.neighbours = _NONE  # the nearest cells of neighbours_of (not selected unless the user says so)
        self.neighbours_of = -1
        self._undo: list[np.ndarray] = []  # the selection before the last change
        self._fov_names: tuple = (None, [])  # (table, its FOV names)
        self._colors_coded: tuple = (None, None)  # (the colours color_by made, the codes they were made from)

    @property
    def n_cells(self) -> int:
        return 0 if self.table is None else len(self.table)

    def fov_names(self) -> list[str]:
        """The table's FOVs in order of appearance (remembered per table)."""
        if self.table is None:
            return []
        if self._fov_names[0] is not self.table:
            self._fov_names = (self.table, table_fov_names(self.table))
        return list(self._fov_names[1])

    def _take_table(self, table: pd.DataFrame, frames: FrameIndex | None = None) -> None:
        """Make *table* the model's (no signal: the caller announces it): its frame index, the selection its
        ``selection`` column holds, no highlight, no neighbours, nothing to undo."""
        self.table = table
        self.frames = frames if frames is not None else FrameIndex(table)
        self.selected = np.flatnonzero(np.asarray(table["selection"].cat.codes) == 1)
        self.highlighted = -1
        self.neighbours, self.neighbours_of = _NONE, -1
        self._undo = []

    def colors_for(self, column: str | None) -> tuple[str, np.ndarray]:
        """The colour column a table shows (*column* when the table has it, else ``t``) and its colours."""
        col = column if column in self.table.columns else "t"
        return col, column_colors(self.table[col], self.colormap)

    # ------------------------------------------------------------------ colour

    def color_by(self, column: str, colormap: str | None = None) -> None:
        """Colour every view by a table column (continuous → colormap, categorical → the palette)."""
        if self.table is None:
            return
        if column not in self.table.columns:
            raise ExploreError(f"no column {column!r} in the cell table")
        self.colormap = colormap or self.colormap
        self.color_column = column
        series = self.table[column]
        coded = categorical_codes(series) if is_categorical(series) else None  # (factorised once: 10⁶ ids ≈ 15 ms)
        self.colors = column_colors(series, self.colormap, codes=coded)
        self._colors_coded = (self.colors, coded)
        self.colors_changed.emit()

    def color_codes(self) -> tuple[np.ndarray, list] | None:
        """``(codes, categories)`` of the categorical column the current colours were made from by
        :meth:`color_by` (for the colour key, which then does not factorise the column again), or None (a
        continuous column, or colours set some other way since)."""
        made, coded = self._colors_coded
        return coded if made is self.colors else None

    # ------------------------------------------------------------------ selection, highlight, neighbours

    def select(self, rows, mode: str = "replace") -> np.ndarray:
        """Set the selected cells (cell-table rows); ``mode`` is replace, add or subtract. The selection before
        is kept for :meth:`undo_selection`. Returns the selected rows."""
        if mode not in ("replace", "add", "subtract"):
            raise ExploreError(f"selection mode {mode!r}: use replace, add or subtract")
        mask = np.zeros(len(self.table), dtype=bool)
        if mode in ("add", "subtract"):
            mask[self.selected] = True
        mask[np.asarray(rows, dtype=np.int64)] = mode != "subtract"
        self._undo = [self.selected]
        self._set_selected(np.flatnonzero(mask))
        return self.selected

    def undo_selection(self) -> bool:
        """Restore the selection before the last change (once); False when there is nothing to undo."""
        if not self._undo or self.table is None:
            return False
        self._set_selected(self._undo.pop())
        return True

    @property
    def can_undo_selection(self) -> bool:
        return bool(self._undo)

    def _set_selected(self, rows: np.ndarray) -> None:
        self.selected = np.asarray(rows, dtype=np.int64)
        self.table["selection"] = selection_column(len(self.table), self.selected)
        self.columns_set.emit(["selection"])
        self.selection_changed.emit()

    def highlight(self, row: int) -> None:
        """Highlight one cell (cell-table row; −1 clears) in the image and the scatter."""
        self.highlighted = int(row)
        self.highlight_changed.emit(self.highlighted)

    def set_neighbours(self, row: int, rows) -> None:
        """The nearest cells *rows* of cell *row* (−1 and no rows: none): shown as their own highlight, the
        selection is left as it is."""
        self.neighbours_of = int(row)
        self.neighbours = np.asarray(rows, dtype=np.int64)
        self.neighbours_changed.emit()

    def select_neighbours(self, mode: str = "replace") -> np.ndarray:
        """Make the neighbours (and the cell they are the neighbours of) the selection (undoable)."""
        rows = self.neighbours if self.neighbours_of < 0 else np.concatenate([[self.neighbours_of],
                                                                               self.neighbours])
        return self.select(rows, mode)

    # ------------------------------------------------------------------ columns

    def update_rows(self, start: int, stop: int, values: dict[str, np.ndarray]) -> None:
        """Streaming: fill columns for rows [start, stop) (new columns start as NaN)."""
        for col, vals in values.items():
            if col not in self.table.columns:
                self.table[col] = np.full(len(self.table), np.nan, dtype=np.float32)
            self.table.iloc[start:stop, self.table.columns.get_loc(col)] = vals
        self.columns_set.emit(list(values))
        self.rows_changed.emit(start, stop)

    def add_columns(self, columns: dict[str, object]) -> None:
        """Add or replace whole columns (values per row of the whole table): reductions, clusters, annotations."""
        for col, vals in columns.items():
            self.table[col] = vals
        self.columns_set.emit(list(columns))
        self.columns_changed.emit()
        if self.color_column in columns:
            self.color_by(self.color_column)

    def adopt_columns(self, rows: np.ndarray, frame: pd.DataFrame) -> list[str]:
        """Columns written elsewhere for some cells (another plugin, into a layer's features): *frame*'s values
        go to table rows *rows*, the other rows keep theirs (missing in a new column). Returns the new columns.
        No signal (the caller knows whom to tell)."""
        new = [c for c in frame.columns if c not in self.table.columns]
        for col in frame.columns:
            self.table[col] = _merged(self.table.get(col), frame[col], np.asarray(rows), len(self.table))
        return new

    def assign_selection(self, name: str) -> int:
        """Put the selected cells into annotation class *name*; return how many."""
        assign_class(self.table, self.selected, name)
        self.add_columns({"annotation": self.table["annotation"]})
        return len(self.selected)


def _merged(column: pd.Series | None, values: pd.Series, rows: np.ndarray, n: int):
    """A whole-table column: *column* (or missing values) with *values* at *rows*; categorical when *values* is."""
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):  # (by codes: no Python object per row)
        cats = list(values.cat.categories)
        if column is not None:
            categorical = isinstance(column.dtype, pd.CategoricalDtype)
            have = column.cat.categories if categorical else pd.unique(column.dropna())
            cats += [c for c in have if c not in set(cats)]
        codes = np.full(n, -1, dtype=np.int64)
        if column is not None:
            codes[:] = pd.Categorical(column, categories=cats).codes
        codes[rows] = pd.Categorical(values, categories=cats).codes
        return pd.Categorical.from_codes(codes, categories=cats)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        out = np.full(n, np.nan, dtype=np.float64) if column is None else column.to_numpy(dtype=np.float64, copy=True)
        out[rows] = values.to_numpy(dtype=np.float64)
        return out
    out = np.full(n, None, dtype=object) if column is None else column.astype(object).to_numpy()
    out[rows] = values.astype(object).to_numpy()
    return out
