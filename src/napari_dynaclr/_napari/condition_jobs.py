"""The jobs and the Qt-free helpers of the dock's Conditions and Time views (VisCy's MMD and DTW pseudotime).

The computations are :func:`napari_dynaclr.evaluate.mmd.run_mmd` and
:func:`napari_dynaclr.evaluate.pseudotime.run_pseudotime`, unchanged, in the plugin's heavy work process
(requests ``"mmd"`` and ``"pseudotime"``, :data:`napari_dynaclr._napari.workers.LANES`): they stream
``(done, total, what)`` progress events and a cancel kills the process serving them. Everything else here maps
their results onto the session's cell table (one row per store row) and writes them through the safe write path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr._napari import workers
from napari_dynaclr.errors import ConfigError

#: a cell's key in VisCy's per-frame pseudotime table
TRACK_KEY = ["fov_name", "track_id", "t"]
#: the grouping "column" the cell table may lack: each FOV's well
WELL = "well"


def mmd_job(obs: pd.DataFrame, X, analysis, cancel: threading.Event | None = None) -> Iterator:
    """VisCy's MMD of *analysis* (an :class:`~napari_dynaclr.evaluate.mmd_config.MMDAnalysis`) in the heavy work
    process; yields ``Event((done, total, label))`` and ``None`` heartbeats, returns the
    :class:`~napari_dynaclr.evaluate.mmd.MMDResult`. *X*: an array, or a store's lazy ``X`` (the work process reads
    it: :func:`~napari_dynaclr._napari.workers.shipped`)."""
    return (yield from workers.request("mmd", obs, workers.shipped(X, dtype=None), analysis, cancel=cancel))


def pseudotime_job(adata, obs: pd.DataFrame, annotations: pd.DataFrame | None, cfg, keys: pd.DataFrame | None = None,
                   cancel: threading.Event | None = None) -> Iterator:
    """VisCy's pseudotime of *cfg* (a :class:`~napari_dynaclr.evaluate.pseudotime.PseudotimeConfig`) on the
    store *adata* (its ``X`` — an opened store's read by the work process — or ``obsm[cfg.embedding_key]``, read
    here) in the heavy work process. Returns the
    :class:`~napari_dynaclr.evaluate.pseudotime.PseudotimeResult` and, per ``(flavour, mode)``, its cell-table
    columns and track list (:func:`per_row_columns`, :func:`track_summary`) for the cells *keys* (the cell
    table's ``fov_name, track_id, t``), built here rather than on napari's GUI thread."""
    from napari_dynaclr.core.store import StoreMatrix
    from napari_dynaclr.evaluate.mmd import select_embedding

    if cfg.embedding_key is None and isinstance(adata.X, StoreMatrix):
        X = adata.X  # (sent as a reference to its store: workers.shipped)
    else:
        X = select_embedding(adata, cfg.embedding_key)
    result = yield from workers.request("pseudotime", X, obs, annotations, cfg, cancel=cancel)
    views = {}
    if keys is not None:
        for flavor, fr in result.flavors.items():
            for mode, res in fr.modes.items():
                views[flavor, mode] = (per_row_columns(keys, res), track_summary(keys, res, result.t_perturb))
    return result, views


# ------------------------------------------------------------------ conditions


def well_names(fov_names) -> np.ndarray:
    """Each FOV's well: ``fov_name`` up to its last ``/`` (``B/1/0`` → ``B/1``), as VisCy's spec maps wells."""
    names = pd.Series(np.asarray(fov_names, dtype=str))
    return names.str.rsplit("/", n=1).str[0].to_numpy()


def _coded_texts(table: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The conditions under *column* as (texts, codes): ``texts[codes]`` is every cell's condition as text
    (``"nan"`` where the value is missing, as ``astype(str)`` writes it). Texts are made once per distinct value,
    not once per cell (a 10⁶-cell table on napari's GUI thread)."""
    name = "fov_name" if column == WELL and WELL not in table.columns else column
    values = table[name]
    if name == column and not isinstance(values.dtype, pd.CategoricalDtype):  # astype(str)'s own texts ("None")
        codes, texts = pd.factorize(values.astype(str))
        return np.asarray(texts, dtype=object), codes
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
    texts = cat.cat.categories.astype(str).to_numpy(dtype=object)
    if name != column:
        texts = well_names(texts).astype(object)
    return np.append(texts, "nan"), cat.cat.codes.to_numpy()  # code -1 (missing) → the last text


def grouping_values(table: pd.DataFrame, column: str) -> pd.Series:
    """The condition of every cell under *column* (a table column, or :data:`WELL`), as text."""
    texts, codes = _coded_texts(table, column)
    return pd.Series(texts[codes], index=table.index)


def grouping_choices(table: pd.DataFrame, column: str) -> list[str]:
    """The conditions present under *column*, as sorted texts."""
    texts, codes = _coded_texts(table, column)
    return sorted(set(texts[np.unique(codes)]))


def comparisons(reference: str, others) -> list[dict]:
    """VisCy's comparisons of *reference* (``cond_a``) with each of *others* (``cond_b``)."""
    return [{"cond_a": str(reference), "cond_b": str(b), "label": f"{reference} vs {b}"} for b in others
            if str(b) != str(reference)]


def mmd_rows(obs: pd.DataFrame, analysis, row: int) -> np.ndarray:
    """The store rows (cell-table rows) compared in the result row *row* of :func:`run_mmd`: A and B of its
    experiment, marker and time bin (before the ``max_cells`` draw). Rows are laid out facet by facet, then
    comparison by comparison, as :func:`~napari_dynaclr.evaluate.mmd.plan_mmd` plans them."""
    from napari_dynaclr.evaluate.mmd import plan_mmd

    facets = plan_mmd(obs, analysis)
    n = len(analysis.comparisons)
    facet, comp = facets[row // n], analysis.comparisons[row % n]
    return np.union1d(facet.rows_a[comp.label], facet.rows_b[comp.label])


def save_mmd_csv(result, path: Path, inputs: dict, overwrite: bool = False) -> Path:
    """VisCy's CSV of *result* at *path* through the safe write path (never into an input or a store), recorded
    in its folder's manifest as ``evaluate mmd`` records it: a later save replaces it while it is unchanged."""
    from napari_dynaclr.core.output import make_folder, write_text

    make_folder(Path(path).parent)
    return write_text(path, result.to_csv(), overwrite, inputs, kind="csv", record=True)


# ------------------------------------------------------------------ time


def annotations_from_column(table: pd.DataFrame, column: str, rows=None,
                            labels: tuple[str, str] = ("selected", "unselected")) -> pd.DataFrame:
    """An annotation frame (``fov_name, track_id, t`` and *column*) from the cell table: the column's values, or
    with *rows* (the selected cells) ``labels[0]`` for those rows and ``labels[1]`` elsewhere."""
    frame = pd.DataFrame({"fov_name": table["fov_name"].astype(str).to_numpy(),
                          "track_id": table["track_id"].to_numpy(), "t": table["t"].to_numpy()})
    if rows is None:
        frame[column] = table[column].astype(str).to_numpy()
    else:
        values = np.full(len(table), labels[1], dtype=object)
        values[np.asarray(rows, dtype=np.int64)] = labels[0]
        frame[column] = values
    return frame


def table_rows(table: pd.DataFrame, keys: pd.DataFrame) -> np.ndarray:
    """The cell-table row of each row of *keys* (``fov_name, track_id, t``); −1 where the table has none."""
    index = pd.MultiIndex.from_arrays([table["fov_name"].astype(str).to_numpy(), table["track_id"].to_numpy(),
                                       table["t"].to_numpy()])
    lookup = pd.Series(np.arange(len(table)), index=index)
    lookup = lookup[~lookup.index.duplicated(keep="first")]
    wanted = pd.MultiIndex.from_arrays([keys["fov_name"].astype(str).to_numpy(), keys["track_id"].to_numpy(),
                                        keys["t"].to_numpy()])
    return lookup.reindex(wanted).fillna(-1).to_numpy(dtype=np.int64)


def per_row_columns(table: pd.DataFrame, mode) -> dict[str, np.ndarray | pd.Categorical]:
    """For the cells of *table* (``fov_name, track_id, t``): the per-frame result of an alignment mode (VisCy's
    columns: ``pseudotime``, ``alignment_region``, costs, ``warping_speed``, propagated labels,
    ``estimated_t_rel_minutes``) and each track's ``response_group``, as whole cell-table columns (NaN /
    ``"unaligned"`` for cells of tracks that were not aligned)."""
    frame = mode.per_frame
    rows = table_rows(table, frame)
    hit = rows >= 0
    out: dict[str, np.ndarray | pd.Categorical] = {}
    skip = {"cell_uid", "dataset_id", *TRACK_KEY}
    groups = mode.response_groups.set_index("cell_uid")["response_group"]
    per_frame_group = groups.reindex(frame["cell_uid"]).to_numpy()
    for col in [c for c in frame.columns if c not in skip] + ["response_group"]:
        values = per_frame_group if col == "response_group" else frame[col].to_numpy()
        if values.dtype.kind in "fiub":
            full = np.full(len(table), np.nan)
            full[rows[hit]] = values[hit]
            out[col] = full
        else:
            full = np.full(len(table), "unaligned", dtype=object)
            full[rows[hit]] = values[hit].astype(str)
            out[col] = pd.Categorical(full)
    return out


def track_summary(table: pd.DataFrame, mode, t_perturb: pd.DataFrame) -> pd.DataFrame:
    """One row per aligned track, sorted by onset: ``fov_name, track_id, onset_t`` (the first frame the
    template's time calibration puts at or after the onset, ``estimated_t_rel_minutes ≥ 0``; the first frame
    with pseudotime ≥ 0.5 without a calibration), ``t_perturb`` (the annotated onset, where known),
    ``response_group``, ``dtw_cost``, ``n_frames`` and ``row`` (the cell-table row of the onset frame)."""
    frame = mode.per_frame
    score = frame["estimated_t_rel_minutes"].to_numpy() >= 0 if "estimated_t_rel_minutes" in frame.columns \
        else frame["pseudotime"].to_numpy() >= 0.5
    frame = frame.assign(_after=score, _row=table_rows(table, frame), fov_name=frame["fov_name"].astype(str))
    frame = frame.sort_values(["cell_uid", "t"], kind="stable")
    tracks = frame.groupby("cell_uid", sort=False).agg(fov_name=("fov_name", "first"), track_id=("track_id", "first"),
                                                        dtw_cost=("dtw_cost", "first"), n_frames=("t", "size"),
                                                        first_row=("_row", "first"))
    onsets = frame[frame["_after"]].groupby("cell_uid", sort=False).agg(onset_t=("t", "first"), row=("_row", "first"))
    tracks = tracks.join(onsets)
    tracks["row"] = tracks["row"].fillna(tracks["first_row"]).astype(np.int64)
    tracks["response_group"] = mode.response_groups.set_index("cell_uid")["response_group"].reindex(
        tracks.index).fillna("").astype(str)
    known = t_perturb.assign(fov_name=t_perturb["fov_name"].astype(str)).set_index(["fov_name", "track_id"])
    tracks["t_perturb"] = known["t_perturb"].reindex(pd.MultiIndex.from_frame(tracks[["fov_name", "track_id"]])
                                                     ).to_numpy(dtype=float)
    out = tracks.reset_index(drop=True)[["fov_name", "track_id", "onset_t", "t_perturb", "response_group",
                                         "dtw_cost", "n_frames", "row"]]
    return out.sort_values(["onset_t", "fov_name", "track_id"], na_position="last", kind="stable").reset_index(
        drop=True)


def save_pseudotime_csv(mode, path: Path, inputs: dict, overwrite: bool = False) -> Path:
    """VisCy's per-frame alignment table (``alignment_results_to_dataframe``) as a CSV at *path* through the safe
    write path, recorded in its folder's manifest."""
    from napari_dynaclr.core.output import make_folder, write_text

    if mode.per_frame.empty:
        raise ConfigError("no track was aligned: nothing to save")
    make_folder(Path(path).parent)
    return write_text(path, mode.per_frame.to_csv(index=False), overwrite, inputs, kind="csv", record=True)
