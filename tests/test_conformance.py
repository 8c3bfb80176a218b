"""Reproduce VisCy's public conformance cases: same obs row by row, same numbers (CPU), same store layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CASES, DATA
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.core.store import read_store
from napari_dynaclr.predict.run import run_prediction

TOL = 1e-4


@pytest.fixture(scope="module")
def predicted(conformance_ckpt):
    cache = {}

    def get(case):
        if case not in cache:
            cfg = load_predict_yaml(DATA / case / "predict.yml")
            cfg.ckpt_path = conformance_ckpt(case)
            cfg.accelerator = "cpu"
            cache[case] = run_prediction(cfg, write=False)[1]
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASES)
def test_embeddings_match_viscy(case, predicted, reference_arrays):
    adata, ref = predicted(case), reference_arrays(case)
    assert adata.X.dtype == np.float32
    assert adata.X.shape == ref["features"].shape
    assert np.abs(adata.X - ref["features"]).max() <= TOL
    assert np.abs(adata.obsm["X_projections"] - ref["projections"]).max() <= TOL


@pytest.mark.parametrize("case", CASES)
def test_obs_identical_row_by_row(case, predicted, reference_arrays):
    adata, ref = predicted(case), reference_arrays(case)
    cols = [k[4:] for k in ref if k.startswith("obs_") and k != "obs_names"]
    assert list(adata.obs.columns) == [
        c for c in ["fov_name", "track_id", "t", "id", "parent_track_id", "parent_id", "z", "y", "x"] if c in cols
    ]
    for col in cols:
        ours = adata.obs[col].astype(str).to_numpy() if col == "fov_name" else adata.obs[col].to_numpy()
        np.testing.assert_array_equal(ours, ref[f"obs_{col}"], err_msg=col)


def test_pca_matches_viscy(predicted, reference_arrays):
    adata, ref = predicted("dev2d"), reference_arrays("dev2d")
    assert adata.obsm["X_pca"].shape == ref["X_pca"].shape
    assert adata.obsm["X_pca"].dtype == ref["X_pca"].dtype
    np.testing.assert_allclose(adata.obsm["X_pca"], ref["X_pca"], atol=1e-3)


def _layout(path: Path) -> dict:
    """Keys, dtypes, obs columns and zarr format of a store, read from its metadata."""
    import anndata as ad
    import zarr

    root = zarr.open_group(path, mode="r")
    adata = ad.read_zarr(path)
    return {
        "zarr_format": root.metadata.zarr_format,
        "groups": sorted(root.group_keys()),
        "arrays": sorted(root.array_keys()),
        "X": (adata.X.dtype, adata.X.shape[1]),
        "obsm": {k: (v.dtype, v.shape[1]) for k, v in adata.obsm.items()},
        "obs": {c: str(adata.obs[c].dtype) for c in adata.obs.columns},
        "var_names": list(adata.var_names[:3]),
        "uns": sorted(adata.uns.keys()),
        "encoding": dict(root.attrs),
    }


@pytest.mark.parametrize("case", CASES)
def test_store_layout_matches_viscy(case, predicted, tmp_path):
    from napari_dynaclr.core.store import write_store

    out = write_store(predicted(case), tmp_path / "prediction.zarr")
    ours, ref = _layout(out), _layout(DATA / case / "reference.zarr")
    assert ours.pop("uns") == sorted([*ref.pop("uns"), "dynaclr"])  # VisCy's keys, and what the store records
    assert ours == ref
    assert (out / ".zmetadata").exists() == (DATA / case / "reference.zarr" / ".zmetadata").exists()
    back = read_store(out)
    assert back.obs_names.is_unique
    # VisCy's uns keys, as VisCy writes them; what the store records of its inputs is added under "dynaclr"
    assert {k: back.uns[k] for k in ("data_path", "tracks_path")} == {"data_path": "plate.zarr",
                                                                      "tracks_path": "tracks"}
    assert back.uns["dynaclr"]["family"] == "classic"


def test_cli_reproduces_case(conformance_ckpt, tmp_path, reference_arrays):
    out = tmp_path / "out.zarr"
    cmd = [sys.executable, "-m", "napari_dynaclr", "predict", "-c", str(DATA / "dev3d2ch" / "predict.yml"),
           "--ckpt-path", str(conformance_ckpt("dev3d2ch")), "--output", str(out), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "74 cells from 2 FOVs" in proc.stdout
    adata = read_store(out)
    ref = reference_arrays("dev3d2ch")
    assert np.abs(adata.X - ref["features"]).max() <= TOL
    assert np.abs(adata.obsm["X_projections"] - ref["projections"]).max() <= TOL
    pd.testing.assert_series_equal(adata.obs["fov_name"].astype(str).reset_index(drop=True),
                                   pd.Series(ref["obs_fov_name"], name="fov_name"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_case_batch_partition(conformance_ckpt):
    """The batch partition reproduces VisCy's (percentile scaling is pooled per batch)."""
    from napari_dynaclr.predict.plan import plan_prediction

    for case in CASES:
        cfg = load_predict_yaml(DATA / case / "predict.yml")
        plan = plan_prediction(cfg)
        try:
            sizes = [b - a for a, b in map(plan.batch_bounds, range(plan.n_batches))]
            expected = json.loads((DATA / case / "case.json").read_text())["data"]["batch_sizes_in_order"]
            assert sizes == expected
        finally:
            plan.close()
