"""The plan of a Bag-of-Channels prediction: one sample per cell-index row (cell, timepoint, channel), VisCy's
``MultiExperimentDataModule`` predict stage step by step, with the classic plan's interface so the same engine
(:func:`napari_dynaclr.predict.run.prediction_events`: streaming, read-ahead threads, Lightning, atomic store
writing) runs it.

Per batch: each experiment's rows are cropped from whole planes (the classic
:class:`~napari_dynaclr.core.patches.PatchReader`, with the per-row ``(x - mean) / (std + 1e-8)`` fused into
the crop), then the nearest-exact resize, the z reduction and the centre crop are one index selection
(pointwise normalisation commutes with them, so the numbers are those of VisCy's order: resize, normalise,
reduce, crop).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.core.boc import (
    ExperimentGeometry,
    centre_start,
    clamp_rows,
    experiment_geometry,
    is_label_free,
    nearest_exact_index,
)
from napari_dynaclr.core.cell_index import read_cell_index, resolve_index_path, sampled_statistics
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.patches import PatchReader
from napari_dynaclr.core.plate import Plate, missing_chunks
from napari_dynaclr.errors import ConfigError, DynaclrWarning, PlateError, TracksError, shorten
from napari_dynaclr.predict.plan import NAN_ROWS, READ_AS_ZERO, BatchPartition, NonfiniteInputs

#: obs columns of a BoC store (VisCy's ``index`` of a sample), in order, with their dtypes
OBS_COLUMNS = {"fov_name": "object", "track_id": "int32", "t": "int32", "parent_track_id": "int32", "z": "int16",
               "y": "float32", "x": "float32", "experiment": "object", "marker": "object", "perturbation": "object",
               "hours_post_perturbation": "float32", "organelle": "object", "microscope": "object"}


@dataclasses.dataclass
class _Experiment:
    name: str
    plate: Plate
    channel: str
    geometry: ExperimentGeometry
    reader: PatchReader
    label_free: bool
    index: np.ndarray  # (z, y, x) source indices into the read window: resize + reduction + crop
    reduce_max: bool  # max over the selected z (MIP) instead of one slice
    marker: str = ""


class _Readers:
    """The readers of a plan's experiments behind the classic reader's ``expect`` / ``clear``."""

    def __init__(self, plan: BocPlan):
        self.plan = plan

    def expect(self, cells: pd.DataFrame | None) -> None:
        for k, exp in enumerate(self.plan.experiments):
            exp.reader.expect(None if cells is None else self.plan.reader_rows(cells[cells["exp_index"] == k]))

    def clear(self) -> None:
        for exp in self.plan.experiments:
            exp.reader.clear()


@dataclasses.dataclass
class BocPlan(BatchPartition):
    config: PredictConfig
    cells: pd.DataFrame  # kept rows in parquet order: obs columns + exp_index, fov_index, yc, xc, sub, div
    experiments: list[_Experiment]
    plates: dict
    given: dict = dataclasses.field(default_factory=dict)  # plate path -> the store_path as the index gives it
    nonfinite: object = None
    missing_chunks: dict = dataclasses.field(default_factory=dict)
    obs_layout: str = "boc"

    def __post_init__(self):
        self.nonfinite = NonfiniteInputs()
        self.reader = _Readers(self)

    @staticmethod
    def reader_rows(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"fov_index": rows["fov_index"].to_numpy(), "t": rows["t"].to_numpy(),
                             "y": rows["yc"].to_numpy(), "x": rows["xc"].to_numpy()})

    def read_batch(self, i: int) -> np.ndarray:
        """Model inputs (B, 1, Z, Y, X) float32 of batch *i*.

        Per sample, from a view into the cached plane: the z reduction first (a max over the source slices the
        resize would repeat, or the one middle slice), then the resize + crop as one index selection, then
        ``(x - mean) / (std + 1e-8)`` on what is left. Every step is a selection, a max or the same pointwise
        float32 arithmetic as VisCy's (resize, normalise, reduce, crop), and the normalisation is monotone,
        so the values are VisCy's, bit for bit, for a fraction of the work.
        """
        start, stop = self.batch_bounds(i)
        rows = self.cells.iloc[start:stop]
        cfg = self.config.source
        out = np.empty((len(rows), 1, cfg.z_window, *cfg.patch_size), dtype=np.float32)
        exp_index = rows["exp_index"].to_numpy()
        sub = rows["sub"].to_numpy()
        div = rows["div"].to_numpy()
        for k in np.unique(exp_index):
            exp = self.experiments[int(k)]
            sel = np.flatnonzero(exp_index == k)
            zi, yi, xi = exp.index
            ys, xs = _as_slice(yi), _as_slice(xi)
            zs = _as_slice(np.unique(zi)) if exp.reduce_max else None
            for j, window in exp.reader.windows(self.reader_rows(rows.iloc[sel])):
                dst = out[sel[j]]
                if exp.reduce_max:  # MIP: max over the slices the resize would repeat, then the YX selection
                    plane = window[0, zs].max(axis=0) if isinstance(zs, slice) else window[0, np.unique(zi)].max(0)
                    picked = _take_yx(plane, yi, xi, ys, xs)[None]
                else:
                    picked = np.stack([_take_yx(window[0, z], yi, xi, ys, xs) for z in zi.tolist()])
                np.subtract(picked, sub[sel[j]], out=dst[0])
                np.divide(dst[0], div[sel[j]], out=dst[0])
        self._check_finite(i, rows, out)
        return out

    def _check_finite(self, i: int, rows: pd.DataFrame, x: np.ndarray) -> None:
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if not bad.any():
            return
        k = int(np.flatnonzero(bad)[0])
        r = rows.iloc[k]
        cell = (f"FOV {r['fov_name']}, track_id {int(r['track_id'])}, t={int(r['t'])}, channel {r['channel_name']} "
                f"(experiment {r['experiment']})")
        what = f"{int((~np.isfinite(x[k])).sum())} of {x[k].size} normalised patch values are NaN/Inf"
        if not self.config.allow_nonfinite:
            raise PlateError(f"{cell}: {what}; its embedding would be NaN", remedy=NAN_ROWS)
        self.nonfinite.add(int(bad.sum()), int((~np.isfinite(x[bad])).sum()), f"{cell}: {what}")

    def index_frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        obs = self.cells.iloc[start:stop][list(OBS_COLUMNS)].reset_index(drop=True)
        return obs.astype({k: v for k, v in OBS_COLUMNS.items() if v != "object"})

    def inputs(self) -> dict:
        """What the store records of the run's inputs: the channels, markers and plate of each experiment."""
        experiments = {e.name: {"plate": e.plate.path, "given": self.given.get(str(e.plate.path)),
                                "channel": e.channel, "marker": e.marker} for e in self.experiments}
        return {"channels": list(dict.fromkeys(e.channel for e in self.experiments)),
                "markers": list(dict.fromkeys(e.marker for e in self.experiments)), "experiments": experiments}

    def close(self):
        for plate in self.plates.values():
            plate.close()


def _as_slice(index: np.ndarray):
    """A contiguous ascending index as a slice (a view instead of a gather), else the index itself."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


def _take_yx(plane: np.ndarray, yi, xi, ys, xs) -> np.ndarray:
    """``plane[yi][:, xi]`` (a view where the indices are contiguous)."""
    a = plane[ys] if isinstance(ys, slice) else plane.take(yi, axis=0)
    return a[:, xs] if isinstance(xs, slice) else a.take(xi, axis=1)


# -------------------------------------------------------------------------------------------------- planning

def plan_boc(cfg: PredictConfig, encoder=None) -> BocPlan:
    """Read (or build) the cell index of a Bag-of-Channels run (a
    :class:`~napari_dynaclr.core.sources.CellIndexSource`), open its plates and check everything against the
    settings and the encoder, before any pixel is read."""
    if encoder is not None:
        _check_encoder(cfg.source, encoder)
    plates: dict[str, Plate] = {}
    try:
        return _plan(cfg, plates)
    except BaseException:
        for p in plates.values():
            p.close()
        raise


def _open(plates: dict, path: Path) -> Plate:
    key = str(path)
    if key not in plates:
        plates[key] = Plate(path)
    return plates[key]


def _plan(settings: PredictConfig, plates: dict) -> BocPlan:
    cfg = settings.source
    if cfg.cell_index_path is not None:
        df = read_cell_index(cfg.cell_index_path)
        resolved = {s: resolve_index_path(s, cfg.cell_index_path) for s in df["store_path"].unique().tolist()}
    else:
        df, resolved = _built_index(settings, plates)
    for path in resolved.values():
        _open(plates, path)
    df = _select(settings, df)
    experiments, frames = [], []
    for name, group in df.groupby("experiment", sort=False):
        exp, rows = _experiment(cfg, str(name), group, plates[str(resolved[group["store_path"].iloc[0]])],
                                len(experiments))
        experiments.append(exp)
        frames.append(rows)
    cells = pd.concat(frames).sort_index(kind="stable")  # back to parquet order
    if cells.empty:
        raise TracksError(f"no rows to predict: all {len(df)} cell-index rows lie outside the image or more than "
                          f"{cfg.border_shift} px beyond the border clamp")
    cells = cells.reset_index(drop=True)
    cap = max(64 * 2**20, 512 * 2**20 // max(1, len(experiments)))
    for exp in experiments:
        exp.reader.cache_bytes = cap
    plan = BocPlan(settings, cells, experiments, plates, {str(p): s for s, p in resolved.items()})
    plan.missing_chunks = _check_chunks(settings, plan)
    _stats(cfg, plan)
    return plan


def _built_index(settings: PredictConfig, plates: dict) -> tuple[pd.DataFrame, dict]:
    from napari_dynaclr.core.cell_index import build_cell_index, preprocess_cell_index

    cfg = settings.source
    experiments = cfg.experiments(settings)
    for exp in experiments:
        if cfg.reference_pixel_size_xy_um is not None and exp.pixel_size_xy_um is None:
            raise ConfigError(f"experiment {exp.name}: pixel_size_xy_um is missing but the model's reference pixel "
                              f"size is {cfg.reference_pixel_size_xy_um} um; add it to the collection")
        if cfg.reference_pixel_size_z_um is not None and exp.pixel_size_z_um is None:
            raise ConfigError(f"experiment {exp.name}: pixel_size_z_um is missing but the model's reference z "
                              f"pixel size is {cfg.reference_pixel_size_z_um} um; add it to the collection")
    resolved = {e.data_path_as_given or str(e.data_path): e.data_path for e in experiments}
    raw = build_cell_index(experiments, settings.include_wells, settings.exclude_fovs)
    by_store = {s: _open(plates, p) for s, p in resolved.items()}
    return preprocess_cell_index(raw, by_store, cfg.focus_channel), resolved


def _select(cfg: PredictConfig, df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["fov_name"] = (df["well"].astype(str) + "/" + df["fov"].astype(str)).str.strip("/")
    if cfg.include_wells is not None:
        unknown = sorted(set(cfg.include_wells) - set(df["well"].astype(str)))
        if unknown:
            raise ConfigError(f"include_wells {shorten(unknown)} not in the cell index (wells: "
                              f"{shorten(sorted(set(df['well'].astype(str))), 8)})")
        df = df[df["well"].isin(cfg.include_wells)]
    if cfg.exclude_fovs is not None:
        names = sorted(set(df["fov_name"]))
        unknown = [f for f in dict.fromkeys(cfg.exclude_fovs) if f not in names]
        if unknown:
            raise ConfigError(f"exclude_fovs {shorten(unknown)} not in the cell index (FOVs: {shorten(names, 8)})")
        df = df[~df["fov_name"].isin(cfg.exclude_fovs)]
    if df.empty:
        raise TracksError("no cell-index rows left after include_wells / exclude_fovs")
    return df


def _experiment(cfg, name: str, group: pd.DataFrame, plate: Plate, k: int):
    where = f"experiment {name}"
    channels = group["channel_name"].astype(str).unique().tolist()
    if len(channels) != 1:
        raise ConfigError(f"{where} has rows for several channels ({shorten(channels)}); a Bag-of-Channels "
                          "experiment images one channel (VisCy's collections declare one per experiment)")
    channel = channels[0]
    if channel not in plate.channel_names:
        raise PlateError(f"{where}: channel {channel!r} not in plate {plate.path}; available channels: "
                         f"{', '.join(plate.channel_names)}")
    markers = group["marker"].astype(str).unique().tolist()
    if len(markers) != 1 or markers[0] in ("", "None", "nan"):
        raise ConfigError(f"{where}: the cell index gives no single marker for channel {channel!r} "
                          f"({shorten(markers)}); the marker decides the z reduction")
    px_xy = _pixel_size(group, "pixel_size_xy_um", cfg.reference_pixel_size_xy_um, where)
    px_z = _pixel_size(group, "pixel_size_z_um", cfg.reference_pixel_size_z_um, where)
    fov_names = [f.name for f in plate.fovs]
    unknown = sorted(set(group["fov_name"]) - set(fov_names))
    if unknown:
        raise PlateError(f"{where}: FOV(s) {shorten(unknown)} of the cell index not in plate {plate.path}")
    shapes = {plate.fovs[fov_names.index(f)].shape for f in group["fov_name"].unique()}
    z_total = min(s[2] for s in shapes)
    if cfg.extraction_depth > z_total:
        raise PlateError(f"{where}: the z window of {cfg.extraction_depth} slices is larger than the stack of plate "
                         f"{plate.path} (Z={z_total})")
    focus_ch = cfg.focus_channel or channel
    focus = ((plate.attrs.get("focus_slice") or {}).get(focus_ch) or {}).get("dataset_statistics") or {}
    focus_mean = focus.get("z_focus_mean")
    if focus_mean is None:
        warnings.warn(f"{where}: plate {plate.path} has no focus_slice[{focus_ch}] statistics; the z window is "
                      "centred on the middle of the stack (as VisCy does)", stacklevel=4)
    geo = experiment_geometry(cfg, z_total, focus_mean, px_xy, px_z)
    z0, z1 = geo.read_z
    if z1 - z0 > z_total or z1 - z0 < 1:
        raise PlateError(f"{where}: at pixel size {px_z} um the reference z window needs {z1 - z0} slices; the "
                         f"stack has {z_total}")
    if z0 < 0 or z1 > z_total:  # VisCy reads past the stack here and fails: keep the window inside it
        z0 = min(max(z0, 0), z_total - (z1 - z0))
        geo = dataclasses.replace(geo, read_z=(z0, z0 + (geo.read_z[1] - geo.read_z[0])))
    hy, hx = geo.read_half
    rows = group.copy()
    parts = []
    for fov_name, sub in rows.groupby("fov_name", sort=False):
        fi = fov_names.index(fov_name)
        _, _, _, height, width = plate.fovs[fi].shape
        if 2 * hy > height or 2 * hx > width:
            raise PlateError(f"{where}: the read window of {2 * hy}x{2 * hx} px (patch {list(cfg.yx_patch_size)} at "
                             f"pixel size {px_xy} um) does not fit FOV {fov_name} of {height}x{width} px")
        n_t = plate.fovs[fi].shape[0]
        bad_t = sub["t"][(sub["t"] < 0) | (sub["t"] >= n_t)]
        if len(bad_t):
            raise TracksError(f"{where}: the cell index has rows at t={int(bad_t.iloc[0])} for FOV {fov_name}, "
                              f"which has {n_t} timepoint(s) (t = 0..{n_t - 1})")
        keep, yc, xc = clamp_rows(sub["y"].to_numpy(), sub["x"].to_numpy(), height, width, cfg.half_patch,
                                  cfg.border_shift)
        # a read wider than the clamp range (pixels finer than the reference) stays inside the image;
        # VisCy reads past the edge and fails there
        yc = np.clip(yc, hy, height - hy)
        xc = np.clip(xc, hx, width - hx)
        sub = sub.assign(fov_index=fi, yc=yc, xc=xc)[keep]
        parts.append(sub)
    rows = pd.concat(parts) if parts else rows.iloc[:0]
    rows["exp_index"] = k
    label_free = is_label_free(markers[0])
    reader = PatchReader(plate.fovs, [plate.channel_names.index(channel)], geo.read_z, (2 * hy, 2 * hx),
                         channel_names=[channel])
    index, reduce_max = _selection(cfg, geo, label_free)
    return _Experiment(name, plate, channel, geo, reader, label_free, index, reduce_max, markers[0]), rows


def _pixel_size(group: pd.DataFrame, col: str, reference, where: str) -> float | None:
    values = group[col].unique()
    if len(values) != 1:
        raise ConfigError(f"{where}: {col} differs between rows ({shorten(values.tolist())})")
    v = values[0]
    if reference is None:
        return None if v is None or not np.isfinite(v) else float(v)
    if v is None or not np.isfinite(v):
        raise ConfigError(f"{where}: {col} is missing but the model's reference pixel size is {reference} um")
    if v <= 0:
        raise ConfigError(f"{where}: {col} is {v}; a pixel size must be positive")
    return float(v)


def _selection(cfg, geo: ExperimentGeometry, label_free: bool):
    """(z, y, x) index arrays into the read window that give VisCy's resized, reduced and cropped sample."""
    nz = geo.read_z[1] - geo.read_z[0]
    ny, nx = 2 * geo.read_half[0], 2 * geo.read_half[1]
    tz, ty, tx = geo.target if geo.resize else (nz, ny, nx)
    zi, yi, xi = (nearest_exact_index(n, t) for n, t in ((nz, tz), (ny, ty), (nx, tx)))
    fy, fx = cfg.patch_size
    yi = yi[centre_start(ty, fy): centre_start(ty, fy) + fy]
    xi = xi[centre_start(tx, fx): centre_start(tx, fx) + fx]
    reduce_max = False
    if cfg.z_reduction and tz > 1:
        if label_free:
            zi = zi[tz // 2: tz // 2 + 1]
        else:
            reduce_max = True  # max over every resized slice, then a 1-slice crop
        return (zi, yi, xi), reduce_max
    s = centre_start(tz, cfg.z_window)
    return (zi[s: s + cfg.z_window], yi, xi), reduce_max


def _check_encoder(cfg, enc) -> None:
    from napari_dynaclr.core.architecture import patch_multiple

    if enc.in_channels != 1:
        raise ConfigError(f"the model takes {enc.in_channels} channels; a Bag-of-Channels model takes 1 "
                          "(one channel per sample)")
    kz, sz = enc.stem_kernel_size[0], enc.stem_stride[0]
    if cfg.z_window < kz or (cfg.z_window - kz) // sz + 1 != enc.stem_out_depth:
        raise ConfigError(f"{{@z_window}} {cfg.z_window} does not fit the model's stem (in_stack_depth "
                          f"{enc.in_stack_depth})")
    mult = patch_multiple(enc)
    py, px = cfg.patch_size
    if py % enc.stem_stride[1] or px % enc.stem_stride[2] or py < mult or px < mult:
        raise ConfigError(f"{{@final_yx_patch_size}} {py}x{px} does not fit {enc.backbone}: use a multiple of {mult}")


def _check_chunks(cfg: PredictConfig, plan: BocPlan) -> dict:
    missing: dict[str, tuple[int, int]] = {}
    for k, exp in enumerate(plan.experiments):
        rows = plan.cells[plan.cells["exp_index"] == k]
        c = exp.plate.channel_names.index(exp.channel)
        for fi, group in rows.groupby("fov_index", sort=True):
            fov = exp.plate.fovs[int(fi)]
            res = missing_chunks(fov, group["t"].unique().tolist(), [c], exp.geometry.read_z)
            if res is not None and res[0]:
                missing[f"{fov.name} ({exp.channel})"] = res
    if missing:
        name, (n, needed) = next(iter(missing.items()))
        msg = f"FOV {name}: {n} of {needed} image chunks are missing (they would be read as 0)"
        if not cfg.allow_nonfinite:
            raise PlateError(msg, remedy=READ_AS_ZERO)
        warnings.warn(DynaclrWarning(f"{msg}; reading them as 0 ({{@allow_nonfinite}})"), stacklevel=3)
    return missing


def _stats(cfg, plan: BocPlan) -> None:
    """The per-row ``sub`` and ``div`` (``std + 1e-8`` in float32, as VisCy's tensor arithmetic) columns."""
    cells = plan.cells
    n = len(cells)
    if not cfg.normalizations:
        cells["sub"] = np.zeros(n, dtype=np.float32)
        cells["div"] = np.ones(n, dtype=np.float32)
        return
    norm = cfg.normalizations[0]
    pair = []
    for stat in (norm.subtrahend, norm.divisor):
        col = f"norm_{stat}"
        if norm.level == "timepoint_statistics" and col in cells.columns:
            values = cells[col].to_numpy(dtype=np.float32).copy()
        else:
            values = np.full(n, np.nan, dtype=np.float32)
        missing = np.flatnonzero(~np.isfinite(values))
        if len(missing):  # VisCy gives NaN embeddings here (un-preprocessed index) or fails (other levels)
            values[missing] = _from_plate(plan, missing, norm.level, stat)
        pair.append(values)
    cells["sub"] = pair[0]
    # VisCy's float32 tensor + 1e-8: torch adds the scalar in float32, as numpy does with a float32 scalar
    cells["div"] = pair[1] + np.float32(1e-8)


def _from_plate(plan: BocPlan, rows: np.ndarray, level: str, stat: str) -> np.ndarray:
    """Statistics the cell index lacks, from the row's own FOV attributes (computed from the pixels when the
    plate has no ``timepoint_statistics`` either; any other level must be in the attributes)."""
    out = np.empty(len(rows), dtype=np.float32)
    cache: dict = {}
    computed = []
    cells = plan.cells
    for j, r in enumerate(rows.tolist()):
        exp = plan.experiments[int(cells["exp_index"].iat[r])]
        fov = exp.plate.fovs[int(cells["fov_index"].iat[r])]
        key = (id(exp.plate), fov.name, exp.channel)
        if key not in cache:
            norm = (fov.normalization or {}).get(exp.channel) or {}
            if level == "timepoint_statistics" and not norm.get(level):
                computed.append(f"{fov.name} {exp.channel}")
                c = exp.plate.channel_names.index(exp.channel)
                norm = {level: {str(t): sampled_statistics(fov.image, t, c) for t in range(fov.shape[0])}}
            cache[key] = norm.get(level)
        table = cache[key]
        if level == "timepoint_statistics":
            table = (table or {}).get(str(int(cells["t"].iat[r])))
        if not table or stat not in table or table[stat] is None:
            raise PlateError(f"FOV {fov.name}: no normalization[{exp.channel!r}].{level}.{stat} in the plate "
                             "attributes and none in the cell index; run `viscy preprocess` on the plate")
        out[j] = np.float32(table[stat])
    if computed:
        warnings.warn(f"timepoint statistics computed from the pixels (neither the cell index nor the plate has "
                      f"them) for {shorten(computed, 3)}", stacklevel=4)
    return out
