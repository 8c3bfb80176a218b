"""Infection onsets and tracks: VisCy's ``align_tracks`` and its trajectory extraction.

``align_tracks`` (``dynaclr.pseudotime.alignment``, commit 4b62365):

1. Keep the rows whose ``fov_name`` contains one of the patterns (substring, not regex).
2. Lineages from ``parent_track_id`` (−1 = root; a parent outside the FOV also makes a root): every branch from
   a root to a leaf; each branch with an infected row gives all its tracks ``t_perturb = min t`` of its infected
   rows (a track on two branches keeps the later branch's value). Tracks on no infected branch: their own
   earliest infected ``t``.
3. Tracks without an onset are dropped, then tracks with fewer than ``min_track_timepoints`` rows; the rows are
   regrouped by track in sorted (fov_name, track_id) order; ``t_relative_minutes = (t − t_perturb)·interval``.

Trajectories (``_extract_track_trajectories``): the (fov_name, track_id) groups of obs in sorted order, rows by
``t`` (pandas' quicksort, as ``sort_values``), restricted to the keys of a tracking table, optionally cropped to
``t_perturb ± crop_window``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_dynaclr.errors import AnnotationError

KEY = ["fov_name", "track_id"]


def filter_fovs(df: pd.DataFrame, fov_pattern: str | list[str] | None) -> pd.DataFrame:
    """Rows whose ``fov_name`` contains any of the patterns (VisCy's ``filter_tracks``, substring match)."""
    if fov_pattern is None:
        return df.copy()
    patterns = [fov_pattern] if isinstance(fov_pattern, str) else list(fov_pattern)
    names = df["fov_name"].astype(str)
    keep = np.zeros(len(df), dtype=bool)
    for pattern in patterns:
        keep |= names.str.contains(pattern, regex=False).to_numpy()
    return df[keep].copy()


def _branches(root: int, children: dict[int, list[int]], seen: frozenset = frozenset()) -> list[list[int]]:
    if root in seen:  # a cycle: stop there
        return [[root]]
    kids = children.get(root)
    if not kids:
        return [[root]]
    return [[root, *branch] for kid in kids for branch in _branches(kid, children, seen | {root})]


def lineage_branches(df: pd.DataFrame) -> list[tuple[str, list[int]]]:
    """VisCy's ``identify_lineages(return_both_branches=True)``: ``(fov_name, [track ids from root to leaf])``."""
    out = []
    first = df.drop_duplicates(KEY, keep="first").set_index(KEY)["parent_track_id"].sort_index()
    for fov, parents in first.groupby(level=0, sort=True):
        parent_of = dict(zip(parents.index.get_level_values(1).tolist(), parents.to_numpy().tolist()))
        children: dict[int, list[int]] = {}
        for child, parent in parent_of.items():
            if parent != -1:
                children.setdefault(parent, []).append(child)
        for root in (t for t, p in parent_of.items() if p == -1 or p not in parent_of):
            out.extend((fov, branch) for branch in _branches(root, children))
    return out


def assign_t_perturb(df: pd.DataFrame, frame_interval_minutes: float, column: str, infected_value: str,
                     min_track_timepoints: int = 3) -> pd.DataFrame:
    """VisCy's ``assign_t_perturb`` on a tracking table that holds *column* (see the module)."""
    df = df.copy()
    if "parent_track_id" not in df.columns:
        df["parent_track_id"] = -1
    if column not in df.columns:
        raise AnnotationError(f"the tracking table has no column {column!r} to find infection onsets in")
    infected = (df[column] == infected_value).to_numpy()
    onset_of_track = df[infected].groupby(KEY, sort=True)["t"].min()
    onsets: dict[tuple, int] = {}
    in_lineage: set[tuple] = set()
    for fov, branch in lineage_branches(df):
        times = [onset_of_track.get((fov, tid)) for tid in branch]
        times = [t for t in times if t is not None]
        if not times:
            continue
        t0 = int(min(times))
        for tid in branch:
            onsets[(fov, tid)] = t0
            in_lineage.add((fov, tid))
    for key, t in onset_of_track.items():
        if key not in in_lineage:
            onsets[key] = int(t)
    index = pd.MultiIndex.from_frame(df[KEY])
    t_perturb = pd.Series(onsets, dtype="float64")
    if len(t_perturb):
        t_perturb.index = pd.MultiIndex.from_tuples(t_perturb.index, names=KEY)
        df["t_perturb"] = t_perturb.reindex(index).to_numpy()
    else:
        df["t_perturb"] = np.nan
    df = df.dropna(subset=["t_perturb"])
    if min_track_timepoints > 1:
        sizes = df.groupby(KEY, sort=True).size()
        valid = sizes[sizes >= min_track_timepoints].index
        df = df.set_index(KEY).loc[valid].reset_index()
    df["t_perturb"] = df["t_perturb"].astype(int)
    df["t_relative_minutes"] = (df["t"] - df["t_perturb"]) * frame_interval_minutes
    return df


def align_tracks(df: pd.DataFrame, frame_interval_minutes: float, source: str = "annotation",
                 infection_col: str = "infection_state", infected_value: str = "infected",
                 min_track_timepoints: int = 3, fov_pattern: str | list[str] | None = None) -> pd.DataFrame:
    """VisCy's ``align_tracks``: FOV filter, then lineage-aware ``t_perturb`` and ``t_relative_minutes``.
    *source* ``"prediction"`` reads ``predicted_<infection_col>``."""
    column = f"predicted_{infection_col}" if source == "prediction" else infection_col
    return assign_t_perturb(filter_fovs(df, fov_pattern), frame_interval_minutes, column, infected_value,
                            min_track_timepoints)


@dataclass
class Tracks:
    """Tracks of obs in VisCy's order: their keys, and per track the obs positions sorted by ``t``."""

    keys: list[tuple[str, int]]
    rows: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.keys)


def obs_tracks(obs: pd.DataFrame) -> Tracks:
    """Every (fov_name, track_id) group of *obs* in sorted order, each with its rows sorted by ``t``."""
    fov = obs["fov_name"].astype(str).to_numpy()
    tid = obs["track_id"].to_numpy()
    frame = pd.DataFrame({"fov_name": fov, "track_id": tid})
    codes = frame.groupby(KEY, sort=True).ngroup().to_numpy()
    t = obs["t"].to_numpy()
    order = np.lexsort((np.arange(len(obs)), codes))  # per group, rows in stored order (as pandas' groups)
    bounds = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1], True])
    keys, rows = [], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        pos = order[s:e]
        pos = pos[np.argsort(t[pos], kind="quicksort")]  # pandas sort_values("t")
        keys.append((str(fov[pos[0]]), int(tid[pos[0]])))
        rows.append(pos)
    return Tracks(keys, rows)


def select_tracks(tracks: Tracks, table: pd.DataFrame, min_rows: int, crop_window: int | None = None,
                  obs_t: np.ndarray | None = None) -> Tracks:
    """The tracks whose key has at least *min_rows* rows in *table* (VisCy's ``valid_keys``); with
    *crop_window*, each cropped to ``t_perturb ± crop_window`` (``t_perturb`` from *table*, ``t`` from *obs_t*);
    tracks left with fewer than *min_rows* rows are dropped."""
    sizes = table.groupby(KEY, sort=False).size()
    valid = {(str(f), int(t)) for (f, t), n in sizes.items() if n >= min_rows}
    onsets = {}
    if crop_window is not None:
        first = table.groupby(KEY, sort=False)["t_perturb"].first()
        onsets = {(str(f), int(t)): int(v) for (f, t), v in first.items()}
    keys, rows = [], []
    for key, pos in zip(tracks.keys, tracks.rows):
        if key not in valid:
            continue
        if crop_window is not None and key in onsets:
            tv = obs_t[pos]
            pos = pos[(tv >= onsets[key] - crop_window) & (tv <= onsets[key] + crop_window)]
        if len(pos) < min_rows:
            continue
        keys.append(key)
        rows.append(pos)
    return Tracks(keys, rows)
