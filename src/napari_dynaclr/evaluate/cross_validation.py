"""Cross-validated accuracy of the linear classifier recipe (:mod:`napari_dynaclr.evaluate.classifier`): how much a
validation accuracy from one 80/20 split of a few labelled cells can be trusted."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

#: the most folds of a cross-validation (fewer when the smallest class has fewer cells, or tracks)
MAX_FOLDS = 5


@dataclass
class CrossValidation:
    """The accuracy of the recipe over *n_splits* folds of the labelled cells: each fold is held out once and
    scored by a classifier trained (as
    :func:`~napari_dynaclr.evaluate.classifier.train_classifier` trains) on the others. Folds are stratified by
    class (``StratifiedKFold``) for a cell split and also grouped by track (``StratifiedGroupKFold``: no track on
    both sides) for a track split; k = min(:data:`MAX_FOLDS`, the smallest class's cells, or tracks). The scaler
    is VisCy's, fitted once on every labelled row. ``std`` is the population standard deviation of the fold
    accuracies; ``held_out`` the rows (positions in ``X``) each fold scored."""

    n_splits: int
    grouped: bool
    accuracies: list[float]
    held_out: list[np.ndarray]

    @property
    def cells(self) -> list[int]:
        """The held-out cells of each fold."""
        return [len(h) for h in self.held_out]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict:
        return {"n_splits": self.n_splits, "grouped": self.grouped, "mean": self.mean, "std": self.std,
                "accuracies": [float(a) for a in self.accuracies], "cells": [int(c) for c in self.cells]}



def cross_validate_recipe(Xs, y, groups, rows, seed: int, fit: dict) -> tuple[CrossValidation | None, str | None]:
    """:class:`CrossValidation` of the scaled labelled rows *Xs* (labels *y*, positions *rows* in ``X``;
    stratified folds, grouped by *groups* when given; ``LogisticRegression(**fit)``), or ``(None, why)`` when
    the labels cannot make two folds."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    text = y.astype(str)
    if groups is None:
        smallest = pd.Series(text).value_counts()
        k = min(MAX_FOLDS, int(smallest.min()))
        unit = "cell(s)"
    else:
        smallest = pd.DataFrame({"y": text, "g": groups.astype(str)}).groupby("y")["g"].nunique()
        k = min(MAX_FOLDS, int(smallest.min()), len(np.unique(groups.astype(str))))
        unit = "track(s)"
    if k < 2:
        c = smallest.idxmin()
        return None, f"no cross-validation: class {c!r} has {int(smallest.min())} labelled {unit} (2 needed)"
    if groups is None:
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(Xs, text)
    else:
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(Xs, text, groups.astype(str))
    accuracies, held_out = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (convergence notes are the main fit's to report)
        for train, held in folds:
            if len(np.unique(text[train])) < 2:  # a grouped fold may leave one class to train on: not scored
                continue
            clf = LogisticRegression(**fit).fit(Xs[train], y[train])
            accuracies.append(float(np.mean(clf.predict(Xs[held]) == y[held])))
            held_out.append(rows[held])
    if len(accuracies) < 2:
        return None, f"no cross-validation: {k} track-grouped folds left fewer than two to score"
    return CrossValidation(n_splits=len(accuracies), grouped=groups is not None, accuracies=accuracies,
                           held_out=held_out), None
