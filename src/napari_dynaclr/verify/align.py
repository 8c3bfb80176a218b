"""Row alignment: which row of the prediction is which row of the reference.

Rows are matched on the obs columns ``(fov_name, track_id, t, id)`` both stores have -- never on obs names,
which VisCy's ``EmbeddingWriter`` repeats per batch. ``fov_name`` is compared without a leading ``/`` and the
numeric keys as integers (as floats when a side holds non-integral values); the k-th duplicate of a key on
one side is matched with the k-th on the other. :func:`align_rows` also reports the rows present on one side
only and whether the reference order differs from the prediction's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from napari_dynaclr.core.store import REQUIRED_OBS_COLUMNS
from napari_dynaclr.errors import StoreError

#: Rows are matched on these obs columns (those both stores have; fov_name, track_id, t are required).
#: ``experiment`` tells the samples of one cell apart in Bag-of-Channels stores (one row per channel).
KEY_COLUMNS = ("fov_name", "track_id", "t", "id", "experiment")
#: key columns compared as text (the others as numbers)
STRING_KEYS = ("fov_name", "experiment")
REQUIRED_KEYS = REQUIRED_OBS_COLUMNS


def json_value(v):
    """A numpy scalar as the plain Python value JSON takes (non-finite floats as None)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def key_frame(obs: pd.DataFrame, keys: Sequence[str], label: str) -> pd.DataFrame:
    """The key columns of *obs*, normalised for matching (fov_name without leading ``/``, numbers int64)."""
    out = {}
    for k in keys:
        col = obs[k]
        if k in STRING_KEYS:
            text = col.astype(str)
            out[k] = (text.str.lstrip("/") if k == "fov_name" else text).to_numpy(dtype=object)
            continue
        vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(vals).all():
            raise StoreError(f"{label}: obs column {k!r} holds missing or non-numeric values")
        out[k] = vals.astype(np.int64) if np.array_equal(vals, np.round(vals)) else vals
    frame = pd.DataFrame(out)
    for k in keys[1:]:
        if k not in STRING_KEYS and frame[k].dtype != np.int64:
            frame[k] = frame[k].astype(np.float64)
    return frame


@dataclasses.dataclass
class RowsResult:
    key_columns: list[str]
    n_prediction: int
    n_reference: int
    n_common: int
    n_only_in_prediction: int
    n_only_in_reference: int
    duplicate_keys_prediction: int
    duplicate_keys_reference: int
    order_differs: bool
    first_order_difference: dict | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def align_rows(pred_obs: pd.DataFrame, ref_obs: pd.DataFrame, keys: Sequence[str] | None = None,
               labels=("prediction", "reference")):
    """Match rows on the key columns (the k-th duplicate of a key on one side with the k-th on the other).

    Returns ``(pred_idx, ref_idx, only_pred, only_ref, rows)``: aligned row positions in prediction
    order, the unmatched rows of each side (key columns + ``row``), and a :class:`RowsResult`.
    """
    if keys is None:
        keys = [k for k in KEY_COLUMNS if k in pred_obs.columns and k in ref_obs.columns]
    keys = list(keys)
    for k in REQUIRED_KEYS:
        if k not in keys:
            raise StoreError(f"cannot align rows: obs column {k!r} is missing")
    kp = key_frame(pred_obs, keys, labels[0])
    kr = key_frame(ref_obs, keys, labels[1])
    for k in keys[1:]:  # one side integral, the other not: compare as floats
        if k not in STRING_KEYS and kp[k].dtype != kr[k].dtype:
            kp[k] = kp[k].astype(np.float64)
            kr[k] = kr[k].astype(np.float64)
    kp["_dup"] = kp.groupby(keys, sort=False).cumcount()
    kr["_dup"] = kr.groupby(keys, sort=False).cumcount()
    kp["_i"] = np.arange(len(kp))
    kr["_j"] = np.arange(len(kr))
    m = kp.merge(kr, on=keys + ["_dup"], how="outer", indicator=True, sort=False)
    both = m[m["_merge"] == "both"].sort_values("_i", kind="stable")
    pred_idx = both["_i"].to_numpy(np.int64)
    ref_idx = both["_j"].to_numpy(np.int64)
    only_pred = m[m["_merge"] == "left_only"].sort_values("_i")
    only_ref = m[m["_merge"] == "right_only"].sort_values("_j")
    only_pred = only_pred[keys].assign(row=only_pred["_i"].astype(np.int64)).reset_index(drop=True)
    only_ref = only_ref[keys].assign(row=only_ref["_j"].astype(np.int64)).reset_index(drop=True)

    steps = np.diff(ref_idx)
    bad = np.flatnonzero(steps <= 0)
    first = None
    if len(bad):
        k = int(bad[0]) + 1
        first = {
            "cell": {c: json_value(both[c].iloc[k]) for c in keys},
            "prediction_row": int(pred_idx[k]),
            "reference_row": int(ref_idx[k]),
        }
    rows = RowsResult(
        key_columns=keys,
        n_prediction=len(kp),
        n_reference=len(kr),
        n_common=len(pred_idx),
        n_only_in_prediction=len(only_pred),
        n_only_in_reference=len(only_ref),
        duplicate_keys_prediction=int((kp["_dup"] > 0).sum()),
        duplicate_keys_reference=int((kr["_dup"] > 0).sum()),
        order_differs=bool(len(bad)),
        first_order_difference=first,
    )
    return pred_idx, ref_idx, only_pred, only_ref, rows
