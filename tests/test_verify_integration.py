"""Predict → verify, end to end.

(a) CPU: predict the public conformance cases and verify them against VisCy's reference stores with a strict
    contract (atol 1e-4); an edited reference fails with the right rows and numbers; a reference missing rows
    is reported.
(b) GPU (skipped without CUDA): predict on CUDA, verify against VisCy's CPU reference with VisCy's contract.
(c) Real data (skipped unless DYNACLR_CKPT, DYNACLR_PLATE, DYNACLR_TRACKS, DYNACLR_REFERENCE are set, and
    CUDA is available): as VisCy's ``test_inference_reproducibility`` before e10f825e -- predict on GPU and
    verify against the reference store with the default contract.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import CASES, DATA
from napari_dynaclr.cli import main
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.predict.run import run_prediction
from napari_dynaclr.verify import Contract, compare_stores

STRICT = ["--atol", "1e-4"]


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a dependency
        return False


@pytest.fixture(scope="module")
def predicted_store(conformance_ckpt, tmp_path_factory):
    """Factory: path of our CPU prediction store for a conformance case (written once per module)."""
    cache = {}

    def get(case: str) -> Path:
        if case not in cache:
            cfg = load_predict_yaml(DATA / case / "predict.yml")
            cfg.ckpt_path = conformance_ckpt(case)
            cfg.accelerator = "cpu"
            cfg.output_path = tmp_path_factory.mktemp(f"pred-{case}") / "prediction.zarr"
            run_prediction(cfg)
            cache[case] = cfg.output_path
        return cache[case]

    return get


def _writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    return dst


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------- (a)


@pytest.mark.parametrize("case", CASES)
def test_cpu_prediction_verifies_against_viscy_reference(case, predicted_store, capsys, tmp_path):
    pred, ref = predicted_store(case), DATA / case / "reference.zarr"
    report_json = tmp_path / "report.json"
    code, out, err = _cli(capsys, "verify", pred, ref, *STRICT, "--json", report_json)
    assert code == 0, out + err
    assert out.rstrip().splitlines()[-1] == "PASS: X, X_projections within the contract"
    rep = compare_stores(pred, ref, Contract(atol=1e-4))
    assert rep.passed
    assert rep.rows.n_only_in_prediction == rep.rows.n_only_in_reference == 0
    assert not rep.rows.order_differs and rep.obs_mismatches == {}
    for name in ("X", "X_projections"):
        assert rep.arrays[name].max_abs < 1e-4 and rep.arrays[name].pearson > 0.999999
    assert report_json.is_file()


@pytest.mark.parametrize("case", CASES)
def test_perturbed_viscy_reference_fails(case, predicted_store, capsys, tmp_path):
    import zarr

    ref = _writable_copy(DATA / case / "reference.zarr", tmp_path / "reference.zarr")
    root = zarr.open_group(ref, mode="r+")
    X, P = root["X"], root["obsm"]["X_projections"]
    x = X[...]
    p = P[...]
    # beyond the strict contract (atol 1e-4 + rtol 1e-2·|ref|) but within VisCy's default (atol 0.02)
    x[7, 300] += 0.003 + 0.01 * abs(x[7, 300])
    p[20, 5] -= 0.002 + 0.01 * abs(p[20, 5])
    x[50, 0] -= 0.1  # beyond both (|ref| ≤ 4.2)
    X[...] = x
    P[...] = p
    obs = compare_stores(DATA / case / "reference.zarr", DATA / case / "reference.zarr").cells  # row keys
    key = lambda r: " ".join(str(obs.loc[r, k]) for k in ("fov_name", "track_id", "t", "id"))  # noqa: E731

    rep = compare_stores(predicted_store(case), ref, Contract(atol=1e-4))
    assert not rep.passed
    assert rep.arrays["X"].n_cells_outside == 2 and rep.arrays["X_projections"].n_cells_outside == 1
    assert rep.arrays["X"].max_abs == pytest.approx(0.1, abs=1e-4)
    bad = set(rep.cells.loc[rep.cells["tol_ratio"] > 1, "reference_row"])
    assert bad == {7, 50, 20}
    code, out, _ = _cli(capsys, "verify", predicted_store(case), ref, *STRICT, "--worst", "3")
    assert code == 1
    worst = [" ".join(line.split()[:4]) for line in out.split("worst 3 cells")[1].splitlines()[3:6]]
    assert worst[0] == key(50) and set(worst) == {key(50), key(7), key(20)}
    assert "X: 1 of" not in out and f"X: 2 of {x.size:,} values outside atol=0.0001" in out
    # VisCy's default contract tolerates the 0.003 and 0.002 edits but not the 0.1 one
    default = compare_stores(predicted_store(case), ref)
    assert not default.passed and set(default.cells.loc[default.cells["tol_ratio"] > 1, "reference_row"]) == {50}


@pytest.mark.parametrize("case", CASES)
def test_reference_missing_rows_is_reported(case, predicted_store, capsys, tmp_path):
    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        full = ad.read_zarr(DATA / case / "reference.zarr")
        drop = [0, 33, full.n_obs - 1]
        keep = np.setdiff1d(np.arange(full.n_obs), drop)
        path = tmp_path / "reference-missing.zarr"
        with ad.settings.override(zarr_write_format=2):
            full[keep].copy().write_zarr(path)
    rep = compare_stores(predicted_store(case), path, Contract(atol=1e-4))
    assert rep.rows.n_only_in_prediction == 3 and rep.rows.n_only_in_reference == 0
    assert rep.only_in_prediction["row"].tolist() == drop  # our rows are in VisCy's order
    got = rep.only_in_prediction[["fov_name", "track_id", "t", "id"]].astype(str).agg(" ".join, axis=1).tolist()
    want = full.obs.iloc[drop][["fov_name", "track_id", "t", "id"]].astype(str).agg(" ".join, axis=1).tolist()
    assert got == want
    assert rep.failures == ["rows present on one side only: 0 only in the reference, 3 only in the prediction"]
    assert all(a.passed for a in rep.arrays.values() if a.judged)  # the common rows still match
    code, out, _ = _cli(capsys, "verify", predicted_store(case), path, *STRICT)
    assert code == 1 and "3 only in prediction" in out
    code, _, _ = _cli(capsys, "verify", predicted_store(case), path, *STRICT, "--allow-missing")
    assert code == 0


# ------------------------------------------------------------------------------------------------- (b)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA: torch.cuda.is_available() is False on this machine")
@pytest.mark.parametrize("case", CASES)
def test_gpu_prediction_verifies_against_viscy_cpu_reference(case, conformance_ckpt, capsys, tmp_path):
    cfg = load_predict_yaml(DATA / case / "predict.yml")
    cfg.ckpt_path = conformance_ckpt(case)
    cfg.accelerator = "cuda"
    cfg.output_path = tmp_path / "prediction.zarr"
    summary, _ = run_prediction(cfg)
    assert str(summary.device).startswith("cuda")
    code, out, err = _cli(capsys, "verify", cfg.output_path, DATA / case / "reference.zarr")  # VisCy's contract
    print(out)
    assert code == 0, out + err
    rep = compare_stores(cfg.output_path, DATA / case / "reference.zarr")
    assert rep.arrays["X"].pearson > 0.999 and rep.arrays["X_projections"].pearson > 0.999


# ------------------------------------------------------------------------------------------------- (c)

REAL_VARS = ("DYNACLR_CKPT", "DYNACLR_PLATE", "DYNACLR_TRACKS", "DYNACLR_REFERENCE")


def _real_data_skip_reason() -> str | None:
    missing = [v for v in REAL_VARS if not os.environ.get(v)]
    if missing:
        return (f"real-data verification needs {', '.join(missing)} (optional DYNACLR_CONFIG); "
                f"set them to a checkpoint, plate, tracks and VisCy reference store")
    absent = [f"{v}={os.environ[v]}" for v in REAL_VARS if not Path(os.environ[v]).exists()]
    if os.environ.get("DYNACLR_CONFIG") and not Path(os.environ["DYNACLR_CONFIG"]).exists():
        absent.append(f"DYNACLR_CONFIG={os.environ['DYNACLR_CONFIG']}")
    if absent:
        return f"real-data paths do not exist: {', '.join(absent)}"
    if not _cuda():
        return "real-data verification predicts on GPU, as VisCy's test does: CUDA is not available"
    return None


def _real_config():
    from napari_dynaclr.core.config import PredictConfig, default_normalizations

    env = os.environ
    if env.get("DYNACLR_CONFIG"):
        cfg = load_predict_yaml(env["DYNACLR_CONFIG"]).with_overrides(
            data_path=Path(env["DYNACLR_PLATE"]), tracks_path=Path(env["DYNACLR_TRACKS"]))
    else:  # VisCy's test_inference_reproducibility settings
        cfg = PredictConfig.classic(
            data_path=env["DYNACLR_PLATE"], tracks_path=env["DYNACLR_TRACKS"], source_channel=["Phase3D"],
            z_range=(0, 1), batch_size=64, initial_yx_patch_size=(160, 160), final_yx_patch_size=(160, 160),
            normalizations=default_normalizations(["Phase3D"], "fov_statistics"),
        )
    cfg.ckpt_path = Path(env["DYNACLR_CKPT"])
    cfg.accelerator = "cuda"
    cfg.precision = "32-true"
    cfg.pca_kwargs = cfg.umap_kwargs = cfg.phate_kwargs = None
    return cfg


@pytest.mark.realdata
@pytest.mark.gpu
@pytest.mark.skipif(_real_data_skip_reason() is not None, reason=str(_real_data_skip_reason()))
def test_real_data_gpu_prediction_verifies_against_reference(tmp_path, capsys):
    cfg = _real_config()
    cfg.output_path = tmp_path / "prediction.zarr"
    summary, adata = run_prediction(cfg)
    assert adata.X.shape[1] == 768
    ref = Path(os.environ["DYNACLR_REFERENCE"])
    code, out, err = _cli(capsys, "verify", cfg.output_path, ref, "--json", tmp_path / "report.json")
    print(out)
    assert code == 0, out + err
