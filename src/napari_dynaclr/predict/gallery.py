"""What the model saw: the normalised patches of chosen cells, cut by the prediction's own plan and reader.

The gallery of the napari plugin asks for these (in the work process): the same plate, crop, centre crop and
normalisation as a run with that config, for a handful of cells, reduced to 2-D for display (the middle
z-slice of the window, or its maximum projection).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.normalize import ScaleIntensityRangePercentiles
from napari_dynaclr.errors import ConfigError, TracksError
from napari_dynaclr.predict.batches import load_batch
from napari_dynaclr.predict.plan import plan_prediction

PROJECTIONS = ("middle slice", "max projection")
KEY = ["fov_name", "track_id", "t"]


def model_inputs(cfg: PredictConfig, cells: pd.DataFrame, projection: str = "middle slice"
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """``(index, patches)`` for the rows of *cells* (``fov_name, track_id, t``) that the config predicts:
    *index* holds their ``fov_name, track_id, t, y, x`` in the order asked, *patches* is float32
    ``(N, C, Y, X)`` — exactly what the model receives in a run with *cfg*, z reduced by *projection*.
    VisCy pools percentile scaling over the whole batch, so with such a normalisation each cell's batch of
    the run is read again; without one, only the chosen cells are read. Cells the run would not predict
    (too near the border, another FOV selection) are left out; NaN/Inf pixels are shown, not refused."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}")
    if cfg.source.kind != "tracks":
        raise ConfigError("the gallery shows the patches of classic (TripletDataModule) models; a "
                          "Bag-of-Channels model's samples are not shown yet")
    want = cells[KEY].astype({"fov_name": str}).reset_index(drop=True)
    if want.empty:
        return pd.DataFrame(columns=[*KEY, "y", "x"]), np.empty((0, len(cfg.source.source_channel), 0, 0), np.float32)
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
        index = have.iloc[found][[*KEY, "y", "x"]].reset_index(drop=True)
    finally:
        plan.close()
    if projection == "middle slice":
        flat = x[:, :, x.shape[2] // 2]
    else:
        flat = np.nanmax(x, axis=2) if x.shape[2] > 1 else x[:, :, 0]
    return index, np.ascontiguousarray(flat, dtype=np.float32)


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
