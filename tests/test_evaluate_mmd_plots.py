"""``save_plots: true`` (VisCy's default) draws VisCy's compute-mmd figures: per mode exactly VisCy's file names
(``compute_mmd._save_plots*`` at 4b62365), valid PDF and PNG files written through the safe write path and
recorded in the folder's manifest; a foreign file with a figure's name refused before any computation; the stars
are Benjamini–Hochberg at 5 %."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from cli_lines import cli, one_error
from eval2_data import CONFIGS, kit_folder
from mmd_modes_data import CASES, write_stores
from napari_dynaclr.core.output.manifest import content_hash
from napari_dynaclr.evaluate.mmd_plots import bh_significant

KIT = "synth_eval2"
LABELS = ("uninf1_vs_uninf2", "uninf1_vs_ZIKV", "uninf2_vs_ZIKV")


def _both(*stems: str) -> set[str]:
    return {f"{stem}.{fmt}" for stem in stems for fmt in ("pdf", "png")}


#: what VisCy's _save_plots / _save_plots_pooled / _save_plots_combined write for each config below
PER_EXPERIMENT_BINS = _both(*(f"{KIT}_{lbl}_kinetics" for lbl in LABELS), f"{KIT}_multi_panel_kinetics",
                            f"{KIT}_activity_heatmap", f"{KIT}_paired_activity")
POOLED_BINS_ONE_LABEL = _both("pooled_uninf_vs_ZIKV_heatmap", "pooled_multi_panel_kinetics",
                              "pooled_activity_heatmap")
POOLED_NO_BINS = _both(*(f"pooled_{lbl}_heatmap" for lbl in LABELS))
COMBINED_BINS = _both("combined_SEC61B_kinetics", "combined_heatmap")  # TOMM20 is in e2 only
COMBINED_NO_BINS = _both("combined_heatmap")


# --- the stars ------------------------------------------------------------------------------------------------

def _reject_as_statsmodels(p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """statsmodels' ``multipletests(p, alpha, "fdr_bh")[0]`` written out on the finite p-values: sorted, the
    largest rank k with ``p_(k) <= k/n·alpha`` and every rank up to it rejected (the step-up); NaN never."""
    out = np.zeros(len(p), dtype=bool)
    idx = np.flatnonzero(~np.isnan(p))
    if len(idx) == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    below = np.flatnonzero(p[order] <= np.arange(1, len(order) + 1) / len(order) * alpha)
    if len(below):
        out[order[: below[-1] + 1]] = True
    return out


def test_stars_are_benjamini_hochberg_by_hand():
    # sorted 0.001, 0.012, 0.035, 0.038, 0.9 against k/5·0.05 = 0.01, 0.02, 0.03, 0.04, 0.05: rank 4 passes, so
    # rank 3 (0.035 > 0.03) is significant too (the step-up); 0.9 is not; NaN is left out of n (else n = 6 and
    # rank 4 would need 0.038 <= 0.0333)
    p = [0.035, 0.9, 0.001, np.nan, 0.038, 0.012]
    np.testing.assert_array_equal(bh_significant(p), [True, False, True, False, True, True])
    np.testing.assert_array_equal(bh_significant([0.04, 0.045]), [True, True])  # 0.045 <= 2/2·0.05 carries 0.04
    np.testing.assert_array_equal(bh_significant([0.03, 0.06]), [False, False])
    assert bh_significant([np.nan, np.nan]).tolist() == [False, False] and len(bh_significant([])) == 0
    assert bh_significant(np.array([[0.001, np.nan], [0.5, 0.01]])).tolist() == [True, False, False, True]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1, allow_subnormal=False) | st.sampled_from([0.001, 0.01, 0.02, 0.5, np.nan]),
                max_size=30))
def test_stars_equal_statsmodels_fdr_bh(ps):
    p = np.asarray(ps, dtype=float)
    np.testing.assert_array_equal(bh_significant(p), _reject_as_statsmodels(p))


# --- the command ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_stores(kit_folder(tmp_path_factory.mktemp("kit")), ["store.zarr", "copy.zarr", "e2.zarr",
                                                                      "split1.zarr", "split2.zarr"])


def _config(folder, name: str, base: dict, **changes) -> str:
    cfg = {**base, "output_dir": f"out_{name}", "save_plots": True, **changes}
    cfg["mmd"] = {**cfg.get("mmd", {}), "n_permutations": 30}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return f"{name}.yaml"


def _kit_config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"mmd_{name}.yaml").read_text())


def _figures(out) -> set[str]:
    return {p.name for p in out.iterdir() if p.suffix in (".pdf", ".png")}


def _assert_valid(out, names: set[str]) -> None:
    for name in names:
        path = out / name
        if name.endswith(".png"):
            image = imread(path)
            assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, name
        else:
            data = path.read_bytes()
            assert data.startswith(b"%PDF-") and b"%%EOF" in data[-32:], name


CASES_FIGURES = {
    "per_experiment_bins": (None, lambda: _kit_config("temporal_bins"), PER_EXPERIMENT_BINS),
    "per_experiment_aggregate": (None, lambda: _kit_config("aggregate_defaults"), set()),
    "pooled_bins": ("pooled", lambda: CASES["pooled_aliases_bins"][1], POOLED_BINS_ONE_LABEL),
    "pooled_aggregate": ("pooled", lambda: CASES["pooled_kit_and_copy_balanced"][1], POOLED_NO_BINS),
    "combined_bins": ("combined", lambda: CASES["combined_bins"][1], COMBINED_BINS),
    "combined_aggregate": ("combined", lambda: CASES["combined_aggregate_balanced"][1], COMBINED_NO_BINS),
}


@pytest.mark.parametrize("case", list(CASES_FIGURES))
def test_each_mode_draws_viscys_figures(folder, monkeypatch, capsys, case):
    monkeypatch.chdir(folder)
    mode, base, want = CASES_FIGURES[case]
    argv = ["evaluate", "mmd", "-c", _config(folder, case, base()), *([f"--{mode}"] if mode else [])]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    out = folder / f"out_{case}"
    assert _figures(out) == want
    _assert_valid(out, want)
    entries = json.loads((out / ".dynaclr-manifest.json").read_text())["entries"]
    for name in want:  # recorded as ours: the folder's manifest lists every figure
        assert entries[name]["sha256"] == content_hash(out / name) and f"wrote out_{case}/{name}" in err
    assert "warning" not in err
    if want:  # a rerun replaces its own figures, unchanged, without --overwrite (and a PDF is byte for byte equal)
        pdf = next(n for n in sorted(want) if n.endswith(".pdf"))
        before = (out / pdf).read_bytes()
        code, _, err = cli(capsys, *argv)
        assert code == 0, err
        assert (out / pdf).read_bytes() == before


def test_save_plots_false_draws_nothing(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    code, _, err = cli(capsys, "evaluate", "mmd", "-c",
                       _config(folder, "no_plots", _kit_config("temporal_bins"), save_plots=False))
    assert code == 0, err
    assert sorted(p.name for p in (folder / "out_no_plots").iterdir()) == [
        ".dynaclr-manifest.json", f"{KIT}_mmd_results.csv"]


def _never(*args, **kwargs):
    raise AssertionError("the computation started")


@pytest.mark.parametrize(("case", "flag", "run", "name"), [
    ("temporal_bins", None, "napari_dynaclr.evaluate.mmd.run_mmd", f"{KIT}_uninf1_vs_ZIKV_kinetics.png"),
    ("pooled_aliases_bins", "pooled", "napari_dynaclr.evaluate.mmd_pooled.run_mmd_pooled",
     "pooled_activity_heatmap.pdf"),
    ("combined_bins", "combined", "napari_dynaclr.evaluate.mmd_combined.run_mmd_combined",
     "combined_SEC61B_kinetics.png"),
])
def test_a_foreign_file_with_a_figures_name_is_refused_before_any_work(folder, monkeypatch, capsys, case, flag,
                                                                       run, name):
    monkeypatch.chdir(folder)
    base = _kit_config(case) if flag is None else CASES[case][1]
    path = _config(folder, f"foreign_{case}", base)
    out = folder / f"out_foreign_{case}"
    out.mkdir()
    foreign = out / name
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n a user's own figure")
    monkeypatch.setattr(run, _never)
    code, _, err = cli(capsys, "evaluate", "mmd", "-c", path, *([f"--{flag}"] if flag else []))
    line = one_error(code, err)
    assert str(foreign.relative_to(folder)) in line and "already exists" in line, line
    assert foreign.read_bytes() == b"\x89PNG\r\n\x1a\n a user's own figure"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written: no CSV, no figure, no manifest


def test_an_edited_figure_of_ours_is_not_replaced(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    path = _config(folder, "edited", _kit_config("temporal_bins"))
    assert cli(capsys, "evaluate", "mmd", "-c", path)[0] == 0
    figure = folder / "out_edited" / f"{KIT}_multi_panel_kinetics.png"
    figure.write_bytes(figure.read_bytes() + b"edited")
    code, _, err = cli(capsys, "evaluate", "mmd", "-c", path)
    assert "multi_panel_kinetics.png already exists" in one_error(code, err)
    assert figure.read_bytes().endswith(b"edited")


def test_drawing_leaves_pyplot_alone():
    """The figures use matplotlib's object API: pyplot (its global state and backend switch) is never imported,
    so that napari's process may draw them. Labels and markers are plain text: a ``$`` starts no math."""
    code = ("import io, sys\n"
            "import pandas as pd\n"
            "from napari_dynaclr.evaluate.mmd_config import MMDRunConfig\n"
            "from napari_dynaclr.evaluate.mmd_plots import draw_figures\n"
            "labels = ['a vs b', 'a $x^$ vs b']\n"
            "cfg = MMDRunConfig(input_path='s', output_dir='o', temporal_bin_size=3.0,\n"
            "                   comparisons=[{'cond_a': 'a', 'cond_b': 'b', 'label': lbl} for lbl in labels])\n"
            "rows = [dict(experiment='e', marker=m, label=lbl, hours_bin_start=s, hours_bin_end=s + 3,\n"
            "             mmd2=0.01 * s, p_value=0.01, activity_zscore=s - 2)\n"
            "        for lbl in labels for m in ('M', '$_M') for s in (0.0, 3.0, 6.0)]\n"
            "figs = draw_figures(None, pd.DataFrame(rows), cfg)\n"
            "assert sorted(figs) == ['e_a_$x^$_vs_b_kinetics', 'e_a_vs_b_kinetics', 'e_activity_heatmap',\n"
            "                        'e_multi_panel_kinetics', 'e_paired_activity'], sorted(figs)\n"
            "for fig in figs.values():\n"
            "    fig.savefig(io.BytesIO(), format='png')\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
