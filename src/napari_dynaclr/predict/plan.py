"""The plan of a prediction: plate, tracks and settings checked against each other and the encoder, with
VisCy's cell order and batch partition fixed. No model and no torch (napari's process plans its preview
with it); :func:`napari_dynaclr.predict.batches.load_batch` turns a batch into the model's input.

Nothing broken passes for a result: missing image chunks (zarr would read them as 0) are refused when planning,
and every batch is checked for NaN/Inf pixels after reading and normalisation (one ``np.isfinite`` pass);
both are refused with a :class:`~napari_dynaclr.errors.PlateError` naming the FOV (and the cell) unless
``allow_nonfinite``, in which case they are counted and reported.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings

import numpy as np  # noqa: E402
import pandas as pd

from napari_dynaclr.core.architecture import EncoderConfig, patch_multiple
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.normalize import StatsTable
from napari_dynaclr.core.patches import PatchReader
from napari_dynaclr.core.plate import Plate, missing_chunks
from napari_dynaclr.core.tracks import build_cell_table
from napari_dynaclr.errors import ConfigError, DynaclrWarning, PlateError, Remedy, TracksError, shorten


@dataclasses.dataclass
class NonfiniteInputs:
    """Cells whose normalised patch held NaN/Inf values (counted when ``allow_nonfinite``): thread-safe, the
    read-ahead threads add to it."""

    cells: int = 0
    values: int = 0
    first: str | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, cells: int, values: int, first: str) -> None:
        with self.lock:
            self.cells += cells
            self.values += values
            if self.first is None:
                self.first = first


class BatchPartition:
    """The run's batches over ``self.cells`` in order, ``self.config.batch_size`` rows each (the last one
    shorter): shared by the classic and the Bag-of-Channels plans."""

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_cells / self.batch_size)

    def batch_bounds(self, i: int) -> tuple[int, int]:
        start = i * self.batch_size
        return start, min(start + self.batch_size, self.n_cells)


@dataclasses.dataclass
class PredictionPlan(BatchPartition):
    """A validated prediction: plate, ordered cell table, batch partition, reader and statistics."""

    config: PredictConfig
    plate: Plate
    cells: pd.DataFrame
    channel_indices: list[int]
    stats: StatsTable
    reader: PatchReader
    fov_counts: dict
    nonfinite: NonfiniteInputs = dataclasses.field(default_factory=NonfiniteInputs)
    missing_chunks: dict = dataclasses.field(default_factory=dict)  # FOV name -> (missing, needed), if allowed

    def read_batch(self, i: int) -> np.ndarray:
        """Raw float32 patches (B, C, Z, Y, X) of batch *i*."""
        start, stop = self.batch_bounds(i)
        return self.reader.read(self.cells.iloc[start:stop])

    def check_finite(self, i: int, rows: pd.DataFrame, x: np.ndarray, raw_bad: np.ndarray | None = None,
                      count: bool = True, channels: list[int] | None = None) -> np.ndarray | None:
        """(B, C) mask of the patch channels of batch *i* holding NaN/Inf (None when all are finite).

        Refuses them with a :class:`PlateError` naming the first cell unless ``allow_nonfinite``. *raw_bad*:
        the raw pixels' mask of a batch checked again after its normalisation (cells that only the
        normalisation made non-finite are named as such). *count*: add the bad cells to ``nonfinite`` (the
        last check of a batch does). *channels*: check only these channels (the others count as finite).
        """
        if channels is None:
            bad = ~np.isfinite(x).all(axis=tuple(range(2, x.ndim)))
        else:
            bad = np.zeros(x.shape[:2], dtype=bool)
            for c in channels:
                bad[:, c] = ~np.isfinite(x[:, c]).all(axis=tuple(range(1, x.ndim - 1)))
        if raw_bad is not None:
            bad |= raw_bad
        if not bad.any():
            return None
        cells_bad = bad.any(axis=1)
        k = int(np.flatnonzero(cells_bad)[0])
        c = int(np.flatnonzero(bad[k])[0])
        n_values = int((~np.isfinite(x[k, c])).sum())
        row = rows.iloc[k]
        channel = self.config.source.source_channel[c]
        cell = f"FOV {row['fov_name']}, track_id {int(row['track_id'])}, t={int(row['t'])}, channel {channel}"
        if raw_bad is not None and not raw_bad[k, c]:
            what = f"the normalisation gives {n_values} NaN/Inf value(s) of {x[k, c].size} in its patch"
        else:
            what = f"{n_values} of {x[k, c].size} patch pixels are NaN/Inf"
        if not self.config.allow_nonfinite:
            others = int(cells_bad.sum()) - 1
            more = f" (and {others} more cell(s) of batch {i})" if others else ""
            raise PlateError(f"{cell}: {what}{more}; its embedding would be NaN", remedy=NAN_ROWS)
        if count:
            self.nonfinite.add(int(cells_bad.sum()), int((~np.isfinite(x[cells_bad])).sum()), f"{cell}: {what}")
        return bad

    def index_frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """obs-style rows (VisCy index columns) for cells [start, stop)."""
        return self.cells.iloc[start:stop].drop(columns=["fov_index"]).reset_index(drop=True)

    def inputs(self) -> dict:
        """What the store records of the run's inputs: the channels and the marker (when the metadata gives it)."""
        markers = self.cells["marker"].unique().tolist() if "marker" in self.cells.columns else []
        return {"channels": list(self.config.source.source_channel), "markers": markers}

    def close(self):
        self.plate.close()


#: what to do about NaN/Inf pixels, and about missing chunks
NAN_ROWS = Remedy("allow_nonfinite", purpose="to write such cells as NaN rows", otherwise="fix the plate")
READ_AS_ZERO = Remedy("allow_nonfinite", purpose="to read them as 0", otherwise="restore the plate")


def plan_prediction(cfg: PredictConfig, encoder: EncoderConfig | None = None) -> PredictionPlan:
    """Open the plate and tracks of a classic run (a :class:`~napari_dynaclr.core.sources.TracksSource`) and
    check them against the config and the encoder (:func:`napari_dynaclr.predict.planners.plan_for` plans any
    source)."""
    plate = Plate(cfg.source.data_path, cfg.include_wells, cfg.exclude_fovs)
    try:
        return _plan(cfg, plate, encoder)
    except BaseException:
        plate.close()
        raise


def _plan(settings: PredictConfig, plate: Plate, encoder: EncoderConfig | None) -> PredictionPlan:
    cfg = settings.source
    if cfg.include_cells is not None:  # VisCy's predict_cells: include_fov_names / include_track_ids
        plate.check_fov_names([f for f, _ in cfg.include_cells], "include_fov_names")
    channel_indices = plate.channel_indices(cfg.source_channel)
    z0, z1 = cfg.z_range
    ph, pw = cfg.initial_yx_patch_size
    for fov in plate.fovs:
        _, _, nz, h, w = fov.shape
        if z1 > nz:
            raise PlateError(f"z_range [{z0}, {z1}] exceeds FOV {fov.name} with Z={nz} (stop is exclusive)")
        if 2 * (ph // 2) >= h or 2 * (pw // 2) >= w:
            raise PlateError(
                f"patch {ph}x{pw} does not fit FOV {fov.name} image of {h}x{w} (YX); choose a smaller patch"
            )
    if encoder is not None:
        _check_encoder(cfg, encoder)
    cells, counts = build_cell_table(plate.fovs, cfg.tracks(), cfg.initial_yx_patch_size, cfg.include_cells)
    if cells.empty:
        total = sum(c["csv_rows"] for c in counts.values())
        raise TracksError(
            f"no cells to predict: all {total} tracked rows lie within {ph // 2}x{pw // 2} px of the image "
            "border (or outside the selected cells); nothing is written"
        )
    used = sorted(set(cells["fov_index"].tolist()))
    if settings.experiment is not None:  # experiment, marker, perturbation, hours_post_perturbation
        meta = settings.experiment.obs_columns(cells["fov_name"].to_numpy(), cells["t"].to_numpy(), cfg.data_path,
                                               cfg.source_channel)
        cells = cells.assign(**meta)[[*cells.columns[:-1], *meta, "fov_index"]]
    stats = StatsTable(plate.fovs, cfg.normalizations, used)
    missing = _check_chunks(settings, plate, cells, channel_indices)
    reader = PatchReader(
        plate.fovs, channel_indices, cfg.z_range, cfg.initial_yx_patch_size, cfg.patch_size,
        channel_names=cfg.source_channel,
    )
    reader.cache_bytes = plane_cache_bytes(reader, plate, cells, reader.cache_bytes)
    return PredictionPlan(settings, plate, cells, channel_indices, stats, reader, counts, missing_chunks=missing)


#: the most the plane cache may grow to hold one FOV's working set (also at most 1/8 of the machine's memory)
MAX_PLANE_CACHE = 2 * 2**30


def plane_cache_bytes(reader: PatchReader, plate: Plate, cells: pd.DataFrame, default: int) -> int:
    """The plane cache cap for this plan. Cells come FOV by FOV, track by track, so every timepoint of the
    current FOV stays in use until its last track: that is the working set. When it exceeds *default*
    (3-D stacks: 2 channels x 30 slices x 512^2 float32 is 63 MB per plane, 1.26 GB for 20 timepoints) the LRU
    would evict every plane before its next use and re-decode it for every track; the cap is then raised to
    hold the working set (plus 4 planes of read-ahead), up to :data:`MAX_PLANE_CACHE` and 1/8 of the RAM.
    A working set beyond that keeps *default* (such planes are read as bounding boxes anyway)."""
    import os

    work = 0
    for f, group in cells.groupby("fov_index", sort=False):
        plane = reader._plane_nbytes(plate.fovs[int(f)])
        work = max(work, (group["t"].nunique() + 4) * plane)
    if work <= default:
        return default
    limit = MAX_PLANE_CACHE
    try:
        limit = min(limit, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8)
    except (AttributeError, ValueError, OSError):
        pass
    return work if work <= limit else default


def _check_chunks(cfg: PredictConfig, plate: Plate, cells: pd.DataFrame, channel_indices: list[int]) -> dict:
    """Missing image chunks (read as 0 by zarr) of the planes the plan reads: refused with a
    :class:`PlateError` unless ``allow_nonfinite`` (then one warning); returns FOV -> (missing, needed)."""
    missing: dict[str, tuple[int, int]] = {}
    for f, group in cells.groupby("fov_index", sort=True):
        fov = plate.fovs[int(f)]
        res = missing_chunks(fov, group["t"].unique().tolist(), channel_indices, cfg.source.z_range)
        if res is not None and res[0]:
            missing[fov.name] = res
    if not missing:
        return missing
    name, (n_missing, n_needed) = next(iter(missing.items()))
    more = ""
    if len(missing) > 1:
        rest = sum(m for m, _ in list(missing.values())[1:])
        more = f" (and {rest} in {len(missing) - 1} more FOV(s): {shorten(list(missing)[1:])})"
    msg = (f"FOV {name}: {n_missing} of {n_needed} image chunks are missing (they would be read as 0){more}; "
           "a chunk may be absent because it was deleted or never written")
    if not cfg.allow_nonfinite:
        raise PlateError(msg, remedy=READ_AS_ZERO)
    warnings.warn(DynaclrWarning(f"{msg}; reading them as 0 ({{@allow_nonfinite}})"), stacklevel=3)
    return missing


def _check_encoder(cfg, enc: EncoderConfig) -> None:
    if len(cfg.source_channel) != enc.in_channels:
        raise ConfigError(
            f"the model takes {enc.in_channels} channel(s) but {{@source_channel}} has {len(cfg.source_channel)}: "
            f"{cfg.source_channel}"
        )
    kz, sz = enc.stem_kernel_size[0], enc.stem_stride[0]
    depth = cfg.z_depth
    if depth < kz or (depth - kz) // sz + 1 != enc.stem_out_depth:
        raise ConfigError(
            f"{{@z_range}} {list(cfg.z_range)} gives {depth} slices but the model's stem expects "
            f"in_stack_depth {enc.in_stack_depth}"
        )
    stride_y, stride_x = enc.stem_stride[1:]
    py, px = cfg.patch_size
    if py % stride_y or px % stride_x:
        raise ConfigError(
            f"patch {py}x{px} is not a multiple of the stem stride {stride_y}x{stride_x}; "
            f"use a multiple of {patch_multiple(enc)}"
        )
    mult = patch_multiple(enc)
    if py < mult or px < mult:
        raise ConfigError(f"patch {py}x{px} is too small for {enc.backbone}; use at least {mult}x{mult}")
    if py % mult or px % mult:
        warnings.warn(
            f"patch {py}x{px} is not a multiple of {mult}; the backbone will crop its feature maps",
            stacklevel=3,
        )
