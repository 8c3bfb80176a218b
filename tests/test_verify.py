"""``napari_dynaclr.verify``: alignment, metrics, verdicts, report/JSON and the ``verify`` CLI exit codes.

The stores here are VisCy's dev2d reference (duplicated obs names, zarr format 2) and edited copies of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr import verify
from napari_dynaclr.cli import main
from napari_dynaclr.errors import DynaclrError, StoreError
from napari_dynaclr.verify import Contract, compare_stores

DATA = Path(__file__).parent / "data"
REF = DATA / "dev2d" / "reference.zarr"
KEYS = ["fov_name", "track_id", "t", "id"]


def _read(path=REF):
    import anndata as ad

    return ad.read_zarr(path)


def _write(adata, path: Path) -> Path:
    import anndata as ad

    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "zarr v2 will no longer be the default"
        adata.write_zarr(path)
    return path


@pytest.fixture
def ref():
    """A fresh in-memory copy of VisCy's dev2d reference (obs names '0'..'15' repeated per batch)."""
    adata = _read()
    assert not adata.obs_names.is_unique
    return adata


def _key(adata, row: int) -> dict:
    o = adata.obs.iloc[row]
    return {"fov_name": str(o["fov_name"]), "track_id": int(o["track_id"]), "t": int(o["t"]), "id": int(o["id"])}


def _cli(*argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------------------------- passing


def test_identical_stores_pass(ref):
    rep = compare_stores(REF, REF)
    assert rep.passed and rep.failures == []
    assert rep.rows.n_common == 72 and not rep.rows.order_differs
    assert rep.rows.duplicate_keys_reference == 0  # keys are unique although obs names are not
    for name in ("X", "X_projections"):
        a = rep.arrays[name]
        assert a.judged and a.passed and a.max_abs == 0 and a.mean_abs == 0
        assert a.pearson == pytest.approx(1.0)
        assert a.hist_zeros == a.shape_reference[0] * a.shape_reference[1] and a.hist_counts.sum() == 0
    assert rep.arrays["X_pca"].judged is False and rep.arrays["X_pca"].passed is None


def test_alignment_ignores_obs_names_and_reports_reordering(ref, tmp_path):
    rng = np.random.default_rng(0)
    perm = rng.permutation(ref.n_obs)
    shuffled = ref[perm].copy()
    shuffled.obs_names = [f"cell{i}" for i in range(ref.n_obs)]  # names that match nothing in the reference
    rep = compare_stores(_write(shuffled, tmp_path / "shuffled.zarr"), REF)
    assert rep.passed
    assert rep.rows.n_common == 72 and rep.rows.order_differs
    assert rep.arrays["X"].max_abs == 0 and rep.arrays["X_projections"].max_abs == 0
    # prediction row k is reference row perm[k]
    np.testing.assert_array_equal(rep.cells["reference_row"].to_numpy(), perm)
    first = rep.rows.first_order_difference
    assert first is not None and first["reference_row"] == perm[first["prediction_row"]]
    text = rep.format()
    assert "order DIFFERS" in text and text.rstrip().splitlines()[-1].startswith("PASS")
    strict = compare_stores(shuffled, REF, Contract(require_same_order=True))
    assert not strict.passed and "row order differs from the reference" in strict.failures


def test_small_noise_within_contract_passes(ref):
    rng = np.random.default_rng(1)
    pred = ref.copy()
    pred.X = pred.X + rng.normal(0, 1e-3, pred.X.shape).astype(np.float32)
    rep = compare_stores(pred, ref)
    assert rep.passed
    assert 1e-3 < rep.arrays["X"].max_abs < 0.01
    assert rep.arrays["X"].pearson > 0.9999


# --------------------------------------------------------------------------------------------- failing


def test_perturbed_reference_fails_with_right_rows_and_numbers(ref, tmp_path):
    bad = ref.copy()
    X = bad.X.copy()
    X[3, 7] += 0.25
    X[40, 100] -= 0.5
    bad.X = X
    P = bad.obsm["X_projections"].copy()
    P[10, 0] += 0.3
    bad.obsm["X_projections"] = P
    path = _write(bad, tmp_path / "perturbed.zarr")
    rep = compare_stores(REF, path)
    assert not rep.passed
    x, p = rep.arrays["X"], rep.arrays["X_projections"]
    assert x.max_abs == pytest.approx(0.5, abs=1e-6)
    assert x.n_elements_outside == 2 and x.n_cells_outside == 2
    assert p.max_abs == pytest.approx(0.3, abs=1e-6) and p.n_cells_outside == 1
    assert x.mean_abs == pytest.approx(0.75 / (72 * 768), rel=1e-5)
    assert x.per_dim_mean_abs[7] == pytest.approx(0.25 / 72, rel=1e-5) and x.per_dim_mean_abs[0] == 0
    # tolerance ratio |Δ| / (atol + rtol·|reference|), the reference being the perturbed store
    ratios = {3: 0.25 / (0.02 + 0.01 * abs(X[3, 7])), 40: 0.5 / (0.02 + 0.01 * abs(X[40, 100])),
              10: 0.3 / (0.02 + 0.01 * abs(P[10, 0]))}
    order = sorted(ratios, key=ratios.get, reverse=True)
    worst = rep.worst_cells(3)
    assert [dict(zip(KEYS, r)) for r in worst[KEYS].itertuples(index=False)] == [_key(ref, i) for i in order]
    np.testing.assert_allclose(worst["tol_ratio"], [ratios[i] for i in order], rtol=1e-5)
    assert (rep.cells.drop(index=[3, 10, 40])["tol_ratio"] < 0.01).all()
    assert rep.cells.loc[rep.cells["reference_row"] == 40, "X:max_abs"].item() == pytest.approx(0.5, abs=1e-6)
    assert any(f.startswith("X: 2 of 55,296 values outside atol=0.02") for f in rep.failures)
    assert any(f.startswith("X_projections: 1 of 2,304 values outside") for f in rep.failures)


def test_perturbed_reference_cli_exit_1_names_cells(ref, tmp_path, capsys):
    bad = ref.copy()
    X = bad.X.copy()
    X[40, 100] -= 0.5
    bad.X = X
    path = _write(bad, tmp_path / "perturbed.zarr")
    code, out, err = _cli("verify", REF, path, "--worst", "2", capsys=capsys)
    assert code == 1, out + err
    k = _key(ref, 40)
    worst_line = out.split("worst 2 cells")[1].splitlines()[3]
    assert worst_line.split()[:4] == [k["fov_name"], str(k["track_id"]), str(k["t"]), str(k["id"])]
    assert "0.5" in worst_line
    assert "FAIL:" in out and "X: 1 of 55,296 values outside" in out
    assert "X_projections" in out and err == ""


def test_low_correlation_fails_on_pearson_even_with_loose_tolerance(ref):
    rng = np.random.default_rng(2)
    pred = ref.copy()
    pred.X = pred.X + rng.normal(0, 0.2, pred.X.shape).astype(np.float32)
    rep = compare_stores(pred, ref, Contract(atol=10, rtol=0))
    x = rep.arrays["X"]
    expected = np.corrcoef(pred.X.ravel().astype(np.float64), ref.X.ravel().astype(np.float64))[0, 1]
    assert x.pearson == pytest.approx(expected, abs=1e-9) and x.pearson < 0.999
    assert x.allclose and not x.passed
    assert rep.failures == [f"X: Pearson r {x.pearson:.6f} < 0.999"]
    assert compare_stores(pred, ref, Contract(atol=10, rtol=0, min_pearson=0.9)).passed


def test_missing_rows_reported_and_fail_unless_allowed(ref, tmp_path, capsys):
    keep = np.setdiff1d(np.arange(ref.n_obs), [5, 17, 70])
    pred = _write(ref[keep].copy(), tmp_path / "missing.zarr")
    rep = compare_stores(pred, REF)
    assert not rep.passed
    assert rep.rows.n_common == 69 and rep.rows.n_only_in_reference == 3 and rep.rows.n_only_in_prediction == 0
    assert rep.only_in_reference["row"].tolist() == [5, 17, 70]
    assert rep.only_in_reference[KEYS].to_dict(orient="records") == [_key(ref, r) for r in (5, 17, 70)]
    assert rep.failures == ["rows present on one side only: 3 only in the reference, 0 only in the prediction"]
    assert not rep.rows.order_differs
    assert compare_stores(pred, REF, Contract(allow_missing=True)).passed

    code, out, _ = _cli("verify", pred, REF, capsys=capsys)
    assert code == 1 and "3 only in reference" in out
    k = _key(ref, 5)
    assert f"fov_name={k['fov_name']} track_id={k['track_id']} t={k['t']} id={k['id']}" in out
    code, out, _ = _cli("verify", pred, REF, "--allow-missing", capsys=capsys)
    assert code == 0 and "3 only in reference" in out


def test_extra_rows_in_prediction(ref):
    extra = ref[[0, 1]].copy()
    extra.obs["t"] = extra.obs["t"] + 100
    import anndata as ad

    pred = ad.concat([ref, extra])
    rep = compare_stores(pred, ref)
    assert rep.rows.n_only_in_prediction == 2 and rep.only_in_prediction["t"].tolist() == [100, 101]
    assert not rep.passed


def test_obs_mismatch_fails(ref):
    pred = ref.copy()
    y = pred.obs["y"].to_numpy().copy()
    y[12] += 1
    pred.obs["y"] = y
    rep = compare_stores(pred, ref)
    assert rep.obs_mismatches == {"y": 1}
    assert rep.failures == ["obs columns differ on aligned rows: y (1 rows)"]
    assert rep.cells["obs_mismatch"].to_numpy().nonzero()[0].tolist() == [12]
    assert compare_stores(pred, ref, Contract(check_obs=False)).passed


def test_reductions_reported_not_judged_unless_asked(ref):
    pred = ref.copy()
    pred.obsm["X_pca"] = -pred.obsm["X_pca"]  # a sign flip: a legitimate PCA difference
    rep = compare_stores(pred, ref)
    assert rep.passed and rep.arrays["X_pca"].max_abs > 1 and rep.arrays["X_pca"].pearson < 0
    judged = compare_stores(pred, ref, Contract(judge_reductions=True))
    assert not judged.passed and any(f.startswith("X_pca:") for f in judged.failures)


def test_nan_in_prediction_fails(ref):
    pred = ref.copy()
    X = pred.X.copy()
    X[2, 3] = np.nan
    pred.X = X
    rep = compare_stores(pred, ref)
    x = rep.arrays["X"]
    assert x.n_nonfinite_mismatch == 1 and not x.allclose and not rep.passed
    assert np.isinf(rep.cells["X:max_abs"].iloc[2]) and np.isfinite(rep.cells["X:max_abs"].drop(2)).all()
    json.loads(rep.to_json())  # no NaN/inf leaks into JSON


def test_metrics_match_numpy(ref):
    rng = np.random.default_rng(3)
    pred = ref.copy()
    noise = rng.normal(0, 0.01, pred.obsm["X_projections"].shape).astype(np.float32)
    pred.obsm["X_projections"] = pred.obsm["X_projections"] + noise
    rep = compare_stores(pred, ref, Contract(atol=0.01, rtol=0.005))
    a = pred.obsm["X_projections"].astype(np.float64)
    b = ref.obsm["X_projections"].astype(np.float64)
    d = np.abs(a - b)
    p = rep.arrays["X_projections"]
    assert p.max_abs == pytest.approx(d.max()) and p.mean_abs == pytest.approx(d.mean())
    np.testing.assert_allclose(p.per_dim_mean_abs, d.mean(0))
    np.testing.assert_allclose(rep.cells["X_projections:max_abs"], d.max(1))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(rep.cells["X_projections:cosine"], cos)
    r_cell = [np.corrcoef(a[i], b[i])[0, 1] for i in range(len(a))]
    np.testing.assert_allclose(rep.cells["X_projections:pearson"], r_cell)
    outside = d > 0.01 + 0.005 * np.abs(b)
    assert p.n_elements_outside == outside.sum() > 0 and p.n_cells_outside == outside.any(1).sum()
    assert p.allclose == np.allclose(a, b, atol=0.01, rtol=0.005) is False
    assert p.hist_counts.sum() + p.hist_zeros == d.size
    assert p.pearson == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)


def test_chunked_lazy_read_equals_in_memory(ref, tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    perm = rng.permutation(ref.n_obs)
    pred = ref[perm].copy()
    pred.X = pred.X + rng.normal(0, 0.005, pred.X.shape).astype(np.float32)
    path = _write(pred, tmp_path / "p.zarr")
    whole = compare_stores(pred, _read())
    monkeypatch.setattr(verify.metrics, "_CHUNK_ELEMENTS", 768 * 5)  # 5 rows per chunk, unordered reference rows
    chunked = compare_stores(path, REF)
    for name in ("X", "X_projections"):
        w, c = whole.arrays[name], chunked.arrays[name]
        assert c.max_abs == w.max_abs and c.n_elements_outside == w.n_elements_outside
        assert c.pearson == pytest.approx(w.pearson, abs=1e-12)
        np.testing.assert_array_equal(c.hist_counts, w.hist_counts)
    pd.testing.assert_frame_equal(chunked.cells, whole.cells)


# ------------------------------------------------------------------------------- bad input (exit 2)


def test_different_feature_dims_is_incompatible(ref, tmp_path, capsys):
    small = ref[:, :700].copy()
    path = _write(small, tmp_path / "700.zarr")
    with pytest.raises(StoreError, match="incompatible stores: X has 700 columns"):
        compare_stores(path, REF)
    code, out, err = _cli("verify", path, REF, capsys=capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"napari-dynaclr: error: incompatible stores: X has 700 columns in {path} "
                                        f"but 768 in {REF}"]


@pytest.mark.parametrize("kind", ["missing", "file", "empty_dir", "plain_zarr", "no_keys"])
def test_not_a_store_exit_2(kind, tmp_path, capsys):
    import zarr

    target = tmp_path / "thing"
    if kind == "file":
        target.write_text("hello")
    elif kind == "empty_dir":
        target.mkdir()
    elif kind == "plain_zarr":
        zarr.open_group(target, mode="w").create_array("a", shape=(3,), dtype="f4")
    elif kind == "no_keys":
        a = _read()
        a.obs = a.obs.drop(columns=["track_id"])
        _write(a, target)
    code, out, err = _cli("verify", target, REF, capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-dynaclr: error: ")
    assert str(target) in lines[0]


def test_no_common_rows_exit_2(ref, tmp_path, capsys):
    other = ref.copy()
    other.obs["fov_name"] = pd.Categorical(["Z/9/" + str(f) for f in other.obs["fov_name"]])
    path = _write(other, tmp_path / "other.zarr")
    code, _, err = _cli("verify", path, REF, "--allow-missing", capsys=capsys)
    assert code == 2 and "no common rows" in err


def test_contract_validation():
    with pytest.raises(DynaclrError, match="atol"):
        Contract(atol=-1)
    with pytest.raises(DynaclrError, match="min-pearson"):
        Contract(min_pearson=2)


# ----------------------------------------------------------------------------------------------- JSON


def test_json_report(ref, tmp_path, capsys):
    bad = ref.copy()
    X = bad.X.copy()
    X[40, 100] -= 0.5
    bad.X = X
    path = _write(bad[np.arange(1, 72)].copy(), tmp_path / "p.zarr")  # also drop row 0
    out_json = tmp_path / "report.json"
    code, _, _ = _cli("verify", path, REF, "--json", out_json, "--atol", "1e-4", "--worst", "3", capsys=capsys)
    assert code == 1
    doc = json.loads(out_json.read_text())
    assert doc["schema"] == "napari-dynaclr/verify" and doc["version"] == 1 and doc["passed"] is False
    assert doc["contract"] == {"atol": 1e-4, "rtol": 1e-2, "min_pearson": 0.999, "allow_missing": False,
                               "judge_reductions": False, "require_same_order": False, "check_obs": True}
    assert doc["prediction"] == str(path) and doc["reference"] == str(REF)
    rows = doc["rows"]
    assert rows["n_common"] == 71 and rows["n_only_in_reference"] == 1
    assert rows["only_in_reference"] == [{**_key(ref, 0), "row": 0}]
    assert rows["key_columns"] == KEYS
    x = doc["arrays"]["X"]
    assert x["judged"] is True and x["passed"] is False and x["max_abs"] == pytest.approx(0.5, abs=1e-6)
    assert len(x["per_dim_mean_abs"]) == 768 and x["shape_reference"] == [72, 768]
    assert sum(x["histogram"]["counts"]) + x["histogram"]["zeros"] == 71 * 768
    assert len(x["histogram"]["edges"]) == len(x["histogram"]["counts"]) + 1
    assert doc["arrays"]["X_pca"]["judged"] is False and doc["arrays"]["X_pca"]["passed"] is None
    assert len(doc["worst_cells"]) >= 3
    top = doc["worst_cells"][0]
    assert {k: top[k] for k in KEYS} == _key(ref, 40) and top["X:max_abs"] == pytest.approx(0.5, abs=1e-6)
    assert any("only in the reference" in f for f in doc["failures"])


def test_cli_subprocess_exit_codes(tmp_path):
    exe = [sys.executable, "-m", "napari_dynaclr", "verify"]
    ok = subprocess.run(exe + [str(REF), str(REF)], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.rstrip().splitlines()[-1] == "PASS: X, X_projections within the contract"
    bad = subprocess.run(exe + [str(tmp_path / "nope.zarr"), str(REF)], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip() == f"napari-dynaclr: error: embedding store not found: " \
                                                         f"{tmp_path / 'nope.zarr'}"


# ------------------------------------------------------------------------------------- viewer helpers


def test_map_cell_values_and_find_cell(ref):
    pred = ref.copy()
    X = pred.X.copy()
    X[9] += 0.1
    pred.X = X
    rep = compare_stores(pred, ref)
    table = ref.obs[["fov_name", "track_id", "t"]].iloc[::-1].reset_index(drop=True)
    table.loc[len(table)] = ["Q/1/0", 1, 0]  # a cell the report does not know
    vals = verify.map_cell_values(rep, table, "X:max_abs")
    assert np.isnan(vals[-1])
    expected = rep.cells["X:max_abs"].to_numpy()[::-1]
    np.testing.assert_allclose(vals[:-1], expected)
    k = _key(ref, 9)
    assert verify.find_cell(ref.obs, **k) == 9
    assert verify.find_cell(ref.obs, k["fov_name"], k["track_id"], k["t"]) == 9
    assert verify.find_cell(ref.obs, "Q/1/0", 1, 0) is None


def test_verify_and_panel_modules_do_not_import_torch():
    code = ("import sys, napari_dynaclr.verify, napari_dynaclr._napari.widgets.verify_panel; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
