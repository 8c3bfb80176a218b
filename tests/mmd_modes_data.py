"""Stores and configs for the ``--pooled`` and ``--combined`` modes, built from the kit's store (``eval2_data``), and
VisCy's rows for them (``data/eval2/expected_modes.json.gz``, made by ``data/eval2/viscy_modes.py`` with VisCy's
own ``run_mmd_pooled`` / ``run_mmd_combined`` at 4b62365c and statsmodels 0.15.0)."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from eval2_data import EVAL2, anndata

EXPECTED_MODES = EVAL2 / "expected_modes.json.gz"
KIT_COMPARISONS = [{"cond_a": "uninfected1", "cond_b": "uninfected2", "label": "uninf1 vs uninf2"},
                   {"cond_a": "uninfected1", "cond_b": "ZIKV", "label": "uninf1 vs ZIKV"},
                   {"cond_a": "uninfected2", "cond_b": "ZIKV", "label": "uninf2 vs ZIKV"}]


def renamed(adata, name: str, shift: float = 0.0):
    """*adata* as experiment *name*, its embeddings shifted by *shift*."""
    adata.obs["experiment"] = pd.Categorical([name] * len(adata))
    adata.X = adata.X + np.float32(shift)
    return adata


def split_by_wells(part: int):
    """The kit's store as two experiments: 0 = uninfected1 and ZIKV tracks 1-6 (``e1``), 1 = the rest (``e2``)."""
    kit = anndata()
    obs = kit.obs
    first = ((obs["perturbation"] == "uninfected1") | ((obs["perturbation"] == "ZIKV") & (obs["track_id"] <= 6)))
    rows = np.flatnonzero(first.to_numpy() if part == 0 else ~first.to_numpy())
    return renamed(kit[rows].copy(), f"e{part + 1}")


def second_experiment():
    """Another experiment ``e2``: to 9 h (t < 15), its features rolled by one (the cells' noise no longer pairs up
    with the kit's, the infection signal points elsewhere: a batch effect in ZIKV only) and shifted by 0.7 (what
    the centring removes), uninfected2 renamed ``mock``, ZIKV track 12 imaged with another marker (``TOMM20``, in
    e2 only)."""
    b = anndata()
    b = b[(b.obs["t"] < 15).to_numpy()].copy()
    b.X = np.roll(b.X, 1, axis=1)
    renamed(b, "e2", 0.7)
    b.obs["perturbation"] = pd.Categorical(b.obs["perturbation"].astype(str).replace("uninfected2", "mock"))
    zikv12 = ((b.obs["perturbation"] == "ZIKV") & (b.obs["track_id"] == 12)).to_numpy()
    b.obs["marker"] = pd.Categorical(np.where(zikv12, "TOMM20", "SEC61B"))
    return b


#: the stores of the cases, by file name
STORES = {"store.zarr": anndata, "copy.zarr": lambda: renamed(anndata(), "copy"), "e2.zarr": second_experiment,
          "split1.zarr": lambda: split_by_wells(0), "split2.zarr": lambda: split_by_wells(1)}

#: name → (mode, config without output_dir); run from the folder holding :data:`STORES`
CASES = {
    "pooled_aliases_bins": ("pooled", {
        "input_paths": ["split1.zarr", "split2.zarr"], "temporal_bin_size": 3.0, "save_plots": False,
        "condition_aliases": {"uninfected": ["uninfected1", "uninfected2"]},
        "comparisons": [{"cond_a": "uninfected", "cond_b": "ZIKV", "label": "uninf vs ZIKV"}],
        "mmd": {"n_permutations": 200, "max_cells": 400, "min_cells": 30, "seed": 3}}),
    "pooled_kit_and_copy_balanced": ("pooled", {
        "input_paths": ["store.zarr", "copy.zarr"], "comparisons": KIT_COMPARISONS, "save_plots": False,
        "mmd": {"n_permutations": 300, "max_cells": 300, "seed": 7, "balance_samples": True,
                "share_bandwidth_from": "uninf1 vs uninf2"}}),
    "combined_bins": ("combined", {
        "input_paths": ["store.zarr", "e2.zarr", "copy.zarr"], "temporal_bin_size": 3.0, "save_plots": False,
        "mmd": {"n_permutations": 100, "max_cells": 60, "min_cells": 30, "seed": 9}}),
    "combined_aggregate_balanced": ("combined", {
        "input_paths": ["store.zarr", "e2.zarr"], "save_plots": False,
        "mmd": {"n_permutations": 200, "max_cells": 200, "balance_samples": True, "seed": 11}}),
}


def write_stores(folder: Path, names=None) -> Path:
    """The stores *names* (default all) written with the project's store writer into *folder*."""
    from napari_dynaclr.core.store import write_store

    for name in names or STORES:
        if not (folder / name).exists():
            write_store(STORES[name](), folder / name)
    return folder


@cache
def expected_modes() -> dict:
    with gzip.open(EXPECTED_MODES, "rt") as fh:
        return json.load(fh)
