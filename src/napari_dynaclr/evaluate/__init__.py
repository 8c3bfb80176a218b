"""Evaluating embeddings as VisCy does, without Qt or torch: annotation joins, linear classifiers, temporal
smoothness, nearest neighbours and representative samples.

Layer: above :mod:`napari_dynaclr.core`, beside :mod:`napari_dynaclr.verify`, below the CLI and the napari
plugin. scikit-learn and scipy are imported inside the functions that need them; ``pynndescent`` (numba) only
for neighbour indexes above the exact-search limit.

The API the GUI uses::

    join_annotations(obs, csv_or_frame, task) -> pd.Series            # VisCy's join, obs order
    save_annotations(path, obs, {task: labels})                      # a CSV VisCy reads
    train_classifier(X, labels, groups=track_groups(obs), split="cell"|"track"|None) -> ClassifierResult
    compare_splits(X, labels, groups) -> {"cell": ClassifierResult, "track": ClassifierResult}
    predict_classes(result.model, X) -> (labels, proba)
    apply_predictions(adata, model, task) / write_predictions(store, out, model, task)
    compute_smoothness(X, obs, metric="cosine", order="time"|"stored") -> SmoothnessResult
    smoothness_by_group(X, obs, "marker") -> {value: SmoothnessResult}
    NeighbourIndex(X, metric="cosine").query(row, k) -> (rows, distances)
    representative_sample(X, rows, n=64) -> rows;  order_by_centroid(X, rows) -> (rows, distances)
"""

from napari_dynaclr.evaluate.annotations import join_annotations, labelled, read_annotations, save_annotations
from napari_dynaclr.evaluate.classifier import (
    ClassifierModel,
    ClassifierResult,
    apply_predictions,
    compare_splits,
    predict_classes,
    track_groups,
    train_classifier,
    write_predictions,
)
from napari_dynaclr.evaluate.neighbours import NeighbourIndex, order_by_centroid, representative_sample
from napari_dynaclr.evaluate.smoothness import STAT_NAMES, SmoothnessResult, compute_smoothness, smoothness_by_group

__all__ = [
    "STAT_NAMES", "ClassifierModel", "ClassifierResult", "NeighbourIndex", "SmoothnessResult", "apply_predictions",
    "compare_splits", "compute_smoothness", "join_annotations", "labelled", "order_by_centroid", "predict_classes",
    "read_annotations", "representative_sample", "save_annotations", "smoothness_by_group", "track_groups",
    "train_classifier", "write_predictions",
]
