"""VisCy's cell-index parquet: read as-is, or built from plates + per-FOV tracks + a collection the way
``dynaclr build-cell-index`` and ``dynaclr preprocess-cell-index`` do (one row per cell, timepoint and channel,
the fixed 38-column schema, per-timepoint normalisation statistics and focus slices from the plate attributes).

Where VisCy needs a step it cannot do (a plate without ``timepoint_statistics``), the statistics are computed
from the pixels with ``viscy preprocess``'s sampling (every Z, a 32-pixel grid in Y and X).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.core.collection import Experiment
from napari_dynaclr.core.output import temporary_writer
from napari_dynaclr.errors import ConfigError, PlateError, TracksError, shorten

#: the parquet schema ``build-cell-index`` writes: column -> dtype (``object``: string, nullable)
SCHEMA: dict[str, str] = {
    "cell_id": "object", "experiment": "object", "store_path": "object", "tracks_path": "object", "fov": "object",
    "well": "object", "y": "float32", "x": "float32", "z": "int16", "perturbation": "object",
    "channel_name": "object", "t": "int32", "track_id": "int32", "global_track_id": "object",
    "lineage_id": "object", "parent_track_id": "int32", "hours_post_perturbation": "float32",
    "interval_minutes": "float32", "gene_name": "object", "reporter": "object", "sgRNA": "object",
    "microscope": "object", "marker": "object", "organelle": "object", "pixel_size_xy_um": "float32",
    "pixel_size_z_um": "float32", "T_shape": "int32", "C_shape": "int32", "Z_shape": "int32", "Y_shape": "int32",
    "X_shape": "int32", "z_focus_mean": "float32", "norm_mean": "float32", "norm_std": "float32",
    "norm_median": "float32", "norm_iqr": "float32", "norm_max": "float32", "norm_min": "float32",
}
NORM_STATS = ("mean", "std", "median", "iqr", "max", "min")
#: what a prediction reads from a cell index (the obs columns and the sample's location)
PREDICT_COLUMNS = ("experiment", "store_path", "fov", "well", "y", "x", "z", "channel_name", "t", "track_id",
                   "parent_track_id", "marker", "perturbation", "hours_post_perturbation", "organelle", "microscope",
                   "pixel_size_xy_um", "pixel_size_z_um")
GRID_SPACING = 32  # viscy preprocess --block_size default


def index_path_candidates(value: str, index_path: str | Path) -> list[Path]:
    """Where a path a cell index names (``store_path``, ``tracks_path``) may be: as given when absolute; else beside
    the parquet, then in the working folder — the order a run tries them (:func:`resolve_index_path`)."""
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        return [p]
    return [Path(index_path).parent / p, Path.cwd() / p]


def resolve_index_path(value: str, index_path: str | Path, what: str = "plate") -> Path:
    """The path a run reads for a cell index's ``store_path`` (or ``tracks_path``): the first existing candidate of
    :func:`index_path_candidates`. The output guard protects the same path (:func:`index_inputs`)."""
    candidates = index_path_candidates(value, index_path)
    for p in candidates:
        if p.exists():
            return p
    if len(candidates) == 1:
        raise PlateError(f"{what} {value} of the cell index not found")
    raise PlateError(f"{what} {value} of the cell index not found (relative to {Path(index_path).parent} or the "
                     "working folder)")


def index_inputs(index_path: str | Path) -> dict[str, Path]:
    """What a run on the cell index *index_path* reads besides it — the plates (and tracks) it names, resolved as
    the run resolves them (every candidate of one that does not exist yet) — for the output guard; {} when the
    parquet cannot be read (the run then refuses it)."""
    if not Path(index_path).is_file():  # a FIFO would block pyarrow's open; the run's input check names it
        return {}
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(index_path, columns=[c for c in ("store_path", "tracks_path")
                                                   if c in pq.read_schema(index_path).names])
    except Exception:  # noqa: BLE001 - reading the index properly reports its problems
        return {}
    out: dict[str, Path] = {}
    for column, what in (("store_path", "plate"), ("tracks_path", "tracks")):
        if column not in table.column_names:
            continue
        for i, value in enumerate(v for v in table.column(column).unique().to_pylist() if v):
            try:
                out[f"{what} {i} of the cell index"] = resolve_index_path(value, index_path, what)
            except PlateError:
                for j, p in enumerate(index_path_candidates(value, index_path)):
                    out[f"{what} {i} of the cell index (candidate {j})"] = p
    return out


def read_cell_index(path: str | Path) -> pd.DataFrame:
    """A cell-index parquet as a DataFrame (row order kept); one line naming the file or column otherwise."""
    import pyarrow.parquet as pq

    from napari_dynaclr.core.inputs import check_input_file, os_error

    path = check_input_file(path, "cell index", ConfigError)
    try:
        df = pq.read_table(path).to_pandas()
    except OSError as exc:
        if not isinstance(exc, (PermissionError, FileNotFoundError)):  # pyarrow's own errors are OSErrors too
            first = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cell index {path} is not a readable parquet file ({first})") from None
        raise os_error(exc, path, "cell index", ConfigError) from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        first = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cell index {path} is not a readable parquet file ({first})") from None
    missing = [c for c in PREDICT_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"cell index {path} lacks column(s) {shorten(missing)}; build it with VisCy's "
                          "build-cell-index (or give --collection with --plate/--tracks)")
    if df.empty:
        raise ConfigError(f"cell index {path} has no rows")
    for col in ("y", "x", "t", "track_id"):
        if df[col].isna().any():
            raise ConfigError(f"cell index {path}: column {col} has missing values")
    return df.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------- building

def build_cell_index(experiments: Sequence[Experiment], include_wells: Sequence[str] | None = None,
                     exclude_fovs: Sequence[str] | None = None) -> pd.DataFrame:
    """``dynaclr build-cell-index`` (``--num-workers 1``): rows by experiment (collection order), FOV (plate
    order), channel, then CSV row order; statistics columns empty (see :func:`preprocess_cell_index`)."""
    from napari_dynaclr.core.plate import Plate

    frames = []
    plate_wells, plate_fovs = set(), set()
    for exp in experiments:
        with Plate(exp.data_path) as plate:
            plate_fovs.update(f.name for f in plate.fovs)
            plate_wells.update(f.name.rsplit("/", 1)[0] for f in plate.fovs)
            for ch in exp.channels:
                if ch.name not in plate.channel_names:
                    raise PlateError(f"experiment {exp.name}: channel {ch.name!r} (marker {ch.marker}) not in plate "
                                     f"{exp.data_path}; available channels: {', '.join(plate.channel_names)}")
            declared = exp.declared_wells
            for fov in plate.fovs:
                well, fov_part = fov.name.rsplit("/", 1)
                if declared and well not in declared:
                    continue
                if include_wells is not None and well not in include_wells:
                    continue
                if fov.name in exp.exclude_fovs or (exclude_fovs is not None and fov.name in exclude_fovs):
                    continue
                tracks = _read_fov_tracks(exp, fov.name)
                for ch in exp.channels:
                    if ch.wells is not None and well not in ch.wells:
                        continue
                    frames.append(_fov_rows(exp, ch, fov, well, fov_part, tracks))
    for key, given, known in (("include_wells", include_wells, plate_wells),
                              ("exclude_fovs", exclude_fovs, plate_fovs)):
        unknown = [n for n in dict.fromkeys(given or ()) if n not in known]
        if unknown:
            raise PlateError(f"{key} {shorten(unknown)} not in the collection's plate(s) "
                             f"({'wells' if key == 'include_wells' else 'FOVs'}: {shorten(sorted(known), 8)})")
    if not frames:
        raise TracksError("the collection selects no FOV with tracks (check perturbation_wells and the wells)")
    df = pd.concat(frames, ignore_index=True)
    df["lineage_id"] = _lineage(df)
    return df[list(SCHEMA)]


def _read_fov_tracks(exp: Experiment, fov_name: str) -> pd.DataFrame:
    from napari_dynaclr.core.tracks import find_tracks_csv

    csv = find_tracks_csv(exp.tracks_path, fov_name)
    try:
        tracks = pd.read_csv(csv)
    except Exception as exc:  # noqa: BLE001
        raise TracksError(f"tracks CSV {csv} cannot be read: {str(exc).splitlines()[0][:150]}") from None
    missing = [c for c in ("track_id", "t", "y", "x") if c not in tracks.columns]
    if missing:
        raise TracksError(f"tracks CSV {csv} lacks column(s) {', '.join(missing)}")
    for col in ("track_id", "t", "y", "x"):
        if tracks[col].isna().any() or not pd.api.types.is_numeric_dtype(tracks[col]):
            raise TracksError(f"tracks CSV {csv}: column {col} must be numbers without gaps")
    return tracks


def _fov_rows(exp: Experiment, ch, fov, well: str, fov_part: str, tracks: pd.DataFrame) -> pd.DataFrame:
    n = len(tracks)
    t = tracks["t"].astype(np.int64)
    tid = tracks["track_id"].astype(np.int64)
    gid = exp.name + "_" + fov.name + "_" + tid.astype(str)
    T, C, Z, Y, X = fov.shape
    parent = tracks["parent_track_id"] if "parent_track_id" in tracks.columns else pd.Series(-1, index=tracks.index)
    out = pd.DataFrame({
        "cell_id": gid + "_" + t.astype(str),
        "experiment": exp.name,
        "store_path": exp.data_path_as_given or str(exp.data_path),
        "tracks_path": exp.tracks_path_as_given or str(exp.tracks_path),
        "fov": fov_part,
        "well": well,
        "y": tracks["y"].astype(np.float32),
        "x": tracks["x"].astype(np.float32),
        "z": (tracks["z"] if "z" in tracks.columns else pd.Series(0, index=tracks.index)).astype(np.int16),
        "perturbation": exp.perturbation(well),
        "channel_name": ch.name,
        "t": t.astype(np.int32),
        "track_id": tid.astype(np.int32),
        "global_track_id": gid,
        "lineage_id": gid,
        "parent_track_id": parent.fillna(-1).astype(np.int32),
        "hours_post_perturbation": (exp.start_hpi + t * exp.interval_minutes / 60.0).astype(np.float32),
        "interval_minutes": np.float32(exp.interval_minutes),
        "gene_name": None, "reporter": None, "sgRNA": None,
        "microscope": exp.microscope,
        "marker": ch.marker,
        "organelle": exp.organelle,
        "pixel_size_xy_um": np.float32(np.nan if exp.pixel_size_xy_um is None else exp.pixel_size_xy_um),
        "pixel_size_z_um": np.float32(np.nan if exp.pixel_size_z_um is None else exp.pixel_size_z_um),
        "T_shape": np.int32(T), "C_shape": np.int32(C), "Z_shape": np.int32(Z), "Y_shape": np.int32(Y),
        "X_shape": np.int32(X),
        "z_focus_mean": np.float32(np.nan),
        **{f"norm_{s}": np.float32(np.nan) for s in NORM_STATS},
    }, index=range(n))
    return out.astype({k: v for k, v in SCHEMA.items() if v != "object"})


def _lineage(df: pd.DataFrame) -> pd.Series:
    """The global track id of each row's root ancestor (``parent_track_id`` within experiment, well, FOV)."""
    out = df["global_track_id"].copy()
    for _, group in df.groupby(["experiment", "well", "fov"], sort=False):
        tid_to_gid = dict(zip(group["track_id"].tolist(), group["global_track_id"].tolist()))
        first = group.drop_duplicates("track_id")
        parent = {g: tid_to_gid[int(p)] for g, p in zip(first["global_track_id"], first["parent_track_id"])
                  if int(p) in tid_to_gid}

        def root(g: str, parent=parent) -> str:
            seen = set()
            while g in parent and g not in seen:
                seen.add(g)
                g = parent[g]
            return g

        roots = {g: root(g) for g in group["global_track_id"].unique()}
        out.loc[group.index] = group["global_track_id"].map(roots)
    return out


# ------------------------------------------------------------------------------------------------ preprocessing

def preprocess_cell_index(df: pd.DataFrame, plates: dict, focus_channel: str | None = None) -> pd.DataFrame:
    """``dynaclr preprocess-cell-index``: ``norm_*`` from each FOV's ``normalization[channel]
    .timepoint_statistics[t]`` (computed from the pixels when the plate lacks them), rows without statistics
    or with ``norm_max == 0`` dropped; with *focus_channel*, ``z_focus_mean`` and ``z`` from the FOV's
    ``focus_slice[focus_channel]``. *plates*: ``store_path`` -> open :class:`~napari_dynaclr.core.plate.Plate`."""
    df = df.copy()
    stats = np.full((len(df), len(NORM_STATS)), np.nan, dtype=np.float32)
    computed = []
    for (store, _well, fov_part, channel), group in df.groupby(["store_path", "well", "fov", "channel_name"],
                                                              sort=False):
        fov = _first_fov_named(plates[store], fov_part)  # VisCy's lookup, see _first_fov_named
        table = timepoint_statistics(fov, plates[store].channel_names, channel, computed)
        for i, t in zip(group.index, group["t"].tolist()):
            entry = table.get(str(int(t)))
            if entry is not None:
                stats[i] = [entry.get(s, np.nan) for s in NORM_STATS]
        if focus_channel is not None:
            focus = _focus_by_fov_part(plates[store], fov_part, focus_channel)
            mean = (focus.get("fov_statistics") or {}).get("z_focus_mean")
            per_t = focus.get("per_timepoint") or {}
            if mean is not None:
                df.loc[group.index, "z_focus_mean"] = np.float32(mean)
            z = [per_t.get(str(int(t))) for t in group["t"].tolist()]
            if per_t and all(v is not None for v in z):
                df.loc[group.index, "z"] = np.asarray(z, dtype=np.int16)
    if computed:
        warnings.warn(f"timepoint statistics computed from the pixels (the plate has none) for "
                      f"{shorten(computed, 3)}", stacklevel=2)
    for k, s in enumerate(NORM_STATS):
        df[f"norm_{s}"] = stats[:, k]
    keep = ~np.isnan(stats).any(axis=1) & (stats[:, NORM_STATS.index("max")] != 0)
    return df[keep].reset_index(drop=True).astype({k: v for k, v in SCHEMA.items() if v != "object"})


def _first_fov_named(plate, fov_part: str):
    """The FOV whose attributes VisCy's preprocess reads for a row: it looks FOVs up by their last name part
    only, so FOVs of different wells with the same name (``A/1/000000``, ``B/2/000000``) all take the first
    one's statistics and focus (reproduced, as the predicted embeddings depend on it; see docs/viscy_compat.md)."""
    for fov in plate.fovs:
        if fov.name.rsplit("/", 1)[-1] == fov_part:
            return fov
    raise PlateError(f"no FOV named {fov_part} in plate {plate.path}")


def _focus_by_fov_part(plate, fov_part: str, focus_channel: str) -> dict:
    return (_first_fov_named(plate, fov_part).position.zattrs.get("focus_slice") or {}).get(focus_channel) or {}


def timepoint_statistics(fov, channel_names: Sequence[str], channel: str, computed: list | None = None) -> dict:
    """``{str(t): {mean, std, median, iqr, max, min}}`` of one FOV's channel: from its zattrs, else computed."""
    norm = (fov.normalization or {}).get(channel) or {}
    table = norm.get("timepoint_statistics")
    if table:
        return table
    if computed is not None:
        computed.append(f"{fov.name} {channel}")
    c = list(channel_names).index(channel)
    return {str(t): sampled_statistics(fov.image, t, c) for t in range(fov.shape[0])}


def sampled_statistics(image, t: int, c: int, spacing: int = GRID_SPACING) -> dict:
    """``viscy preprocess``'s statistics of one timepoint and channel: every Z, every *spacing*-th Y and X."""
    values = np.asarray(image[t, c, :, ::spacing, ::spacing]).ravel()  # as stored: float32 sums, as VisCy
    if values.size == 0 or not np.isfinite(values).any():
        return {}
    p25, p50, p75 = np.nanpercentile(values, [25, 50, 75])
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values)), "median": float(p50),
            "iqr": float(p75 - p25), "max": float(np.nanmax(values)), "min": float(np.nanmin(values))}


# ------------------------------------------------------------------------------------------------------ writing

def cell_index_from_plates(experiments: Sequence[Experiment], focus_channel: str | None = None,
                           include_wells: Sequence[str] | None = None, exclude_fovs: Sequence[str] | None = None,
                           preprocess: bool = True) -> pd.DataFrame:
    """``build-cell-index`` (+ ``preprocess-cell-index`` unless *preprocess* is false) of *experiments*."""
    from napari_dynaclr.core.plate import Plate

    raw = build_cell_index(experiments, include_wells, exclude_fovs)
    if not preprocess:
        return raw
    plates: dict = {}
    try:
        for e in experiments:
            key = e.data_path_as_given or str(e.data_path)
            if key not in plates:
                plates[key] = Plate(e.data_path)
        return preprocess_cell_index(raw, plates, focus_channel)
    finally:
        for p in plates.values():
            p.close()


def write_cell_index(df: pd.DataFrame, path: str | Path, overwrite: bool = False, inputs=None) -> Path:
    """Write *df* as VisCy's cell-index parquet (the 38-column schema), atomically and never over anything but a
    parquet file (:mod:`napari_dynaclr.core.output`)."""
    import pyarrow as pa

    from napari_dynaclr.core.output import write_atomically

    types = {"object": pa.string(), "float32": pa.float32(), "int16": pa.int16(), "int32": pa.int32()}
    schema = pa.schema([(name, types[kind]) for name, kind in SCHEMA.items()])
    table = pa.Table.from_pandas(df[list(SCHEMA)], schema=schema, preserve_index=False)
    return write_atomically(Path(path), lambda tmp: _write_parquet(tmp, table), overwrite, inputs, kind="parquet")


@temporary_writer
def _write_parquet(tmp: Path, table) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, tmp)
