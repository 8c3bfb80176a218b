"""VisCy's other two ``compute-mmd`` modes: ``--pooled`` (stores pooled, Benjamini–Hochberg ``q_value``) and
``--combined`` (pairs of experiments, mean-centred, both groups binned), each against VisCy's numbers on the kit
or a direct call of the kernel functions, and their bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_lines import cli
from eval2_data import CONFIGS, MMD_CASES, anndata, expected, kit_folder
from mmd_modes_data import CASES, expected_modes, renamed, second_experiment, split_by_wells, write_stores
from napari_dynaclr.cli import main
from napari_dynaclr.core.output.manifest import content_hash
from napari_dynaclr.core.store import write_store
from napari_dynaclr.errors import ConfigError
from napari_dynaclr.evaluate.mmd import RESULT_COLUMNS
from napari_dynaclr.evaluate.mmd_combined import COMBINED_COLUMNS, run_mmd_combined
from napari_dynaclr.evaluate.mmd_config import MMDCombinedConfig, MMDPooledConfig, load_mmd_config
from napari_dynaclr.evaluate.mmd_kernel import median_heuristic, mmd_permutation_test
from napari_dynaclr.evaluate.mmd_pooled import POOLED_COLUMNS, bh_q_values, run_mmd_pooled

HOURS = "hours_post_perturbation"


# --- Benjamini–Hochberg ---------------------------------------------------------------------------------------

def _fdr_bh_as_statsmodels(p: np.ndarray) -> np.ndarray:
    """statsmodels' ``multipletests(p, method="fdr_bh")[1]``, written out: sort, ``p_(i) / (i/n)``, running minimum
    from the largest, clipped at 1, back in the input order (VisCy fills NaN p with 1 before the call)."""
    order = np.argsort(p)
    raw = p[order] / (np.arange(1, len(p) + 1) / len(p))
    q_sorted = np.minimum(np.minimum.accumulate(raw[::-1])[::-1], 1.0)
    q = np.empty_like(q_sorted)
    q[order] = q_sorted
    return q


def test_q_values_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04, 1 (NaN as 1): p·5/i = 0.025, 0.025, 0.05, 0.05, 1 → running minimum from the top
    q = bh_q_values([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(q[:4], [0.025, 0.05, 0.05, 0.025], rtol=1e-15)
    assert np.isnan(q[4])
    # ties and the cap at 1: sorted 0.2, 0.5, 0.9, 0.9 → 0.8, 1.0, 1.2, 0.9 → 0.8, 0.9, 0.9, 0.9
    np.testing.assert_allclose(bh_q_values([0.5, 0.9, 0.9, 0.2]), [0.9, 0.9, 0.9, 0.8], rtol=1e-15)
    # a NaN p counts as 1 for the others: without it, 0.01 would give 0.01·4/1 = 0.04, with it 0.01·5/1 = 0.05
    assert bh_q_values([0.01, 0.5, 0.6, 0.7, np.nan])[0] == pytest.approx(0.05, rel=1e-15)
    assert np.isnan(bh_q_values([np.nan, np.nan])).all() and len(bh_q_values([])) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, allow_subnormal=False) | st.sampled_from([0.001, 0.5, 1.0, np.nan]),
                min_size=1, max_size=40))
def test_q_values_equal_statsmodels_fdr_bh(ps):
    p = np.asarray(ps, dtype=float)
    q = bh_q_values(p)
    missing = np.isnan(p)
    assert np.array_equal(np.isnan(q), missing)
    if not missing.all():
        want = _fdr_bh_as_statsmodels(np.where(missing, 1.0, p))
        np.testing.assert_allclose(q[~missing], want[~missing], rtol=1e-15, atol=0)


# --- pooled -------------------------------------------------------------------------------------------------

def _pooled_raw(case: str, **changes) -> dict:
    raw = yaml.safe_load((CONFIGS / f"mmd_{case}.yaml").read_text())
    raw["input_paths"] = [raw.pop("input_path")]
    raw.update(changes)
    return raw


@pytest.mark.parametrize("case", MMD_CASES)
def test_pooled_one_store_gives_viscys_per_experiment_rows_and_q_values(case):
    cfg = MMDPooledConfig.model_validate(_pooled_raw(case))
    result = run_mmd_pooled([("store.zarr", anndata())], cfg)
    want = expected()["mmd"][case]
    got = result.to_records()
    assert list(result.table.columns) == list(POOLED_COLUMNS) and result.csv_name == "pooled_mmd_results.csv"
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for key in (k for k in RESULT_COLUMNS if k not in ("experiment", "mmd2", "bandwidth", "effect_size",
                                                            "activity_zscore")):
            assert g[key] == w[key], key
        assert g["mmd2"] == pytest.approx(w["mmd2"], abs=2e-6)
        assert g["bandwidth"] == pytest.approx(w["bandwidth"], rel=1e-6)
    np.testing.assert_allclose([g["q_value"] for g in got],
                               _fdr_bh_as_statsmodels(np.array([w["p_value"] for w in want])), rtol=1e-15)


def test_pooled_two_stores_equal_the_kernel_on_the_concatenated_rows(tmp_path):
    """Two stores written by the project's writer and read back; aliases join uninfected1/2; max_cells draws in
    the concatenated order; only B binned."""
    from napari_dynaclr.core.store import read_store

    paths = []
    for i in range(2):
        paths.append(write_store(split_by_wells(i), tmp_path / f"s{i}.zarr"))
    stores = [(str(p), read_store(p)) for p in paths]
    cfg = MMDPooledConfig.model_validate({
        "input_paths": [str(p) for p in paths], "output_dir": "o", "temporal_bins": [2, 6, 12],
        "condition_aliases": {"uninfected": ["uninfected1", "uninfected2"]},
        "comparisons": [{"cond_a": "uninfected", "cond_b": "ZIKV", "label": "u vs Z"}],
        "mmd": {"n_permutations": 200, "max_cells": 400, "seed": 3}})
    result = run_mmd_pooled(stores, cfg)
    X = np.concatenate([np.asarray(a.X) for _, a in stores])
    obs = pd.concat([a.obs for _, a in stores], ignore_index=True)
    hours = obs[HOURS].to_numpy()
    a_rows = np.flatnonzero(obs["perturbation"].isin(["uninfected1", "uninfected2"]).to_numpy())
    assert len(a_rows) == 480
    for (lo, hi), row in zip([(2, 6), (6, 12)], result.to_records()):
        b_rows = np.flatnonzero(((obs["perturbation"] == "ZIKV").to_numpy()) & (hours >= lo) & (hours < hi))
        rng = np.random.default_rng(3)
        Xa = X[a_rows[rng.choice(480, 400, replace=False)]]
        Xb = X[b_rows]
        test = mmd_permutation_test(Xa, Xb, 200, median_heuristic(Xa, Xb), seed=3)
        assert (row["n_a"], row["n_b"]) == (400, len(b_rows))
        assert (row["mmd2"], row["p_value"], row["bandwidth"]) == (test.mmd2, test.p_value, test.bandwidth)
        assert (row["hours_bin_start"], row["hours_bin_end"], row["cond_a"]) == (lo, hi, "uninfected")
    assert "experiment" not in result.table.columns


# --- combined -----------------------------------------------------------------------------------------------

def test_combined_centres_each_experiment_and_bins_both_groups():
    a, b = anndata(), second_experiment()
    cfg = MMDCombinedConfig.model_validate({"input_paths": ["a", "b"], "output_dir": "o", "temporal_bin_size": 3.0,
                                            "mmd": {"n_permutations": 100, "seed": 9}})
    result = run_mmd_combined([("a.zarr", a), ("b.zarr", b)], cfg)
    table = result.table
    assert list(table.columns) == list(COMBINED_COLUMNS) and result.csv_name == "combined_mmd_results.csv"
    assert any("marker 'TOMM20' is only in e2" in n for n in result.notes)

    def centred(adata):
        sub = adata[(adata.obs["marker"] == "SEC61B").to_numpy()]
        X = np.asarray(sub.X).astype(np.float32)
        return X - X.mean(axis=0), sub.obs

    Xa, oa = centred(a)
    Xb, ob = centred(b)
    max_h = min(oa[HOURS].max(), ob[HOURS].max())
    assert max_h == 9.0  # e2's end: the cells at exactly 9 h fall outside the last bin, as in VisCy
    bins = [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]
    want = [(c, lo, hi) for c in ("ZIKV", "uninfected1") for lo, hi in bins]  # sorted shared conditions
    assert list(zip(table["condition"], table["hours_bin_start"], table["hours_bin_end"])) == want
    assert (table["exp_a"] == "synth_eval2").all() and (table["exp_b"] == "e2").all()
    for row, (c, lo, hi) in zip(result.to_records(), want):
        in_a = ((oa["perturbation"] == c) & (oa[HOURS] >= lo) & (oa[HOURS] < hi)).to_numpy()
        in_b = ((ob["perturbation"] == c) & (ob[HOURS] >= lo) & (ob[HOURS] < hi)).to_numpy()
        test = mmd_permutation_test(Xa[in_a], Xb[in_b], 100, None, seed=9)
        assert (row["n_a"], row["n_b"]) == (int(in_a.sum()), int(in_b.sum()))
        assert (row["mmd2"], row["p_value"], row["bandwidth"]) == (test.mmd2, test.p_value, test.bandwidth)
    # the shift of e2 is gone with the centring: the same cells, centred, are no batch effect at all
    same = run_mmd_combined([("a.zarr", anndata()), ("c.zarr", renamed(anndata(), "copy", shift=5.0))],
                            MMDCombinedConfig.model_validate({"input_paths": ["a", "c"], "output_dir": "o",
                                                              "mmd": {"n_permutations": 50}}))
    assert (same.table["p_value"] == 1.0).all() and (same.table["mmd2"].abs() < 1e-2).all()


# --- command line -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_stores(kit_folder(tmp_path_factory.mktemp("kit")))


def _write(folder, name, cfg: dict):
    (folder / name).write_text(yaml.safe_dump(cfg))
    return name


def _manifest(folder) -> dict:
    return json.loads((folder / ".dynaclr-manifest.json").read_text())["entries"]


@pytest.mark.parametrize("case", list(CASES))
def test_modes_give_viscys_rows(folder, monkeypatch, capsys, case):
    """VisCy's own run_mmd_pooled / run_mmd_combined on these stores (data/eval2/viscy_modes.py): counts, bins and
    p-values exact (same random streams), bandwidth rel 1e-6, MMD² abs 2e-6, q-values rel 1e-12 (statsmodels
    divides by i/n where scipy multiplies by n/i: one rounding apart), activity z-scores rel 1e-4 or abs 1e-4:
    numpy sums the float32 null's mean and std in a SIMD order of the CPU's (the reference was made on an AVX-512
    machine; on an AVX2 one a z near 0, a difference of near-equal numbers, came out −0.035145 for −0.035121)."""
    monkeypatch.chdir(folder)
    mode, cfg = CASES[case]
    path = _write(folder, f"{case}.yaml", {**cfg, "output_dir": f"out_{case}"})
    code, _, err = cli(capsys, "evaluate", "mmd", "-c", path, f"--{mode}", "--json", f"{case}.json")
    assert code == 0, err
    want = expected_modes()[case]
    got = json.loads((folder / f"{case}.json").read_text())
    csv = pd.read_csv(folder / f"out_{case}" / f"{mode}_mmd_results.csv")
    assert list(csv.columns) == list(want[0]) and len(got) == len(want) == len(csv)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        for key, value in w.items():
            if key in ("mmd2", "bandwidth", "effect_size", "activity_zscore", "q_value") and value is not None:
                tol = {"mmd2": dict(abs=2e-6), "bandwidth": dict(rel=1e-6), "q_value": dict(rel=1e-12),
                       "activity_zscore": dict(rel=1e-4, abs=1e-4)}
                assert g[key] == pytest.approx(value, **tol.get(key, dict(rel=1e-4, abs=1e-12))), (key, g, w)
            else:
                assert g[key] == value, (key, g, w)


def test_cli_pooled_writes_viscys_csv_and_json(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)  # input_paths and output_dir relative to the working directory, as in VisCy
    cfg = _pooled_raw("aggregate_defaults", input_paths=["store.zarr", "copy.zarr"], output_dir="pooled_out",
                      mmd={"n_permutations": 100})
    code, stdout, err = cli(capsys, "evaluate", "mmd", "-c", _write(folder, "pooled.yaml", cfg), "--pooled",
                             "--json", "pooled.json")
    assert code == 0, err
    table = pd.read_csv(folder / "pooled_out" / "pooled_mmd_results.csv", float_precision="round_trip")
    assert list(table.columns) == list(POOLED_COLUMNS)
    assert (table["n_a"] == 480).all() and (table["n_b"] == 480).all()  # both stores' cells
    records = json.loads((folder / "pooled.json").read_text())
    for rec, (_, row) in zip(records, table.iterrows()):
        assert list(rec) == list(POOLED_COLUMNS)
        for key, value in rec.items():
            assert (value is None and pd.isna(row[key])) or value == row[key], key
    assert "uninf1 vs ZIKV @ SEC61B: n 480/480" in stdout and ", q " in stdout
    csv = folder / "pooled_out" / "pooled_mmd_results.csv"
    assert _manifest(folder / "pooled_out")["pooled_mmd_results.csv"]["sha256"] == content_hash(csv)
    assert "pooled.json" in _manifest(folder)
    assert cli(capsys, "evaluate", "mmd", "-c", "pooled.yaml", "--pooled", "--json", "pooled.json")[0] == 0  # rerun


def test_cli_combined_writes_viscys_csv(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    cfg = {"input_paths": ["store.zarr", "e2.zarr", "copy.zarr"], "output_dir": "combined_out", "save_plots": False,
           "mmd": {"n_permutations": 20}}
    code, stdout, err = cli(capsys, "evaluate", "mmd", "-c", _write(folder, "combined.yaml", cfg), "--combined",
                             "--json", "combined.json")
    assert code == 0, err
    table = pd.read_csv(folder / "combined_out" / "combined_mmd_results.csv")
    assert list(table.columns) == list(COMBINED_COLUMNS)
    pairs = list(dict.fromkeys(zip(table["exp_a"], table["exp_b"])))
    assert pairs == [("synth_eval2", "e2"), ("synth_eval2", "copy"), ("e2", "copy")]  # input order
    assert table.groupby(["exp_a", "exp_b"])["condition"].apply(list).to_dict() == {
        ("synth_eval2", "e2"): ["ZIKV", "uninfected1"], ("synth_eval2", "copy"): ["ZIKV", "uninfected1", "uninfected2"],
        ("e2", "copy"): ["ZIKV", "uninfected1"]}
    assert json.loads((folder / "combined.json").read_text())[0]["condition"] == "ZIKV"
    assert "ZIKV @ SEC61B synth_eval2 vs e2: n 240/165" in stdout and "note: marker 'TOMM20' is only in e2" in stdout
    assert "warning" not in err


def _store(folder, name, change):
    adata = anndata()
    change(adata)
    if not (folder / name).exists():
        write_store(adata, folder / name)
    return name


def _no_marker(adata):
    del adata.obs["marker"]


def _other_marker(adata):
    adata.obs["marker"] = pd.Categorical(["TOMM20"] * len(adata))
    adata.obs["experiment"] = pd.Categorical(["tomm"] * len(adata))


def _no_hours(adata):
    adata.obs[HOURS] = np.nan
    adata.obs["experiment"] = pd.Categorical(["nohours"] * len(adata))


def _no_projections(adata):
    del adata.obsm["X_projections"]
    adata.obs["experiment"] = pd.Categorical(["noproj"] * len(adata))


_COMPARE = [{"cond_a": "uninfected1", "cond_b": "ZIKV", "label": "z"}]
BAD = [
    ("pooled missing store", "--pooled", dict(input_paths=["store.zarr", "nope.zarr"], comparisons=_COMPARE),
     r"input_paths\[1\]: embedding store not found: nope.zarr \(relative paths are relative to the working"),
    ("combined missing store", "--combined", dict(input_paths=["nope.zarr", "copy.zarr"]),
     r"input_paths\[0\]: embedding store not found"),
    ("pooled with a per-experiment YAML", "--pooled", dict(input_path="store.zarr", comparisons=_COMPARE),
     "has input_path .*the per-experiment mode.*--pooled reads input_paths"),
    ("input_paths without a flag", None, dict(input_paths=["store.zarr"], comparisons=_COMPARE),
     "has input_paths .*pass --pooled or --combined"),
    ("combined with comparisons", "--combined", dict(input_paths=["store.zarr", "copy.zarr"], comparisons=_COMPARE),
     "--combined compares every condition two experiments share and takes no 'comparisons'"),
    ("combined with aliases", "--combined", dict(input_paths=["store.zarr", "copy.zarr"],
                                                 condition_aliases={"u": ["uninfected1"]}),
     "takes no 'condition_aliases'"),
    ("combined with one store", "--combined", dict(input_paths=["store.zarr"]),
     "input_paths: expected a list of at least 2 item"),
    ("no shared marker", "--combined", dict(input_paths=["store.zarr", ("tomm.zarr", _other_marker)]),
     "no marker is in two of the experiments \\(synth_eval2: SEC61B; tomm: TOMM20\\)"),
    ("one experiment twice", "--combined", dict(input_paths=["store.zarr", "store.zarr"]),
     "store.zarr and store.zarr are both experiment 'synth_eval2'"),
    ("store without marker", "--pooled", dict(input_paths=["store.zarr", ("nomarker.zarr", _no_marker)],
                                             comparisons=_COMPARE),
     "nomarker.zarr: MMD .*needs obs column 'marker'"),
    ("store without the obsm key", "--combined", dict(input_paths=["store.zarr", ("noproj.zarr", _no_projections)],
                                                     embedding_key="X_projections"),
     "noproj.zarr: embedding_key 'X_projections' is not in the store's obsm"),
    ("alias listed twice", "--pooled", dict(input_paths=["store.zarr"], comparisons=_COMPARE,
                                           condition_aliases={"a": ["uninfected1"], "b": ["uninfected1"]}),
     "'uninfected1' is listed under both 'a' and 'b'"),
    ("aliased condition", "--pooled", dict(input_paths=["store.zarr"], comparisons=_COMPARE,
                                          condition_aliases={"u": ["uninfected1", "uninfected2"]}),
     "cond_a 'uninfected1' is not a value of obs column 'perturbation' \\(values: ZIKV, u\\)"),
    ("too few cells pooled", "--pooled", dict(input_paths=["store.zarr"], comparisons=_COMPARE,
                                             mmd={"min_cells": 300}),
     "cond_a 'uninfected1' has at most 240 cells per marker and cond_b 'ZIKV' has at most 240 cells per marker"),
    ("too few cells combined", "--combined", dict(input_paths=["store.zarr", "copy.zarr"], mmd={"min_cells": 300}),
     "no row can be computed: at most 240 cells per condition and marker"),
    ("output into a store", "--pooled", dict(input_paths=["store.zarr"], comparisons=_COMPARE,
                                            output_dir="store.zarr/results"), "lies inside the input store"),
    ("no hours for a marker", "--combined", dict(input_paths=["store.zarr", ("nohours.zarr", _no_hours)],
                                                temporal_bin_size=3.0),
     "nohours.zarr: obs column 'hours_post_perturbation' holds no finite value for marker 'SEC61B'"),
    ("obs_filter keeps one store", "--combined", dict(input_paths=["store.zarr", "copy.zarr"],
                                                     obs_filter={"experiment": "copy"}),
     "obs_filter .* keeps cells of 1 of the 2 stores"),
]


@pytest.mark.parametrize("name,flag,cfg,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_and_writes_nothing(folder, monkeypatch, capsys, name, flag, cfg, message):
    monkeypatch.chdir(folder)
    cfg = {"output_dir": f"bad_{name.replace(' ', '_')}", "save_plots": False, **cfg}
    if "input_paths" in cfg:
        cfg["input_paths"] = [p if isinstance(p, str) else _store(folder, *p) for p in cfg["input_paths"]]
    path = _write(folder, "bad.yaml", cfg)
    before = sorted(p.name for p in folder.iterdir())
    code, _, err = cli(capsys, "evaluate", "mmd", "-c", path, *([flag] if flag else []), "--json", "bad.json")
    assert code == 2, (name, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-dynaclr: error:"), (name, err)
    assert re.search(message, lines[0]), (name, lines[0])
    assert sorted(p.name for p in folder.iterdir()) == before, name


def test_flags_are_exclusive_and_loading_names_the_mode(folder):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "mmd", "-c", str(folder / "bad.yaml"), "--pooled", "--combined"])
    assert exc.value.code == 2
    (folder / "per_exp.yaml").write_text(yaml.safe_dump(_pooled_raw("aggregate_defaults")))
    assert isinstance(load_mmd_config(folder / "per_exp.yaml", "pooled"), MMDPooledConfig)
    with pytest.raises(ConfigError, match="pass --pooled or --combined"):
        load_mmd_config(folder / "per_exp.yaml")


def test_progress_and_cancel_in_both_modes():
    from napari_dynaclr.errors import Cancelled

    stores = [("a.zarr", anndata()), ("b.zarr", renamed(anndata(), "b"))]
    combined = MMDCombinedConfig.model_validate({"input_paths": ["a", "b"], "output_dir": "o",
                                                 "mmd": {"n_permutations": 10}})
    seen = []
    run_mmd_combined(stores, combined, progress=lambda *a: seen.append(a))
    assert seen == [(1, 3, "ZIKV"), (2, 3, "uninfected1"), (3, 3, "uninfected2")]
    pooled = MMDPooledConfig.model_validate({**_pooled_raw("aggregate_defaults"), "mmd": {"n_permutations": 10}})
    for run, cfg in ((run_mmd_combined, combined), (run_mmd_pooled, pooled)):
        with pytest.raises(Cancelled):
            run(stores, cfg, cancel=lambda: True)


def test_pooled_obs_filter_sees_source_experiment_and_per_experiment_bins_skip_nan_hours():
    """VisCy's concat labels each store's cells ``source_experiment`` "0", "1", …: filtering on "1" is the second
    store alone. Bin edges come from the largest finite hour (pandas' max skips NaN), in both modes."""
    from napari_dynaclr.evaluate.mmd import run_mmd

    stores = [("a.zarr", anndata()), ("b.zarr", renamed(anndata(), "b", shift=1.0))]
    raw = _pooled_raw("temporal_bins", mmd={"n_permutations": 20})
    only_b = run_mmd_pooled(stores, MMDPooledConfig.model_validate({**raw, "obs_filter": {"source_experiment": "1"}}))
    alone = run_mmd_pooled(stores[1:], MMDPooledConfig.model_validate(raw))
    pd.testing.assert_frame_equal(only_b.table, alone.table)
    gappy = anndata()
    late = (gappy.obs[HOURS] >= 9.0).to_numpy()
    gappy.obs.loc[late, HOURS] = np.nan  # hours from 9 on unknown: edges arange(0, 8.5 + 3, 3), not to 12
    cfg = load_mmd_config(CONFIGS / "mmd_temporal_bins.yaml")
    table = run_mmd(gappy.obs, np.asarray(gappy.X), cfg.model_copy(update={"mmd": cfg.mmd.model_copy(
        update={"n_permutations": 10})})).table
    assert sorted(set(table["hours_bin_end"])) == [3.0, 6.0, 9.0]
    pooled = run_mmd_pooled([("g.zarr", gappy)], MMDPooledConfig.model_validate(raw))
    assert sorted(set(pooled.table["hours_bin_end"])) == [3.0, 6.0, 9.0]
