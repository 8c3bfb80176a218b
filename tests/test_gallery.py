"""The gallery's tiles are the model's inputs: Bag-of-Channels samples (one per cell, timepoint and channel) cut
by the Bag-of-Channels data path, equal to what the run feeds the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.errors import TracksError
from napari_dynaclr.predict.batches import load_batch
from napari_dynaclr.predict.gallery import model_inputs
from napari_dynaclr.predict.planners import plan_for


def _run_inputs(cfg):
    """The model inputs of every sample of the run (its batches, as the engine loads them) and its obs rows."""
    plan = plan_for(cfg)
    try:
        x = np.concatenate([load_batch(plan, i).numpy() for i in range(plan.n_batches)])
        return x, plan.index_frame()
    finally:
        plan.close()


@pytest.mark.parametrize("case", ["boc2d_mip", "boc3d"])
def test_boc_tiles_are_the_samples_the_model_receives(case):
    cfg = load_predict_yaml(DATA / case / "predict.yml")
    x, obs = _run_inputs(cfg)
    # samples of both markers, in an order of our own (the gallery answers in the order asked)
    markers = obs["marker"].astype(str)
    rows = np.concatenate([np.flatnonzero(markers == m)[[0, 3, -1]] for m in markers.unique()])[::-1]
    asked = obs.iloc[rows][["fov_name", "track_id", "t", "experiment"]]
    index, tiles = model_inputs(cfg, asked)
    assert tiles.shape == (len(rows), 1, *cfg.source.patch_size)
    pd.testing.assert_frame_equal(index[["fov_name", "track_id", "t", "experiment"]].astype({"fov_name": str}),
                                  asked.astype({"fov_name": str}).reset_index(drop=True), check_dtype=False)
    assert index["marker"].tolist() == obs["marker"].iloc[rows].astype(str).tolist()
    np.testing.assert_array_equal(tiles, x[rows][:, :, x.shape[2] // 2])
    _, projected = model_inputs(cfg, asked, "max projection")
    np.testing.assert_array_equal(projected, x[rows].max(axis=2))


def test_a_boc_cell_without_its_channel_shows_each_channels_sample():
    cfg = load_predict_yaml(DATA / "boc2d_mip" / "predict.yml")
    x, obs = _run_inputs(cfg)
    first = obs.iloc[0]
    same_cell = np.flatnonzero((obs["fov_name"].astype(str) == str(first["fov_name"]))
                               & (obs["track_id"] == first["track_id"]) & (obs["t"] == first["t"]))
    assert obs["marker"].iloc[same_cell].nunique() == 2  # Phase3D and G3BP1
    index, tiles = model_inputs(cfg, obs.iloc[[0]][["fov_name", "track_id", "t"]])
    assert index["marker"].tolist() == obs["marker"].iloc[same_cell].astype(str).tolist()
    np.testing.assert_array_equal(tiles, x[same_cell][:, :, 0])
    with pytest.raises(TracksError, match="none of the chosen cells"):
        model_inputs(cfg, pd.DataFrame({"fov_name": ["A/1/000000"], "track_id": [999], "t": [0]}))
    empty_index, empty = model_inputs(cfg, obs.iloc[:0][["fov_name", "track_id", "t"]])
    assert len(empty_index) == 0 and empty.shape[0] == 0
