"""MMD between conditions: VisCy's numbers on the conformance kit (library and ``evaluate mmd``), the exact fast
kernel against the plain formula, properties, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import cdist

from cli_lines import cli
from eval2_data import CONFIGS, MMD_CASES, anndata, expected, kit_folder, write_store
from napari_dynaclr.errors import ConfigError
from napari_dynaclr.evaluate.mmd import RESULT_COLUMNS, run_mmd, select_embedding
from napari_dynaclr.evaluate.mmd_config import load_mmd_config, parse_analysis
from napari_dynaclr.evaluate.mmd_kernel import median_heuristic, mmd_permutation_test, rbf_kernel

EXACT = ("experiment", "marker", "cond_a", "cond_b", "label", "hours_bin_start", "hours_bin_end", "n_a", "n_b",
         "p_value", "map_value", "map_p_value", "embedding_key")


def assert_rows_match(got: list[dict], want: list[dict]) -> None:
    """The kit's tolerances (README): exact counts, bins and p-values (same random stream), bandwidth rel 1e-6,
    MMD² abs 2e-6, effect size and activity z-score rel 1e-4."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(RESULT_COLUMNS)
        for key in EXACT:
            assert g[key] == w[key], (key, g, w)
        assert g["bandwidth"] == pytest.approx(w["bandwidth"], rel=1e-6)
        assert g["mmd2"] == pytest.approx(w["mmd2"], rel=0, abs=2e-6)
        for key in ("effect_size", "activity_zscore"):
            assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-12)


@pytest.fixture(scope="module")
def kit():
    return anndata()


@pytest.mark.parametrize("case", MMD_CASES)
def test_library_gives_viscys_rows(kit, case):
    cfg = load_mmd_config(CONFIGS / f"mmd_{case}.yaml")
    result = run_mmd(kit.obs, select_embedding(kit, cfg.embedding_key), cfg)
    assert_rows_match(result.to_records(), expected()["mmd"][case])
    assert result.csv_name == "synth_eval2_mmd_results.csv" and result.notes == []


def test_direct_calls_give_viscys_numbers(kit):
    d = expected()["mmd_direct"]
    X, group = np.asarray(kit.X), kit.obs["perturbation"]
    Xa, Xb = X[(group == d["pair"][0]).to_numpy()], X[(group == d["pair"][1]).to_numpy()]
    assert median_heuristic(Xa, Xb) == pytest.approx(d["median_heuristic_default"], rel=1e-6)
    assert median_heuristic(Xa, Xb, 100) == pytest.approx(d["median_heuristic_subsample100"], rel=1e-6)
    given_bw = d["perm_test_bw_given"]
    test = mmd_permutation_test(Xa, Xb, 200, d["median_heuristic_default"], seed=123)
    assert test.mmd2 == pytest.approx(given_bw["mmd2"], abs=2e-6) and test.p_value == given_bw["p_value"]
    np.testing.assert_allclose(test.null, given_bw["null"], rtol=0, atol=2e-6)
    small = d["perm_test_first60_bw_none"]
    test = mmd_permutation_test(Xa[:60], Xb[:60], 300, None, seed=5)
    assert test.mmd2 == pytest.approx(small["mmd2"], abs=2e-6) and test.p_value == small["p_value"]
    assert float(test.null.mean()) == pytest.approx(small["null_mean"], abs=2e-6)
    assert float(test.null.std()) == pytest.approx(small["null_std"], rel=1e-4)
    np.testing.assert_allclose(test.null[:10], small["null_first10"], rtol=0, atol=2e-6)


def _reference_kernel(pool: np.ndarray, bw: float) -> np.ndarray:
    """VisCy's formula, written out: cdist in float64, float32 exp, zero diagonal."""
    K = np.exp(-cdist(pool, pool, "sqeuclidean") / (2.0 * bw), dtype=np.float32)
    np.fill_diagonal(K, 0.0)
    return K


def _reference_median(pool: np.ndarray) -> float:
    d = cdist(pool, pool, "sqeuclidean")
    return float(np.median(d[np.triu_indices_from(d, k=1)])) + 1e-12


@pytest.mark.parametrize("offset", [0.0, 40.0, 1e3])
def test_fast_kernel_and_median_are_the_plain_formula_bit_for_bit(offset):
    """Duplicated rows, near-duplicates and a large common offset (cancellation in the product form) included."""
    rng = np.random.default_rng(7)
    pool = (rng.standard_normal((300, 96)) * 0.3 + offset).astype(np.float32)
    pool[10:20] = pool[0]
    pool[20:30] = pool[1] + np.float32(1e-3)
    bw = _reference_median(pool)
    assert median_heuristic(pool[:150], pool[150:]) == bw
    assert np.array_equal(rbf_kernel(pool, bw), _reference_kernel(pool, bw))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.float32, st.tuples(st.integers(2, 40), st.integers(1, 12)),
              elements=st.floats(-50, 50, width=32) | st.sampled_from([0.0, 1.0, 1.5])),
       st.floats(0.01, 1e4))
def test_fast_kernel_equals_the_formula_on_any_pool(pool, bw):
    assert np.array_equal(rbf_kernel(pool, bw), _reference_kernel(pool, bw))


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 30), st.integers(3, 30), st.integers(1, 60), st.integers(0, 2**31))
def test_permutation_test_properties(n, m, n_perm, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    Y = (rng.standard_normal((m, 5)) + 0.3).astype(np.float32)
    test = mmd_permutation_test(X, Y, n_perm, None, seed)
    assert 1 / (n_perm + 1) <= test.p_value <= 1 and len(test.null) == n_perm and test.null.dtype == np.float32
    assert test.p_value == (np.sum(test.null >= test.mmd2) + 1) / (n_perm + 1)
    swapped = mmd_permutation_test(Y, X, n_perm, test.bandwidth, seed)
    assert swapped.mmd2 == pytest.approx(test.mmd2, abs=1e-5)  # symmetric up to float32 sums
    shuffled = mmd_permutation_test(X[rng.permutation(n)], Y[rng.permutation(m)], n_perm, test.bandwidth, seed)
    assert shuffled.mmd2 == pytest.approx(test.mmd2, abs=1e-5)  # the rows' order within a group does not matter
    again = mmd_permutation_test(X, Y, n_perm, None, seed)
    assert again.mmd2 == test.mmd2 and again.p_value == test.p_value and np.array_equal(again.null, test.null)


def test_two_draws_of_one_distribution_are_not_significant():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((200, 8)), rng.standard_normal((200, 8))
    assert mmd_permutation_test(X, Y, 200, None, 0).p_value > 0.05
    assert mmd_permutation_test(X, Y + 1.0, 200, None, 0).p_value == 1 / 201


def test_bins_with_too_few_cells_are_nan_rows_as_in_viscy(kit):
    cfg = parse_analysis({**yaml.safe_load((CONFIGS / "mmd_temporal_bins.yaml").read_text()),
                          "mmd": {"min_cells": 30, "n_permutations": 50}}, "test")
    result = run_mmd(kit.obs, np.asarray(kit.X), cfg)
    first_bin = result.table[result.table["hours_bin_start"] == 0.0]
    assert first_bin["mmd2"].isna().all() and (first_bin["n_b"] == 24).all()
    assert result.table["mmd2"].notna().sum() == 9 and result.n_nan == 3
    assert "3 of 12 rows are NaN" in result.notes[0] and "n_b 24" in result.notes[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return kit_folder(tmp_path_factory.mktemp("kit"))


@pytest.mark.parametrize("case", MMD_CASES)
def test_cli_writes_viscys_csv_and_json(folder, monkeypatch, capsys, case):
    monkeypatch.chdir(folder)  # the kit's configs are relative to the working directory, as in VisCy
    out = folder / f"{case}.json"
    code, stdout, err = cli(capsys, "evaluate", "mmd", "-c", f"configs/mmd_{case}.yaml", "--json", out)
    assert code == 0, err
    csv = folder / "mmd_out" / case / "synth_eval2_mmd_results.csv"
    table = pd.read_csv(csv, float_precision="round_trip")
    assert list(table.columns) == list(RESULT_COLUMNS)
    records = json.loads(out.read_text())
    assert_rows_match(records, expected()["mmd"][case])
    for rec, (_, row) in zip(records, table.iterrows()):
        for key, value in rec.items():
            assert (value is None and pd.isna(row[key])) or value == row[key], key
    assert "uninf1 vs ZIKV" in stdout


def test_cli_reports_nan_rows(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    cfg = yaml.safe_load((CONFIGS / "mmd_temporal_bins.yaml").read_text())
    cfg.update(output_dir="nan_out", mmd={"min_cells": 30, "n_permutations": 20}, save_plots=True)
    (folder / "nan.yaml").write_text(yaml.safe_dump(cfg))
    code, stdout, err = cli(capsys, "evaluate", "mmd", "-c", "nan.yaml")
    assert code == 0, err
    assert stdout.count("NaN (too few cells)") == 3 and "note: 3 of 12 rows are NaN" in stdout
    assert "warning" not in err  # save_plots draws VisCy's figures, NaN rows left out of the lines
    assert (folder / "nan_out" / "synth_eval2_multi_panel_kinetics.png").stat().st_size > 0
    table = pd.read_csv(folder / "nan_out" / "synth_eval2_mmd_results.csv")
    assert table["mmd2"].isna().sum() == 3


def _config(folder, name, **changes):
    cfg = yaml.safe_load((CONFIGS / "mmd_aggregate_defaults.yaml").read_text())
    cfg.update(output_dir=f"bad_{name}", mmd={"n_permutations": 10})
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path = folder / f"bad_{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _store_without(folder, name, column=None, change=None):
    adata = anndata()
    if column is not None:
        del adata.obs[column]
    if change is not None:
        change(adata)
    return str(write_store(folder / f"{name}.zarr", adata))


def _nan_row(adata):
    adata.X[5, 3] = np.nan


def _few_zikv(adata):
    one_track = (adata.obs["track_id"] == 1).to_numpy() & (adata.obs["t"] < 19).to_numpy()
    keep = (adata.obs["perturbation"] != "ZIKV").to_numpy() | one_track
    adata._inplace_subset_obs(np.flatnonzero(keep))


BAD = [
    ("no marker", dict(input_path=("no_marker", "marker", None)), "needs obs column 'marker'.*--markers"),
    ("no group column", dict(input_path=("no_pert", "perturbation", None)),
     "group_by 'perturbation' needs obs column 'perturbation'.*--perturbation-wells"),
    ("no hours", dict(input_path=("no_hours", "hours_post_perturbation", None), temporal_bin_size=3.0),
     "temporal_bin_size needs obs column 'hours_post_perturbation'.*--interval-minutes"),
    ("unknown condition", dict(comparisons=[{"cond_a": "uninfected1", "cond_b": "ZIKA", "label": "typo"}]),
     "comparison 'typo': cond_b 'ZIKA' is not a value of obs column 'perturbation'.*ZIKV"),
    ("too few cells", dict(input_path=("few_zikv", None, _few_zikv)),
     "comparison 'uninf1 vs ZIKV': cond_b 'ZIKV' has at most 19 cells.*fewer than mmd.min_cells 20"),
    ("no embedding key", dict(embedding_key="X_pca"),
     "embedding_key 'X_pca' is not in the store's obsm.*X_projections"),
    ("NaN embeddings", dict(input_path=("nan_x", None, _nan_row)), "1 of the compared cells have NaN/Inf"),
    ("obs_filter column", dict(obs_filter={"organelle": "ER"}), "obs_filter needs obs column 'organelle'"),
    ("obs_filter keeps nothing", dict(obs_filter={"marker": "TOMM20"}), "keeps no cell"),
    ("unknown key", dict(mmd={"n_permutation": 10}), "unknown key 'mmd.n_permutation'"),
    ("wrong type", dict(mmd={"max_cells": "all"}), "mmd.max_cells: expected an integer, got 'all'"),
    ("both binnings", dict(temporal_bin_size=3.0, temporal_bins=[0, 6]), "mutually exclusive"),
    ("mAP", dict(map_settings={"enabled": True}), "map_settings.enabled: copairs mAP is not implemented"),
    ("no comparisons", dict(comparisons=[]), "comparisons: expected a list of at least 1"),
    ("missing store", dict(input_path="nope.zarr"), "not found"),
    ("output into the store", dict(output_dir="store.zarr/results"), "lies inside the input store"),
]


@pytest.mark.parametrize("name,changes,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_and_writes_nothing(folder, monkeypatch, capsys, name, changes, message):
    monkeypatch.chdir(folder)
    changes = dict(changes)
    if isinstance(changes.get("input_path"), tuple):
        stem, column, change = changes["input_path"]
        changes["input_path"] = _store_without(folder, f"{stem}_{name.replace(' ', '_')}", column, change)
    path = _config(folder, name.replace(" ", "_"), **changes)
    before = sorted(p.name for p in folder.iterdir())
    store_files = sorted(p.relative_to(folder) for p in (folder / "store.zarr").rglob("*"))
    code, _, err = cli(capsys, "evaluate", "mmd", "-c", path, "--json", folder / "bad.json")
    assert code == 2, (name, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-dynaclr: error:"), (name, err)
    assert re.search(message, lines[0]), (name, lines[0])
    assert sorted(p.name for p in folder.iterdir()) == before, name
    assert sorted(p.relative_to(folder) for p in (folder / "store.zarr").rglob("*")) == store_files


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("input_path: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml is not valid YAML"):
        load_mmd_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_mmd_config(tmp_path / "missing.yaml")


def test_base_composition_as_viscy(tmp_path):
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(
        {"group_by": "perturbation", "mmd": {"n_permutations": 10, "seed": 3}, "_anchor": 1}))
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(yaml.safe_dump({"base": ["recipe.yaml"], "input_path": "s.zarr", "output_dir": "o",
                                    "mmd": {"seed": 4}, "comparisons": [{"cond_a": "a", "cond_b": "b", "label": "l"}]}))
    cfg = load_mmd_config(leaf)
    assert cfg.mmd.n_permutations == 10 and cfg.mmd.seed == 4 and cfg.group_by == "perturbation"
    assert math.isclose(cfg.mmd.max_cells, 2000)


def test_explicit_bins_no_experiment_column_progress_and_cancel(kit):
    from napari_dynaclr.errors import Cancelled

    adata = anndata()
    del adata.obs["experiment"]
    cfg = parse_analysis({"comparisons": [{"cond_a": "uninfected1", "cond_b": "ZIKV", "label": "z"}],
                          "temporal_bins": [2, 6, 12], "mmd": {"n_permutations": 20}}, "test", with_paths=False)
    seen = []
    result = run_mmd(adata.obs, np.asarray(adata.X), cfg, progress=lambda *a: seen.append(a))
    hours = adata.obs["hours_post_perturbation"].to_numpy()
    zikv = (adata.obs["perturbation"] == "ZIKV").to_numpy()
    assert result.table["experiment"].tolist() == ["unknown"] * 2 and result.csv_name == "unknown_mmd_results.csv"
    assert result.table[["hours_bin_start", "hours_bin_end"]].values.tolist() == [[2.0, 6.0], [6.0, 12.0]]
    assert result.table["n_b"].tolist() == [int((zikv & (hours >= 2) & (hours < 6)).sum()),
                                            int((zikv & (hours >= 6) & (hours < 12)).sum())]
    assert (result.table["n_a"] == 240).all() and seen == [(1, 2, "z"), (2, 2, "z")]
    with pytest.raises(Cancelled):
        run_mmd(adata.obs, np.asarray(adata.X), cfg, cancel=lambda: True)


def test_rerun_replaces_its_own_unchanged_outputs_only(folder, monkeypatch, capsys):
    """A rerun of a config replaces the CSV and JSON it wrote (VisCy overwrites silently); a user's file of that
    name, or our file edited since, is refused without --overwrite (exit 2, nothing written); --overwrite
    replaces it, and the new file is ours again."""
    monkeypatch.chdir(folder)
    cfg = yaml.safe_load((CONFIGS / "mmd_aggregate_defaults.yaml").read_text())
    cfg.update(output_dir="again/deeper", mmd={"n_permutations": 5})
    (folder / "again.yaml").write_text(yaml.safe_dump(cfg))
    argv = ["evaluate", "mmd", "-c", "again.yaml", "--json", "again.json"]
    csv, report = folder / "again" / "deeper" / "synth_eval2_mmd_results.csv", folder / "again.json"
    assert cli(capsys, *argv)[0] == 0
    first = csv.read_bytes(), report.read_bytes()
    cfg["mmd"] = {"n_permutations": 7}  # other p-values: the files are written again, not left as they were
    (folder / "again.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    ours = csv.read_bytes(), report.read_bytes()
    assert ours[0] != first[0] and ours[1] != first[1]

    def refused(path, *extra):
        before = {p: p.read_bytes() for p in (csv, report)}
        code, _, err = cli(capsys, *argv, *extra)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{path.name} already exists; pass --overwrite to replace it" in err, err
        assert {p: p.read_bytes() for p in (csv, report)} == before

    csv.write_bytes(ours[0] + b"# checked by hand\n")  # our CSV, edited by the user
    refused(csv)
    csv.write_bytes(ours[0])  # as we wrote it again: ours
    report.write_bytes(ours[1].replace(b"uninf1 vs ZIKV", b"my label"))  # our JSON, edited
    refused(report)
    assert cli(capsys, *argv, "--overwrite")[0] == 0 and report.read_bytes() == ours[1]
    assert cli(capsys, *argv)[0] == 0  # the replaced report is ours again

    user = folder / "user.json"  # a user's file named like the report, in a folder whose manifest records others
    user.write_text("[]\n")
    code, _, err = cli(capsys, "evaluate", "mmd", "-c", "again.yaml", "--json", user)
    assert code == 2 and "user.json already exists; pass --overwrite to replace it" in err
    assert user.read_text() == "[]\n"
    cfg["output_dir"] = "theirs"  # a user's CSV named like ours, in a folder we never wrote to
    (folder / "theirs").mkdir()
    (folder / "theirs" / csv.name).write_text("a,b\n1,2\n")
    (folder / "theirs.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = cli(capsys, "evaluate", "mmd", "-c", "theirs.yaml")
    assert code == 2 and f"{csv.name} already exists; pass --overwrite to replace it" in err
    assert (folder / "theirs" / csv.name).read_text() == "a,b\n1,2\n"
    assert cli(capsys, "evaluate", "mmd", "-c", "theirs.yaml", "--overwrite")[0] == 0
    assert (folder / "theirs" / csv.name).read_bytes() == ours[0]
