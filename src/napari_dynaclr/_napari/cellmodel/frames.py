"""Time and lineage in the cell table: the rows of each (FOV, t), a track's lineage and its trajectory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr._napari.cellmodel.table import categorical_codes, fov_mask

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)


class FrameIndex:
    """Rows of each (fov_name, t), precomputed once so a time step costs O(cells in that frame)."""

    def __init__(self, table: pd.DataFrame):
        # numbers only (a stable sort of (FOV code, t)): no Python string per row, no long hold of the GIL
        codes, names = categorical_codes(table["fov_name"])
        t = np.asarray(table["t"], dtype=np.int64)
        order = np.lexsort((t, codes))  # stable: each group's rows stay in table order
        fov, tt = codes[order], t[order]
        starts = np.flatnonzero(np.r_[True, (fov[1:] != fov[:-1]) | (tt[1:] != tt[:-1])])
        self._rows = {(str(names[fov[i]]), int(tt[i])): rows
                      for i, rows in zip(starts, np.split(order, starts[1:]), strict=True) if fov[i] >= 0}

    def rows(self, fov_name: str, t: int) -> np.ndarray:
        return self._rows.get((str(fov_name), int(t)), np.empty(0, dtype=np.int64))


def lineage_tracks(table: pd.DataFrame, fov_name: str, track_id: int) -> list[int]:
    """The track, its ancestors and its descendants (same FOV), parents before children."""
    sub = table[fov_mask(table, fov_name)]
    parents = sub.groupby("track_id")["parent_track_id"].first().to_dict()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(int(parent), []).append(int(child))
    if int(track_id) not in parents:
        return []
    chain = [int(track_id)]
    while parents.get(chain[0], -1) in parents and parents[chain[0]] not in chain:
        chain.insert(0, int(parents[chain[0]]))
    out, stack = list(chain), list(children.get(int(track_id), []))
    while stack:
        tid = stack.pop(0)
        if tid not in out:
            out.append(tid)
            stack.extend(children.get(tid, []))
    return out


def track_trajectory(table: pd.DataFrame, fov_name: str, track_id: int) -> list[np.ndarray]:
    """Branches (row-index arrays ordered by t) of a track's lineage, for drawing in embedding space.

    Each branch is one track's rows; a child branch starts at its parent's last row, so the
    polylines join at divisions.
    """
    sub = table[fov_mask(table, fov_name)]
    branches = []
    last_row: dict[int, int] = {}
    for tid in lineage_tracks(table, fov_name, track_id):
        rows = sub[sub["track_id"] == tid].sort_values("t")
        idx = rows.index.to_numpy(dtype=np.int64)
        if not len(idx):
            continue
        parent = int(rows["parent_track_id"].iloc[0])
        if parent in last_row:
            idx = np.concatenate([[last_row[parent]], idx])
        last_row[tid] = int(idx[-1])
        branches.append(idx)
    return branches
