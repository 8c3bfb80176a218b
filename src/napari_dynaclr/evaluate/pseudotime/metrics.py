"""Pseudotime against annotations, and per-track onset timing: VisCy's ``pseudotime.evaluation`` and
``metrics.compute_track_timing`` (commit 4b62365).

- ``pseudotime_vs_annotation_auc``: ROC-AUC of pseudotime for ``annotation == positive`` over the annotated rows
  (NaN with one class).
- ``onset_concordance``: per track of at least 3 annotated rows (sorted by ``t``), the first ``t`` annotated
  positive and the first ``t`` whose pseudotime exceeds the track's median; Spearman ρ over tracks with both
  (NaN with fewer than 3 tracks or constant input), and the number of tracks.
- ``per_timepoint_auc``: the AUC at each ``t`` (NaN with one class), with ``n_cells`` and ``n_positive``.
- ``compute_track_timing``: per track (fov_name, track_id[, experiment, marker]), the positive frames — equal to
  1 ("fraction"), or above the mean + 2·std (ddof 1) of the frames before the onset, or the track's median with
  fewer than 2 such frames ("continuous") — give ``onset_minutes`` (first), ``total_positive_minutes`` (count ×
  the most common step of ``t_relative_minutes``), ``span_minutes``, ``n_positive_frames``, ``n_total_frames``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def _annotated(df: pd.DataFrame, score_col: str, annotation_col: str) -> pd.DataFrame:
    valid = df.dropna(subset=[score_col, annotation_col])
    return valid[valid[annotation_col] != ""]


def annotation_signal(df: pd.DataFrame, state_col: str, positive_value: str) -> pd.DataFrame:
    """VisCy's ``extract_annotation_signal``: ``signal`` 1.0 / 0.0, NaN where the state is missing."""
    out = df.copy()
    out["signal"] = np.where(out[state_col].isna(), np.nan, (out[state_col] == positive_value).astype(float))
    return out


def pseudotime_vs_annotation_auc(df: pd.DataFrame, pseudotime_col: str = "pseudotime",
                                 annotation_col: str = "infection_state", positive_value: str = "infected") -> float:
    from sklearn.metrics import roc_auc_score

    valid = _annotated(df, pseudotime_col, annotation_col)
    if len(valid) == 0:
        return float("nan")
    y = (valid[annotation_col] == positive_value).astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, valid[pseudotime_col].to_numpy()))


def _groups(frame: pd.DataFrame, keys: list[str]):
    """(key values, positions) per group in sorted key order, positions in stored order."""
    codes = frame.groupby(keys, sort=True).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1], True]) if len(codes) else [0]
    for s, e in zip(bounds[:-1], bounds[1:]):
        pos = order[s:e]
        yield tuple(frame.iloc[pos[0]][k] for k in keys), pos


def onset_concordance(df: pd.DataFrame, pseudotime_col: str = "pseudotime", annotation_col: str = "infection_state",
                      positive_value: str = "infected", min_track_timepoints: int = 3) -> tuple[float, int]:
    from scipy.stats import spearmanr

    valid = _annotated(df, pseudotime_col, annotation_col).reset_index(drop=True)
    t_all = valid["t"].to_numpy()
    pt_all = valid[pseudotime_col].to_numpy()
    pos_all = (valid[annotation_col] == positive_value).to_numpy()
    dtw_onsets, ann_onsets = [], []
    for _, rows in _groups(valid, ["fov_name", "track_id"]):
        if len(rows) < min_track_timepoints:
            continue
        rows = rows[np.argsort(t_all[rows], kind="quicksort")]  # pandas sort_values("t")
        positive = rows[pos_all[rows]]
        if len(positive) == 0:
            continue
        pt = pt_all[rows]
        above = rows[pt > np.median(pt)]
        if len(above) == 0:
            continue
        dtw_onsets.append(t_all[above[0]])
        ann_onsets.append(t_all[positive[0]])
    if len(dtw_onsets) < 3:
        return float("nan"), len(dtw_onsets)
    with warnings.catch_warnings():  # constant onsets: ρ is NaN, as VisCy reports it
        warnings.simplefilter("ignore")
        rho, _ = spearmanr(dtw_onsets, ann_onsets)
    return float(rho), len(dtw_onsets)


def per_timepoint_auc(df: pd.DataFrame, pseudotime_col: str = "pseudotime", annotation_col: str = "infection_state",
                      positive_value: str = "infected", time_col: str = "t") -> pd.DataFrame:
    from sklearn.metrics import roc_auc_score

    valid = _annotated(df, pseudotime_col, annotation_col)
    rows = []
    for t_val, group in valid.groupby(time_col):
        y = (group[annotation_col] == positive_value).astype(int).to_numpy()
        auc = float("nan") if len(np.unique(y)) < 2 else float(roc_auc_score(y, group[pseudotime_col].to_numpy()))
        rows.append({"t": t_val, "auc": auc, "n_cells": len(group), "n_positive": int(y.sum())})
    return pd.DataFrame(rows, columns=["t", "auc", "n_cells", "n_positive"])


def _step(t_rel: np.ndarray) -> float:
    diffs = np.diff(t_rel)
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) == 0:
        return 30.0
    values, counts = np.unique(diffs, return_counts=True)
    return float(values[np.argmax(counts)])  # pandas' mode(): the smallest of the most frequent


def compute_track_timing(df: pd.DataFrame, signal_col: str = "signal", signal_type: str = "fraction",
                         positive_value: float = 1.0) -> pd.DataFrame:
    valid = df.dropna(subset=[signal_col]).reset_index(drop=True)
    extra = [c for c in ("experiment", "marker") if c in valid.columns]
    keys = ["fov_name", "track_id", *extra]
    signal = valid[signal_col].to_numpy(dtype=float)
    t_rel = valid["t_relative_minutes"].to_numpy(dtype=float)
    out = []
    for key, rows in _groups(valid, keys):
        s = signal[rows]
        if signal_type == "fraction":
            positive = rows[s == positive_value]
        else:
            pre = pd.Series(s[t_rel[rows] < 0])
            threshold = pre.mean() + 2 * pre.std() if len(pre) >= 2 else pd.Series(s).median()
            positive = rows[s > threshold]
        if len(positive) == 0:
            continue
        first, last = t_rel[positive].min(), t_rel[positive].max()
        interval = _step(t_rel[rows])
        out.append({"fov_name": key[0], "track_id": key[1], "onset_minutes": first,
                    "total_positive_minutes": len(positive) * interval, "span_minutes": last - first + interval,
                    "n_positive_frames": len(positive), "n_total_frames": len(rows),
                    **{c: key[2 + i] for i, c in enumerate(extra)}})
    return pd.DataFrame(out)
