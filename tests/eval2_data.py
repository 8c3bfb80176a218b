"""Test data for MMD and pseudotime: VisCy's numbers (``data/eval2/expected.json.gz``, a trimmed copy of the
conformance kit's ``eval2/expected.json``), its configs and annotation CSV, and the kit's synthetic store rebuilt
from its documented generator (checked against the kit's sha256 of ``X``) instead of being stored (2.6 MB)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

EVAL2 = Path(__file__).parent / "data" / "eval2"
CONFIGS = EVAL2 / "configs"
ANNOTATIONS = EVAL2 / "annotations.csv"
X_SHA256 = "571f06b8cc598465f9d9ac0c67bc1a1db16e54991c72ea5a14303acd93985f6f"
WELLS = (("A/1/0", "uninfected1", 0.0), ("A/2/0", "uninfected2", 0.0), ("B/1/0", "ZIKV", 0.75))
MMD_CASES = ("aggregate_defaults", "aggregate_balanced_shared_bw", "temporal_bins", "projections_obsm")


@cache
def expected() -> dict:
    with gzip.open(EVAL2 / "expected.json.gz", "rt") as fh:
        return json.load(fh)


@cache
def _arrays() -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """(X, obs, X_projections) of the kit's store (README "Inputs"), in stored order."""
    rng = np.random.default_rng(20261206)
    n_tracks, T, D = 12, 20, 768
    u_inf = rng.standard_normal(D)
    u_inf /= np.linalg.norm(u_inf)
    u_bump = rng.standard_normal(D)
    u_bump /= np.linalg.norm(u_bump)
    W = rng.standard_normal((D, 32)) / np.sqrt(D)
    rows, feats = [], []
    t = np.arange(T)
    for fov, perturbation, frac in WELLS:
        infectable = rng.permutation(n_tracks) < int(round(frac * n_tracks))
        onset = rng.integers(5, 15, size=n_tracks)
        yx0 = rng.integers(70, 187, size=(n_tracks, 2))
        amp = 1.0 if perturbation == "ZIKV" else 0.0
        for k in range(n_tracks):
            base = rng.standard_normal(D) * 0.05
            eps = rng.standard_normal((T, D)) * 0.5
            dyx = rng.standard_normal((T - 1, 2)) * 1.5
            yx = np.vstack([yx0[k], yx0[k] + np.cumsum(dyx, axis=0)])
            if infectable[k]:
                ramp = 1.0 / (1.0 + np.exp(-(t - onset[k]) / 1.0))
                bump = np.exp(-0.5 * ((t - onset[k] - 1.0) / 1.5) ** 2)
                signal = amp * (6.0 * ramp[:, None] * u_inf + 4.0 * bump[:, None] * u_bump)
            else:
                signal = 0.0
            feats.append((base + eps) + signal)
            for ti in range(T):
                rows.append((fov, k + 1, ti, k * T + ti + 1, -1, -1, int(np.floor(yx[ti, 0])),
                             int(np.floor(yx[ti, 1])), "SEC61B", perturbation, "synth_eval2", 2.0 + ti * 0.5))
    X = np.concatenate(feats).astype(np.float32)
    assert hashlib.sha256(X.astype("<f4").tobytes()).hexdigest() == X_SHA256
    obs = pd.DataFrame(rows, columns=["fov_name", "track_id", "t", "id", "parent_track_id", "parent_id", "y", "x",
                                      "marker", "perturbation", "experiment", "hours_post_perturbation"])
    for col in ("fov_name", "marker", "perturbation", "experiment"):
        obs[col] = pd.Categorical(obs[col])
    obs.index = pd.Index([str(i) for i in range(len(obs))])
    return X, obs, (X.astype(np.float64) @ W).astype(np.float32)


def anndata():
    """A fresh in-memory copy of the kit's store."""
    import anndata as ad

    X, obs, proj = _arrays()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.AnnData(X=X.copy(), obs=obs.copy(), obsm={"X_projections": proj.copy()})
    adata.var_names = [str(i) for i in range(X.shape[1])]
    return adata


def write_store(path: Path, adata=None) -> Path:
    import anndata as ad

    adata = anndata() if adata is None else adata
    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_zarr(path)
    return path


def kit_folder(tmp: Path) -> Path:
    """A folder laid out like the kit (store.zarr, annotations.csv, configs/), to run its configs from."""
    tmp.mkdir(parents=True, exist_ok=True)
    write_store(tmp / "store.zarr")
    shutil.copy(ANNOTATIONS, tmp / "annotations.csv")
    shutil.copytree(CONFIGS, tmp / "configs")
    return tmp
