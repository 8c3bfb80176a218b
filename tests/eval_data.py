"""Test data for the evaluation tests: VisCy's numbers (``data/eval/expected.json.gz``, a trimmed copy of the
conformance kit's ``eval/expected.json``), its annotation CSVs, and the kit's synthetic store, rebuilt here from
its documented generator (checked against the kit's sha256 of ``X``) instead of being stored (6 MB)."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data"
EVAL = DATA / "eval"
ANNOTATIONS = EVAL / "annotations"
STORES = {"dev2d": DATA / "dev2d" / "reference.zarr", "dev3d2ch": DATA / "dev3d2ch" / "reference.zarr"}
SYNTHETIC_X_SHA256 = "e436cd9aaa2823ee1d5d1a68e92e2caf92070e3b3aee44c25723cef3d9699542"


@cache
def expected() -> dict:
    with gzip.open(EVAL / "expected.json.gz", "rt") as fh:
        return json.load(fh)


def synthetic_arrays() -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """(X, obs, X_projections) of the kit's synthetic store (README "Synthetic store"), in stored order."""
    rng = np.random.default_rng(20250601)
    u_inf = rng.standard_normal(768)
    u_cc = rng.standard_normal((3, 768))
    W = rng.standard_normal((768, 32)) / np.sqrt(768)
    infectable = rng.permutation(40) < 20
    onset = rng.integers(5, 36, size=40)
    phase0 = rng.integers(0, 24, size=40)
    yx0 = rng.integers(70, 187, size=(40, 2))
    X = np.empty((2000, 768), np.float32)
    fovs = ["A/1/0", "A/1/1", "B/2/0", "B/2/1"]
    rows = []
    for k in range(40):
        w0 = rng.standard_normal(768) * 0.3
        steps = rng.standard_normal((49, 768)) * 0.05
        eps = rng.standard_normal((50, 768)) * 0.7
        dyx = rng.standard_normal((49, 2)) * 1.5
        walk = np.cumsum(steps, axis=0)
        yx_walk = np.cumsum(dyx, axis=0)
        track_id = k % 10 + 1
        for t in range(50):
            w = w0 if t == 0 else w0 + walk[t - 1]
            infected = bool(infectable[k] and t >= onset[k])
            ph = (t + phase0[k]) % 24
            state = 0 if ph < 12 else (1 if ph < 20 else 2)
            X[k * 50 + t] = ((w + eps[t]) + (0.07 * infected) * u_inf) + 0.06 * u_cc[state]
            y, x = (yx0[k] if t == 0 else np.floor(yx0[k] + yx_walk[t - 1])).astype(np.int64)
            rows.append((fovs[k // 10], track_id, t, (track_id - 1) * 50 + t + 1, -1, -1, y, x))
    obs = pd.DataFrame(rows, columns=["fov_name", "track_id", "t", "id", "parent_track_id", "parent_id", "y", "x"])
    obs["fov_name"] = pd.Categorical(obs["fov_name"])
    obs.index = pd.Index([str(i % 16) for i in range(len(obs))])  # batch-local names, as VisCy's writer
    assert hashlib.sha256(X.astype("<f4").tobytes()).hexdigest() == SYNTHETIC_X_SHA256
    return X, obs, (X.astype(np.float64) @ W).astype(np.float32)


def synthetic_anndata():
    import anndata as ad

    X, obs, proj = synthetic_arrays()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.AnnData(X=X, obs=obs, obsm={"X_projections": proj})
    adata.var_names = [str(i) for i in range(X.shape[1])]
    return adata


def write_zarr(adata, path: Path) -> Path:
    import anndata as ad

    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_zarr(path)
    return path


def read(name_or_path):
    """An in-memory store: "dev2d", "dev3d2ch", "synthetic" or a path."""
    import anndata as ad

    if name_or_path == "synthetic":
        return synthetic_anndata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_zarr(STORES.get(name_or_path, name_or_path))
