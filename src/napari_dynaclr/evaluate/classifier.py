"""Linear classifier on embeddings with VisCy's recipe, fast enough to retrain on every click.

Default recipe = VisCy's ``train_linear_classifier`` as ``run_linear_classifiers`` calls it (commit 4b62365):
``StandardScaler`` fitted on every labelled row (before the split, as VisCy), then
``LogisticRegression(max_iter=1000, class_weight="balanced", solver="liblinear", random_state=42)``; an 80/20
split at seed 42 — ``train_test_split(stratify=y)`` for ``split="cell"``, ``GroupShuffleSplit`` on
``"fov_name::track_id"`` for ``split="track"`` (VisCy's ``split_groups_by: [fov_name, track_id]``: no track on both
sides) — and VisCy's metric names (``train_accuracy``, ``val_accuracy``, ``val_weighted_f1``, ``val_auroc``, per
class ``val_{c}_precision|recall|f1|support``, …).

What VisCy does not report, added beside its metrics (its numbers unchanged): the labelled cells per class on
each side of the split (``train_counts``, ``val_counts``), a warning when a class has fewer than
:data:`MIN_VALIDATION_CELLS` validation cells (an accuracy from 2–3 cells says little), and, with
``cross_validate=True``, the accuracy over k folds of the labelled cells with its spread (:class:`CrossValidation`).

One difference: with three or more classes scikit-learn >= 1.8 refuses liblinear (VisCy then raises or skips the
task); here ``lbfgs`` is used instead and the result says so (``solver``, ``notes``, a ``UserWarning``).

Labels: one per row of ``X``; ``None``/NaN/``"unknown"`` rows are not used (as VisCy's callers drop them), so the
GUI passes the whole store and a sparse label column.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dynaclr.errors import AnnotationError, ConfigError
from napari_dynaclr.evaluate.annotations import labelled
from napari_dynaclr.evaluate.cross_validation import CrossValidation, cross_validate_recipe
from napari_dynaclr.evaluate.matrix import embedding_matrix

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

SPLITS = ("cell", "track", "none")
#: rows predicted at a time (scaled and multiplied in float64 chunk by chunk)
PREDICT_CHUNK = 16_384
#: fewer validation cells of a class than this: the result warns that its validation scores say little
MIN_VALIDATION_CELLS = 5
#: VisCy's classifier_params as ``run_linear_classifiers`` passes them
VISCY_CLASSIFIER_PARAMS = {"max_iter": 1000, "class_weight": "balanced", "solver": "liblinear", "random_state": 42}


@dataclass
class ClassifierModel:
    """A fitted scaler + logistic regression (VisCy's ``LinearClassifierPipeline`` without PCA)."""

    scaler: Any
    classifier: Any
    task: str | None = None

    @property
    def classes(self) -> list:
        return self.classifier.classes_.tolist()

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.scaler.transform(X) if self.scaler is not None else X


@dataclass
class ClassifierResult:
    """What :func:`train_classifier` returns. Row positions index the ``X`` passed in."""

    model: ClassifierModel
    metrics: dict[str, float]
    classes: list
    split: str
    solver: str
    rows: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    y_val: np.ndarray | None
    y_val_proba: np.ndarray | None
    class_counts: dict
    n_groups: int | None = None
    notes: list[str] = field(default_factory=list)
    train_counts: dict = field(default_factory=dict)  # labelled cells per class on the training side
    val_counts: dict = field(default_factory=dict)  # ... on the validation side (every class, 0 when absent)
    cross_validation: CrossValidation | None = None  # with cross_validate=True, when the labels allow it
    cross_validation_note: str | None = None  # why there is none (cross_validate=True)

    @property
    def n_samples(self) -> int:
        return len(self.rows)

    @property
    def few_validation_cells(self) -> bool:
        """A validation split holds fewer than :data:`MIN_VALIDATION_CELLS` cells of some class."""
        return bool(self.val_counts) and min(self.val_counts.values()) < MIN_VALIDATION_CELLS

    @property
    def warning(self) -> str | None:
        """What to say next to the validation scores when :attr:`few_validation_cells`, else None."""
        if not self.few_validation_cells:
            return None
        few = ", ".join(f"{c}: {n}" for c, n in self.val_counts.items() if n < MIN_VALIDATION_CELLS)
        return (f"only {few} validation cell(s) (fewer than {MIN_VALIDATION_CELLS} of a class): the validation "
                "scores say little; label more cells")

    def quality(self) -> dict:
        """What tells how far the validation scores can be trusted (JSON-ready): the cells per class on each
        side, the cross-validation and the warning."""
        cv = self.cross_validation
        return {
            "split": self.split,
            "n_train": len(self.train_rows),
            "n_val": len(self.val_rows),
            "train_counts": {str(k): int(v) for k, v in self.train_counts.items()},
            "val_counts": {str(k): int(v) for k, v in self.val_counts.items()},
            "cross_validation": cv.to_dict() if cv is not None else None,
            "cross_validation_note": self.cross_validation_note,
            "few_validation_cells": self.few_validation_cells,
            "warning": self.warning,
        }

    def to_dict(self) -> dict:
        """JSON-ready summary: VisCy's metric names at the top level of ``metrics``."""
        return {
            "task": self.model.task,
            "split": self.split,
            "solver": self.solver,
            "classifier_params": {**VISCY_CLASSIFIER_PARAMS, "solver": self.solver},
            "n_samples": self.n_samples,
            "n_train": len(self.train_rows),
            "n_val": len(self.val_rows),
            "n_groups": self.n_groups,
            "classes": [_jsonable(c) for c in self.classes],
            "class_counts": {str(k): int(v) for k, v in self.class_counts.items()},
            "metrics": {k: _jsonable(v) for k, v in self.metrics.items()},
            "notes": list(self.notes),
            **{k: v for k, v in self.quality().items() if k not in ("split", "n_train", "n_val")},
        }


def _jsonable(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def track_groups(obs: pd.DataFrame) -> np.ndarray:
    """VisCy's split groups for ``split_groups_by: [fov_name, track_id]``: ``"<fov_name>::<track_id>"``."""
    return (obs["fov_name"].astype(str) + "::" + obs["track_id"].astype(str)).to_numpy()


def train_classifier(X: np.ndarray, labels, groups=None, split: str | None = "cell", *, train_fraction: float = 0.8,
                     random_seed: int = 42, solver: str = "liblinear", max_iter: int = 1000,
                     class_weight: str | None = "balanced", use_scaling: bool = True, task: str | None = None,
                     cross_validate: bool = False) -> ClassifierResult:
    """Train VisCy's linear classifier on the labelled rows of *X* and score it on a held-out split.

    *X*: (N, D) embeddings. *labels*: N labels (None/NaN/"unknown" = not labelled). *groups*: N group ids for
    ``split="track"`` (:func:`track_groups`). *split*: ``"cell"`` (stratified, VisCy's default), ``"track"``
    (grouped) or ``None``/``"none"`` (train on all labelled rows, no validation metrics). *cross_validate*: also
    score the recipe over k folds of the labelled cells (:class:`CrossValidation`; not with split ``"none"``).
    Raises :class:`AnnotationError` when the labels cannot train (fewer than two classes, a class too small to
    split) and :class:`ConfigError` for bad arguments.
    """
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    split = "none" if split is None else str(split)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    X = embedding_matrix(X)
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(X):
        raise ConfigError(f"labels have {len(labels)} rows but X has shape {X.shape}")
    if split == "track":
        if groups is None:
            raise ConfigError("split='track' needs the track of every row (groups=track_groups(obs))")
        groups = np.asarray(groups, dtype=object)
        if len(groups) != len(X):
            raise ConfigError(f"groups have {len(groups)} rows but X has {len(X)}")
    if not 0 < train_fraction <= 1:
        raise ConfigError(f"train fraction must be in (0, 1], got {train_fraction}")
    notes: list[str] = []
    rows = np.flatnonzero(labelled(labels))
    if X.dtype.kind == "f":  # only the labelled rows are looked at: a retrain never scans the whole store
        finite = np.isfinite(X[rows]).all(axis=1)
        if not finite.all():
            notes.append(f"{int((~finite).sum())} labelled rows with NaN/Inf embeddings were left out")
            rows = rows[finite]
    what = f"task {task!r}" if task else "the labels"
    y = class_labels(labels[rows], what)
    counts = pd.Series(y).value_counts(sort=False)
    if len(counts) < 2:
        raise AnnotationError(f"{what}: need labelled cells of at least two classes, got "
                              f"{', '.join(f'{k}: {v}' for k, v in counts.items()) or 'none'}")
    if len(counts) >= 3 and solver == "liblinear":
        solver = "lbfgs"
        msg = (f"{what} has {len(counts)} classes: scikit-learn refuses solver 'liblinear' for 3+ classes "
               "(VisCy raises and skips the task); 'lbfgs' was used")
        notes.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    Xl = X[rows]
    scaler = StandardScaler() if use_scaling else None
    Xs = scaler.fit_transform(Xl) if scaler is not None else Xl
    idx_train, idx_val, n_groups = _split(y, groups[rows] if split == "track" else None, split, train_fraction,
                                          random_seed, what)
    y_train = y[idx_train]
    if len(np.unique(y_train.astype(str))) < 2:
        raise AnnotationError(f"{what}: the training split holds one class only ({y_train[0]}); label more tracks "
                              "or use split 'cell'")
    clf = LogisticRegression(max_iter=max_iter, class_weight=class_weight, solver=solver, random_state=random_seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(Xs[idx_train], y_train)
    for w in caught:
        notes.append(f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}")
    metrics = _metrics("train", clf, Xs[idx_train], y_train)
    y_val = proba_val = None
    if len(idx_val):
        y_val = y[idx_val]
        val = _metrics("val", clf, Xs[idx_val], y_val)
        proba_val = val.pop("_proba", None)
        metrics.update(val)
        if len(np.unique(y_val.astype(str))) < len(counts):
            notes.append(f"the validation split lacks class(es) "
                         f"{', '.join(str(c) for c in counts.index if c not in set(y_val))}")
    metrics.pop("_proba", None)
    model = ClassifierModel(scaler=scaler, classifier=clf, task=task)
    result = ClassifierResult(model=model, metrics=metrics, classes=model.classes, split=split, solver=solver,
                              rows=rows, train_rows=rows[idx_train], val_rows=rows[idx_val], y_val=y_val,
                              y_val_proba=proba_val, class_counts=counts.to_dict(), n_groups=n_groups, notes=notes,
                              train_counts=_per_class(counts.index, y_train),
                              val_counts=_per_class(counts.index, y[idx_val]) if len(idx_val) else {})
    if cross_validate and split != "none":
        fit = dict(max_iter=max_iter, class_weight=class_weight, solver=solver, random_state=random_seed)
        result.cross_validation, result.cross_validation_note = cross_validate_recipe(
            Xs, y, groups[rows] if split == "track" else None, rows, random_seed, fit)
    return result


def _per_class(classes, y) -> dict:
    """Cells per class of *classes* in *y* (0 for a class it lacks)."""
    import pandas as pd

    found = pd.Series(y).value_counts(sort=False)
    return {c: int(found.get(c, 0)) for c in classes}


def class_labels(values, what: str = "the labels") -> np.ndarray:
    """Labelled values as the classes scikit-learn trains on. Strings stay strings. Numbers and booleans (a CSV's
    0/1, 1.0/0.0 once blank cells made the column float, True/False) are classes too: whole numbers become
    integers (``1.0`` and ``1`` are one class), booleans stay booleans. VisCy passes ``obs[task]`` as an object
    array, which scikit-learn refuses for anything but strings ("Unknown label type"); here they train.
    Numbers that are not whole (measurements, not classes) are an :class:`AnnotationError`; a column mixing
    strings and numbers is read as strings."""
    values = list(values)
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.asarray(values, dtype=bool)
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        arr = np.asarray(values, dtype=np.float64)
        whole = np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2**53)
        if not whole.all():
            bad = ", ".join(f"{v:g}" for v in arr[~whole][:3]) + (", ..." if (~whole).sum() > 3 else "")
            raise AnnotationError(f"{what}: the labels are numbers that are not whole ({bad}): a classifier needs "
                                  "classes (0/1, names), not measurements")
        return arr.astype(np.int64)
    return np.asarray([_label_text(v) for v in values], dtype=object)


def _label_text(v) -> str:
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


def prediction_keys(task: str) -> tuple[str, str, str]:
    """The keys :func:`apply_predictions` writes for *task*, as VisCy names them: ``obs["predicted_{task}"]``,
    ``obsm["predicted_{task}_proba"]``, ``uns["predicted_{task}_classes"]``. A ``/`` in *task* would make them
    zarr paths (a nested group VisCy's readers do not look in): a :class:`ConfigError`, since renaming the key
    behind the user's back would hide the predictions from VisCy's ``predicted_{task}``."""
    if not isinstance(task, str) or not task:
        raise ConfigError("apply_predictions needs the task name")
    if "/" in task:
        raise ConfigError(f"task name {task!r} contains '/': its predictions cannot be stored as obs "
                          f"'predicted_{task}' (a '/' makes a nested zarr group); rename the annotation column "
                          f"(e.g. {task.replace('/', '_')!r})")
    return f"predicted_{task}", f"predicted_{task}_proba", f"predicted_{task}_classes"


def compare_splits(X: np.ndarray, labels, groups, **kwargs) -> dict[str, ClassifierResult]:
    """:func:`train_classifier` with ``split="cell"`` and ``split="track"`` on the same labels, so both validation
    accuracies can be shown side by side (a cell split lets frames of one track sit on both sides, which flatters
    the score; the track split does not). Returns ``{"cell": result, "track": result}``."""
    return {split: train_classifier(X, labels, groups=groups, split=split, **kwargs) for split in ("cell", "track")}


def _split(y, groups, split, train_fraction, seed, what):
    import pandas as pd

    n = len(y)
    if split == "none" or train_fraction >= 1:
        return np.arange(n), np.arange(0), None
    if split == "track":
        from sklearn.model_selection import GroupShuffleSplit

        n_groups = len(np.unique(groups.astype(str)))
        if n_groups < 2:
            raise AnnotationError(f"{what}: split 'track' needs labelled cells from at least two tracks, "
                                  f"got {n_groups}")
        gss = GroupShuffleSplit(n_splits=1, train_size=train_fraction, random_state=seed)
        try:
            idx_train, idx_val = next(gss.split(np.zeros((n, 1)), y, groups=groups))
        except ValueError as exc:
            raise AnnotationError(f"{what}: cannot split {n_groups} tracks {train_fraction:g}/"
                                  f"{1 - train_fraction:g} ({str(exc).splitlines()[0][:150]})") from None
        return idx_train, idx_val, n_groups
    from sklearn.model_selection import train_test_split

    counts = pd.Series(y).value_counts()
    small = counts[counts < 2]
    if len(small):
        raise AnnotationError(f"{what}: class(es) {', '.join(f'{k!r} ({v} cell)' for k, v in small.items())} need at "
                              "least 2 labelled cells for a stratified train/validation split")
    try:
        idx_train, idx_val = train_test_split(np.arange(n), train_size=train_fraction, random_state=seed, stratify=y,
                                              shuffle=True)
    except ValueError as exc:
        raise AnnotationError(f"{what}: too few labelled cells ({n}) for a stratified {train_fraction:g} split of "
                              f"{len(counts)} classes ({str(exc).splitlines()[0][:150]})") from None
    return idx_train, idx_val, None


def _metrics(prefix: str, clf, X, y) -> dict:
    """VisCy's metric dict for one side (same calls, same names, same order)."""
    from sklearn.metrics import classification_report, roc_auc_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings on tiny splits (VisCy prints them)
        report = classification_report(y, clf.predict(X), digits=3, output_dict=True)
    out: dict[str, Any] = {
        f"{prefix}_accuracy": report["accuracy"],
        f"{prefix}_weighted_precision": report["weighted avg"]["precision"],
        f"{prefix}_weighted_recall": report["weighted avg"]["recall"],
        f"{prefix}_weighted_f1": report["weighted avg"]["f1-score"],
    }
    classes = clf.classes_
    try:
        proba = clf.predict_proba(X)
        out["_proba"] = proba
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if len(classes) == 2:
                out[f"{prefix}_auroc"] = roc_auc_score(y, proba[:, 1])
            else:
                out[f"{prefix}_auroc"] = roc_auc_score(y, proba, multi_class="ovr", average="macro")
            if prefix == "val" and len(classes) > 2:
                for i, c in enumerate(classes):
                    try:
                        out[f"val_{c}_auroc"] = roc_auc_score((y == c).astype(int), proba[:, i])
                    except ValueError:
                        pass
    except ValueError:
        pass  # one class only on this side: no AUROC (VisCy logs a warning)
    for c in classes:
        key = str(c)  # the report's keys are the labels as text (0/1 classes: "0", "1")
        if key in report:
            out[f"{prefix}_{c}_precision"] = report[key]["precision"]
            out[f"{prefix}_{c}_recall"] = report[key]["recall"]
            out[f"{prefix}_{c}_f1"] = report[key]["f1-score"]
            out[f"{prefix}_{c}_support"] = int(report[key]["support"])
    return out


def predict_classes(model: ClassifierModel, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) for every row of *X*: labels an object array, probabilities (N, n_classes) float64
    with columns in ``model.classes`` order. Rows with NaN/Inf get NaN (as VisCy's rows outside ``include_wells``)."""
    X = embedding_matrix(X)
    n_classes = len(model.classes)
    labels = np.full(len(X), np.nan, dtype=object)
    proba = np.full((len(X), n_classes), np.nan)
    ok = np.isfinite(X).all(axis=1) if X.dtype.kind == "f" else np.ones(len(X), bool)
    if not ok.any():
        return labels, proba
    rows = np.flatnonzero(ok)
    for start in range(0, len(rows), PREDICT_CHUNK):  # (a float64 copy of a chunk at a time, not of X)
        at = rows[start:start + PREDICT_CHUNK]
        chunk = X[at] if len(at) < len(X) else X
        p = model.classifier.predict_proba(model.transform(chunk))
        # the class of the highest probability = LogisticRegression.predict (softmax/expit keep the order of
        # the decision values); one product with the coefficients instead of two
        labels[at] = model.classifier.classes_[np.argmax(p, axis=1)]
        proba[at] = p
    return labels, proba


def apply_predictions(adata, model: ClassifierModel, task: str | None = None):
    """Write predictions into *adata* as VisCy's ``predict_with_classifier``: ``obs["predicted_{task}"]`` (object),
    ``obsm["predicted_{task}_proba"]`` (float64), ``uns["predicted_{task}_classes"]``. Returns *adata*."""
    prediction_keys(task or model.task)  # (a bad task name is refused before the prediction)
    labels, proba = predict_classes(model, adata.X)
    return store_predictions(adata, labels, proba, model.classes, task or model.task)


def store_predictions(adata, labels, proba, classes, task: str):
    """Put predictions already made (:func:`predict_classes`: one label and one row of probabilities per cell of
    *adata*, in its order; *classes* in the probabilities' column order) into *adata* under VisCy's keys, without
    the model (nor scikit-learn): how napari's dock saves what its work process predicted. Returns *adata*."""
    obs_key, obsm_key, uns_key = prediction_keys(task)
    labels, proba, classes = np.asarray(labels, dtype=object), np.asarray(proba, dtype=np.float64), np.asarray(classes)
    if labels.shape != (adata.n_obs,) or proba.shape != (adata.n_obs, len(classes)):
        raise ConfigError(f"predictions for {len(labels)} cells and {len(classes)} classes (probabilities "
                          f"{proba.shape}) do not fit a store of {adata.n_obs} cells")
    adata.obs[obs_key] = _label_column(labels, classes)
    adata.obsm[obsm_key] = proba
    adata.uns[uns_key] = [_jsonable(c) for c in classes.tolist()]
    return adata


def _label_column(labels: np.ndarray, classes: np.ndarray):
    """The predicted labels as an obs column a store can hold: strings as objects (VisCy's), number or boolean
    classes as pandas' nullable integers / booleans (missing where a row was not predicted), which anndata writes
    and reads back (an object column of numbers cannot be written)."""
    import pandas as pd

    if classes.dtype.kind == "b":
        return pd.array([None if pd.isna(v) else bool(v) for v in labels], dtype="boolean")
    if classes.dtype.kind in "iu":
        return pd.array([None if pd.isna(v) else int(v) for v in labels], dtype="Int64")
    return labels


def write_predictions(store, output, model: ClassifierModel, task: str | None = None, overwrite: bool = False,
                      inputs=None, guard=None):
    """Read the embedding store *store*, add the predictions (:func:`apply_predictions`) and write the whole store
    to *output* through the project's guarded atomic writer (never over an input, never over anything but an
    embedding store). Returns the output path."""
    from napari_dynaclr.core.store import read_store, write_store

    adata = read_store(store)
    apply_predictions(adata, model, task)
    all_inputs = {"store": store, **(inputs or {})}
    return write_store(adata, output, overwrite=overwrite, inputs=all_inputs, guard=guard)
