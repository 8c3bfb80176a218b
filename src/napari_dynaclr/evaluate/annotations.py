"""Annotation CSVs: read, join to a store's obs exactly as VisCy's ``load_annotation_anndata``, save.

The join (VisCy ``viscy_utils.evaluation.annotation.load_annotation_anndata``, commit 4b62365):

1. ``fov_name`` is compared with leading/trailing ``/`` stripped on both sides (obs itself is not changed).
2. Key: ``(fov_name, id)`` when both obs and the CSV have ``id``; else ``(fov_name, t, track_id)`` when both have
   those; else the CSV cannot be joined.
3. Unique CSV keys: a plain lookup; obs rows without a CSV row get NaN.
4. Duplicate CSV keys (one key, several rows: a mitosis): for every obs row, the CSV rows with its key are
   candidates; the one with the smallest Chebyshev distance ``max(|dy|, |dx|)`` between the CSV's and obs'
   ``(y, x)`` wins when that distance is ``<= spatial_tolerance`` (4 px), the first CSV row on a tie; otherwise
   the row gets ``pd.NA``. Unique keys in such a file are checked against the tolerance too.
5. ``"unknown"`` is kept as a label; :func:`labelled` (as VisCy's callers) drops it together with missing ones.

The string ``"nan"`` is no label either: VisCy's ``dynaclr append-annotations`` writes an unlabelled cell's
annotation as ``"nan"`` into a store's obs. It reads as missing wherever labels are read (:func:`unlabelled`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr.errors import AnnotationError, shorten

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

#: the label VisCy's callers drop before training ("not sure")
UNKNOWN = "unknown"
#: how VisCy writes a missing label into a store's obs (``append-annotations``): no label
MISSING_LABELS = ("nan",)
ID_KEY = ("fov_name", "id")
TRACK_KEY = ("fov_name", "t", "track_id")
DEFAULT_SPATIAL_TOLERANCE = 4.0


def read_annotations(path: str | Path) -> pd.DataFrame:
    """Read an annotation CSV (VisCy's layout: ``fov_name`` plus ``id`` or ``t, track_id``, one column per task).

    Raises :class:`AnnotationError` when the file is missing, not a regular file (a named pipe would block),
    unreadable (permission denied), empty or has no ``fov_name`` column.
    """
    import pandas as pd

    from napari_dynaclr.core.inputs import check_input_file, os_error

    path = check_input_file(path, "annotation CSV", AnnotationError)
    try:
        frame = pd.read_csv(path)
    except OSError as exc:
        raise os_error(exc, path, "annotation CSV", AnnotationError) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"annotation CSV {path} cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:150] if str(exc) else ''})") from exc
    if "fov_name" not in frame.columns:
        raise AnnotationError(f"annotation CSV {path} has no 'fov_name' column (columns: {shorten(frame.columns)})")
    return frame


def tasks_in(annotations: pd.DataFrame) -> list[str]:
    """The label columns of an annotation frame: every column that is not part of a key or a position."""
    skip = {"fov_name", "id", "t", "track_id", "y", "x", "z", "parent_track_id", "parent_id"}
    return [c for c in annotations.columns if c not in skip]


def join_key(obs: pd.DataFrame, annotations: pd.DataFrame, source="annotation CSV") -> tuple[str, ...]:
    """VisCy's key choice: ``(fov_name, id)`` if both sides have ``id``, else ``(fov_name, t, track_id)``."""
    if all(c in obs.columns and c in annotations.columns for c in ID_KEY):
        return ID_KEY
    if all(c in obs.columns and c in annotations.columns for c in TRACK_KEY):
        return TRACK_KEY
    lacking = [c for c in TRACK_KEY if c not in annotations.columns]
    side = f"{source} lacks {', '.join(lacking)}" if lacking else "the store's obs lacks " + ", ".join(
        c for c in TRACK_KEY if c not in obs.columns)
    raise AnnotationError(f"cannot join {source} to the store: it needs fov_name + id or fov_name + t + track_id "
                          f"on both sides ({side})")


def _key_frame(frame: pd.DataFrame, key: Sequence[str], source: str) -> pd.DataFrame:
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    out["fov_name"] = frame["fov_name"].astype(str).str.strip("/").to_numpy()
    for col in key[1:]:
        values = frame[col]
        try:
            as_int = pd.to_numeric(values, errors="raise")
            if as_int.isna().any() or not np.all(np.equal(np.mod(as_int.to_numpy(dtype=float), 1), 0)):
                raise ValueError
            out[col] = as_int.astype(np.int64).to_numpy()
        except (ValueError, TypeError):
            raise AnnotationError(f"{source}: column {col!r} must hold whole numbers for every row") from None
    return out


def join_annotations(obs: pd.DataFrame, annotations: pd.DataFrame | str | Path, task: str,
                     spatial_tolerance: float = DEFAULT_SPATIAL_TOLERANCE) -> pd.Series:
    """The CSV's *task* column for every obs row, in obs order and indexed like *obs* (VisCy's join, see module).

    Missing rows are NaN (unique CSV keys) or ``pd.NA`` (duplicate keys), as VisCy gives them.
    Raises :class:`AnnotationError` for a missing task column or a CSV that cannot be joined.
    """
    import pandas as pd

    source = "annotation CSV"
    if not isinstance(annotations, pd.DataFrame):
        source = f"annotation CSV {annotations}"
        annotations = read_annotations(annotations)
    if task not in annotations.columns:
        raise AnnotationError(f"{source} has no column {task!r} (label columns: {shorten(tasks_in(annotations))})")
    key = list(join_key(obs, annotations, source))
    left = _key_frame(obs, key, "the store's obs")
    right = _key_frame(annotations, key, source)
    duplicated = right.duplicated(key, keep=False).any()
    if not duplicated:
        table = annotations[task].copy()
        table.index = pd.MultiIndex.from_frame(right[key])
        selected = table.reindex(pd.MultiIndex.from_frame(left[key]))
        return _missing_as_na(pd.Series(selected.to_numpy(), index=obs.index, name=task))
    for col in ("y", "x"):
        if col not in annotations.columns or col not in obs.columns:
            where = source if col not in annotations.columns else "the store's obs"
            raise AnnotationError(f"{source} has duplicate {'/'.join(key)} keys (mitosis) but {where} has no {col!r} "
                                  "column to tell the candidate rows apart")
    left = left.assign(_pos=np.arange(len(obs)), _y=obs["y"].to_numpy(dtype=float), _x=obs["x"].to_numpy(dtype=float))
    right = right.assign(_row=np.arange(len(annotations)),
                         _y=pd.to_numeric(annotations["y"], errors="coerce").to_numpy(),
                         _x=pd.to_numeric(annotations["x"], errors="coerce").to_numpy())
    merged = left.merge(right, on=key, how="inner", suffixes=("_obs", "_csv"))
    dist = np.maximum(np.abs(merged["_y_csv"].to_numpy() - merged["_y_obs"].to_numpy()),
                      np.abs(merged["_x_csv"].to_numpy() - merged["_x_obs"].to_numpy()))
    merged = merged.assign(_dist=dist)
    merged = merged[merged["_dist"] <= spatial_tolerance]
    best = merged.sort_values(["_pos", "_dist", "_row"], kind="stable").drop_duplicates("_pos", keep="first")
    values = np.full(len(obs), pd.NA, dtype=object)
    values[best["_pos"].to_numpy()] = annotations[task].to_numpy(dtype=object)[best["_row"].to_numpy()]
    return _missing_as_na(pd.Series(values, index=obs.index, name=task, dtype=object))


def unlabelled(labels) -> np.ndarray:
    """Boolean mask of the values that are no label: missing (None/NaN/NA) or VisCy's ``"nan"`` string."""
    import pandas as pd

    values = pd.Series(np.asarray(labels, dtype=object))
    return (values.isna() | values.astype(str).isin(MISSING_LABELS)).to_numpy()


def _missing_as_na(series: pd.Series) -> pd.Series:
    """*series* with VisCy's ``"nan"`` strings read as missing."""
    missing = unlabelled(series) & series.notna().to_numpy()
    if missing.any():
        series = series.astype(object).mask(missing, np.nan)
    return series


def labelled(labels) -> np.ndarray:
    """Boolean mask of the labels that train a classifier: not missing (None/NaN/NA, VisCy's ``"nan"``) and not
    ``"unknown"``."""
    import pandas as pd

    values = pd.Series(np.asarray(labels, dtype=object))
    ok = values.notna().to_numpy()
    text = values[ok].astype(str)  # (only the labels as text: a store's column is mostly unlabelled)
    ok[ok] = ~(text.isin(MISSING_LABELS) | (text == UNKNOWN)).to_numpy()
    return ok


def save_annotations(path: str | Path, obs: pd.DataFrame, labels: Mapping[str, Sequence], key: str = "auto",
                     only_labelled: bool = True, overwrite: bool = False,
                     overwrite_hint: str = "pass overwrite=True", inputs: Mapping[str, object] | None = None) -> Path:
    """Write labels as an annotation CSV VisCy reads: ``fov_name``, the key columns, ``y, x`` when obs has them
    (so a file with duplicate keys still joins), then one column per task. Written through the safe write path
    (:func:`napari_dynaclr.core.output.write_text`: atomic, never into *inputs*, with *overwrite* only over a text
    file). *key*: ``"id"``, ``"track"`` (``fov_name, t, track_id``) or ``"auto"`` (id when obs has
    it). *only_labelled*: keep the rows with at least one non-missing label."""
    import pandas as pd

    path = Path(path)
    if key == "auto":
        key = "id" if "id" in obs.columns else "track"
    cols = list(ID_KEY if key == "id" else TRACK_KEY)
    if key == "id":
        cols += [c for c in ("t", "track_id") if c in obs.columns]
    cols += [c for c in ("y", "x") if c in obs.columns]
    missing = [c for c in cols if c not in obs.columns]
    if missing:
        raise AnnotationError(f"cannot save annotations keyed by {key}: obs lacks {', '.join(missing)}")
    frame = pd.DataFrame({c: obs[c].to_numpy() for c in cols})
    frame["fov_name"] = frame["fov_name"].astype(str)
    keep = np.zeros(len(obs), dtype=bool)
    for task, values in labels.items():
        values = np.asarray(values, dtype=object)
        if len(values) != len(obs):
            raise AnnotationError(f"labels for {task!r} have {len(values)} rows, obs has {len(obs)}")
        frame[task] = values
        keep |= pd.notna(pd.Series(values)).to_numpy()
    if only_labelled:
        frame = frame[keep]
    from napari_dynaclr.core.output import write_text

    write_text(path, frame.to_csv(index=False), overwrite, inputs, kind="csv", overwrite_hint=overwrite_hint)
    return path
