"""Evaluation and verification inputs as users have them: numeric and boolean labels (the most common kind),
task names VisCy cannot store, sparse/constant/empty embeddings, rows without a track, corrupt chunks, values too
small for the tolerance. Each works, or is one line with exit 2 and nothing written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cli_lines import cli, one_error
from eval_data import ANNOTATIONS, STORES, read, write_zarr
from napari_dynaclr.errors import AnnotationError, ConfigError, StoreError
from napari_dynaclr.evaluate.classifier import class_labels, train_classifier
from napari_dynaclr.evaluate.smoothness import STAT_NAMES, compute_smoothness

DEV2D = STORES["dev2d"]
CSV = ANNOTATIONS / "dev2d_by_fov_id.csv"


def _labels(tmp_path, name, mapping, blank_every=0):
    frame = pd.read_csv(CSV)
    values = frame["infection_state"].map(mapping)
    if blank_every:
        values = values.where(frame.index % blank_every != 0)
    frame["infection_state"] = values
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


#: the same labels as text, in the same class order (a stratified split depends on the order of the classes)
STRINGS = {"uninfected": "0", "infected": "1"}
LABEL_KINDS = {  # name -> (mapping of VisCy's labels, the classes the JSON lists)
    "0/1": ({"uninfected": 0, "infected": 1}, [0, 1]),
    "True/False": ({"uninfected": False, "infected": True}, [False, True]),
    "1.0/0.0": ({"uninfected": 0.0, "infected": 1.0}, [0, 1]),
    "yes/no": ({"uninfected": "no", "infected": "yes"}, ["no", "yes"]),
}


@pytest.mark.parametrize("kind", list(LABEL_KINDS))
@pytest.mark.parametrize("blanks", [0, 5])
def test_numeric_and_boolean_labels_train_as_classes(kind, blanks, tmp_path, capsys):
    """0/1, True/False, 1.0/0.0 (with or without blank cells) train exactly as the same labels written as text;
    VisCy's object array would make scikit-learn refuse them ("Unknown label type")."""
    mapping, classes = LABEL_KINDS[kind]
    ref_csv = _labels(tmp_path, "names", STRINGS, blanks)
    code, _, err = cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", ref_csv, "--task",
                        "infection_state", "--json", tmp_path / "ref.json", "--quiet")
    assert code == 0, err
    csv = _labels(tmp_path, "kind", mapping, blanks)
    code, stdout, err = cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", csv, "--task",
                             "infection_state", "--json", tmp_path / "got.json", "--quiet")
    assert code == 0, err
    ref, got = (json.loads((tmp_path / n).read_text()) for n in ("ref.json", "got.json"))
    assert got["classes"] == classes
    assert got["n_samples"] == ref["n_samples"] == (67 if not blanks else 55)
    for key in ("train_accuracy", "val_accuracy", "val_weighted_f1", "val_weighted_precision", "val_auroc"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    for c in classes:
        assert f"val_{c}_precision" in got and f"val_{c}_support" in got
    assert "labelled cells" in stdout


def test_numeric_predictions_are_written_as_a_store_can_hold_them(tmp_path, capsys):
    csv = _labels(tmp_path, "01", {"uninfected": 0, "infected": 1}, blank_every=5)
    out = tmp_path / "pred.zarr"
    code, _, err = cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", csv, "--task", "infection_state",
                        "--json", tmp_path / "c.json", "--apply", out, "--quiet")
    assert code == 0, err
    back = read(out)
    column = back.obs["predicted_infection_state"]
    assert str(column.dtype) == "Int64" and set(column.dropna().tolist()) <= {0, 1} and column.notna().all()
    assert list(back.uns["predicted_infection_state_classes"]) == [0, 1]
    assert back.obsm["predicted_infection_state_proba"].shape == (72, 2)


@pytest.mark.parametrize("content, needle", [
    ("fov_name,id,infection_state\nA/1/0,1,0\nA/1/0,2,0\nA/1/0,3,0\n", "need labelled cells of at least two classes"),
    ("fov_name,id,infection_state\nA/1/0,1,0.37\nA/1/0,2,0.12\nA/1/0,3,1.5\n",
     "the labels are numbers that are not whole (0.37, 0.12, 1.5): a classifier needs classes"),
])
def test_unusable_labels_are_one_line(content, needle, tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    line = one_error(*cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", csv, "--task",
                            "infection_state", "--json", tmp_path / "c.json")[::2])
    assert needle in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_class_labels():
    assert class_labels([1.0, 0.0, 1.0]).tolist() == [1, 0, 1]
    assert class_labels([np.True_, False]).dtype == bool
    assert class_labels(["a", 1.0, 2]).tolist() == ["a", "1", "2"]
    with pytest.raises(AnnotationError, match="not whole"):
        class_labels([0.5, 1.0], "task 't'")


def test_a_task_name_with_a_slash(tmp_path, capsys):
    """VisCy stores ``predicted_{task}``: a '/' would make it a nested zarr group. Refused before any work with
    --apply (renaming the key would hide the predictions from VisCy's readers); the metrics alone work."""
    frame = pd.read_csv(CSV).rename(columns={"infection_state": "infection/state"})
    csv = tmp_path / "slash.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "pred.zarr"
    line = one_error(*cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", csv, "--task",
                            "infection/state", "--json", tmp_path / "c.json", "--apply", out)[::2])
    assert "task name 'infection/state' contains '/'" in line and "'infection_state'" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slash.csv"]
    code, _, err = cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", csv, "--task", "infection/state",
                        "--json", tmp_path / "c.json", "--quiet")
    assert code == 0, err
    assert json.loads((tmp_path / "c.json").read_text())["task"] == "infection/state"


# ---------------------------------------------------------------------------------------------------- smoothness

def _store(tmp_path, name, X=None, obs=None):
    base = read("dev2d")
    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.AnnData(X=base.X if X is None else X, obs=(base.obs if obs is None else obs).copy())
    return write_zarr(adata, tmp_path / f"{name}.zarr")


def test_smoothness_of_a_sparse_store_equals_the_dense_one(tmp_path, capsys):
    store = _store(tmp_path, "sparse", X=sp.csr_matrix(read("dev2d").X))
    for path, name in ((store, "sparse.json"), (DEV2D, "dense.json")):
        code, _, err = cli(capsys, "evaluate", "smoothness", path, "--json", tmp_path / name, "--quiet")
        assert code == 0, err
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("sparse.json", "dense.json"))
    assert {k: a[k] for k in STAT_NAMES} == {k: b[k] for k in STAT_NAMES}


def test_classifier_on_a_sparse_store(tmp_path, capsys):
    store = _store(tmp_path, "sparse", X=sp.csr_matrix(read("dev2d").X))
    code, _, err = cli(capsys, "evaluate", "classifier", store, "--annotations", CSV, "--task", "infection_state",
                        "--json", tmp_path / "c.json", "--quiet")
    assert code == 0, err


def test_rows_without_a_track_are_left_out_of_the_adjacent_pairs(tmp_path, capsys):
    """NaN track ids (VisCy's groupby drops such rows): the same statistics as those rows in tracks of their
    own (no adjacent pair, still in the scaler and the random pairs), and a warning."""
    base = read("dev2d")
    gone = np.arange(base.n_obs) % 7 == 0
    nan_obs = base.obs.assign(track_id=base.obs["track_id"].astype(float).where(~gone))
    alone = base.obs.assign(track_id=np.where(gone, 10_000 + np.arange(base.n_obs), base.obs["track_id"]))
    code, _, err = cli(capsys, "evaluate", "smoothness", _store(tmp_path, "nan", obs=nan_obs), "--json",
                        tmp_path / "nan.json", "--quiet")
    assert code == 0, err
    assert f"warning: {int(gone.sum())} rows without a fov_name/track_id/t belong to no track" in err
    got = json.loads((tmp_path / "nan.json").read_text())
    ref = compute_smoothness(base.X, alone)
    assert {k: got[k] for k in STAT_NAMES} == pytest.approx(ref.stats, abs=1e-12)
    assert got["n_adjacent"] == len(ref.adjacent)


@pytest.mark.parametrize("case, needle", [
    ("constant", "the embeddings are constant: all 72 rows of X are identical"),
    ("no columns", "the embeddings (X) have 0 columns (72 rows): there is nothing to compare"),
])
def test_smoothness_of_embeddings_that_cannot_be_measured(case, needle, tmp_path, capsys):
    X = np.ones((72, 768), np.float32) if case == "constant" else np.zeros((72, 0), np.float32)
    store = _store(tmp_path, "bad", X=X)
    line = one_error(*cli(capsys, "evaluate", "smoothness", store, "--json", tmp_path / "s.json")[::2])
    assert needle in line
    assert not (tmp_path / "s.json").exists()


def test_undefined_cosine_distances_are_named():
    """A row equal to the column means z-scores to zeros: its cosine distance is undefined."""
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 0.0, 1.0])
    X = np.stack([a, b, (a + b) / 2, a, b, (a + b) / 2]).astype(np.float32)
    obs = pd.DataFrame({"fov_name": "A/1/0", "track_id": [1, 1, 1, 2, 2, 2], "t": [0, 1, 2, 0, 1, 2]})
    with pytest.raises(StoreError, match="cosine distances are undefined"):
        compute_smoothness(X, obs)
    assert np.isfinite(compute_smoothness(X, obs, metric="euclidean").stats["smoothness_score"])


def test_the_classifier_refuses_a_matrix_without_columns():
    with pytest.raises(StoreError, match="0 columns"):
        train_classifier(np.zeros((4, 0)), ["a", "b", "a", "b"])
    with pytest.raises(ConfigError, match="labels have 3 rows"):
        train_classifier(np.zeros((4, 2)), ["a", "b", "a"])


# -------------------------------------------------------------------------------------------------------- verify

def test_verify_names_the_store_and_array_of_a_corrupt_chunk(tmp_path, capsys):
    import shutil

    bad = tmp_path / "corrupt.zarr"
    shutil.copytree(DEV2D, bad)
    chunk = next(p for p in (bad / "X").iterdir() if not p.name.startswith("."))
    data = bytearray(chunk.read_bytes())
    data[20:40] = b"\xff" * 20
    chunk.write_bytes(bytes(data))
    report = tmp_path / "r.json"
    line = one_error(*cli(capsys, "verify", bad, DEV2D, "--json", report)[::2])
    assert f"{bad}: cannot read X (" in line and "a chunk of the store is corrupt or unreadable" in line
    assert not report.exists()


def test_verify_says_when_the_tolerance_cannot_test_scale(tmp_path, capsys):
    """VisCy's absolute tolerance passes a prediction half the reference when every value is below atol: the
    contract stays, the report says so (text and JSON)."""
    base = read("dev2d")
    small = base.copy()
    small.X = (base.X / np.abs(base.X).max() * 0.015).astype(np.float32)
    half = small.copy()
    half.X = small.X * 0.5
    ref, pred = write_zarr(small, tmp_path / "ref.zarr"), write_zarr(half, tmp_path / "half.zarr")
    code, stdout, err = cli(capsys, "verify", pred, ref, "--json", tmp_path / "r.json")
    assert code == 0, err
    note = ("X: all |values| are below atol=0.02 (largest 0.015); the tolerance does not test scale — the "
            "prediction/reference norm ratio is 0.50")
    assert "PASS:" in stdout and f"note: {note}" in stdout
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["passed"] is True and got["notes"] == [note]
    assert got["arrays"]["X"]["norm_ratio"] == pytest.approx(0.5, abs=1e-6)
    code, stdout, _ = cli(capsys, "verify", DEV2D, DEV2D)
    assert code == 0 and "note:" not in stdout
