"""What the model saw: the normalised patches of chosen cells, cut by the prediction's own plan and reader.

The gallery of the napari plugin asks for these (in the work process): the same plate, crop, centre crop and
normalisation as a run with that config, for a handful of cells, reduced to 2-D for display (the middle
z-slice of the window, or its maximum projection). A Bag-of-Channels run gives one sample per cell, timepoint
and channel (marker): its samples are cut by the Bag-of-Channels plan (z window and reduction, rescale and
normalisation), each a one-channel tile.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.normalize import ScaleIntensityRangePercentiles
from napari_dynaclr.errors import ConfigError, TracksError
from napari_dynaclr.predict.batches import load_batch
from napari_dynaclr.predict.boc_plan import plan_boc
from napari_dynaclr.predict.plan import plan_prediction

PROJECTIONS = ("middle slice", "max projection")
KEY = ["fov_name", "track_id", "t"]
#: the columns that tell a Bag-of-Channels run's samples of one cell and timepoint apart (either names one)
SAMPLE_KEYS = ("experiment", "marker")


def model_inputs(cfg: PredictConfig, cells: pd.DataFrame, projection: str = "middle slice"
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """``(index, patches)`` for the rows of *cells* (``fov_name, track_id, t``; for a Bag-of-Channels run also
    ``experiment`` or ``marker``, else every channel's sample of the cell) that the config predicts:
    *index* holds the columns of *cells* for each sample, in the order asked, with the sample's ``y, x`` (and,
    Bag-of-Channels, its ``experiment`` and ``marker``); *patches* is float32 ``(N, C, Y, X)`` — exactly what
    the model receives in a run with *cfg*, z reduced by *projection*. VisCy pools percentile scaling over the
    whole batch, so with such a normalisation each cell's batch of the run is read again; without one, only
    the chosen cells are read. Cells the run would not predict (too near the border, another FOV selection)
    are left out; NaN/Inf pixels are shown, not refused."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}")
    missing = [k for k in KEY if k not in cells.columns]
    if missing:
        raise ConfigError(f"the gallery's cells need column(s) {', '.join(missing)}")
    asked = cells.astype({"fov_name": str}).reset_index(drop=True)
    if cfg.source.kind == "boc":
        index, x = _boc_inputs(cfg, asked)
    elif asked.empty:
        index, x = asked.assign(y=[], x=[]), np.empty((0, len(cfg.source.source_channel), 1, 0, 0), np.float32)
    else:
        index, x = _classic_inputs(cfg, asked)
    if projection == "middle slice":
        flat = x[:, :, x.shape[2] // 2]
    else:
        flat = np.nanmax(x, axis=2) if x.shape[2] > 1 else x[:, :, 0]
    return index, np.ascontiguousarray(flat, dtype=np.float32)


def _classic_inputs(cfg: PredictConfig, asked: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The classic run's model inputs ``(N, C, Z, Y, X)`` of the cells *asked* (one per row)."""
    want = asked[KEY]
    pooled = any(isinstance(n, ScaleIntensityRangePercentiles) for n in cfg.source.normalizations)
    changes = {"allow_nonfinite": True, "output_path": None}
    if not pooled:  # the patches do not depend on the batch: plan only the chosen tracks, one batch
        changes.update(include_cells=sorted({(f, int(t)) for f, t in zip(want["fov_name"], want["track_id"],
                                                                           strict=True)}),
                       batch_size=len(want))
    plan = plan_prediction(cfg.with_overrides(**changes))
    try:
        have = plan.cells.assign(fov_name=plan.cells["fov_name"].astype(str)).reset_index(drop=True)
        pos = pd.Series(np.arange(len(have)), index=pd.MultiIndex.from_frame(have[KEY]))
        found = pos.reindex(pd.MultiIndex.from_frame(want)).dropna().astype(np.int64).to_numpy()
        if not len(found):
            raise TracksError("none of the chosen cells lies far enough from the image border to be predicted")
        if pooled:
            x = _from_run_batches(plan, found)
        else:
            plan = dataclasses.replace(plan, cells=have.iloc[found].reset_index(drop=True))
            x = load_batch(plan, 0).numpy()
        kept = np.flatnonzero(pos.reindex(pd.MultiIndex.from_frame(want)).notna().to_numpy())
        index = asked.iloc[kept].reset_index(drop=True).assign(
            y=have["y"].to_numpy()[found], x=have["x"].to_numpy()[found])
    finally:
        plan.close()
    return index, x


def _boc_inputs(cfg: PredictConfig, asked: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The Bag-of-Channels run's samples ``(N, 1, Z, Y, X)`` of the cells *asked*: each row's sample of the
    experiment or marker it names, or else each of its channels' samples (in the run's order). The plan's own
    reading (:meth:`~napari_dynaclr.predict.boc_plan.BocPlan.read_batch`, per-sample statistics: nothing pooled)
    of the chosen samples only."""
    keys = KEY + [k for k in SAMPLE_KEYS if k in asked.columns]
    if asked.empty:
        return asked.assign(experiment=[], marker=[], y=[], x=[]), np.empty(
            (0, 1, cfg.source.z_window, *cfg.source.patch_size), np.float32)
    plan = plan_boc(cfg.with_overrides(allow_nonfinite=True, output_path=None))
    try:
        have, want = (frame[keys].astype({k: np.int64 if k in KEY[1:] else str for k in keys})
                      for frame in (plan.cells, asked))
        found = want.assign(_asked=np.arange(len(want))).merge(have.assign(_pos=np.arange(len(have))), on=keys,
                                                               how="inner", sort=False)
        found = found.sort_values(["_asked", "_pos"], kind="stable")
        if found.empty:
            raise TracksError("none of the chosen cells is a sample of the run (a cell-index row far enough "
                              "from the image border)")
        rows = found["_pos"].to_numpy()
        chosen = dataclasses.replace(plan, cells=plan.cells.iloc[rows].reset_index(drop=True))
        x = np.concatenate([chosen.read_batch(i) for i in range(chosen.n_batches)])
        index = asked.iloc[found["_asked"].to_numpy()].reset_index(drop=True)
        for col in ("experiment", "marker", "y", "x"):
            index[col] = plan.cells[col].to_numpy()[rows]
    finally:
        plan.close()
    return index, x


def _from_run_batches(plan, found: np.ndarray) -> np.ndarray:
    """The model's input for the cells at positions *found*, each cut within its own batch of the run."""
    batch_of = found // plan.batch_size
    out = None
    for b in np.unique(batch_of):
        at = np.flatnonzero(batch_of == b)
        x = load_batch(plan, int(b)).numpy()
        if out is None:
            out = np.empty((len(found), *x.shape[1:]), dtype=np.float32)
        out[at] = x[found[at] - plan.batch_bounds(int(b))[0]]
    return out
