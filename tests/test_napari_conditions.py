"""The dock's Conditions and Time views driven on the conformance kit's store (tests/data/eval2, VisCy's writer:
3 wells, 36 tracks, an infection): the numbers they show are the headless ones (which equal VisCy's), a row /
track leads to its cells, results are saved through the safe write path, bad input is one notification and the
view stays usable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval2_data import anndata, write_store
from napari_fixtures import wait_worker

PLUGIN = "napari-dynaclr"
TIMEOUT_MS = 180_000


def _open(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    wait_worker(qtbot, main.open_embeddings(store), 60_000)
    assert main.session.adata is not None and len(main.session.table) == 720
    return viewer, main


@pytest.fixture
def eval2_store(tmp_path):
    return write_store(tmp_path / "kit" / "store.zarr")


@pytest.fixture
def errors(monkeypatch):
    from napari_dynaclr._napari.widgets import long_job

    seen: list[str] = []
    monkeypatch.setattr(long_job, "show_error", seen.append)
    return seen


def _shown(view) -> list[list[str]]:
    t = view.table
    return [[t.item(i, j).text() for j in range(t.columnCount())] for i in range(t.rowCount())]


def _run(qtbot, job, worker):
    assert worker is not None, job.status.value
    wait_worker(qtbot, worker, TIMEOUT_MS)
    assert job.last_error is None, job.last_error


def test_conditions_view_shows_the_headless_mmd_and_selects_a_comparisons_cells(make_napari_viewer, qtbot,
                                                                                   eval2_store):
    from napari_dynaclr._napari.widgets.conditions_view import SHOWN, format_value, hours_text
    from napari_dynaclr.core.output.manifest import read_manifest
    from napari_dynaclr.evaluate.mmd import run_mmd
    from napari_dynaclr.evaluate.mmd_config import parse_analysis

    viewer, main = _open(make_napari_viewer, qtbot, eval2_store)
    view = main.conditions
    main.tabs.setCurrentWidget(view)
    assert view.group_by.value == "perturbation" and "well" in view.group_by.choices
    view.reference.value = "uninfected1"
    assert set(view.others.value) == {"uninfected2", "ZIKV"}
    view.bin_hours.value = 3.0
    view.permutations.value = 300
    _run(qtbot, view.job, view.run())

    # the headless run of the same comparisons (VisCy's numbers, tests/test_evaluate_mmd.py)
    adata = anndata()
    analysis = parse_analysis({"group_by": "perturbation", "temporal_bin_size": 3.0, "mmd": {"n_permutations": 300},
                               "comparisons": [{"cond_a": "uninfected1", "cond_b": b, "label": f"uninfected1 vs {b}"}
                                               for b in ("ZIKV", "uninfected2")]}, "test", with_paths=False)
    expected = run_mmd(adata.obs, adata.X, analysis).table
    pd.testing.assert_frame_equal(view.result.table, expected)
    rows = expected.to_dict(orient="records")
    assert _shown(view) == [[hours_text(r) if col is None else format_value(r[col], fmt) for _, col, fmt in SHOWN]
                            for r in rows]
    assert np.isfinite(expected["mmd2"]).sum() >= 4 and view.plot.isVisible()

    # a row selects its cells: all of cond_a (VisCy bins only B), cond_b in the bin
    i = next(k for k, r in enumerate(rows) if r["cond_b"] == "ZIKV" and np.isfinite(r["mmd2"]))
    view.table.selectRow(i)
    obs, r = adata.obs, rows[i]
    hours = obs["hours_post_perturbation"].to_numpy()
    want = np.flatnonzero((obs["perturbation"] == "uninfected1").to_numpy() | (
        (obs["perturbation"] == "ZIKV").to_numpy() & (hours >= r["hours_bin_start"]) & (hours < r["hours_bin_end"])))
    np.testing.assert_array_equal(main.session.selected, want)
    assert len(want) == r["n_a"] + r["n_b"]  # (fewer than max_cells: nothing drawn)

    # VisCy's CSV beside the store, recorded; a second save replaces it
    path = view.save_csv()
    assert path == eval2_store.parent / "synth_eval2_mmd_results.csv"
    assert path.read_text() == run_mmd(adata.obs, adata.X, analysis).to_csv()
    assert path.name in read_manifest(path.parent)
    assert view.save_csv() == path


def test_conditions_view_groups_by_well_and_refuses_bad_input_in_one_line(make_napari_viewer, qtbot, tmp_path,
                                                                          errors):
    from napari_dynaclr.evaluate.mmd import run_mmd
    from napari_dynaclr.evaluate.mmd_config import parse_analysis

    adata = anndata()
    del adata.obs["marker"]
    store = write_store(tmp_path / "no_marker.zarr", adata)
    viewer, main = _open(make_napari_viewer, qtbot, store)
    view = main.conditions
    view.group_by.value = "well"
    assert view.reference.choices == ("A/1", "A/2", "B/1")
    view.reference.value = "A/1"
    view.others.value = ["B/1"]
    assert view.run() is None
    assert len(errors) == 1 and "'marker'" in errors[0] and "--markers" in errors[0]
    assert view.job.run_btn.enabled and view.result is None

    # with a marker column (given to the opened store here) it runs; a min_cells above every condition is refused
    main.session.adata.obs["marker"] = "SEC61B"
    view.min_cells.value = 500
    assert view.run() is None
    assert len(errors) == 2 and "fewer than mmd.min_cells 500" in errors[1]
    view.min_cells.value = 20
    view.permutations.value = 50
    _run(qtbot, view.job, view.run())
    obs = main.session.adata.obs.assign(well=main.session.adata.obs["fov_name"].astype(str).str[:3])
    analysis = parse_analysis({"group_by": "well", "mmd": {"n_permutations": 50},
                               "comparisons": [{"cond_a": "A/1", "cond_b": "B/1", "label": "A/1 vs B/1"}]}, "test",
                              with_paths=False)
    pd.testing.assert_frame_equal(view.result.table, run_mmd(obs, adata.X, analysis).table)
    assert not view.plot.isVisible()  # no time bins: no curve


def test_conditions_view_cancel_leaves_it_ready(make_napari_viewer, qtbot, eval2_store):
    viewer, main = _open(make_napari_viewer, qtbot, eval2_store)
    view = main.conditions
    view.reference.value = "uninfected1"
    view.permutations.value = 1_000_000
    worker = view.run()
    assert worker is not None and not view.job.run_btn.enabled
    view.job.cancel()
    wait_worker(qtbot, worker, TIMEOUT_MS)
    assert view.result is None and view.job.run_btn.enabled and view.job.status.value == "MMD cancelled"
