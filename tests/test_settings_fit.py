"""Settings whose validity depends on the data are checked after planning and before the model is built: the
reductions against the planned cells (limits measured on the libraries themselves), the FOVs and tracks that
``predict_cells`` names, the wells/FOVs of a Bag-of-Channels selection. Nothing is predicted, nothing written."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import yaml

from cli_lines import cli, one_error
from napari_dynaclr.core.reduce import check_reduction_sizes, pca, phate, umap
from napari_dynaclr.errors import ConfigError


@pytest.fixture
def model_spy(monkeypatch):
    """Counts the models built (the engine builds one after planning and the data checks)."""
    from napari_dynaclr.model import checkpoint

    built = []
    real = checkpoint.model_from_state_dict

    def spy(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "model_from_state_dict", spy)
    return built


@pytest.fixture
def dev2d(case_copy, conformance_ckpt, tmp_path):
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    flags = ["predict", "--plate", root / "plate.zarr", "--tracks", root / "tracks", "--channels", "Phase3D",
             "--z-range", 1, 2, "--patch-size", 128, "--checkpoint", conformance_ckpt("dev2d"), "--output", out,
             "--device", "cpu", "--quiet"]
    return root, out, flags


def _predict_cells(root, ckpt, fovs, tracks, writer):
    """dev2d's predict.yml predicting only (fov, track) pairs, with EmbeddingWriter arguments *writer*."""
    doc = yaml.safe_load((root / "predict.yml").read_text())
    data = doc["data"]["init_args"]
    data.update(predict_cells=True, include_fov_names=list(fovs), include_track_ids=list(tracks))
    for cb in doc["trainer"]["callbacks"]:
        if cb["class_path"].endswith("EmbeddingWriter"):
            cb["init_args"].update({"pca_kwargs": None, "umap_kwargs": None, "phate_kwargs": None, **writer})
    doc["ckpt_path"] = str(ckpt)
    (root / "cells.yml").write_text(yaml.safe_dump(doc))
    return root / "cells.yml"


def test_pca_larger_than_the_cells_is_refused_before_the_model(dev2d, capsys, model_spy):
    root, out, flags = dev2d
    line = one_error(*cli(capsys, *flags, "--pca", 100000)[::2])
    assert "PCA (pca_kwargs) cannot run: n_components=100000" in line
    assert "min(72, 768) = 72 components for this run's 72 cells" in line
    assert model_spy == [] and not out.exists()


def test_a_predict_yml_pca_on_a_four_cell_selection(dev2d, capsys, conformance_ckpt, model_spy):
    """The issue's case: a predict.yml's PCA 8 on 4 cells (track 1 of FOV A/1/0 has 4 timepoints)."""
    root, out, _ = dev2d
    cfg = _predict_cells(root, conformance_ckpt("dev2d"), ["A/1/0"], [1], {"pca_kwargs": {"n_components": 8}})
    line = one_error(*cli(capsys, "predict", "-c", cfg, "--output", out, "--device", "cpu", "--quiet")[::2])
    assert "n_components=8" in line and "min(4, 768) = 4 components for this run's 4 cells" in line
    assert model_spy == [] and not out.exists()


def test_umap_neighbours_beyond_the_cells_are_reduced_as_viscy_with_a_warning(dev2d, capsys, conformance_ckpt,
                                                                             model_spy):
    root, out, _ = dev2d
    cfg = _predict_cells(root, conformance_ckpt("dev2d"), ["A/1/0"], [1],
                         {"umap_kwargs": {"n_components": 2, "n_neighbors": 50}})
    code, stdout, err = cli(capsys, "predict", "-c", cfg, "--output", out, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "warning: UMAP n_neighbors=50 reaches the 4 cells: reduced to 2 (cells // 2, as VisCy does)" in err
    from napari_dynaclr.core.store import read_store

    assert read_store(out).obsm["X_umap"].shape == (4, 2)
    assert model_spy == [1]  # (the spy sees the model of a run that goes ahead)


@pytest.mark.parametrize("writer, needle", [
    ({"umap_kwargs": {"n_components": 3, "n_neighbors": 2}}, "UMAP (umap_kwargs) cannot run: n_components=3 needs "
                                                             "at least 5 cells"),
    ({"pca_kwargs": {"n_components": 5}}, "PCA (pca_kwargs) cannot run: n_components=5"),
])
def test_reductions_impossible_on_few_cells(dev2d, capsys, conformance_ckpt, model_spy, writer, needle):
    root, out, _ = dev2d
    cfg = _predict_cells(root, conformance_ckpt("dev2d"), ["A/1/0"], [1], writer)
    line = one_error(*cli(capsys, "predict", "-c", cfg, "--output", out, "--device", "cpu", "--quiet")[::2])
    assert needle in line
    assert model_spy == [] and not out.exists()


def test_umap_on_three_cells_is_refused(dev2d, capsys, conformance_ckpt, model_spy):
    root, out, _ = dev2d
    import pandas as pd

    csv = root / "tracks" / "A" / "1" / "0" / "tracks.csv"
    df = pd.read_csv(csv)
    df[~((df["track_id"] == 1) & (df["t"] == 3))].to_csv(csv, index=False)  # track 1 now has 3 timepoints
    cfg = _predict_cells(root, conformance_ckpt("dev2d"), ["A/1/0"], [1], {"umap_kwargs": {"n_neighbors": 15}})
    line = one_error(*cli(capsys, "predict", "-c", cfg, "--output", out, "--device", "cpu", "--quiet")[::2])
    assert "UMAP (umap_kwargs) cannot run: it needs at least 4 cells, this run has 3" in line
    assert model_spy == []


@pytest.mark.parametrize("fovs, tracks, error, needle", [
    (["A/1/7"], [1], "FOV A/1/7 named in include_fov_names does not exist in plate",
     "(FOVs: A/1/0, A/1/1, B/2/0)"),
    (["/A/1/0", "A/1/7", "C/1/0"], [1, 1, 2], "FOVs A/1/7, C/1/0 named in include_fov_names do not exist", "plate"),
    (["A/1/0"], [99], "track_id 99 named in include_track_ids (with FOV A/1/0 in include_fov_names) is not in the "
                      "tracks of FOV A/1/0 (tracks CSV ", "A/1/0/tracks.csv)"),
])
def test_predict_cells_naming_what_does_not_exist(dev2d, capsys, conformance_ckpt, model_spy, fovs, tracks, error,
                                                  needle):
    root, out, _ = dev2d
    cfg = _predict_cells(root, conformance_ckpt("dev2d"), fovs, tracks, {})
    line = one_error(*cli(capsys, "predict", "-c", cfg, "--output", out, "--device", "cpu", "--quiet")[::2])
    assert error in line and needle in line
    assert model_spy == [] and not out.exists()


def test_predict_cells_naming_a_fov_the_selection_leaves_out(dev2d, capsys, conformance_ckpt):
    root, out, _ = dev2d
    cfg = _predict_cells(root, conformance_ckpt("dev2d"), ["A/1/0", "B/2/0"], [1, 1], {})
    line = one_error(*cli(capsys, "predict", "-c", cfg, "--output", out, "--include-wells", "A/1",
                            "--device", "cpu", "--quiet")[::2])
    assert "FOV(s) B/2/0 named in include_fov_names are left out by the well/FOV selection" in line


def test_excluding_a_fov_that_does_not_exist_lists_the_fovs(dev2d, capsys):
    _, out, flags = dev2d
    line = one_error(*cli(capsys, *flags, "--exclude-fovs", "A/1/9")[::2])
    assert "FOV(s) A/1/9 to exclude are not in plate" in line and "(FOVs: A/1/0, A/1/1, B/2/0)" in line


@pytest.mark.parametrize("source", ["collection", "index"])
@pytest.mark.parametrize("flag, value, needle", [
    ("--include-wells", ["Z/9"], "include_wells Z/9 not in"),
    ("--include-wells", ["A/1", "Z/9"], "include_wells Z/9 not in"),
    ("--exclude-fovs", ["A/1/9"], "exclude_fovs A/1/9 not in"),
])
def test_boc_selection_naming_what_does_not_exist(tmp_path, capsys, model_spy, source,
                                                  flag, value, needle):
    from conftest import DATA

    root = DATA / "boc2d_mip"
    out = tmp_path / "o.zarr"
    if source == "collection":
        inputs = ["--collection", root / "collection.yml", "--plate", root / "plate.zarr", "--tracks", root / "tracks"]
        listed = "(wells: A/1, B/2)" if flag == "--include-wells" else "(FOVs: A/1/000000, A/1/000001, B/2/000000)"
    else:
        inputs = ["--cell-index", root / "cell_index.parquet"]
        listed = "(wells: A/1, B/2)" if flag == "--include-wells" else "(FOVs: A/1/000000, A/1/000001, B/2/000000)"
    ckpt = tmp_path / "boc.ckpt"
    _boc_checkpoint(ckpt)
    line = one_error(*cli(capsys, "predict", *inputs, flag, *value, "--checkpoint", ckpt, "--output", out,
                            "--device", "cpu", "--quiet")[::2])
    assert needle in line and listed in line, line
    assert model_spy == [] and not out.exists()


def _boc_checkpoint(path):
    import json

    from conftest import DATA
    from napari_dynaclr.core.architecture import EncoderConfig
    from napari_dynaclr.model.checkpoint import save_checkpoint
    from napari_dynaclr.model.weights import deterministic_encoder

    enc = json.loads((DATA / "boc2d_mip" / "case.json").read_text())["model"]["encoder_init_args"]
    save_checkpoint(deterministic_encoder(EncoderConfig.from_dict(enc), salt="boc"), path)


def test_the_napari_work_process_refuses_before_planning_an_event(demo_inputs, tmp_path):  # noqa: F811
    """The napari dock's work process runs the same engine: the refusal comes before its first event."""
    from napari_dynaclr._napari import workers
    from napari_dynaclr.core.predict_yml import load_predict_yaml

    cfg = load_predict_yaml(demo_inputs["config"]).with_overrides(output_path=tmp_path / "gui.zarr",
                              pca_kwargs={"n_components": 60}, umap_kwargs=None)
    events = []
    gen = workers.prediction_job(cfg, "cpu")
    with pytest.raises(ConfigError, match=r"n_components=60 .* min\(52, 768\) = 52 components"):
        while True:
            try:
                ev = next(gen)
            except StopIteration:
                break
            if ev is not None:
                events.append(type(ev).__name__)
    assert "Planned" not in events and "BatchResult" not in events
    assert not (tmp_path / "gui.zarr").exists()


# ------------------------------------------------------------------------------------------------ the limits

def _runs(func, X, **kwargs) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(np.isfinite(func(X, **kwargs)).all())
        except Exception:  # noqa: BLE001 - any failure of the library counts as "does not run"
            return False


def _accepts(n, d, **kwargs) -> bool:
    try:
        check_reduction_sizes(n, d, **kwargs)
        return True
    except ConfigError:
        return False


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_pca_limit_is_sklearns(n):
    rng = np.random.default_rng(n)
    for d in (3, 16):
        X = rng.normal(size=(n, d)).astype(np.float32)
        for k in (1, 2, 3, 4, 5, 6, 16, 17):
            assert _accepts(n, d, pca_kwargs={"n_components": k}) == _runs(pca, X, n_components=k), (n, d, k)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_umap_limits_are_umap_learns(n):
    """The check agrees with umap-learn (through VisCy's n_neighbors reduction) on every small case."""
    X = np.random.default_rng(n).normal(size=(n, 32)).astype(np.float32)
    for k in (1, 2, 3, 4):
        for nn in (2, 3, 15):
            kw = {"n_components": k, "n_neighbors": nn}
            assert _accepts(n, 32, umap_kwargs=kw) == _runs(umap, X, **kw), (n, kw)


@pytest.mark.skipif(importlib.util.find_spec("phate") is None, reason="the optional phate package is not installed")
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_phate_limits_are_phates(n):
    X = np.random.default_rng(n).normal(size=(n, 32)).astype(np.float32)
    for kw in ({"n_components": 2}, {"n_components": n}, {"n_components": n + 1}, {"knn": 1}):
        assert _accepts(n, 32, phate_kwargs=kw) == _runs(phate, X, **kw), (n, kw)


def test_phate_limits_without_the_package():
    """PHATE's limits (measured with phate 2.0.0: 4 cells to fit, at most as many components as fitted cells)."""
    with pytest.raises(ConfigError, match="PHATE .* needs at least 4 cells to fit, this run gives it 3 cells"):
        check_reduction_sizes(3, 768, phate_kwargs={})
    with pytest.raises(ConfigError, match="needs at least 4 cells to fit, this run gives it subsample=3 cells"):
        check_reduction_sizes(100, 768, phate_kwargs={"subsample": 3})
    with pytest.raises(ConfigError, match="n_components=5 but PHATE gives at most as many components as the 4"):
        check_reduction_sizes(4, 768, phate_kwargs={"n_components": 5})
    assert check_reduction_sizes(6, 768, phate_kwargs={"knn": 10}) == [
        "PHATE knn=10 reaches the 6 cells: reduced to 3 (cells // 2, as VisCy does)"]
    assert check_reduction_sizes(100, 768, phate_kwargs={"knn": 10}) == []

