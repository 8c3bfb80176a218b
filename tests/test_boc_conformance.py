"""Bag-of-Channels: reproduce VisCy's public BoC cases (MultiExperimentDataModule from a cell-index parquet):
same obs row by row, same numbers (CPU), same store layout; a cell index built from the plate equal to VisCy's."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from napari_dynaclr.core.cell_index import build_cell_index, preprocess_cell_index, read_cell_index
from napari_dynaclr.core.collection import load_collection
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.plate import Plate
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.core.store import read_store
from napari_dynaclr.predict.run import run_prediction

BOC_CASES = ("boc2d_mip", "boc3d")
TOL = 1e-4
OBS = ["fov_name", "track_id", "t", "parent_track_id", "z", "y", "x", "experiment", "marker", "perturbation",
       "hours_post_perturbation", "organelle", "microscope"]


def _config(case, ckpt, **changes) -> PredictConfig:
    cfg = load_predict_yaml(DATA / case / "predict.yml")
    assert cfg.family == "bag_of_channels"
    return cfg.with_overrides(ckpt_path=ckpt, accelerator="cpu", **changes)


@pytest.fixture(scope="module")
def predicted(conformance_ckpt):
    cache = {}

    def get(case):
        if case not in cache:
            cache[case] = run_prediction(_config(case, conformance_ckpt(case)), write=False)[1]
        return cache[case]

    return get


@pytest.mark.parametrize("case", BOC_CASES)
def test_embeddings_match_viscy(case, predicted, reference_arrays):
    adata, ref = predicted(case), reference_arrays(case)
    assert adata.X.dtype == np.float32 and adata.obsm["X_projections"].dtype == np.float32
    assert adata.X.shape == ref["features"].shape
    assert adata.obsm["X_projections"].shape == ref["projections"].shape
    assert np.abs(adata.X - ref["features"]).max() <= TOL
    assert np.abs(adata.obsm["X_projections"] - ref["projections"]).max() <= TOL


@pytest.mark.parametrize("case", BOC_CASES)
def test_obs_identical_row_by_row(case, predicted, reference_arrays):
    adata, ref = predicted(case), reference_arrays(case)
    assert list(adata.obs.columns) == OBS
    for col in OBS:
        expected = ref[f"obs_{col}"]
        ours = adata.obs[col]
        if expected.dtype.kind == "U":
            assert isinstance(ours.dtype, pd.CategoricalDtype), col
            assert list(ours.cat.categories) == sorted(set(expected.tolist())), col
            np.testing.assert_array_equal(ours.astype(str).to_numpy(), expected, err_msg=col)
        else:
            assert ours.dtype == expected.dtype, col
            np.testing.assert_array_equal(ours.to_numpy(), expected, err_msg=col)


def _layout(path) -> dict:
    import anndata as ad
    import zarr

    root = zarr.open_group(path, mode="r")
    adata = ad.read_zarr(path)
    return {
        "zarr_format": root.metadata.zarr_format,
        "groups": sorted(root.group_keys()),
        "arrays": sorted(root.array_keys()),
        "X": (adata.X.dtype, adata.X.shape),
        "obsm": {k: (v.dtype, v.shape) for k, v in adata.obsm.items()},
        "obs": {c: str(adata.obs[c].dtype) for c in adata.obs.columns},
        "var_names": list(adata.var_names),
        "uns": sorted(adata.uns.keys()),
    }


@pytest.mark.parametrize("case", BOC_CASES)
def test_store_has_viscy_keys_and_dtypes(case, conformance_ckpt, tmp_path):
    out = tmp_path / "prediction.zarr"
    run_prediction(_config(case, conformance_ckpt(case), output_path=out))
    ours, ref = _layout(out), _layout(DATA / case / "reference.zarr")
    assert ours.pop("uns") == sorted([*ref.pop("uns"), "dynaclr"])  # VisCy's (none), and what the store records
    assert ours == ref
    assert read_store(out).n_obs == len(np.load(DATA / case / "reference_arrays.npz")["features"])


@pytest.mark.parametrize("case", BOC_CASES)
def test_cell_index_built_from_the_plate_equals_viscys(case):
    folder = DATA / case
    raw = build_cell_index(load_collection(folder / "collection.yml"))
    pd.testing.assert_frame_equal(raw, read_cell_index(folder / "cell_index_raw.parquet"))
    with Plate(folder / "plate.zarr") as plate:
        pre = preprocess_cell_index(raw, {"plate.zarr": plate}, "Phase3D")
    pd.testing.assert_frame_equal(pre, read_cell_index(folder / "cell_index.parquet"))


def test_prediction_from_plate_and_collection_equals_reference(conformance_ckpt, reference_arrays, tmp_path):
    """No parquet at all: the plate, the tracks and the collection give VisCy's embeddings."""
    folder = tmp_path / "boc3d"
    for name in ("plate.zarr", "tracks"):
        shutil.copytree(DATA / "boc3d" / name, folder / name)
    shutil.copy(DATA / "boc3d" / "collection.yml", folder / "collection.yml")
    cfg = _config("boc3d", conformance_ckpt("boc3d"))
    cfg = cfg.with_overrides(cell_index_path=None, collection_path=folder / "collection.yml")
    adata = run_prediction(cfg, write=False)[1]
    ref = reference_arrays("boc3d")
    assert np.abs(adata.X - ref["features"]).max() <= TOL
    np.testing.assert_array_equal(adata.obs["z"].to_numpy(), ref["obs_z"])


def test_unpreprocessed_index_predicts_finite_embeddings(conformance_ckpt, reference_arrays):
    """VisCy gives 100 % NaN from a build-cell-index output; we take each row's statistics from its own FOV.
    Rows of the first FOV of each name get the reference numbers (VisCy's preprocess reads the other FOVs of
    the same name from that one, see test_cell_index_built_from_the_plate_equals_viscys)."""
    cfg = _config("boc3d", conformance_ckpt("boc3d"), cell_index_path=DATA / "boc3d" / "cell_index_raw.parquet")
    adata = run_prediction(cfg, write=False)[1]
    ref = reference_arrays("boc3d")
    assert np.isfinite(adata.X).all()
    same_stats = adata.obs["fov_name"].astype(str).isin(["A/1/000000", "A/2/000001"]).to_numpy()
    assert same_stats.sum() > 10
    assert np.abs(adata.X[same_stats] - ref["features"][same_stats]).max() <= TOL
    assert np.abs(adata.X[~same_stats] - ref["features"][~same_stats]).max() > 1e-3  # VisCy's stats differ there


def test_batch_size_does_not_change_results(conformance_ckpt, predicted):
    adata = run_prediction(_config("boc2d_mip", conformance_ckpt("boc2d_mip"), batch_size=7), write=False)[1]
    np.testing.assert_allclose(adata.X, predicted("boc2d_mip").X, atol=TOL)
    assert adata.obs.equals(predicted("boc2d_mip").obs)


BOC3D_FLAGS = ["--focus-channel", "Phase3D", "--reference-pixel-size", "0.1494", "0.174", "--z-window", "8",
               "--z-extraction-window", "10", "--z-focus-offset", "0.3", "--patch-size", "96", "--final-patch-size",
               "64", "--batch-size", "10", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("source", ["cell-index", "collection", "flags"])
def test_cli_plain_flags_reproduce_the_case(source, conformance_ckpt, reference_arrays, tmp_path, capsys):
    """`predict` without a predict.yml: a cell index, a plate + tracks + collection, or a plate + tracks with the
    experiment metadata as flags."""
    from napari_dynaclr.cli import main

    d = DATA / "boc3d"
    given = {
        "cell-index": ["--cell-index", str(d / "cell_index.parquet")],
        "collection": ["--plate", str(d / "plate.zarr"), "--tracks", str(d / "tracks"),
                       "--collection", str(d / "collection.yml")],
        "flags": ["--plate", str(d / "plate.zarr"), "--tracks", str(d / "tracks"),
                  "--channels", "Phase3D", "raw mCherry EX561 EM600-37", "--markers", "Phase3D", "SEC61B",
                  "--pixel-size", "0.2", "0.25", "--perturbation-wells", "mock=A/1", "DENV=A/2",
                  "--interval-minutes", "20", "--start-hpi", "24"],
    }[source]
    out = tmp_path / "out.zarr"
    rc = main(["predict", *given, "--checkpoint", str(conformance_ckpt("boc3d")), "-o", str(out), *BOC3D_FLAGS])
    assert rc == 0, capsys.readouterr().err
    adata, ref = read_store(out), reference_arrays("boc3d")
    if source == "flags":  # the flags declare SEC61B for every well (the collection: A/2 only)
        assert adata.n_obs > len(ref["features"])
        assert sorted(set(adata.obs["experiment"].astype(str))) == ["plate_Phase3D", "plate_SEC61B"]
        keep = (adata.obs["marker"].astype(str) == "Phase3D").to_numpy()
        ref_keep = ref["obs_marker"] == "Phase3D"
        assert np.abs(adata.X[keep] - ref["features"][ref_keep]).max() <= TOL
        return
    assert np.abs(adata.X - ref["features"]).max() <= TOL
    for col in ("fov_name", "experiment", "marker", "perturbation"):
        np.testing.assert_array_equal(adata.obs[col].astype(str).to_numpy(), ref[f"obs_{col}"])
    np.testing.assert_array_equal(adata.obs["hours_post_perturbation"].to_numpy(), ref["obs_hours_post_perturbation"])


def test_verify_matches_boc_rows_by_experiment(conformance_ckpt, tmp_path):
    """`verify` against VisCy's store pairs the samples of one cell by experiment, whatever the row order (VisCy's
    default build-cell-index orders experiments by completion)."""
    import anndata as ad

    from napari_dynaclr.verify import Contract, compare_stores

    out = tmp_path / "ours.zarr"
    run_prediction(_config("boc2d_mip", conformance_ckpt("boc2d_mip"), output_path=out))
    ref = ad.read_zarr(DATA / "boc2d_mip" / "reference.zarr")
    order = np.argsort(ref.obs["experiment"].astype(str).to_numpy(), kind="stable")  # G3BP1 block first
    swapped = ref[order].copy()
    swapped.obs_names = [str(i) for i in range(swapped.n_obs)]
    swapped.write_zarr(tmp_path / "reordered.zarr")
    report = compare_stores(out, tmp_path / "reordered.zarr", Contract(atol=TOL))
    assert report.rows.key_columns == ["fov_name", "track_id", "t", "experiment"]
    assert report.rows.n_common == 84 and report.rows.order_differs
    assert report.passed


@pytest.mark.parametrize("case", BOC_CASES)
def test_cell_index_command_writes_viscys_parquets(case, tmp_path, capsys):
    """`napari-dynaclr cell-index` = VisCy's build-cell-index (--raw) and + preprocess-cell-index, read back with
    pyarrow as VisCy reads them; written atomically, replaced only with --overwrite, never over another file."""
    from napari_dynaclr.cli import main

    d = DATA / case
    base = ["cell-index", "--collection", str(d / "collection.yml")]  # store_path as the collection gives it
    out, raw = tmp_path / "cell_index.parquet", tmp_path / "raw.parquet"
    assert main([*base, "--focus-channel", "Phase3D", "-o", str(out)]) == 0
    assert main([*base, "--raw", "-o", str(raw)]) == 0
    pd.testing.assert_frame_equal(read_cell_index(out), read_cell_index(d / "cell_index.parquet"))
    pd.testing.assert_frame_equal(read_cell_index(raw), read_cell_index(d / "cell_index_raw.parquet"))
    import pyarrow.parquet as pq

    ours, viscys = pq.read_schema(out), pq.read_schema(d / "cell_index.parquet")
    assert ours.names == viscys.names
    assert [str(t) for t in ours.types] == [str(t) for t in viscys.types]
    capsys.readouterr()
    assert main([*base, "--raw", "-o", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main([*base, "--raw", "-o", str(out), "--overwrite"]) == 0
    pd.testing.assert_frame_equal(read_cell_index(out), read_cell_index(d / "cell_index_raw.parquet"))
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    assert main([*base, "-o", str(other), "--overwrite"]) == 2
    assert "not a parquet file; refusing to replace it" in capsys.readouterr().err
    assert other.read_text() == "mine"
    assert main([*base, "-o", str(tmp_path / "x" / "y.parquet")]) == 2
    assert main([*base, "--plate", str(d / "plate.zarr"), "-o", str(other.with_suffix(".parquet"))]) == 0
    assert set(read_cell_index(other.with_suffix(".parquet"))["store_path"]) == {str(d / "plate.zarr")}
    other.with_suffix(".parquet").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell_index.parquet", "notes.txt", "raw.parquet"]
