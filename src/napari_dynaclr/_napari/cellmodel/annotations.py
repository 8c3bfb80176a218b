"""Annotation classes: the ``annotation`` column (a categorical, ``""`` = no class) and VisCy's annotation CSV."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr.errors import ExploreError

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

UNASSIGNED = ""  # the annotation of cells without a class


def annotation_categorical(values) -> pd.Categorical:
    """*values* as the annotation column: strings, missing → ``""``, ``""`` the first category."""
    import pandas as pd

    vals = pd.Series(values).astype(object).where(pd.Series(values).notna(), UNASSIGNED).astype(str)
    cats = [UNASSIGNED] + sorted(set(vals) - {UNASSIGNED})
    return pd.Categorical(vals, categories=cats)


def assign_class(table: pd.DataFrame, rows, name: str) -> None:
    """Give the cells *rows* the annotation class *name* (in place; '' clears)."""
    name = str(name).strip()
    if "," in name or "\n" in name:
        raise ExploreError(f"class name {name!r} may not contain commas or newlines")
    vals = table["annotation"].astype(str).to_numpy(dtype=object)
    vals[np.asarray(rows, dtype=np.int64)] = name
    table["annotation"] = annotation_categorical(vals)


def write_annotations_csv(table: pd.DataFrame, path: str | Path, column: str = "annotation",
                          inputs: dict | None = None) -> int:
    """Write the annotated cells as an annotation CSV VisCy joins (keyed ``fov_name, id`` when the table has
    ``id``, else ``fov_name, t, track_id``; ``y, x`` too, for its mitosis rule; the class in *column*) through the
    safe write path (atomic; an existing text file replaced, never one of *inputs* nor anything inside them);
    return the number of rows."""
    from napari_dynaclr.errors import AnnotationError
    from napari_dynaclr.evaluate import save_annotations

    ann = table[column].astype(str).to_numpy(dtype=object)
    labels = np.where(ann == UNASSIGNED, None, ann)
    try:
        save_annotations(path, table, {column: labels}, overwrite=True, inputs=inputs)
    except (AnnotationError, OSError) as exc:
        raise ExploreError(f"cannot write annotations to {path}: {exc}") from None
    return int((ann != UNASSIGNED).sum())


def read_annotations_csv(
    table: pd.DataFrame, path: str | Path, column: str = "annotation"
) -> tuple[pd.Categorical, int]:
    """Join an annotation CSV (ours or VisCy's: keyed ``fov_name, id``, else ``fov_name, t, track_id`` with
    VisCy's mitosis rule) to the table; the class is the CSV's *column*, else its only task column.

    Returns the new annotation column (existing classes kept where the CSV says nothing) and the number of
    cells it labels. A file that cannot be joined raises :class:`ExploreError` naming the problem."""
    import pandas as pd

    from napari_dynaclr.errors import AnnotationError
    from napari_dynaclr.evaluate import join_annotations, read_annotations

    path = Path(path)
    try:
        csv = read_annotations(path)
        keys = {"fov_name", "id", "t", "track_id", "y", "x", "parent_track_id", "parent_id", "z"}
        tasks = [c for c in csv.columns if c not in keys]
        task = column if column in csv.columns else (tasks[0] if len(tasks) == 1 else None)
        if task is None:
            raise ExploreError(f"annotation CSV {path}: which column holds the classes? it has "
                               f"{', '.join(map(str, csv.columns))}; name it '{column}'")
        joined = join_annotations(table, csv, task)
    except AnnotationError as exc:
        raise ExploreError(str(exc)) from None
    hit = pd.notna(joined).to_numpy()
    vals = table[column].astype(str).to_numpy(dtype=object) if column in table.columns else \
        np.full(len(table), UNASSIGNED, dtype=object)
    vals[hit] = joined[hit].astype(str).to_numpy()
    return annotation_categorical(vals), int(hit.sum())
