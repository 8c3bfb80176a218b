"""Evaluating embeddings as VisCy does, without Qt or torch: annotation joins, linear classifiers, temporal
smoothness, nearest neighbours and representative samples, MMD between conditions and DTW pseudotime.

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
    store_predictions(adata, labels, proba, classes, task)           # predictions made elsewhere, no model
    compute_smoothness(X, obs, metric="cosine", order="time"|"stored") -> SmoothnessResult
    smoothness_by_group(X, obs, "marker") -> {value: SmoothnessResult}
    NeighbourIndex(X, metric="cosine").query(row, k) -> (rows, distances)
    representative_sample(X, rows, n=64) -> rows;  order_by_centroid(X, rows) -> (rows, distances)
    analysis = load_mmd_config(yaml) | parse_analysis(mapping, source, with_paths=False)
    run_mmd(obs, select_embedding(adata, analysis.embedding_key), analysis, progress, cancel) -> MMDResult
    mmd_permutation_test(X, Y, n_permutations, bandwidth, seed) -> PermutationTest;  median_heuristic(X, Y)
    napari_dynaclr.evaluate.pseudotime: run_pseudotime(X, obs, annotations, config, progress, cancel) -> ...
"""

from napari_dynaclr.evaluate.annotations import join_annotations, labelled, read_annotations, save_annotations
from napari_dynaclr.evaluate.classifier import (
    ClassifierModel,
    ClassifierResult,
    apply_predictions,
    compare_splits,
    predict_classes,
    store_predictions,
    track_groups,
    train_classifier,
    write_predictions,
)
from napari_dynaclr.evaluate.neighbours import NeighbourIndex, order_by_centroid, representative_sample
from napari_dynaclr.evaluate.smoothness import STAT_NAMES, SmoothnessResult, compute_smoothness, smoothness_by_group

__all__ = [
    "STAT_NAMES", "ClassifierModel", "ClassifierResult", "MMDAnalysis", "MMDResult", "MMDRunConfig", "NeighbourIndex",
    "PermutationTest", "SmoothnessResult", "apply_predictions", "compare_splits", "compute_smoothness",
    "select_embedding", "join_annotations", "labelled", "load_mmd_config", "median_heuristic", "mmd_permutation_test",
    "order_by_centroid", "parse_analysis", "plan_mmd", "predict_classes", "read_annotations", "representative_sample",
    "run_mmd", "save_annotations", "smoothness_by_group", "store_predictions", "track_groups", "train_classifier",
    "write_predictions",
]

# the MMD API loads pydantic models: imported on first use, not with the package (the GUI imports it)
_LAZY = {
    "MMDResult": "mmd", "select_embedding": "mmd", "plan_mmd": "mmd", "run_mmd": "mmd",
    "MMDAnalysis": "mmd_config", "MMDRunConfig": "mmd_config", "load_mmd_config": "mmd_config",
    "parse_analysis": "mmd_config", "PermutationTest": "mmd_kernel", "median_heuristic": "mmd_kernel",
    "mmd_permutation_test": "mmd_kernel",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"napari_dynaclr.evaluate.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'napari_dynaclr.evaluate' has no attribute {name!r}")
