"""Per-FOV tracking tables and VisCy's cell selection (row order, int truncation, strict border filter)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.core.inputs import check_input_file, check_input_folder, os_error
from napari_dynaclr.errors import TracksError

REQUIRED_COLUMNS = ["track_id", "t", "id", "parent_track_id", "parent_id", "y", "x"]
#: VisCy's ULTRACK_INDEX_COLUMNS: the obs columns of an embedding store, in this order.
INDEX_COLUMNS = ["fov_name", "track_id", "t", "id", "parent_track_id", "parent_id", "z", "y", "x"]
PARENT_COLUMNS = ["parent_track_id", "parent_id"]


def find_tracks_csv(tracks_path: str | Path, fov_name: str) -> Path:
    """The tracking table of one FOV: the first ``*.csv`` in ``<tracks_path>/<row>/<col>/<fov>/``.

    VisCy takes the first file in filesystem order; we take the first in sorted order (deterministic)
    and warn when there are several.
    """
    folder = Path(tracks_path) / fov_name
    if not folder.is_dir():
        raise TracksError(f"no tracks folder for FOV {fov_name}: {folder} does not exist")
    check_input_folder(folder, f"tracks folder of FOV {fov_name}", TracksError)
    csvs = sorted(folder.glob("*.csv"))
    if not csvs:
        raise TracksError(f"no tracks CSV for FOV {fov_name} in {folder}")
    if len(csvs) > 1:
        warnings.warn(
            f"FOV {fov_name}: {len(csvs)} CSV files in {folder}; using {csvs[0].name}", stacklevel=2
        )
    return check_input_file(csvs[0], "tracks CSV", TracksError)


def read_tracks(csv_path: str | Path, fov_name: str = "") -> pd.DataFrame:
    """Read and validate one tracking CSV (:func:`check_tracks`)."""
    csv_path = check_input_file(csv_path, "tracks CSV", TracksError)
    return check_tracks(read_csv(csv_path), f"tracks CSV {csv_path}")


def read_csv(csv_path: Path, what: str = "tracks CSV") -> pd.DataFrame:
    """A tracking table's CSV as a frame (*what* names it in the messages)."""
    where = f"{what} {csv_path}"
    try:
        return pd.read_csv(csv_path)
    except pd.errors.EmptyDataError:
        raise TracksError(f"{where} is empty (no header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TracksError(f"{where} cannot be parsed as CSV: {str(exc).splitlines()[0][:150]}") from None
    except OSError as exc:
        raise os_error(exc, csv_path, what, TracksError) from None


def check_tracks(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validate one FOV's tracking table (*where* names it); return it with every column cast to int64
    (truncation). Rows are numbered as in the file.

    NaN in ``parent_track_id`` / ``parent_id`` becomes -1 with a warning (VisCy crashes there).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise TracksError(
            f"{where} lacks required column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})"
        )
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            coerced = pd.to_numeric(df[col], errors="coerce")
            bad = df[col][coerced.isna() & df[col].notna()]
            if len(bad):
                row = int(bad.index[0])
                raise TracksError(
                    f"{where}: column {col!r} has non-numeric value {bad.iloc[0]!r} (data row {row + 1})"
                )
            df[col] = coerced
    for col in PARENT_COLUMNS:
        n_nan = int(df[col].isna().sum())
        if n_nan:
            warnings.warn(f"{where}: {n_nan} NaN value(s) in {col!r} read as -1 (no parent)", stacklevel=2)
            df[col] = df[col].fillna(-1)
    for col in df.columns:
        vals = df[col]
        if vals.isna().any():
            row = int(vals.index[np.flatnonzero(vals.isna().to_numpy())[0]])
            raise TracksError(f"{where}: column {col!r} has a missing/NaN value (data row {row + 1})")
        if np.isinf(vals.to_numpy(dtype=float)).any():
            raise TracksError(f"{where}: column {col!r} has an infinite value")
    df = df.astype(np.int64)
    dup = df.duplicated(["track_id", "t"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise TracksError(
            f"{where}: {int(dup.sum())} rows share a (track_id, t) pair, e.g. track_id={first.track_id}, "
            f"t={first.t}; each track may have one row per timepoint"
        )
    return df


def select_fov_cells(
    df: pd.DataFrame,
    fov_name: str,
    image_shape: tuple[int, ...],
    patch_size: tuple[int, int],
) -> pd.DataFrame:
    """VisCy's predict selection for one FOV: strict border filter, CSV row order kept.

    A row is kept iff ``hy < y < H - hy`` and ``hx < x < W - hx`` with ``hy, hx = patch // 2`` on the
    truncated integer centroids; rows whose ``t`` is outside the image are refused.
    """
    n_t, _, _, height, width = image_shape
    hy, hx = patch_size[0] // 2, patch_size[1] // 2
    bad_t = (df["t"] < 0) | (df["t"] >= n_t)
    if bad_t.any():
        t = int(df.loc[bad_t, "t"].iloc[0])
        raise TracksError(f"FOV {fov_name}: tracks refer to t={t}, but the image has T={n_t} timepoints")
    y, x = df["y"], df["x"]
    keep = (y > hy) & (y < height - hy) & (x > hx) & (x < width - hx)
    out = df.loc[keep].copy()
    out.insert(0, "fov_name", fov_name)
    return out


def build_cell_table(
    fovs: Sequence,
    tracks,
    patch_size: tuple[int, int],
    include_cells: Sequence[tuple[str, int]] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Concatenate the selected cells of every FOV in FOV order.

    *tracks*: the tracks in their layout (:func:`~napari_dynaclr.core.track_layouts.open_tracks`: anything with
    ``read(fov_name) -> (table, where)``). Returns ``(cells, stats)``. ``cells`` has the VisCy index columns that
    exist (``z`` only if every table has it) plus ``fov_index`` (position in *fovs*); ``stats`` counts CSV rows
    and kept cells per FOV.
    ``include_cells`` is VisCy's ``predict_cells`` (pairs of fov_name and track_id).
    """
    tables, stats = [], {}
    have_z = True
    known = {}  # FOV name -> the track ids of its table (before the border filter), where it is
    for i, fov in enumerate(fovs):
        table, where = tracks.read(fov.name)
        raw = check_tracks(table, where)
        known[fov.name] = set(raw["track_id"].tolist()), where
        sel = select_fov_cells(raw, fov.name, fov.shape, patch_size)
        sel["fov_index"] = i
        stats[fov.name] = {"csv_rows": len(raw), "cells": len(sel)}
        have_z &= "z" in raw.columns
        tables.append(sel)
    cells = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not have_z and "z" in cells.columns:
        warnings.warn("some tracks CSVs have a 'z' column and others not; 'z' is left out", stacklevel=2)
    cols = [c for c in INDEX_COLUMNS if c in cells.columns and (c != "z" or have_z)]
    cells = cells[cols + ["fov_index"]]
    if include_cells is not None:
        wanted = pd.MultiIndex.from_tuples([(str(f).strip("/"), int(t)) for f, t in include_cells])
        absent = [(f, t) for f, t in wanted if f in known and t not in known[f][0]]
        if absent:
            f, t = absent[0]
            more = f" (and {len(absent) - 1} more pair(s))" if len(absent) > 1 else ""
            raise TracksError(f"track_id {t} named in include_track_ids (with FOV {f} in include_fov_names) is not "
                              f"in the tracks of FOV {f} ({known[f][1]}){more}")
        key = pd.MultiIndex.from_arrays([cells["fov_name"], cells["track_id"]])
        cells = cells[key.isin(wanted)].reset_index(drop=True)
    for col in cols[1:]:
        cells[col] = cells[col].astype(np.int64)
    cells["fov_index"] = cells["fov_index"].astype(np.int64)
    return cells.reset_index(drop=True), stats
