"""Experiment metadata on classic stores: ``experiment``, ``marker``, ``perturbation`` and
``hours_post_perturbation`` obs columns exactly when the inputs give them (flags or a collection), after VisCy's
own columns, so that VisCy's ``dynaclr compute-mmd`` runs on the store (its obs requirements: spec §1, §3).
The same settings serve a Bag-of-Channels run built from a plate; "nan" in an annotation column is no label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import DATA
from napari_dynaclr.cli import main
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.errors import ConfigError
from napari_dynaclr.predict.plan import plan_prediction

VISCY_OBS = ["fov_name", "track_id", "t", "id", "parent_track_id", "parent_id", "y", "x"]
WELLS = {"mock": ["A/1"], "ZIKV": ["B/2"]}


def _obs(**experiment) -> pd.DataFrame:
    cfg = load_predict_yaml(DATA / "dev2d" / "predict.yml").with_overrides(**experiment)
    plan = plan_prediction(cfg)
    try:
        return plan.index_frame()
    finally:
        plan.close()


def test_no_metadata_no_columns():
    assert list(_obs().columns) == VISCY_OBS


@pytest.mark.parametrize("given, columns", [
    ({"perturbation_wells": WELLS}, ["perturbation"]),
    ({"markers": ["SEC61B"]}, ["marker"]),
    ({"experiment_name": "dev2d"}, ["experiment"]),
    ({"interval_minutes": 30.0}, ["hours_post_perturbation"]),
    ({"perturbation_wells": WELLS, "markers": ["SEC61B"], "experiment_name": "dev2d", "interval_minutes": 30.0,
      "start_hpi": 2.0}, ["experiment", "marker", "perturbation", "hours_post_perturbation"]),
])
def test_columns_exactly_as_given(given, columns):
    obs = _obs(**given)
    assert list(obs.columns) == VISCY_OBS + columns
    well = obs["fov_name"].str.rsplit("/", n=1).str[0]
    if "perturbation" in columns:
        assert (obs["perturbation"] == well.map({"A/1": "mock", "B/2": "ZIKV"})).all()
    if "hours_post_perturbation" in columns:
        expected = given.get("start_hpi", 0.0) + obs["t"].to_numpy() * 0.5
        np.testing.assert_array_equal(obs["hours_post_perturbation"], expected.astype(np.float32))


def test_a_collection_gives_them_too(tmp_path):
    doc = {"experiments": [{"name": "dev2d_zikv", "data_path": str(DATA / "dev2d" / "plate.zarr"),
                            "tracks_path": str(DATA / "dev2d" / "tracks"),
                            "channels": [{"name": "Phase3D", "marker": "Phase3D"}], "perturbation_wells": WELLS,
                            "interval_minutes": 20.0, "start_hpi": 24.0}]}
    (tmp_path / "collection.yml").write_text(yaml.safe_dump(doc))
    obs = _obs(collection_path=tmp_path / "collection.yml")
    assert list(obs.columns) == VISCY_OBS + ["experiment", "marker", "perturbation", "hours_post_perturbation"]
    assert set(obs["experiment"]) == {"dev2d_zikv"} and set(obs["marker"]) == {"Phase3D"}
    np.testing.assert_allclose(obs["hours_post_perturbation"], 24.0 + obs["t"] / 3.0, rtol=1e-6)
    # a flag wins over the collection
    assert set(_obs(collection_path=tmp_path / "collection.yml", markers=["SEC61B"])["marker"]) == {"SEC61B"}


def test_a_predicted_well_without_a_perturbation_is_refused(case_copy, conformance_ckpt, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^well\(s\) B/2 predicted but not in perturbation_wells \(A/1\)"):
        _obs(perturbation_wells={"mock": ["A/1"]})
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    code = main(["predict", "-c", str(root / "predict.yml"), "--ckpt-path", str(conformance_ckpt("dev2d")),
                 "--output", str(out), "--perturbation-wells", "mock=A/1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("napari-dynaclr: error: well(s) B/2 predicted but not in --perturbation-wells "
                                 "(A/1): give their perturbation, or leave them out with --include-wells")
    assert not out.exists()


def test_start_hpi_needs_the_interval():
    with pytest.raises(ConfigError, match="start_hpi needs interval_minutes"):
        _obs(start_hpi=3.0)


def _mmd_requirements(obs: pd.DataFrame, group_by: str, comparisons, temporal: bool) -> dict:
    """What VisCy's run_mmd_analysis reads from obs (spec §1, "Required obs columns" and "Order of work"): the
    group_by column (strings or categorical, compared with ==), ``marker`` always, ``experiment`` if present
    (else one facet "unknown"), ``hours_post_perturbation`` (float hours) with temporal bins. Returns the
    number of cells of each (experiment, marker, cond) group it would compare."""
    assert group_by in obs.columns and (obs[group_by].dtype == object or isinstance(obs[group_by].dtype,
                                                                                    pd.CategoricalDtype))
    marker = obs["marker"]  # read unconditionally: KeyError on a store without it
    experiments = obs["experiment"].unique() if "experiment" in obs.columns else ["unknown"]
    if temporal:
        assert np.issubdtype(obs["hours_post_perturbation"].dtype, np.floating)
    sizes = {}
    for exp in experiments:
        in_exp = obs["experiment"] == exp if "experiment" in obs.columns else pd.Series(True, index=obs.index)
        for m in sorted(marker[in_exp].unique()):
            for cond_a, cond_b in comparisons:
                for cond in (cond_a, cond_b):
                    sizes[(str(exp), str(m), cond)] = int((in_exp & (marker == m) & (obs[group_by] == cond)).sum())
    return sizes


def test_compute_mmds_obs_requirements_hold_on_a_classic_store(case_copy, conformance_ckpt, tmp_path, capsys):
    import anndata as ad

    root = case_copy("dev2d")
    out = tmp_path / "mmd.zarr"
    code = main(["predict", "-c", str(root / "predict.yml"), "--ckpt-path", str(conformance_ckpt("dev2d")),
                 "--output", str(out), "--device", "cpu", "--quiet", "--perturbation-wells", "mock=A/1", "ZIKV=B/2",
                 "--marker", "Phase3D", "--experiment", "dev2d", "--interval-minutes", "30", "--start-hpi", "2"])
    assert code == 0, capsys.readouterr().err
    adata = ad.read_zarr(out)  # as VisCy reads it
    obs = adata.obs
    assert list(obs.columns) == VISCY_OBS + ["experiment", "marker", "perturbation", "hours_post_perturbation"]
    for col in ("experiment", "marker", "perturbation"):
        assert isinstance(obs[col].dtype, pd.CategoricalDtype)
    sizes = _mmd_requirements(obs, "perturbation", [("mock", "ZIKV")], temporal=True)
    assert sizes == {("dev2d", "Phase3D", "mock"): int((obs["fov_name"].str[:3] == "A/1").sum()),
                     ("dev2d", "Phase3D", "ZIKV"): int((obs["fov_name"].str[:3] == "B/2").sum())}
    assert min(sizes.values()) > 0 and sum(sizes.values()) == adata.n_obs
    # a store without the metadata: VisCy's compute-mmd stops there (KeyError: 'marker')
    with pytest.raises(KeyError, match="marker"):
        _mmd_requirements(ad.read_zarr(DATA / "dev2d" / "reference.zarr").obs.assign(perturbation="mock"),
                          "perturbation", [("mock", "ZIKV")], temporal=False)


def test_the_same_settings_build_a_bag_of_channels_runs_experiments():
    """The experiment flags of a Bag-of-Channels run are the same settings (one experiment per channel)."""
    from napari_dynaclr.core.config import PredictConfig

    cfg = PredictConfig.boc(data_path=DATA / "boc3d" / "plate.zarr", tracks_path=DATA / "boc3d" / "tracks",
                            source_channel=["Phase3D"], markers=["Phase3D"], perturbation_wells=WELLS,
                            interval_minutes=20.0, pixel_size=[0.2, 0.25])
    (exp,) = cfg.source.experiments(cfg)
    assert (exp.name, exp.channels[0].marker, exp.interval_minutes, exp.pixel_size_z_um) == (
        "plate_Phase3D", "Phase3D", 20.0, 0.25)
    assert exp.perturbation("B/2") == "ZIKV"
    with pytest.raises(ConfigError, match=r"^markers needs one marker per channel of source_channel \(1\), got 2"):
        cfg.with_overrides(markers=["Phase3D", "SEC61B"])


@pytest.mark.parametrize("values", [["infected", "nan", "uninfected", "nan"],
                                    ["infected", np.nan, "uninfected", "nan"]])
def test_nan_in_an_annotation_column_is_no_label(values):
    from napari_dynaclr._napari.cellmodel.table import label_classes
    from napari_dynaclr.evaluate.annotations import join_annotations, labelled

    assert labelled(values).tolist() == [True, False, True, False]
    assert label_classes(pd.Series(values)) == label_classes(pd.Series(values, dtype="category")) == [
        "infected", "uninfected"]
    obs = pd.DataFrame({"fov_name": ["A/1/0"] * 4, "id": [1, 2, 3, 4]})
    joined = join_annotations(obs, obs.assign(state=values), "state")
    assert joined.isna().tolist() == [False, True, False, True]
