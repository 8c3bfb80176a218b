"""Linear classifier parity with VisCy's ``train_linear_classifier`` / ``predict_with_classifier`` (rows, split,
every metric, validation and all-cell probabilities), the lbfgs fallback, the track split, bad labels, writing."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from eval_data import ANNOTATIONS, expected, read, write_zarr
from napari_dynaclr.errors import AnnotationError, ConfigError, OutputError
from napari_dynaclr.evaluate.annotations import join_annotations
from napari_dynaclr.evaluate.classifier import (
    apply_predictions,
    predict_classes,
    store_predictions,
    track_groups,
    train_classifier,
    write_predictions,
)

#: liblinear is deterministic per machine (README: ≤ 8.3e-10 across BLAS kernels; 1.1e-9 seen here), lbfgs is
#: thread/BLAS dependent (≤ 5.8e-6 in VisCy's own reruns)
PROBA_TOL = {"liblinear": 1e-8, "lbfgs": 2e-5}

RUNS = [(store, task, run)
        for store, tasks in expected()["linear_classifier"].items()
        for task, rec in tasks.items()
        for run, r in rec["runs"].items() if "error" not in r]


@pytest.fixture(scope="module")
def stores():
    return {name: read(name) for name in ("dev2d", "dev3d2ch", "synthetic")}


def _labels(adata, store, task):
    csv = expected()["linear_classifier"][store][task]["annotation_csv"]
    return join_annotations(adata.obs, ANNOTATIONS / csv.split("/")[-1], task).to_numpy()


@pytest.mark.parametrize(("store", "task", "run"), RUNS, ids=["/".join(r) for r in RUNS])
def test_matches_viscy(stores, store, task, run):
    rec = expected()["linear_classifier"][store][task]["runs"][run]
    adata = stores[store]
    split = "track" if run.startswith("grouped") else "cell"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = train_classifier(adata.X, _labels(adata, store, task), groups=track_groups(adata.obs), split=split,
                               task=task)
    solver = rec["args"]["classifier_params"]["solver"]
    assert res.solver == solver
    if solver == "lbfgs":  # VisCy's liblinear run raised; ours says why it switched
        assert any("liblinear" in str(w.message) for w in caught) and any("lbfgs" in n for n in res.notes)
    assert res.rows.tolist() == rec["rows_obs_positions"]
    assert res.class_counts == rec["class_counts"] and res.n_samples == rec["n_samples"]
    if split == "track":
        assert res.n_groups == rec["n_groups"]
    assert res.train_rows.tolist() == rec["split_replay"]["train_obs_positions"]
    assert res.val_rows.tolist() == rec["split_replay"]["val_obs_positions"]
    assert list(res.metrics) == list(rec["metrics"])  # same names, same order
    for name, want in rec["metrics"].items():
        assert res.metrics[name] == want, name  # exact (VisCy: deterministic on every machine)
    assert res.classes == rec["val_outputs"]["classes"] == rec["classifier"]["classes_"]
    assert res.y_val.tolist() == rec["val_outputs"]["y_val"]
    tol = PROBA_TOL[solver]
    np.testing.assert_allclose(res.y_val_proba, rec["val_outputs"]["y_val_proba"], rtol=0, atol=tol)
    np.testing.assert_allclose(res.model.classifier.intercept_, rec["classifier"]["intercept_"], rtol=0,
                               atol=tol * 10)
    labels, proba = predict_classes(res.model, adata.X)  # every cell, annotated or not
    pw = rec["predict_with_classifier"]
    assert labels.tolist() == pw[f"obs.predicted_{task}"]
    np.testing.assert_allclose(proba, pw[f"obsm.predicted_{task}_proba"], rtol=0, atol=tol)
    assert pw[f"uns.predicted_{task}_classes"] == res.classes


def test_liblinear_refused_for_three_classes_by_sklearn():
    """The fact the fallback rests on (VisCy's recorded ValueError)."""
    from sklearn.linear_model import LogisticRegression

    rec = expected()["linear_classifier"]["synthetic"]["cell_cycle_state"]["runs"]["stratified_liblinear"]
    X = np.random.default_rng(0).standard_normal((30, 3))
    with pytest.raises(ValueError, match="liblinear"):
        LogisticRegression(solver="liblinear").fit(X, np.repeat(["a", "b", "c"], 10))
    assert "liblinear" in rec["error"]["message"]


def test_track_split_never_leaks_a_track(stores):
    adata = stores["synthetic"]
    groups = track_groups(adata.obs)
    rng = np.random.default_rng(1)
    for trial in range(5):
        labels = np.where(rng.random(adata.n_obs) < 0.3, rng.choice(["a", "b"], adata.n_obs), None)
        res = train_classifier(adata.X, labels, groups=groups, split="track", random_seed=42 + trial)
        train, val = set(groups[res.train_rows]), set(groups[res.val_rows])
        assert train and val and not train & val
        assert sorted(np.concatenate([res.train_rows, res.val_rows]).tolist()) == res.rows.tolist()
        assert "val_accuracy" in res.metrics and "train_accuracy" in res.metrics


def test_no_split_trains_on_all_and_reports_train_only(stores):
    adata = stores["dev2d"]
    res = train_classifier(adata.X, _labels(adata, "dev2d", "infection_state"), split=None)
    assert res.split == "none" and len(res.train_rows) == res.n_samples and len(res.val_rows) == 0
    assert "train_accuracy" in res.metrics and not any(k.startswith("val_") for k in res.metrics)


def test_labels_that_cannot_train(stores):
    X = stores["dev2d"].X
    n = len(X)
    with pytest.raises(AnnotationError, match="at least two classes"):
        train_classifier(X, ["a"] * n)
    with pytest.raises(AnnotationError, match="at least two classes"):
        train_classifier(X, [None] * n)
    one_b = np.array(["a"] * 10 + ["b"] + [None] * (n - 11), dtype=object)
    with pytest.raises(AnnotationError, match="'b' \\(1 cell\\)"):
        train_classifier(X, one_b)
    groups = np.array(["t1"] * n)
    with pytest.raises(AnnotationError, match="two tracks"):
        train_classifier(X, ["a", "b"] * (n // 2), groups=groups, split="track")
    with pytest.raises(ConfigError, match="needs the track"):
        train_classifier(X, ["a", "b"] * (n // 2), split="track")
    with pytest.raises(ConfigError, match="unknown split"):
        train_classifier(X, ["a", "b"] * (n // 2), split="fov")
    with pytest.raises(ConfigError, match="rows"):
        train_classifier(X, ["a", "b"])


def test_nonfinite_rows_are_left_out_and_predicted_nan(stores):
    adata = stores["dev2d"]
    X = adata.X.copy()
    labels = _labels(adata, "dev2d", "infection_state")
    X[0] = np.nan
    res = train_classifier(X, labels)
    assert 0 not in res.rows and res.notes
    pred, proba = predict_classes(res.model, X)
    assert pd.isna(pred[0]) and np.isnan(proba[0]).all() and not pd.isna(pred[1:]).any()


def test_predictions_made_elsewhere_are_stored_as_the_model_would_store_them(stores):
    """napari's dock keeps no model (its scikit-learn objects stay in the work process): it stores the labels and
    probabilities the work process predicted, under the same keys and types as apply_predictions."""
    adata = stores["dev2d"]
    res = train_classifier(adata.X, _labels(adata, "dev2d", "infection_state"), task="infection_state")
    by_model = apply_predictions(adata.copy(), res.model)
    labels, proba = predict_classes(res.model, adata.X)
    stored = store_predictions(adata.copy(), labels, proba, res.model.classes, "infection_state")
    pd.testing.assert_series_equal(stored.obs["predicted_infection_state"], by_model.obs["predicted_infection_state"])
    np.testing.assert_array_equal(stored.obsm["predicted_infection_state_proba"],
                                  by_model.obsm["predicted_infection_state_proba"])
    assert stored.uns["predicted_infection_state_classes"] == by_model.uns["predicted_infection_state_classes"]
    # integer classes keep pandas' nullable integers, as apply_predictions writes them
    ints = store_predictions(adata.copy(), np.array([1, 0] * 36, dtype=object), proba, [0, 1], "state")
    assert str(ints.obs["predicted_state"].dtype) == "Int64" and ints.uns["predicted_state_classes"] == [0, 1]
    with pytest.raises(ConfigError, match="predictions for 71 cells and 2 classes .* a store of 72 cells"):
        store_predictions(adata.copy(), labels[:-1], proba[:-1], res.model.classes, "infection_state")
    with pytest.raises(ConfigError, match="contains '/'"):
        store_predictions(adata.copy(), labels, proba, res.model.classes, "a/b")


def test_apply_and_write_like_viscy(stores, tmp_path):
    adata = stores["dev2d"]
    res = train_classifier(adata.X, _labels(adata, "dev2d", "infection_state"), task="infection_state")
    copy = apply_predictions(adata.copy(), res.model)
    assert copy.obs["predicted_infection_state"].dtype == object
    assert copy.obsm["predicted_infection_state_proba"].shape == (72, 2)
    assert copy.uns["predicted_infection_state_classes"] == ["infected", "uninfected"]
    src = write_zarr(adata, tmp_path / "in.zarr")
    out = write_predictions(src, tmp_path / "out.zarr", res.model)
    back = read(out)
    assert back.obs["predicted_infection_state"].astype(str).tolist() == copy.obs["predicted_infection_state"].tolist()
    np.testing.assert_array_equal(back.obsm["predicted_infection_state_proba"],
                                  copy.obsm["predicted_infection_state_proba"])
    with pytest.raises(OutputError, match="is the input"):
        write_predictions(src, src, res.model, overwrite=True)
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an embedding store"):
        write_predictions(src, tmp_path / "notastore", res.model, overwrite=True)
    assert (tmp_path / "notastore" / "keep.txt").read_text() == "mine"


def test_too_few_cells_for_a_validation_split(stores):
    X = stores["dev2d"].X
    labels = np.array(["a", "a", "b", "b"] + [None] * (len(X) - 4), dtype=object)
    with pytest.raises(AnnotationError, match="too few labelled cells \\(4\\)"):
        train_classifier(X, labels)


def test_compare_splits_reports_both_accuracies(stores):
    from napari_dynaclr.evaluate.classifier import compare_splits

    adata = stores["synthetic"]
    labels = _labels(adata, "synthetic", "infection_state")
    both = compare_splits(adata.X, labels, track_groups(adata.obs))
    runs = expected()["linear_classifier"]["synthetic"]["infection_state"]["runs"]
    assert both["cell"].metrics["val_accuracy"] == runs["stratified_liblinear"]["metrics"]["val_accuracy"]
    assert both["track"].metrics["val_accuracy"] == runs["grouped_fov_name_track_id_liblinear"]["metrics"][
        "val_accuracy"]
    assert both["track"].metrics["val_accuracy"] < both["cell"].metrics["val_accuracy"]  # 0.68 vs 0.93


def test_result_counts_cells_per_class_and_cross_validates(stores):
    """Beside VisCy's metrics (unchanged above): the cells per class on each side of the split, and the accuracy
    over stratified folds, each fold scored by the recipe trained on the other labelled cells."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    adata = stores["synthetic"]
    labels = _labels(adata, "synthetic", "infection_state")
    res = train_classifier(adata.X, labels, groups=track_groups(adata.obs), split="cell", cross_validate=True)
    for side, rows in (("train_counts", res.train_rows), ("val_counts", res.val_rows)):
        want = pd.Series(labels[rows]).value_counts().to_dict()
        assert getattr(res, side) == {c: want.get(c, 0) for c in res.classes}, side
    cv = res.cross_validation
    assert cv is not None and not cv.grouped and cv.n_splits == 5 == len(cv.accuracies)
    assert sorted(np.concatenate(cv.held_out).tolist()) == res.rows.tolist()  # each labelled cell held out once
    Xs = StandardScaler().fit_transform(adata.X[res.rows])
    pos = pd.Series(np.arange(len(res.rows)), index=res.rows)
    for acc, held in zip(cv.accuracies, cv.held_out, strict=True):
        test = pos[held].to_numpy()
        train = np.setdiff1d(np.arange(len(res.rows)), test)
        clf = LogisticRegression(max_iter=1000, class_weight="balanced", solver="liblinear", random_state=42)
        clf.fit(Xs[train], labels[res.rows][train])
        assert acc == pytest.approx(np.mean(clf.predict(Xs[test]) == labels[res.rows][test]), abs=1e-12)
    assert cv.mean == pytest.approx(np.mean(cv.accuracies)) and cv.std == pytest.approx(np.std(cv.accuracies))
    info = res.to_dict()
    assert info["cross_validation"]["n_splits"] == 5 and info["val_counts"] == {str(k): v for k, v in
                                                                              res.val_counts.items()}
    assert not res.few_validation_cells and res.warning is None  # 15+ validation cells per class here


def test_track_split_cross_validates_without_a_track_on_both_sides(stores):
    adata = stores["synthetic"]
    groups = track_groups(adata.obs)
    res = train_classifier(adata.X, _labels(adata, "synthetic", "infection_state"), groups=groups, split="track",
                           cross_validate=True)
    cv = res.cross_validation
    assert cv.grouped and cv.n_splits >= 2
    assert sorted(np.concatenate(cv.held_out).tolist()) == res.rows.tolist()
    for held in cv.held_out:
        assert not set(groups[held]) & set(groups[np.setdiff1d(res.rows, held)])


def test_a_few_validation_cells_are_a_warning(stores):
    """The dock's old "validation accuracy 1.000" came from 2-3 validation cells: the result now says how many,
    warns, and gives the accuracy over folds of every labelled cell."""
    X = stores["dev2d"].X
    labels = np.array(["a"] * 7 + ["b"] * 7 + [None] * (len(X) - 14), dtype=object)
    res = train_classifier(X, labels, cross_validate=True)
    assert sum(res.val_counts.values()) == len(res.val_rows) == 3 and set(res.val_counts) == {"a", "b"}
    assert res.few_validation_cells
    assert "fewer than 5" in res.warning and all(f"{c}: {n}" in res.warning for c, n in res.val_counts.items())
    assert res.cross_validation.n_splits == 5 and res.to_dict()["warning"] == res.warning
    few = np.array(["a"] * 2 + ["b"] * 3 + [None] * (len(X) - 5), dtype=object)
    tiny = train_classifier(X, few, cross_validate=True, train_fraction=0.6)
    assert tiny.val_counts == {"a": 1, "b": 1} and tiny.cross_validation.n_splits == 2  # the smallest class: 2
    one = np.array(["a"] * 2 + [None] * 18 + ["b"] * 10 + [None] * (len(X) - 30), dtype=object)
    groups = np.array(["tA", "tA"] + [f"t{i}" for i in range(2, len(X))], dtype=object)
    lone = train_classifier(X, one, split="track", groups=groups, cross_validate=True)
    assert lone.cross_validation is None and "'a' has 1 labelled track(s)" in lone.cross_validation_note
    assert lone.val_counts["a"] == 0 and "a: 0" in lone.warning  # a class missing from validation is flagged
