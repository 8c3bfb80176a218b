"""Plate order, tracks parsing, VisCy's cell selection and normalisations (no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import DATA, write_tracks
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.normalize import NormalizeSampled, ScaleIntensityRangePercentiles, StatsTable, from_viscy
from napari_dynaclr.core.plate import Plate
from napari_dynaclr.core.predict_yml import load_predict_yaml, parse_predict_config
from napari_dynaclr.core.tracks import build_cell_table, read_tracks, select_fov_cells
from napari_dynaclr.errors import ConfigError, PlateError, TracksError
from napari_dynaclr.predict.batches import load_batch
from napari_dynaclr.predict.plan import plan_prediction
from napari_dynaclr.predict.transforms import normalize_batch


def make_plate(path, fovs, shape=(2, 1, 1, 64, 64), dtype="float32", channels=("Phase3D",), attrs=True, version="0.4"):
    from iohub.ngff import open_ome_zarr

    rng = np.random.default_rng(0)
    with open_ome_zarr(path, layout="hcs", mode="w-", channel_names=list(channels), version=version) as plate:
        for name in fovs:
            row, col, fov = name.split("/")
            pos = plate.create_position(row, col, fov)
            data = (rng.random(shape) * 1000).astype(dtype)
            pos.create_image("0", data)
            if attrs:
                pos.zattrs["normalization"] = {
                    ch: {"fov_statistics": {"mean": float(data[:, i].mean()), "std": float(data[:, i].std())},
                         "timepoint_statistics": {str(t): {"mean": float(t), "std": 2.0} for t in range(shape[0])}}
                    for i, ch in enumerate(channels)}
    return path


def cells_rows(n_t=2, coords=((32, 32),)):
    return [dict(track_id=k + 1, t=t, id=10 * k + t, parent_track_id=-1, parent_id=-1, y=y, x=x)
            for k, (y, x) in enumerate(coords) for t in range(n_t)]


def test_fov_order_is_lexicographic(tmp_path):
    names = ["A/1/2", "A/1/10", "A/1/0", "B/2/0", "A/10/0", "A/2/0"]
    make_plate(tmp_path / "p.zarr", names)
    with Plate(tmp_path / "p.zarr") as plate:
        assert [f.name for f in plate.fovs] == ["A/1/0", "A/1/10", "A/1/2", "A/10/0", "A/2/0", "B/2/0"]
    with Plate(tmp_path / "p.zarr", include_wells=["A/1"], exclude_fovs=["A/1/10"]) as plate:
        assert [f.name for f in plate.fovs] == ["A/1/0", "A/1/2"]
    with pytest.raises(PlateError, match="well.*'?Z/9'?.*not in plate"):
        Plate(tmp_path / "p.zarr", include_wells=["Z/9"])


def test_not_a_plate(tmp_path):
    from iohub.ngff import open_ome_zarr

    with open_ome_zarr(tmp_path / "fov.zarr", layout="fov", mode="w-", channel_names=["Phase3D"]) as pos:
        pos.create_image("0", np.zeros((1, 1, 1, 8, 8), np.float32))
    with pytest.raises(PlateError, match="single FOV.*not an HCS plate"):
        Plate(tmp_path / "fov.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(PlateError, match="not an OME-Zarr store"):
        Plate(tmp_path / "empty.zarr")
    with pytest.raises(PlateError, match="plate not found"):
        Plate(tmp_path / "missing.zarr")


def test_read_tracks_truncates_and_handles_nan_parents(tmp_path):
    df = pd.DataFrame(dict(track_id=[1, 1], t=[0, 1], id=[1, 2], parent_track_id=[np.nan, np.nan],
                           parent_id=[np.nan, 1.0], y=[64.9, -3.7], x=[65.5, 10.0], area=[1.5, 2.5]))
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    with pytest.warns(UserWarning, match="NaN value.*parent_track_id.*read as -1"):
        out = read_tracks(csv)
    assert out["y"].tolist() == [64, -3] and out["x"].tolist() == [65, 10]
    assert out["parent_track_id"].tolist() == [-1, -1] and out["parent_id"].tolist() == [-1, 1]
    assert all(out[c].dtype == np.int64 for c in out.columns)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.drop(columns=["parent_id"]), "lacks required column.*parent_id"),
        (lambda d: d.assign(y=[np.nan, 3.0]), "column 'y' has a missing/NaN value \\(data row 1\\)"),
        (lambda d: d.assign(extra=["a", "b"]), "column 'extra' has non-numeric value 'a'"),
        (lambda d: d.assign(t=[0, 0]), "share a \\(track_id, t\\) pair"),
    ],
)
def test_read_tracks_errors(tmp_path, mutate, match):
    df = pd.DataFrame(dict(track_id=[1, 1], t=[0, 1], id=[1, 2], parent_track_id=[-1, -1], parent_id=[-1, -1],
                           y=[10.0, 11.0], x=[10.0, 11.0]))
    mutate(df).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(TracksError, match=match):
        read_tracks(tmp_path / "t.csv")


def test_empty_csv_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TracksError, match="is empty"):
        read_tracks(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("track_id,t,id,parent_track_id,parent_id,y,x\n")
    assert len(read_tracks(tmp_path / "header.csv")) == 0


def test_border_filter_is_strict():
    df = pd.DataFrame(dict(track_id=range(6), t=0, id=range(6), parent_track_id=-1, parent_id=-1,
                           y=[64, 65, 191, 192, 100, 100], x=[100, 100, 100, 100, 64, 191]))
    kept = select_fov_cells(df, "A/1/0", (1, 1, 1, 256, 256), (128, 128))
    assert kept["track_id"].tolist() == [1, 2, 5]
    with pytest.raises(TracksError, match="t=3.*T=1"):
        select_fov_cells(df.assign(t=3), "A/1/0", (1, 1, 1, 256, 256), (128, 128))


def test_dev2d_selection_matches_reference(reference_arrays):
    cfg = load_predict_yaml(DATA / "dev2d" / "predict.yml").source
    with Plate(cfg.data_path) as plate:
        cells, counts = build_cell_table(plate.fovs, cfg.tracks(), cfg.initial_yx_patch_size)
    ref = reference_arrays("dev2d")
    assert cells["fov_name"].tolist() == ref["obs_fov_name"].tolist()
    assert cells["id"].tolist() == ref["obs_id"].tolist()
    assert sum(c["csv_rows"] for c in counts.values()) == 87


def test_predict_cells_selection():
    cfg = load_predict_yaml(DATA / "dev2d" / "predict.yml").source
    with Plate(cfg.data_path) as plate:
        cells, _ = build_cell_table(plate.fovs, cfg.tracks(), cfg.initial_yx_patch_size,
                                    include_cells=[("A/1/1", 1), ("/B/2/0", 2)])
    assert set(zip(cells.fov_name, cells.track_id)) == {("A/1/1", 1), ("B/2/0", 2)}
    assert cells.index.tolist() == list(range(len(cells)))


def _batch(values, fov_index, t):
    return torch.tensor(values, dtype=torch.float32).reshape(len(values), 1, 1, 1, 1), np.array(fov_index), np.array(t)


class _FOV:
    def __init__(self, name, norm):
        self.name, self.normalization = name, norm


def test_normalize_sampled_levels():
    fovs = [_FOV("A/1/0", {"Ph": {"fov_statistics": {"mean": 1.0, "std": 2.0},
                                  "timepoint_statistics": {"0": {"mean": 0.0, "std": 1.0},
                                                           "1": {"mean": 10.0, "std": 5.0}}}}),
            _FOV("A/1/1", {"Ph": {"fov_statistics": {"mean": 3.0, "std": 4.0}}})]
    x, f, t = _batch([5.0, 5.0, 5.0], [0, 1, 0], [0, 0, 1])
    norm = NormalizeSampled(keys=("Ph",), level="fov_statistics")
    out = normalize_batch(x, ["Ph"], [norm], StatsTable(fovs, [norm]), f, t)
    expected = ((x - torch.tensor([1.0, 3.0, 1.0]).reshape(-1, 1, 1, 1, 1))
                / (torch.tensor([2.0, 4.0, 2.0]).reshape(-1, 1, 1, 1, 1) + 1e-8))
    assert torch.equal(out, expected)
    tp = NormalizeSampled(keys=("Ph",), level="timepoint_statistics")
    out = normalize_batch(x[[0, 2]], ["Ph"], [tp], StatsTable(fovs, [tp], used=[0]), np.array([0, 0]), np.array([0, 1]))
    assert out.flatten().tolist() == pytest.approx([5.0, -1.0])
    with pytest.raises(PlateError, match="FOV A/1/1: channel 'Ph' has no timepoint_statistics"):
        StatsTable(fovs, [tp])
    with pytest.raises(PlateError, match="no statistic 'median'"):
        StatsTable(fovs, [NormalizeSampled(keys=("Ph",), subtrahend="median")])


def test_percentiles_pooled_over_batch_and_uint16():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 4000, (4, 1, 3, 8, 8)).astype(np.uint16))
    norm = ScaleIntensityRangePercentiles(keys=("RFP",), lower=50, upper=99, b_min=0.0, b_max=1.0)
    out = normalize_batch(x, ["RFP"], [norm], StatsTable([], [norm]), np.zeros(4, int), np.zeros(4, int))
    xf = x.to(torch.float32)
    lo = torch.quantile(xf, torch.tensor(0.5, dtype=torch.float32))
    hi = torch.quantile(xf, torch.tensor(0.99, dtype=torch.float32))
    assert torch.equal(out, (xf - lo) / (hi - lo) * 1.0 + 0.0)


def test_normalization_config_parsing():
    n = from_viscy({"class_path": "viscy_transforms.ScaleIntensityRangePercentilesd",
                    "init_args": {"keys": ["RFP"], "lower": 50, "upper": 99, "b_min": 0.0, "b_max": 1.0}})
    assert isinstance(n, ScaleIntensityRangePercentiles) and n.keys == ("RFP",)
    with pytest.raises(ConfigError, match="unsupported normalization class_path 'monai.transforms.RandFlipd'"):
        from_viscy({"class_path": "monai.transforms.RandFlipd", "init_args": {"keys": ["x"]}})
    with pytest.raises(ConfigError, match="level 'plate_statistics'"):
        from_viscy({"class_path": "viscy_transforms.NormalizeSampled",
                    "init_args": {"keys": ["x"], "level": "plate_statistics"}})


def test_predict_yaml_paths_resolve_against_config_folder():
    cfg = load_predict_yaml(DATA / "dev3d2ch" / "predict.yml")
    src = cfg.source
    assert src.data_path == DATA / "dev3d2ch" / "plate.zarr"
    assert cfg.ckpt_path == DATA / "dev3d2ch" / "model.ckpt"
    assert cfg.output_path == DATA / "dev3d2ch" / "prediction.zarr"
    assert src.data_path_as_given == "plate.zarr"
    assert src.source_channel == ["Phase3D", "RFP"] and src.z_range == (1, 13) and cfg.batch_size == 8
    assert [type(n).__name__ for n in src.normalizations] == ["NormalizeSampled", "ScaleIntensityRangePercentiles"]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["model"].update(class_path="my.Module"), "unsupported model.class_path 'my.Module'"),
        (lambda d: d["data"]["init_args"].pop("source_channel"), "data.init_args lacks source_channel"),
        (lambda d: d.pop("data"), "missing 'data' section"),
        (lambda d: d["data"]["init_args"].update(bogus=1), "unknown data.init_args key\\(s\\) bogus"),
        (lambda d: d.update(extra=1), "unknown top-level key"),
        (lambda d: d["data"]["init_args"].update(final_yx_patch_size=[256, 256]),
         "larger than data.init_args.initial_yx_patch_size"),
    ],
)
def test_malformed_predict_yaml(edit, match):
    import yaml

    doc = yaml.safe_load((DATA / "dev2d" / "predict.yml").read_text())
    edit(doc)
    with pytest.raises(ConfigError, match=match):
        parse_predict_config(doc)


def test_timepoint_statistics_in_attrs_and_nan_parents_work(tmp_path):
    """Where VisCy HEAD crashes (timepoint_statistics present, NaN parents) we predict normally."""
    make_plate(tmp_path / "p.zarr", ["A/1/0"], shape=(2, 1, 1, 96, 96))
    rows = cells_rows(coords=((40, 40), (50, 50)))
    df = pd.DataFrame(rows).astype({"parent_id": float})
    df.loc[0, "parent_id"] = np.nan
    write_tracks(tmp_path / "tracks", "A/1/0", df)
    cfg = PredictConfig.classic(tmp_path / "p.zarr", tmp_path / "tracks", ["Phase3D"], (0, 1), (64, 64), (64, 64),
                                batch_size=3, normalizations=[NormalizeSampled(keys=("Phase3D",))])
    with pytest.warns(UserWarning, match="parent_id"):
        plan = plan_prediction(cfg)
    try:
        assert plan.n_cells == 4 and plan.n_batches == 2
        x = load_batch(plan, 1)
        assert x.shape == (1, 1, 1, 64, 64) and x.dtype == torch.float32
    finally:
        plan.close()


def test_all_cells_filtered_is_refused(tmp_path):
    make_plate(tmp_path / "p.zarr", ["A/1/0"])
    write_tracks(tmp_path / "tracks", "A/1/0", cells_rows(coords=((2, 2),)))
    cfg = PredictConfig.classic(tmp_path / "p.zarr", tmp_path / "tracks", ["Phase3D"], (0, 1), (32, 32))
    with pytest.raises(TracksError, match="no cells to predict: all 2 tracked rows"):
        plan_prediction(cfg)


def test_legacy_centre_crop_when_initial_larger(tmp_path):
    make_plate(tmp_path / "p.zarr", ["A/1/0"], shape=(1, 1, 1, 96, 96))
    write_tracks(tmp_path / "tracks", "A/1/0", cells_rows(n_t=1, coords=((48, 48),)))
    cfg = PredictConfig.classic(tmp_path / "p.zarr", tmp_path / "tracks", ["Phase3D"], (0, 1), (64, 64), (32, 32))
    plan = plan_prediction(cfg)
    try:
        with Plate(tmp_path / "p.zarr") as plate:
            img = np.asarray(plate.fovs[0].image[0, 0, 0])
        np.testing.assert_array_equal(plan.read_batch(0)[0, 0, 0], img[48 - 16:48 + 16, 48 - 16:48 + 16])
    finally:
        plan.close()


@pytest.mark.parametrize("devices, accelerator, nodes, several", [
    (1, "auto", 1, False), (2, "cpu", 1, True), ([0, 1], "gpu", 1, True), ([0], "gpu", 1, False),
    ("auto", "gpu", 1, True), ("auto", "cpu", 1, False), (1, "gpu", 2, True),
])
def test_asks_several_devices(devices, accelerator, nodes, several):
    """What makes the napari dock say it predicts on one device."""
    cfg = PredictConfig.classic(data_path="p", tracks_path="t", source_channel=["a"], z_range=(0, 1),
                                devices=devices, accelerator=accelerator, num_nodes=nodes)
    assert cfg.asks_several_devices() is several
