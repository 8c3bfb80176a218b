"""The dock's Conditions and Time views driven on the conformance kit's store (tests/data/eval2, VisCy's writer:
3 wells, 36 tracks, an infection): the numbers they show are the headless ones (which equal VisCy's), a row /
track leads to its cells, results are saved through the safe write path, bad input is one notification and the
view stays usable."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from eval2_data import ANNOTATIONS, CONFIGS, MMD_CASES, anndata, expected, write_store
from napari_fixtures import wait_worker

PLUGIN = "napari-dynaclr"
TIMEOUT_MS = 180_000


def _open(make_napari_viewer, qtbot, store, n_cells: int = 720):
    """The DynaCLR dock (as napari docks it) with *store* open."""
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    wait_worker(qtbot, main.open_embeddings(store), 60_000)
    assert main.session.adata is not None and len(main.session.table) == n_cells
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
    m = view.table.model()
    return [[m.index(i, j).data() for j in range(m.columnCount())] for i in range(m.rowCount())]


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
    worker = view.run()
    events = []  # (the worker's signals reach this thread only once the test waits: none is missed)
    worker.yielded.connect(lambda item: events.append(getattr(item, "value", None)))
    _run(qtbot, view.job, worker)
    progress = [e for e in events if isinstance(e, tuple)]
    assert progress[-1][:2] == (8, 8) and [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert not view.job.bar.isVisible() and view.job.run_btn.enabled

    # the headless run of the same comparisons (VisCy's numbers, tests/test_evaluate_mmd.py)
    adata = anndata()
    analysis = parse_analysis({"group_by": "perturbation", "temporal_bin_size": 3.0, "mmd": {"n_permutations": 300},
                               "comparisons": [{"cond_a": "uninfected1", "cond_b": b, "label": f"uninfected1 vs {b}"}
                                               for b in ("ZIKV", "uninfected2")]}, "test", with_paths=False)
    headless = run_mmd(adata.obs, adata.X, analysis).table
    pd.testing.assert_frame_equal(view.result.table, headless)
    rows = headless.to_dict(orient="records")
    assert _shown(view) == [[hours_text(r) if col is None else format_value(r[col], fmt) for _, col, fmt in SHOWN]
                            for r in rows]
    assert np.isfinite(headless["mmd2"]).sum() >= 4 and view.plot.isVisible()

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


def test_conditions_view_runs_viscys_configs_with_viscys_numbers(make_napari_viewer, qtbot, eval2_store):
    """The kit's four compute-mmd YAMLs (shared bandwidth, balanced samples, time bins, an obsm embedding)
    loaded into the tab give the rows VisCy computed (expected.json, within the kit's tolerances)."""
    from test_evaluate_mmd import assert_rows_match

    viewer, main = _open(make_napari_viewer, qtbot, eval2_store)
    view = main.conditions
    for case in MMD_CASES:
        assert view.load_config(CONFIGS / f"mmd_{case}.yaml") and view.yaml_comparisons.value
        _run(qtbot, view.job, view.run())
        assert_rows_match(view.result.to_records(), expected()["mmd"][case])
        assert view.table.model().rowCount() == len(expected()["mmd"][case])


def test_conditions_view_groups_by_well_and_refuses_bad_input_in_one_line(make_napari_viewer, qtbot, tmp_path,
                                                                          errors):
    from napari_dynaclr.evaluate.mmd import run_mmd
    from napari_dynaclr.evaluate.mmd_config import parse_analysis

    adata = anndata()
    del adata.obs["marker"], adata.obs["hours_post_perturbation"]
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

    # with a marker column (given to the opened store here): time bins need hours_post_perturbation, and a
    # min_cells above every condition is refused, each in one line, before any work
    main.session.adata.obs["marker"] = "SEC61B"
    view.bin_hours.value = 3.0
    assert view.run() is None
    assert len(errors) == 2 and "'hours_post_perturbation'" in errors[1] and "--interval-minutes" in errors[1]
    view.bin_hours.value = 0.0
    view.min_cells.value = 500
    assert view.run() is None
    assert len(errors) == 3 and "fewer than mmd.min_cells 500" in errors[2]
    assert view.job.worker is None and view.result is None
    view.min_cells.value = 20
    view.permutations.value = 50
    view.embedding.value = "X_projections"
    _run(qtbot, view.job, view.run())
    obs = main.session.adata.obs.assign(well=main.session.adata.obs["fov_name"].astype(str).str[:3])
    analysis = parse_analysis({"group_by": "well", "mmd": {"n_permutations": 50}, "embedding_key": "X_projections",
                               "comparisons": [{"cond_a": "A/1", "cond_b": "B/1", "label": "A/1 vs B/1"}]}, "test",
                              with_paths=False)
    headless = run_mmd(obs, adata.obsm["X_projections"], analysis).table
    pd.testing.assert_frame_equal(view.result.table, headless)
    assert headless["embedding_key"].eq("X_projections").all() and len(errors) == 3
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
    # new cells while a run goes on (a store opened): the run is cancelled, its result never shown on them
    worker = view.run()
    wait_worker(qtbot, main.open_embeddings(eval2_store), 60_000)
    wait_worker(qtbot, worker, TIMEOUT_MS)
    assert view.result is None and view.job.run_btn.enabled and view.table.model().rowCount() == 0


def _headless_pseudotime(cfg, adata=None, annotations=None):
    from napari_dynaclr.evaluate.annotations import read_annotations
    from napari_dynaclr.evaluate.pseudotime import run_pseudotime

    adata = anndata() if adata is None else adata
    annotations = read_annotations(ANNOTATIONS) if annotations is None else annotations
    return run_pseudotime(adata.X, adata.obs, annotations, cfg)


def test_time_view_aligns_tracks_as_headless_and_links_them_to_their_cells(make_napari_viewer, qtbot, eval2_store):
    from napari_dynaclr.core.output.manifest import read_manifest
    from napari_dynaclr.core.store import read_store
    from napari_dynaclr.evaluate.pseudotime import load_pseudotime_config

    viewer, main = _open(make_napari_viewer, qtbot, eval2_store)
    view = main.time
    main.tabs.setCurrentWidget(view)
    assert view.load_config(CONFIGS / "pseudotime.yaml")
    view.annotations.value = ANNOTATIONS
    assert view.column.value == "infection_state" and view.value.value == "infected"
    assert view.flavors.value == "raw: null, pca: 8" and view.crop.value == 4 and view.fov_pattern.value == "B/1"
    _run(qtbot, view.job, view.run())

    cfg = load_pseudotime_config(CONFIGS / "pseudotime.yaml")
    assert view.cfg == cfg  # the form gave back the kit's config
    headless = _headless_pseudotime(cfg)
    assert view.show_result.choices == ("raw / subsequence", "pca / subsequence")
    for name, flavor in headless.flavors.items():
        got = view.result.flavors[name]
        np.testing.assert_array_equal(got.template.template, flavor.template.template)
        for mode, res in flavor.modes.items():
            pd.testing.assert_frame_equal(got.modes[mode].per_frame, res.per_frame)
            pd.testing.assert_frame_equal(got.modes[mode].response_groups, res.response_groups)

    for name in ("raw", "pca"):  # and VisCy's own numbers (the kit's expected.json)
        viscy = expected()["pseudotime"][name]["subsequence"]
        got = view.result.flavors[name].modes["subsequence"]
        assert got.per_frame["pseudotime"].tolist() == [r["pseudotime"] for r in viscy["per_frame"]]
        assert got.response_groups["response_group"].tolist() == [r["response_group"] for r in viscy["response_groups"]]

    # the cells carry the shown mode's pseudotime (VisCy's per-frame values) and are coloured by it
    s, raw = main.session, headless.flavors["raw"].modes["subsequence"]
    table = s.table
    merged = table[["fov_name", "track_id", "t"]].astype({"fov_name": str}).merge(
        raw.per_frame[["fov_name", "track_id", "t", "pseudotime"]], on=["fov_name", "track_id", "t"], how="left")
    np.testing.assert_array_equal(table["pseudotime"].to_numpy(), merged["pseudotime"].to_numpy())
    assert s.color_column == "pseudotime" and len(s.table["response_group"].cat.categories) >= 2
    # every aligned track listed, sorted by onset, with its response group as VisCy classified it
    groups = raw.response_groups.set_index("cell_uid")["response_group"]
    assert view.track_table.model().rowCount() == len(raw.alignments) == 36
    onsets = [view.track_table.model().index(i, 2).data() for i in range(36)]
    assert [int(o) for o in onsets if o] == sorted(int(o) for o in onsets if o)
    for i in range(36):
        fov, track, group = (view.track_table.model().index(i, j).data() for j in (0, 1, 4))
        assert groups[f"synth_eval2/{fov}/{track}"] == group
    # a track leads to its cells: selected, and the viewer at its onset frame
    view.track_table.selectRow(3)
    rec = view.tracks.iloc[3]
    rows = np.flatnonzero((table["fov_name"].astype(str) == rec["fov_name"]).to_numpy()
                          & (table["track_id"] == rec["track_id"]).to_numpy())
    np.testing.assert_array_equal(s.selected, rows)
    assert s.highlighted == rec["row"] and int(table["t"].iat[rec["row"]]) == rec["onset_t"]
    assert int(viewer.dims.current_step[0]) == rec["onset_t"]
    # the other template: its columns replace the first's
    view.show_result.value = "pca / subsequence"
    pca = headless.flavors["pca"].modes["subsequence"].per_frame
    assert np.nanmax(np.abs(np.sort(table["dtw_cost"].unique()) - np.sort(pca["dtw_cost"].unique()))) == 0

    # VisCy's per-frame CSV, recorded; the columns saved into the store's obs
    path = view.save_csv()
    assert path == eval2_store.parent / "synth_eval2_pseudotime.csv" and path.name in read_manifest(path.parent)
    pd.testing.assert_frame_equal(pd.read_csv(path), pd.read_csv(io.StringIO(pca.to_csv(index=False))))
    wait_worker(qtbot, view.save_to_store(), TIMEOUT_MS)
    saved = read_store(eval2_store)
    np.testing.assert_array_equal(saved.obs["pseudotime"].to_numpy(), table["pseudotime"].to_numpy())
    assert set(saved.obs["response_group"].astype(str)) >= {"non_responder", "early_responder"}


def test_time_view_onsets_from_the_selection_and_bad_input(make_napari_viewer, qtbot, tmp_path, errors,
                                                            monkeypatch):
    from napari_dynaclr._napari.widgets import time_view
    from napari_dynaclr.evaluate.pseudotime import PseudotimeConfig

    adata = anndata()
    short = ((adata.obs["fov_name"] == "A/1/0") & (adata.obs["track_id"] == 1) & (adata.obs["t"] >= 5)).to_numpy()
    adata = adata[~short].copy()  # one track of 5 frames, shorter than the 9-frame template
    store = write_store(tmp_path / "short.zarr", adata)
    warnings: list[str] = []
    monkeypatch.setattr(time_view, "show_warning", warnings.append)
    viewer, main = _open(make_napari_viewer, qtbot, store, 705)
    view, s = main.time, main.session
    view.source.value = "selected cells"
    assert view.run() is None and "no cell is selected" in errors[-1]
    # a table column with no transitioned cell: the engine's one line, the view ready again
    view.source.value = "cell table column"
    view.column.value = "perturbation"
    view.value.value = "ZIKV"
    view.fov_pattern.value = "A/"
    _run_failing(qtbot, view)
    assert "no track has a cell with perturbation == 'ZIKV'" in errors[-1] and view.job.run_btn.enabled
    # onsets = the first selected frame of each track: the ZIKV tracks' frames from t = 10
    view.source.value = "selected cells"
    view.fov_pattern.value = ""
    view.crop.value = 4
    view.flavors.value = "raw: null"
    picked = np.flatnonzero(((s.table["perturbation"] == "ZIKV") & (s.table["t"] >= 10)).to_numpy())
    s.select(picked)
    _run(qtbot, view.job, view.run())
    annotations = adata.obs[["fov_name", "track_id", "t"]].astype({"fov_name": str}).reset_index(drop=True)
    annotations["selection_state"] = np.where(np.isin(np.arange(len(annotations)), picked), "selected",
                                              "unselected")
    cfg = PseudotimeConfig.model_validate({
        "dataset_id": "synth_eval2", "align_tracks": {"frame_interval_minutes": 30.0, "infection_col":
                                                      "selection_state", "infected_value": "selected"},
        "build_template": {"crop_window": 4, "flavors": {"raw": None}, "propagate_columns": ["selection_state"]}})
    assert view.cfg == cfg
    headless = _headless_pseudotime(cfg, adata, annotations)
    pd.testing.assert_frame_equal(view.result.flavors["raw"].modes["subsequence"].per_frame,
                                  headless.flavors["raw"].modes["subsequence"].per_frame)
    assert headless.t_perturb["t_perturb"].eq(10).all()
    assert any("1 of 36 tracks are shorter than the 9-frame template" in w for w in warnings)


def _run_failing(qtbot, view):
    worker = view.run()
    assert worker is not None
    wait_worker(qtbot, worker, TIMEOUT_MS)
    assert view.job.last_error is not None and view.result is None
