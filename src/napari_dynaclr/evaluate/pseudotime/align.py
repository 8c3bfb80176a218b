"""Warping tracks onto a template: VisCy's ``dtw_align_tracks``, ``alignment_results_to_dataframe`` and
``classify_response_groups``.

Per track (commit 4b62365): z-score with the template's statistics, PCA, L2 per row; then

- subsequence mode (default): dtaidistance's ``SubsequenceAlignment`` best match (every template position used,
  the query's start and end free, penalty 0.1 on non-diagonal steps); ``dtw_cost = sqrt(cost)/T``;
- global mode: ``psi = min(psi or T//2, n−1, T−1)``, dtaidistance's ``warping_paths`` and ``best_path`` from the
  last cell, the cost read one diagonal step before the path's end (as VisCy reads it);
- ``length_normalized_cost = dtw_cost / len(path)``; ``path_skew`` = mean L1 distance of the path to the straight
  line between its ends, over ``max(T, n)``;
- pseudotime of a frame = the last template position the path maps it to, over ``T − 1``; subsequence mode:
  frames before the match 0 (``pre``), after it 1 (``post``); ``warping_speed`` = central difference;
- propagated labels: the template's class fractions through the path (subsequence: pre/post pinned to the first
  and last template positions).

The query index counts rows, not ``t``: a track with missing frames is warped as if contiguous (as VisCy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_dynaclr.errors import Cancelled, ConfigError
from napari_dynaclr.evaluate.pseudotime import dtw
from napari_dynaclr.evaluate.pseudotime.onsets import obs_tracks, select_tracks
from napari_dynaclr.evaluate.pseudotime.template import Template

_BATCH = 1024  # tracks aligned per step (progress and cancel between steps)


@dataclass
class TrackAlignment:
    """VisCy's ``AlignmentResult`` for one track."""

    cell_uid: str
    dataset_id: str
    fov_name: str
    track_id: int
    timepoints: np.ndarray
    pseudotime: np.ndarray
    dtw_cost: float
    length_normalized_cost: float
    path_skew: float
    warping_path: np.ndarray
    warping_speed: np.ndarray
    propagated_labels: dict[str, dict[str, np.ndarray]] | None
    alignment_region: np.ndarray


def _last_position(path: np.ndarray, n: int) -> np.ndarray:
    """Per query row, the template position of its last path cell (−1 where the path never reaches it)."""
    pos = np.full(n, -1, dtype=np.int64)
    q = path[:, 1]
    inside = q < n
    pos[q[inside]] = path[inside, 0]  # query indices never decrease along a path: the last write is the last cell
    return pos


def _skew(path: np.ndarray, t_len: int, n: int) -> float:
    if len(path) >= 2 and t_len > 1 and n > 1:
        k = len(path)
        ideal_t = np.linspace(path[0, 0], path[-1, 0], k)
        ideal_q = np.linspace(path[0, 1], path[-1, 1], k)
        dev = np.abs(path[:, 0] - ideal_t) + np.abs(path[:, 1] - ideal_q)
        return float(dev.mean() / max(t_len, n))
    return 0.0


def _speed(pt: np.ndarray) -> np.ndarray:
    n = len(pt)
    speed = np.zeros(n)
    if n > 1:
        speed[0] = pt[1] - pt[0]
        speed[-1] = pt[-1] - pt[-2]
        speed[1:-1] = (pt[2:] - pt[:-2]) / 2
    return speed


def _forward_fill(values: np.ndarray, missing: np.ndarray, first: int, last: int) -> None:
    for i in range(first + 1, last + 1):
        if missing[i]:
            values[i] = values[i - 1]


def _track_result(key, dataset_id, timepoints, path, cost, t_len, subsequence, labels) -> TrackAlignment:
    n = len(timepoints)
    fov, tid = key
    lnc = float(cost) / float(len(path)) if len(path) > 0 and np.isfinite(cost) else float("inf")
    pos = _last_position(path, n)
    matched = pos >= 0
    pseudotime = np.zeros(n)
    region = np.full(n, "aligned", dtype=object)
    first = last = None
    if subsequence and t_len > 1:
        if matched.any():
            first = int(np.argmax(matched))
            last = n - 1 - int(np.argmax(matched[::-1]))
            inner = np.arange(first, last + 1)
            ok = inner[matched[inner]]
            pseudotime[ok] = pos[ok] / (t_len - 1)
            _forward_fill(pseudotime, ~matched, first, last)
            pseudotime[last + 1:] = 1.0
            region[:first] = "pre"
            region[last + 1:] = "post"
        else:
            region[:] = "pre"
    elif t_len > 1:
        pseudotime = np.where(matched, pos, 0) / (t_len - 1)
    propagated = None
    if labels is not None:
        propagated = {}
        for col, classes in labels.items():
            out = {}
            for cls, tl in classes.items():
                values = np.full(n, np.nan)
                use = matched & (pos < len(tl))
                values[use] = tl[pos[use]]
                if subsequence and first is not None:
                    _forward_fill(values, np.isnan(values), first, last)
                    values[:first] = float(tl[0])
                    values[last + 1:] = float(tl[-1])
                out[cls] = values
            propagated[col] = out
    return TrackAlignment(cell_uid=f"{dataset_id}/{fov}/{tid}", dataset_id=dataset_id, fov_name=fov, track_id=tid,
                          timepoints=timepoints, pseudotime=pseudotime, dtw_cost=float(cost),
                          length_normalized_cost=lnc, path_skew=_skew(path, t_len, n), warping_path=path,
                          warping_speed=_speed(pseudotime), propagated_labels=propagated, alignment_region=region)


def _prepared(X: np.ndarray, rows: list[np.ndarray], prepare, buffer: np.ndarray | None
              ) -> tuple[dtw.Stack, np.ndarray | None]:
    """Every track of *rows* prepared, one after the other in *buffer* (or a new array when it is too small: a
    buffer used again spares the system the first touch of its pages); returns the stack and the buffer."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    if not len(rows):
        return dtw.Stack(np.zeros((0, 0)), lengths), buffer
    first = prepare(X[rows[0]])
    total = int(lengths.sum())
    if buffer is None or len(buffer) < total or buffer.shape[1] != first.shape[1]:
        buffer = np.empty((total, first.shape[1]))
    frames = buffer[:total]
    frames[:len(first)] = first
    at = len(first)
    for r in rows[1:]:
        prepare(X[r], out=frames[at:at + len(r)])
        at += len(r)
    return dtw.Stack(frames, lengths), buffer


def align_tracks_to_template(X: np.ndarray, obs: pd.DataFrame, tracking: pd.DataFrame, template: Template,
                             dataset_id: str, min_track_timepoints: int = 3, psi: int | None = None,
                             subsequence: bool = True, progress: Callable[[int, int], None] | None = None,
                             cancel: Callable[[], bool] | None = None) -> list[TrackAlignment]:
    """VisCy's ``dtw_align_tracks`` (see the module): every track of *tracking* with at least
    *min_track_timepoints* rows, in sorted (fov_name, track_id) order. *progress*: ``(tracks done, total)``.
    Raises :class:`ConfigError` for a track that no segment of two frames matches (dtaidistance raises there)."""
    tracks = select_tracks(obs_tracks(obs), tracking, min_track_timepoints)
    t_obs = obs["t"].to_numpy()
    t_len = len(template)
    prepare = template.preparer()
    results: list[TrackAlignment] = []
    buffer = None
    for s in range(0, len(tracks), _BATCH):
        if cancel is not None and cancel():
            raise Cancelled("alignment cancelled")
        keys, rows = tracks.keys[s:s + _BATCH], tracks.rows[s:s + _BATCH]
        processed, buffer = _prepared(X, rows, prepare, buffer)
        if subsequence:
            matches = dtw.subsequence_match(template.template, processed)
        else:
            limit = [min(n - 1, t_len - 1) for n in processed.lengths]
            psis = [min(psi, m) if psi is not None else min(t_len // 2, m) for m in limit]
            matches = dtw.global_match(template.template, processed, psis)
        for key, r, match in zip(keys, rows, matches):
            if match is None:
                raise ConfigError(f"track {key[0]} {key[1]} ({len(r)} frames) matches no segment of two frames of "
                                  f"the {t_len}-frame template; raise dtw_align_tracks.min_track_timepoints")
            results.append(_track_result(key, dataset_id, t_obs[r].astype(int), match[0], match[1], t_len,
                                         subsequence, template.labels))
        if progress is not None:
            progress(len(results), len(tracks))
    return results


def alignments_to_frame(results: list[TrackAlignment], time_calibration: np.ndarray | None = None
                        ) -> pd.DataFrame:
    """One row per frame (VisCy's ``alignment_results_to_dataframe`` without ``template_id``); label columns are
    ``propagated_{column without "_state"}_{class}_label``."""
    if not results:
        return pd.DataFrame()
    sizes = np.array([len(r.timepoints) for r in results])
    rep = lambda values: np.repeat(np.asarray(values, dtype=object), sizes)  # noqa: E731
    frame = pd.DataFrame({
        "cell_uid": rep([r.cell_uid for r in results]),
        "dataset_id": rep([r.dataset_id for r in results]),
        "fov_name": rep([r.fov_name for r in results]),
        "track_id": np.repeat([r.track_id for r in results], sizes).astype(np.int64),
        "t": np.concatenate([r.timepoints for r in results]).astype(np.int64),
        "pseudotime": np.concatenate([r.pseudotime for r in results]).astype(float),
        "dtw_cost": np.repeat([r.dtw_cost for r in results], sizes).astype(float),
        "length_normalized_cost": np.repeat([r.length_normalized_cost for r in results], sizes).astype(float),
        "path_skew": np.repeat([r.path_skew for r in results], sizes).astype(float),
        "warping_speed": np.concatenate([r.warping_speed for r in results]).astype(float),
        "alignment_region": np.concatenate([r.alignment_region for r in results]),
    })
    if results[0].propagated_labels is not None:
        for col, classes in results[0].propagated_labels.items():
            for cls in classes:
                name = f"propagated_{col.replace('_state', '')}_{str(cls).replace(' ', '_')}_label"
                frame[name] = np.concatenate([r.propagated_labels[col][cls] for r in results]).astype(float)
    if time_calibration is not None:
        t_len = len(time_calibration)
        frame["estimated_t_rel_minutes"] = np.interp(frame["pseudotime"].to_numpy() * (t_len - 1),
                                                     np.arange(t_len), time_calibration)
    return frame


def classify_response_groups(results: list[TrackAlignment], cost_percentile_threshold: float = 75.0,
                             speed_clustering_method: str = "quantile", speed_quantile: float = 0.5) -> pd.DataFrame:
    """VisCy's ``classify_response_groups``: ``non_responder`` above the cost percentile; the others split on
    their mean |warping speed| at the quantile (``early_responder`` ≥, ``late_responder`` <) or by 2-means."""
    df = pd.DataFrame({"cell_uid": [r.cell_uid for r in results], "dataset_id": [r.dataset_id for r in results],
                       "dtw_cost": [r.dtw_cost for r in results],
                       "mean_warping_speed": [float(np.mean(np.abs(r.warping_speed))) for r in results]})
    columns = ["cell_uid", "dataset_id", "response_group", "dtw_cost", "mean_warping_speed"]
    if len(df) == 0:
        return pd.DataFrame(columns=columns)
    threshold = np.percentile(df["dtw_cost"], cost_percentile_threshold)
    df["response_group"] = "non_responder"
    responder = df["dtw_cost"] <= threshold
    speeds = df.loc[responder, "mean_warping_speed"]
    if len(speeds):
        if speed_clustering_method == "quantile":
            cut = speeds.quantile(speed_quantile)
            df.loc[responder & (df["mean_warping_speed"] >= cut), "response_group"] = "early_responder"
            df.loc[responder & (df["mean_warping_speed"] < cut), "response_group"] = "late_responder"
        elif len(speeds) >= 2:
            from sklearn.cluster import KMeans

            values = speeds.to_numpy().reshape(-1, 1)
            labels = KMeans(n_clusters=2, random_state=42, n_init=10).fit_predict(values)
            fast = int(np.argmax([values[labels == c].mean() for c in range(2)]))
            df.loc[speeds.index, "response_group"] = np.where(labels == fast, "early_responder", "late_responder")
        else:
            df.loc[responder, "response_group"] = "early_responder"
    return df[columns]
