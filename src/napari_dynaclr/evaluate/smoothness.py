"""Temporal smoothness of embeddings: VisCy's statistics, per store, per group column and per track.

VisCy's ``compute_embeddings_smoothness`` (commit 4b62365, ``time_offsets=[1]``):

1. ``Z = StandardScaler().fit_transform(X)`` over the rows passed (float32 in, float32 out).
2. Adjacent distances: tracks = ``groupby(["fov_name", "track_id"])`` (sorted keys); within a track the rows in
   **stored obs order**, pairs ``(i, i+k)`` for each offset ``k``; tracks with one row give none.
3. Random distances: as many pairs as adjacent ones, drawn with the legacy global RNG at seed 42
   (``np.random.seed(42)``), in batches of 10,000: ``i = randint(0, N, b)``, ``j = randint(0, N, b)``, redraw ``j``
   where ``i == j`` until none is left.
4. Distances as ``scipy.spatial.distance.cdist`` (``cosine`` = 1 − cos, or ``euclidean``) in float64.
5. Peaks: ``gaussian_kde`` on 1,000 points from min to max, highest ``find_peaks`` peak above 10 % of the maximum.
6. Statistics: ``adjacent_frame_{mean,std,median,peak}``, ``random_frame_{mean,std,median,peak}``,
   ``smoothness_score = mean(adjacent) / mean(random)`` (lower = smoother), ``dynamic_range = peak(random) −
   peak(adjacent)`` (higher = better).

Deliberate difference (documented in docs/viscy_compat.md): by default (``order="time"``) the rows of a track are
sorted by ``t`` (stable) before pairing, so a store whose rows are not in time order still pairs consecutive
frames; ``order="stored"`` reproduces VisCy exactly. The random pairs index stored positions in both orders.
Our own addition: a per-track score ``mean(adjacent distances of the track) / mean(random distances)``.

Rows whose embedding holds NaN/Inf are left out first (VisCy's scaler would turn them into NaN distances).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr.errors import ConfigError, StoreError
from napari_dynaclr.evaluate.matrix import embedding_matrix

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

STAT_NAMES = (
    "adjacent_frame_mean", "adjacent_frame_std", "adjacent_frame_median", "adjacent_frame_peak",
    "random_frame_mean", "random_frame_std", "random_frame_median", "random_frame_peak",
    "smoothness_score", "dynamic_range",
)
METRICS = ("cosine", "euclidean")
ORDERS = ("time", "stored")
TRACK_KEY = ["fov_name", "track_id"]
RANDOM_BATCH = 10_000
#: the steps :func:`compute_smoothness` reports to its ``progress`` callback
STEPS = ("z-score", "adjacent distances", "random distances", "KDE peaks")
_CHUNK = 8192


@dataclass
class SmoothnessResult:
    """What :func:`compute_smoothness` returns. Row positions index the rows passed in (stored order)."""

    stats: dict[str, float]
    adjacent: np.ndarray          # adjacent-frame distances, in VisCy's order (tracks sorted, then pairs)
    random: np.ndarray            # random-pair distances
    adjacent_pairs: np.ndarray    # (n, 2) row positions of each adjacent pair
    random_pairs: np.ndarray      # (n, 2) row positions of each random pair
    tracks: pd.DataFrame          # per track: fov_name, track_id, n_rows, n_pairs, adjacent_mean, smoothness_score
    row_track: np.ndarray         # per row passed: its row in ``tracks`` (−1 for a row left out)
    metric: str = "cosine"
    order: str = "time"
    n_rows: int = 0
    notes: list[str] = field(default_factory=list)

    def per_row_score(self) -> np.ndarray:
        """Each row's track score (``tracks.smoothness_score``), NaN for tracks without a pair: a features column."""
        scores = self.tracks["smoothness_score"].to_numpy(dtype=float)
        out = np.full(len(self.row_track), np.nan)
        ok = self.row_track >= 0
        out[ok] = scores[self.row_track[ok]]
        return out

    def to_dict(self, distributions: bool = False) -> dict:
        out = {**{k: float(self.stats[k]) for k in STAT_NAMES}, "n_adjacent": int(len(self.adjacent)),
               "n_random": int(len(self.random)), "n_rows": int(self.n_rows), "n_tracks": int(len(self.tracks)),
               "metric": self.metric, "order": self.order}
        if self.notes:
            out["notes"] = list(self.notes)
        if distributions:
            out["adjacent_frame_distribution"] = self.adjacent.tolist()
            out["random_frame_distribution"] = self.random.tolist()
        return out


def find_distribution_peak(data: np.ndarray, pool=None) -> float:
    """VisCy's ``find_distribution_peak(method="kde_robust")``. With a thread *pool* the KDE is evaluated on chunks
    of the 1,000-point grid in parallel (scipy releases the GIL; each point's sum is computed as without chunks,
    so the values are the same bit for bit)."""
    from scipy.signal import find_peaks
    from scipy.stats import gaussian_kde

    if len(data) < 2 or np.ptp(data) == 0:  # no spread: VisCy's KDE raises; the peak is the value itself
        return float(np.median(data))
    kde = gaussian_kde(data)
    x = np.linspace(np.min(data), np.max(data), 1000)
    if pool is None or len(data) < 20_000:
        values = kde(x)
    else:
        values = np.concatenate(list(pool.map(kde, np.array_split(x, 8))))
    peaks, props = find_peaks(values, height=np.max(values) * 0.1)
    if len(peaks) == 0:
        return float(x[np.argmax(values)])
    return float(x[peaks[np.argmax(props["peak_heights"])]])


def pair_distances(Z: np.ndarray, i: np.ndarray, j: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """``cdist(Z[i], Z[j])`` on the diagonal, i.e. the distance of each pair, in float64 and in chunks."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), _CHUNK):
        a = Z[i[s:s + _CHUNK]].astype(np.float64)
        b = Z[j[s:s + _CHUNK]].astype(np.float64)
        if metric == "euclidean":
            d = a - b
            out[s:s + _CHUNK] = np.sqrt(np.einsum("ij,ij->i", d, d))
        else:
            dot = np.einsum("ij,ij->i", a, b)
            na = np.sqrt(np.einsum("ij,ij->i", a, a))
            nb = np.sqrt(np.einsum("ij,ij->i", b, b))
            with np.errstate(invalid="ignore", divide="ignore"):  # a zero row: NaN, refused by the caller
                out[s:s + _CHUNK] = np.clip(1.0 - dot / (na * nb), 0.0, 2.0)
    return out


def random_pairs(n_rows: int, n_pairs: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """VisCy's random pairs: legacy ``RandomState(seed)`` (what ``np.random.seed(42)`` seeds), batches of 10,000,
    ``j`` redrawn where it equals ``i``. The global RNG is not touched."""
    rs = np.random.RandomState(seed)
    iis, jjs = [], []
    for start in range(0, n_pairs, RANDOM_BATCH):
        b = min(RANDOM_BATCH, n_pairs - start)
        i = rs.randint(0, n_rows, size=b)
        j = rs.randint(0, n_rows, size=b)
        same = i == j
        while same.any():
            j[same] = rs.randint(0, n_rows, size=int(same.sum()))
            same = i == j
        iis.append(i)
        jjs.append(j)
    if not iis:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(iis).astype(np.int64), np.concatenate(jjs).astype(np.int64)


def _adjacent_pairs(obs: pd.DataFrame, order: str, time_offsets: Sequence[int]):
    """(i, j, track code per pair, track code per row, track table) in VisCy's pair order."""
    needed = [*TRACK_KEY, *(["t"] if order == "time" else [])]
    missing = [c for c in needed if c not in obs.columns]
    if missing:
        raise StoreError(f"obs lacks column(s) {', '.join(missing)} needed for smoothness")
    obs = obs.reset_index(drop=True)
    # rows without a fov_name/track_id (or t, to sort by time) belong to no track: VisCy's groupby drops them
    keyed = obs[needed].notna().all(axis=1).to_numpy()
    grouped = obs.groupby(TRACK_KEY, sort=True, observed=True)
    codes = grouped.ngroup().to_numpy(dtype=float, na_value=np.nan)
    codes = np.where(keyed & np.isfinite(codes), np.nan_to_num(codes, nan=-1.0), -1).astype(np.int64)
    pos = np.arange(len(obs))
    if order == "time":
        row_order = np.lexsort((pos, obs["t"].to_numpy(), codes))
    else:
        row_order = np.lexsort((pos, codes))
    sorted_codes = codes[row_order]
    ii, jj, gg, kk = [], [], [], []
    for rank, k in enumerate(time_offsets):
        if k < 1:
            raise ConfigError(f"time offsets must be >= 1, got {k}")
        same = ((sorted_codes[:-k] == sorted_codes[k:]) & (sorted_codes[k:] >= 0) if k < len(row_order)
                else np.zeros(0, bool))
        ii.append(row_order[:-k][same])
        jj.append(row_order[k:][same])
        gg.append(sorted_codes[:-k][same])
        kk.append(np.full(int(same.sum()), rank))
    i, j, g, kr = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (ii, jj, gg, kk))
    # VisCy loops tracks, then offsets, then positions: a stable sort by (track, offset) gives that order
    perm = np.lexsort((kr, g))
    table = grouped.size().reset_index(name="n_rows")
    table["fov_name"] = table["fov_name"].astype(str)
    return i[perm], j[perm], g[perm], codes, table


def compute_smoothness(X: np.ndarray, obs: pd.DataFrame, metric: str = "cosine", order: str = "time",
                       time_offsets: Sequence[int] = (1,), seed: int = 42,
                       progress: Callable[[str], None] | None = None) -> SmoothnessResult:
    """VisCy's smoothness statistics for the rows of *X* (see the module), with both distance distributions and a
    per-track table. *order*: ``"time"`` (rows of a track sorted by ``t``) or ``"stored"`` (VisCy's order).
    *progress*: called with the name of each of the :data:`STEPS` when it is done.
    Raises :class:`ConfigError` for an unknown metric/order and when no track has two rows."""
    from sklearn.preprocessing import StandardScaler

    if metric not in METRICS:
        raise ConfigError(f"unknown distance metric {metric!r}; use one of {', '.join(METRICS)}")
    if order not in ORDERS:
        raise ConfigError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    X = embedding_matrix(X)
    if len(X) != len(obs):
        raise ConfigError(f"X has {len(X)} rows but obs has {len(obs)}")
    notes = []
    finite = np.isfinite(X).all(axis=1)
    kept = np.flatnonzero(finite)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} rows with NaN/Inf embeddings were left out")
        X, obs = X[finite], obs.iloc[kept]
    i, j, g, codes, table = _adjacent_pairs(obs, order, time_offsets)
    keyless = int((codes < 0).sum())
    if keyless:
        notes.append(f"{keyless} rows without a fov_name/track_id{'/t' if order == 'time' else ''} belong to no "
                     "track: left out of the adjacent pairs (kept for the random pairs, as VisCy's groupby does)")
    if len(i) == 0:
        raise ConfigError("no track has two or more rows: there are no adjacent frames to compare")
    if not (np.ptp(X, axis=0) > 0).any():
        raise StoreError(f"the embeddings are constant: all {len(X)} rows of X are identical, so every distance is 0 "
                         "(euclidean) or undefined (cosine); smoothness cannot be measured")
    done = progress or (lambda _step: None)
    Z = StandardScaler().fit_transform(X)
    done(STEPS[0])
    adjacent = pair_distances(Z, i, j, metric)
    done(STEPS[1])
    ri, rj = random_pairs(len(Z), len(adjacent), seed)
    rand = pair_distances(Z, ri, rj, metric)
    bad = int((~np.isfinite(adjacent)).sum() + (~np.isfinite(rand)).sum())
    if bad:  # a z-scored row of zeros (a row equal to the column means) has no direction
        raise StoreError(f"{bad} of {len(adjacent) + len(rand)} {metric} distances are undefined: some embeddings "
                         "are all 0 once z-scored (equal to the mean of every column); use --metric euclidean")
    done(STEPS[2])
    a_peak, r_peak = _peaks(adjacent, rand)
    done(STEPS[3])
    stats = {
        "adjacent_frame_mean": float(np.mean(adjacent)),
        "adjacent_frame_std": float(np.std(adjacent)),
        "adjacent_frame_median": float(np.median(adjacent)),
        "adjacent_frame_peak": float(a_peak),
        "random_frame_mean": float(np.mean(rand)),
        "random_frame_std": float(np.std(rand)),
        "random_frame_median": float(np.median(rand)),
        "random_frame_peak": float(r_peak),
        "smoothness_score": float(np.mean(adjacent) / np.mean(rand)),
        "dynamic_range": float(r_peak - a_peak),
    }
    n_tracks = len(table)
    n_pairs = np.bincount(g, minlength=n_tracks)
    sums = np.bincount(g, weights=adjacent, minlength=n_tracks)
    with np.errstate(invalid="ignore", divide="ignore"):
        track_mean = np.where(n_pairs > 0, sums / np.maximum(n_pairs, 1), np.nan)
    table["n_pairs"] = n_pairs
    table["adjacent_mean"] = track_mean
    table["smoothness_score"] = track_mean / stats["random_frame_mean"]
    row_track = np.full(len(finite), -1, dtype=np.int64)
    row_track[kept] = codes
    return SmoothnessResult(stats=stats, adjacent=adjacent, random=rand, adjacent_pairs=np.column_stack([kept[i],
                            kept[j]]), random_pairs=np.column_stack([kept[ri], kept[rj]]), tracks=table,
                            row_track=row_track, metric=metric, order=order, n_rows=int(len(finite)), notes=notes)


def _peaks(adjacent: np.ndarray, rand: np.ndarray) -> tuple[float, float]:
    """Both KDE peaks; on large distributions evaluated by a few threads (identical values)."""
    if len(adjacent) < 20_000:
        return find_distribution_peak(adjacent), find_distribution_peak(rand)
    import os
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        return find_distribution_peak(adjacent, pool), find_distribution_peak(rand, pool)


def smoothness_by_group(X: np.ndarray, obs: pd.DataFrame, group_by: str, metric: str = "cosine",
                        order: str = "time", time_offsets: Sequence[int] = (1,), seed: int = 42,
                        progress: Callable[[str], None] | None = None) -> dict[str, SmoothnessResult]:
    """:func:`compute_smoothness` separately for each value of the obs column *group_by* (in ``unique()`` order, as
    VisCy's ``evaluate-smoothness`` does per ``marker``); the scaler is fitted per group. Groups without a track of
    two rows are left out (with a ``progress`` message). Raises :class:`ConfigError` for a missing column."""
    import pandas as pd

    if group_by not in obs.columns:
        raise ConfigError(f"obs has no column {group_by!r} to group by (columns: "
                          f"{', '.join(map(str, obs.columns[:12]))})")
    X = embedding_matrix(X)
    values = obs[group_by]
    out: dict[str, SmoothnessResult] = {}
    skipped = []
    failed: StoreError | None = None
    for value in pd.unique(values.to_numpy()):
        mask = (values == value).to_numpy() if not pd.isna(value) else values.isna().to_numpy()
        try:
            out[str(value)] = compute_smoothness(X[mask], obs[mask], metric, order, time_offsets, seed)
        except ConfigError:
            skipped.append(str(value))
        except StoreError as exc:  # e.g. a group whose embeddings are all the same
            skipped.append(f"{value} ({exc})")
            failed = failed or exc
        if progress is not None:
            progress(str(value))
    if not out:
        if failed is not None:
            raise StoreError(f"no {group_by} group can be measured; first: {failed}")
        raise ConfigError(f"no {group_by} group has a track with two or more rows")
    if skipped:
        for res in out.values():
            res.notes.append(f"groups without adjacent frames left out: {', '.join(skipped)}")
    return out
