"""A napari Tracks layer as the tracks of a run (the Predict tab's "tracks from"): the same cells and the same
numbers as the tracks folder it was made from, checked before any work."""

from __future__ import annotations

from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from napari_fixtures import *  # noqa: F403
from napari_fixtures import load_yml, wait_worker

PLUGIN = "napari-dynaclr"
FOV = "A/1/1"  # the second FOV: a layer named for it must not fall back to the first
KEY = ["fov_name", "track_id", "t"]


@pytest.fixture
def docked(make_napari_viewer, monkeypatch):
    from napari_dynaclr._napari.widgets import main as main_widget

    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    errors = []
    monkeypatch.setattr(main_widget, "show_error", errors.append)
    return viewer, main, errors


def _csv(demo_inputs, fov: str = FOV) -> pd.DataFrame:
    return pd.read_csv(next((demo_inputs["tracks"] / fov).glob("*.csv")))


def _add_layer(viewer, df: pd.DataFrame, name: str, **kwargs):
    """A Tracks layer as a user makes one from a tracks table: data and graph, no features."""
    graph = {int(c): [int(p)] for c, p in df[["track_id", "parent_track_id"]].drop_duplicates().to_numpy()
             if p >= 0}
    return viewer.add_tracks(df[["track_id", "t", "y", "x"]].to_numpy(float), graph=graph, name=name, **kwargs)


def _reference(demo_inputs, tmp_path) -> ad.AnnData:
    """The same FOV predicted from a tracks folder by the engine the CLI runs. napari's Tracks layer holds its rows
    sorted by (track_id, t), and the run's cells come in their table's order (VisCy's): the folder's CSV has the
    rows in that order too, since a percentile normalisation pooled over each batch depends on which cells share
    a batch."""
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.predict.run import run_prediction

    tracks = tmp_path / "tracks"
    for fov in ("A/1/0", "A/1/1"):
        (tracks / fov).mkdir(parents=True)
        _csv(demo_inputs, fov).sort_values(["track_id", "t"]).to_csv(tracks / fov / "tracks.csv", index=False)
    out = tmp_path / "folder.zarr"
    cfg = load_predict_yaml(demo_inputs["config"]).with_overrides(
        output_path=out, tracks_path=tracks, include_wells=None,
        exclude_fovs=[f for f in ("A/1/0", "A/1/1") if f != FOV], batch_size=16)
    run_prediction(cfg, device="cpu")
    return ad.read_zarr(out)


def test_a_tracks_layer_predicts_its_fov_like_the_tracks_folder(docked, demo_inputs, tmp_path, qtbot):
    viewer, main, errors = docked
    load_yml(qtbot, main, demo_inputs["config"])
    choices = main.tracks_source.layer.choices
    layer = _add_layer(viewer, _csv(demo_inputs), f"{FOV} from ultrack")
    # the choice list follows the viewer's layers, the FOV is preselected from the layer's name
    assert layer.name in main.tracks_source.layer.choices and len(main.tracks_source.layer.choices) == len(
        choices) + 1
    main.tracks_source.layer.value = layer.name
    assert main.tracks_source.fov.value == FOV and main.tracks_source.fov.enabled
    main.output.value = out = tmp_path / "layer.zarr"
    main.device.value = "cpu"
    main.batch_size.value = 16
    worker = main.run()
    assert worker is not None, errors
    wait_worker(qtbot, worker, 150_000)
    assert errors == [] and main.last_error is None
    got = ad.read_zarr(out)
    ref = _reference(demo_inputs, tmp_path)
    assert set(got.obs["fov_name"].astype(str)) == {FOV}
    g = got.obs[KEY].astype({"fov_name": str}).reset_index(drop=True)
    r = ref.obs[KEY].astype({"fov_name": str}).reset_index(drop=True)
    assert len(g) == len(r) > 0
    order = g.reset_index().merge(r.reset_index(), on=KEY, suffixes=("_g", "_r"), validate="one_to_one")
    assert len(order) == len(r)  # the same cells
    np.testing.assert_array_equal(got.X[order["index_g"]], ref.X[order["index_r"]])  # the same numbers
    np.testing.assert_array_equal(got.obs["parent_track_id"].to_numpy()[order["index_g"]],
                                  ref.obs["parent_track_id"].to_numpy()[order["index_r"]])
    record = got.uns["dynaclr"]["inputs"]["tracks"]
    assert record["table"] == f"napari Tracks layer '{FOV} from ultrack'" and list(record["fovs"]) == [FOV]
    assert "tracks_path" not in got.uns  # (VisCy's key: a path, and there is none)
    # a layer that leaves the viewer leaves the list; the choice falls back to the tracks folder
    viewer.layers.remove(layer)
    assert layer.name not in main.tracks_source.layer.choices and not main.tracks_source.active


def test_our_own_overlay_names_its_fov_in_its_metadata(docked, demo_inputs, qtbot):
    viewer, main, errors = docked
    load_yml(qtbot, main, demo_inputs["config"])
    layer = _add_layer(viewer, _csv(demo_inputs), "cells", metadata={"dynaclr_fov": FOV})
    main.tracks_source.layer.value = layer.name
    assert main.tracks_source.fov.value == FOV


@pytest.mark.parametrize("case, needle", [
    ("x", "napari Tracks layer 'my tracks': 1 of {n} points lie outside FOV A/1/1's image (TYX 4×128×128), "
          "e.g. track 3 at t="),
    ("z", "napari Tracks layer 'my tracks': {n} of {n} points lie outside FOV A/1/1's image (TZYX 4×1×128×128)"),
])
def test_a_bad_tracks_layer_is_one_message_and_nothing_starts(docked, demo_inputs, tmp_path, qtbot, case, needle):
    """Tracks outside the image (a layer in another FOV's or level's pixels, or 3-D on a 2-D plate)."""
    viewer, main, errors = docked
    load_yml(qtbot, main, demo_inputs["config"])
    df = _csv(demo_inputs)
    if case == "x":
        df.loc[df.index[df["track_id"] == 3][0], "x"] = 128.5  # past the image's last column, one point
        layer = _add_layer(viewer, df, "my tracks")
    else:
        layer = viewer.add_tracks(df[["track_id", "t"]].assign(z=2.0).join(df[["y", "x"]]).to_numpy(float),
                                  name="my tracks")
    main.tracks_source.layer.value = layer.name
    main.tracks_source.fov.value = FOV
    needle = needle.format(n=len(df))
    main.output.value = out = tmp_path / "never.zarr"
    main.device.value = "cpu"
    assert main.run() is None and main.worker is None
    assert len(errors) == 1 and needle in errors[0], errors
    assert not out.exists()
    assert main.preview_cells() is None and needle in main.cells_info.value  # the preview says it in place


def test_the_layer_is_checked_against_the_plates_fovs(demo_inputs):
    import napari.layers

    from napari_dynaclr._napari.widgets.tracks_layer_source import layer_tracks_table
    from napari_dynaclr.errors import TracksError

    df = _csv(demo_inputs)
    layer = napari.layers.Tracks(df[["track_id", "t", "y", "x"]].to_numpy(float), name="t")
    shapes = {"A/1/0": (4, 2, 1, 128, 128)}
    with pytest.raises(TracksError, match="napari Tracks layer 't': choose the FOV of the plate it belongs to"):
        layer_tracks_table(layer, None, shapes)
    with pytest.raises(TracksError, match=r"napari Tracks layer 't': FOV A/1/1 is not in the plate \(FOVs: A/1/0\)"):
        layer_tracks_table(layer, FOV, shapes)
    layer.data = np.column_stack([df[["track_id"]], df["t"] + 0.5, df[["y", "x"]]])
    with pytest.raises(TracksError, match="column t holds non-integer values"):
        layer_tracks_table(layer, "A/1/0", shapes)
    # (napari 0.9 makes no Tracks layer without rows; a layer-like object stands for one)
    empty = SimpleNamespace(name="t", data=np.empty((0, 4)), graph={}, features=pd.DataFrame(), metadata={})
    with pytest.raises(TracksError, match="napari Tracks layer 't' has no tracks"):
        layer_tracks_table(empty, "A/1/0", shapes)
