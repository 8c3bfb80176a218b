"""NaN/Inf never passes for a result: pixels, weights, embeddings, reductions and ``verify``.

Each refused case: exit 2, one line ``napari-dynaclr: error: ...`` naming the FOV/cell/channel or the tensor,
nothing at the output path. ``--allow-nonfinite`` writes the store, NaN rows included, and says how many.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from conftest import DATA
from napari_dynaclr.cli import main
from napari_dynaclr.model.checkpoint import read_state_dict


def _set_pixel(root, fov: str, index: tuple, value: float) -> None:
    import zarr

    arr = zarr.open_array(str(root / "plate.zarr" / fov / "0"), mode="r+")
    arr[index] = value


def _ckpt(tmp, sd, name="bad.ckpt"):
    path = tmp / name
    torch.save({"state_dict": sd, "pytorch-lightning_version": "2.6.6", "epoch": 0, "global_step": 0}, path)
    return path


def _dev2d_args(root, ckpt, out, *extra):
    return ["predict", "--plate", root / "plate.zarr", "--tracks", root / "tracks", "--channels", "Phase3D",
            "--z-range", 1, 2, "--patch-size", 128, "--checkpoint", ckpt, "--output", out, "--device", "cpu",
            "--quiet", *extra]


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(args, capsys, out_path, *needles):
    """Exit 2, exactly one error line (warnings aside) holding every needle, nothing at *out_path*."""
    code, out, err = _run(args, capsys)
    assert code == 2, (out, err)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("napari-dynaclr: warning")]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-dynaclr: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out_path.exists()
    assert not [p.name for p in out_path.parent.iterdir() if p.name.startswith(".")]
    return lines[0]


# dev2d, plain flags (Phase3D z-scored with fov_statistics, fused into the crop): the first cell of the plan
# is A/1/0 track 1 at t=0, (y, x) = (182, 110); z-range [1, 2)
DEV2D_PIXEL = (0, 0, 1, 182, 110)


@pytest.mark.parametrize("value, needle", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")],
                         ids=["nan", "inf", "minus-inf"])
def test_nonfinite_pixel_in_zscored_channel_is_refused(value, needle, case_copy, conformance_ckpt, tmp_path,
                                                       capsys):
    root = case_copy("dev2d")
    _set_pixel(root, "A/1/0", DEV2D_PIXEL, value)
    out = tmp_path / "out.zarr"
    line = _refused(_dev2d_args(root, conformance_ckpt("dev2d"), out), capsys, out,
                    "FOV A/1/0, track_id 1, t=0, channel Phase3D", "1 of 16384 patch pixels are NaN/Inf",
                    "--allow-nonfinite")
    assert needle in line


def test_nonfinite_pixel_in_raw_unnormalised_channel_is_refused(case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy("dev2d")
    _set_pixel(root, "A/1/0", DEV2D_PIXEL, np.nan)
    out = tmp_path / "out.zarr"
    _refused(_dev2d_args(root, conformance_ckpt("dev2d"), out, "--norm-level", "none"), capsys, out,
             "FOV A/1/0, track_id 1, t=0, channel Phase3D", "1 of 16384 patch pixels are NaN/Inf")


def test_nan_pixel_in_percentile_scaled_channel_names_the_cell(case_copy, conformance_ckpt, tmp_path, capsys):
    """dev3d2ch: RFP is percentile-scaled over the whole batch, so one NaN pixel makes every cell's RFP NaN
    after normalisation; the raw check names the cell that holds it."""
    root = case_copy("dev3d2ch")
    # plate channels are (RFP, Phase3D); the first cell of the plan: A/1/0 track 1, t=0, (y, x) = (104, 147)
    _set_pixel(root, "A/1/0", (0, 0, 5, 104, 147), np.nan)
    out = tmp_path / "out.zarr"
    args = ["predict", "-c", root / "predict.yml", "--ckpt-path", conformance_ckpt("dev3d2ch"), "--output", out,
            "--device", "cpu", "--quiet"]
    _refused(args, capsys, out, "FOV A/1/0, track_id 1, t=0, channel RFP", "1 of 110592 patch pixels are NaN/Inf")


def test_nan_pixel_in_plan_api_is_a_plate_error(case_copy):
    """The check sits in the plan's batch loader: every caller (CLI, napari, Lightning ranks) gets it."""
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.errors import PlateError
    from napari_dynaclr.predict.batches import load_batch
    from napari_dynaclr.predict.plan import plan_prediction

    root = case_copy("dev3d2ch")
    _set_pixel(root, "A/1/0", (0, 0, 5, 104, 147), np.nan)
    cfg = load_predict_yaml(root / "predict.yml")
    plan = plan_prediction(cfg)
    try:
        with pytest.raises(PlateError, match="track_id 1, t=0, channel RFP"):
            load_batch(plan, 0)
        allowed = plan_prediction(cfg.with_overrides(allow_nonfinite=True))
        try:
            x = load_batch(allowed, 0).numpy()
            # batch-pooled percentiles: the NaN reaches the RFP channel of every cell of the batch
            assert not np.isfinite(x[:, 1]).any() and np.isfinite(x[:, 0]).all()
            assert allowed.nonfinite.cells == len(x) and "channel RFP" in allowed.nonfinite.first
        finally:
            allowed.close()
    finally:
        plan.close()


@pytest.mark.parametrize("key", ["model.stem.conv.weight", "model.projection.1.running_var",
                                 "model.projection.1.running_mean", "model.encoder.head.norm.bias"],
                         ids=["conv-weight", "bn-running-var", "bn-running-mean", "norm-bias"])
def test_nonfinite_checkpoint_tensor_is_refused(key, case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy("dev2d")
    sd = read_state_dict(conformance_ckpt("dev2d"))
    bad = sd[key].clone()
    bad.view(-1)[:3] = torch.tensor([np.nan, np.inf, -np.inf])
    ckpt = _ckpt(tmp_path, {**sd, key: bad})
    out = tmp_path / "out.zarr"
    _refused(_dev2d_args(root, ckpt, out), capsys, out, "bad.ckpt", f"tensor {key} has 3 NaN/Inf value(s)")


def test_nonfinite_checkpoint_refused_by_info_and_loader(conformance_ckpt, tmp_path, capsys):
    from napari_dynaclr.errors import CheckpointError
    from napari_dynaclr.model.checkpoint import load_checkpoint

    sd = read_state_dict(conformance_ckpt("dev2d"))
    sd["model.projection.4.running_var"] = torch.full_like(sd["model.projection.4.running_var"], np.nan)
    sd["model.projection.0.weight"] = sd["model.projection.0.weight"] * np.inf
    ckpt = _ckpt(tmp_path, sd)
    with pytest.raises(CheckpointError, match=r"model\.projection\.0\.weight has .* NaN/Inf .*1 more tensor"):
        load_checkpoint(ckpt)
    code, _, err = _run(["info", ckpt], capsys)
    assert code == 2 and err.startswith("napari-dynaclr: error: ") and "NaN/Inf" in err


def test_model_overflow_gives_nonfinite_embeddings_refused(case_copy, conformance_ckpt, tmp_path, capsys):
    """Finite pixels and finite weights, but the projection overflows float32: refused, nothing written."""
    root = case_copy("dev2d")
    sd = read_state_dict(conformance_ckpt("dev2d"))
    sd["model.projection.3.weight"] = torch.full_like(sd["model.projection.3.weight"], 3e38)
    ckpt = _ckpt(tmp_path, sd, "overflow.ckpt")
    out = tmp_path / "out.zarr"
    _refused(_dev2d_args(root, ckpt, out, "--include-wells", "B/2"), capsys, out,
             "NaN/Inf embeddings", "first: FOV B/2/0", "--allow-nonfinite")


def test_allow_nonfinite_writes_nan_rows_and_reports_them(case_copy, conformance_ckpt, tmp_path, capsys):
    from napari_dynaclr.core.reduce import pca

    root = case_copy("dev2d")
    _set_pixel(root, "A/1/0", DEV2D_PIXEL, np.nan)
    out = tmp_path / "out.zarr"
    code, stdout, err = _run(_dev2d_args(root, conformance_ckpt("dev2d"), out, "--allow-nonfinite", "--pca", 4),
                             capsys)
    assert code == 0, err
    adata = ad.read_zarr(out)
    bad = ~np.isfinite(adata.X).all(axis=1)
    n_bad = int(bad.sum())
    # every cell of A/1/0 at t=0 whose 128x128 patch covers the pixel, and no other
    obs = adata.obs
    covers = ((obs["fov_name"].astype(str) == "A/1/0") & (obs["t"] == 0)
              & ((obs["y"] - 182).abs() <= 64) & ((obs["x"] - 110).abs() <= 64)).to_numpy()
    assert bad.tolist() == covers.tolist() and 1 <= n_bad < adata.n_obs
    assert int(adata.uns["nonfinite_rows"]) == n_bad
    assert (~np.isfinite(adata.obsm["X_projections"]).all(axis=1) == bad).all()
    # PCA on the finite rows only, NaN for the others
    x_pca = adata.obsm["X_pca"]
    assert np.isnan(x_pca[bad]).all() and np.isfinite(x_pca[~bad]).all()
    np.testing.assert_array_equal(x_pca[~bad], pca(adata.X[~bad], n_components=4).astype(x_pca.dtype))
    warnings = [ln for ln in err.splitlines() if ln.startswith("napari-dynaclr: warning: ")]
    assert len(warnings) == 1, err
    assert f"{n_bad} cell(s) had NaN/Inf" in warnings[0]
    assert f"{n_bad} of {adata.n_obs} embedding rows are NaN/Inf" in warnings[0]
    assert f"X_pca computed on the {adata.n_obs - n_bad} finite rows" in warnings[0]
    assert "napari-dynaclr: error" not in err and f"wrote {out}" in stdout


def test_failing_pca_is_an_error(case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    _refused(_dev2d_args(root, conformance_ckpt("dev2d"), out, "--include-wells", "B/2", "--pca", 500), capsys,
             out, "PCA (pca_kwargs) cannot run", "n_components=500")


def test_failing_reductions_raise_config_errors():
    from napari_dynaclr.core.reduce import apply_reductions, compute_reduction
    from napari_dynaclr.errors import ConfigError

    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(6, 5)).astype(np.float32))
    with pytest.raises(ConfigError, match=r"PCA \(pca_kwargs\) cannot run"):
        apply_reductions(adata, pca_kwargs={"n_components": 50})
    with pytest.raises(ConfigError, match=r"UMAP \(umap_kwargs\) cannot run"):
        apply_reductions(ad.AnnData(adata.X[:3]), umap_kwargs={"n_components": 2})
    assert "X_pca" not in adata.obsm
    # no finite row at all
    nan = ad.AnnData(np.full((6, 5), np.nan, np.float32))
    with pytest.raises(ConfigError, match="none of the 6 embedding rows is finite"):
        apply_reductions(nan, pca_kwargs={"n_components": 2})
    # on demand (the napari explorer): finite rows only, NaN for the others
    X = adata.X.copy()
    X[2] = np.inf
    key, coords = compute_reduction(X, "PCA", n_components=2)
    assert key == "X_pca" and np.isnan(coords[2]).all() and np.isfinite(np.delete(coords, 2, axis=0)).all()


# ---------------------------------------------------------------------------------------------- verify


def _store_with_x(tmp_path, name, fn):
    adata = ad.read_zarr(DATA / "dev2d" / "reference.zarr")
    X = np.array(adata.X, dtype=np.float32)
    adata.X = fn(X)
    path = tmp_path / name
    adata.write_zarr(path)
    return path


def _verify(a, b, capsys):
    code, out, err = _run(["verify", a, b], capsys)
    fail = out[out.index("FAIL:"):] if "FAIL:" in out else ""
    return code, out, fail


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "minus-inf"])
def test_verify_all_nonfinite_against_all_nonfinite_fails(fill, tmp_path, capsys):
    a = _store_with_x(tmp_path, "a.zarr", lambda X: np.full_like(X, fill))
    b = _store_with_x(tmp_path, "b.zarr", lambda X: np.full_like(X, fill))
    code, out, fail = _verify(a, b, capsys)
    assert code == 1, out
    assert "PASS:" not in out
    assert "X: no value is finite on both sides" in fail


@pytest.mark.parametrize("side", ["prediction", "reference"])
def test_verify_nan_on_one_side_fails(side, tmp_path, capsys):
    def nan_row(X):
        X[5] = np.nan
        return X

    good = _store_with_x(tmp_path, "good.zarr", lambda X: X)
    bad = _store_with_x(tmp_path, "bad.zarr", nan_row)
    args = (bad, good) if side == "prediction" else (good, bad)
    code, out, fail = _verify(*args, capsys)
    assert code == 1, out
    assert f"X: 768 values are NaN/Inf in the {side} but finite in the" in fail


def test_verify_nan_against_inf_and_same_nan_rows_fail(tmp_path, capsys):
    from napari_dynaclr.verify import Contract, compare_stores

    def row(value):
        def fn(X):
            X[5] = value
            return X
        return fn

    nan = _store_with_x(tmp_path, "nan.zarr", row(np.nan))
    inf = _store_with_x(tmp_path, "inf.zarr", row(np.inf))
    nan2 = _store_with_x(tmp_path, "nan2.zarr", row(np.nan))
    code, out, fail = _verify(nan, inf, capsys)
    assert code == 1 and "X: 768 values are a different NaN/Inf on each side" in fail
    code, out, fail = _verify(nan, nan2, capsys)  # the same NaN rows in both: still not a result
    assert code == 1 and "X: 768 values are NaN/Inf in both stores (1 cells)" in fail
    rep = compare_stores(nan, nan2, Contract(atol=0, rtol=0))  # the finite values are identical
    assert rep.failures == ["X: 768 values are NaN/Inf in both stores (1 cells); NaN/Inf embeddings are not a "
                            "reproduction"]
    assert rep.arrays["X"].n_nonfinite_both == 768 and rep.arrays["X"].max_abs == 0
