"""Compare two embedding stores (ours or VisCy's) against a reproducibility contract.

``compare_stores(prediction, reference, contract)`` aligns the rows of two AnnData stores on
``(fov_name, track_id, t, id)`` -- never on obs names, which VisCy's ``EmbeddingWriter`` repeats per
batch -- and measures, for ``X`` and every ``obsm`` array both stores have:

* max and mean ``|Δ|``, ``|Δ|`` per cell (max) and per dimension (mean), a log-binned histogram of ``|Δ|``;
* Pearson r over all elements, and per cell; cosine similarity per cell;
* numpy's ``allclose`` rule ``|p - r| <= atol + rtol * |r|`` (``r`` = reference) and how many elements and
  cells break it.

The default :class:`Contract` is VisCy's GPU reproducibility contract (``test_inference_reproducibility``):
``atol=0.02, rtol=1e-2``, Pearson r >= 0.999 for features and projections, no missing rows. Reduced
coordinates (``X_pca``, ``X_umap``, ``X_phate`` ...) are reported but judged only with
``judge_reductions``. The obs columns both stores have beyond the keys (``parent_*``, ``z``, ``y``, ``x``)
must match exactly on aligned rows.

Stores given as paths are read lazily (obs in full, arrays chunk by chunk through zarr), so two stores of
10^6 cells need memory for a few chunks, not for both arrays. No Qt, no torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from napari_dynaclr.errors import DynaclrError, StoreError

#: Rows are matched on these obs columns (those both stores have; fov_name, track_id, t are required).
KEY_COLUMNS = ("fov_name", "track_id", "t", "id")
REQUIRED_KEYS = ("fov_name", "track_id", "t")
#: Other obs columns compared exactly on aligned rows when both stores have them.
OBS_COLUMNS = ("parent_track_id", "parent_id", "z", "y", "x")
#: obsm keys holding dimensionality reductions: reported, judged only with ``judge_reductions``.
REDUCTION_PREFIXES = ("X_pca", "X_umap", "X_phate", "X_tsne", "X_diffmap", "X_draw_graph")
#: |Δ| histogram: log-spaced bins from 1e-10 to 1e3 (10 per decade); exact zeros are counted apart.
HIST_EDGES = np.logspace(-10, 3, 131)
SCHEMA = "napari-dynaclr/verify"
SCHEMA_VERSION = 1

_CHUNK_ELEMENTS = 1 << 22  # rows per chunk = this / n_dims


@dataclasses.dataclass
class Contract:
    """What "reproduced" means. Defaults = VisCy's reproducibility contract."""

    atol: float = 0.02
    rtol: float = 1e-2
    min_pearson: float = 0.999
    allow_missing: bool = False
    judge_reductions: bool = False
    require_same_order: bool = False
    check_obs: bool = True

    def __post_init__(self):
        for name in ("atol", "rtol"):
            v = float(getattr(self, name))
            if not v >= 0:
                raise DynaclrError(f"--{name} must be >= 0 (got {v})")
            setattr(self, name, v)
        self.min_pearson = float(self.min_pearson)
        if not -1.0 <= self.min_pearson <= 1.0:
            raise DynaclrError(f"--min-pearson must lie in [-1, 1] (got {self.min_pearson})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def is_reduction(name: str) -> bool:
    return name.startswith(REDUCTION_PREFIXES)


# ----------------------------------------------------------------------------------------------- sources


class _Source:
    """One store: obs (in memory) and its 2-D arrays, read by rows on demand."""

    def __init__(self, label: str, obs: pd.DataFrame, arrays: dict[str, Any], x_holds: str):
        self.label = label
        self.obs = obs
        self.arrays = arrays  # name -> numpy array or zarr array (2-D)
        self.x_holds = x_holds  # "features" or "projections"

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self.arrays[name].shape)

    def rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        arr = self.arrays[name]
        if isinstance(arr, np.ndarray):
            return np.asarray(arr[idx], dtype=np.float64)
        if len(idx) == 0:
            return np.empty((0, arr.shape[1]))
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if hi - lo <= 2 * len(idx):  # contiguous enough: read the block, pick rows
            block = np.asarray(arr[lo:hi])
            return np.asarray(block[idx - lo], dtype=np.float64)
        order = np.argsort(idx, kind="stable")
        uniq, inverse = np.unique(idx[order], return_inverse=True)
        got = np.asarray(arr.oindex[uniq, :])
        out = np.empty((len(idx), arr.shape[1]), dtype=np.float64)
        out[order] = got[inverse]
        return out


def _x_holds(obsm_keys) -> str:
    return "projections" if "X_backbone" in obsm_keys and "X_projections" not in obsm_keys else "features"


def _check_obs(obs: pd.DataFrame, label: str) -> None:
    missing = [c for c in REQUIRED_KEYS if c not in obs.columns]
    if missing:
        raise StoreError(f"{label} is not an embedding store: obs lacks column(s) {', '.join(missing)}")


def _dense_2d(value, where: str):
    if hasattr(value, "toarray"):  # sparse
        value = value.toarray()
    if isinstance(value, pd.DataFrame):
        return None
    arr = np.asarray(value)
    if arr.ndim == 1:
        arr = arr[:, None]
    return arr if arr.ndim == 2 else None


def _source_from_anndata(adata, label: str) -> _Source:
    _check_obs(adata.obs, label)
    arrays: dict[str, Any] = {}
    if adata.X is not None:
        arrays["X"] = _dense_2d(adata.X, f"{label} X")
    for key in adata.obsm.keys():
        arr = _dense_2d(adata.obsm[key], f"{label} obsm[{key}]")
        if arr is not None:
            arrays[key] = arr
    arrays = {k: v for k, v in arrays.items() if v is not None}
    return _Source(label, adata.obs.copy(), arrays, _x_holds(adata.obsm.keys()))


def _source_from_path(path: Path) -> _Source:
    import zarr
    from anndata.io import read_elem

    label = str(path)
    if not path.exists():
        raise StoreError(f"embedding store not found: {path}")
    if not path.is_dir():
        raise StoreError(f"{path} is not an AnnData zarr store (it is a file, not a folder)")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:
        raise StoreError(f"{path} is not a readable zarr store ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if group.attrs.get("encoding-type") != "anndata":
        raise StoreError(f"{path} is not an AnnData store (no 'encoding-type: anndata' in its attributes)")
    try:
        obs = read_elem(group["obs"])
    except Exception as exc:
        raise StoreError(f"{path}: cannot read obs ({type(exc).__name__}: {str(exc)[:120]})") from exc
    _check_obs(obs, label)
    arrays: dict[str, Any] = {}
    try:
        if "X" in group:
            x = group["X"]
            arrays["X"] = x if isinstance(x, zarr.Array) and x.ndim == 2 else _dense_2d(read_elem(x), "X")
        obsm_keys: list[str] = []
        if "obsm" in group:
            for key, node in group["obsm"].members():
                obsm_keys.append(key)
                if isinstance(node, zarr.Array):
                    arrays[key] = node if node.ndim == 2 else _dense_2d(node[...], key)
                else:  # sparse matrix or data frame
                    arrays[key] = _dense_2d(read_elem(node), key)
    except Exception as exc:
        raise StoreError(f"{path}: cannot read its arrays ({type(exc).__name__}: {str(exc)[:120]})") from exc
    arrays = {k: v for k, v in arrays.items() if v is not None}
    for k, v in arrays.items():
        if v.shape[0] != len(obs):
            raise StoreError(f"{path}: {k} has {v.shape[0]} rows but obs has {len(obs)}")
    return _Source(label, obs, arrays, _x_holds(obsm_keys))


def _source(store, label: str | None) -> _Source:
    if isinstance(store, _Source):
        return store
    if isinstance(store, (str, Path)):
        return _source_from_path(Path(store))
    if hasattr(store, "obs") and hasattr(store, "obsm"):
        return _source_from_anndata(store, label or "<AnnData>")
    raise StoreError(f"cannot compare a {type(store).__name__}: give a store path or an AnnData")


# ------------------------------------------------------------------------------------------- alignment


def _key_frame(obs: pd.DataFrame, keys: Sequence[str], label: str) -> pd.DataFrame:
    out = {}
    for k in keys:
        col = obs[k]
        if k == "fov_name":
            out[k] = col.astype(str).str.lstrip("/").to_numpy(dtype=object)
            continue
        vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(vals).all():
            raise StoreError(f"{label}: obs column {k!r} holds missing or non-numeric values")
        out[k] = vals.astype(np.int64) if np.array_equal(vals, np.round(vals)) else vals
    frame = pd.DataFrame(out)
    for k in keys[1:]:
        if frame[k].dtype != np.int64:
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
    kp = _key_frame(pred_obs, keys, labels[0])
    kr = _key_frame(ref_obs, keys, labels[1])
    for k in keys[1:]:  # one side integral, the other not: compare as floats
        if kp[k].dtype != kr[k].dtype:
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
            "cell": {c: _py(both[c].iloc[k]) for c in keys},
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


# --------------------------------------------------------------------------------------------- metrics


@dataclasses.dataclass
class ArrayResult:
    """Differences of one array (``X`` or an obsm key) over the aligned rows."""

    name: str
    label: str
    shape_prediction: tuple
    shape_reference: tuple
    judged: bool
    max_abs: float
    mean_abs: float
    pearson: float
    pearson_cell_min: float
    cosine_min: float
    cosine_mean: float
    allclose: bool
    n_elements_outside: int
    n_cells_outside: int
    n_nonfinite_mismatch: int
    per_dim_mean_abs: np.ndarray
    hist_counts: np.ndarray
    hist_zeros: int
    failures: list[str]

    @property
    def passed(self) -> bool | None:
        """True/False when judged, None when only reported."""
        return (not self.failures) if self.judged else None

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "shape_prediction": list(self.shape_prediction),
            "shape_reference": list(self.shape_reference),
            "judged": self.judged,
            "passed": self.passed,
            "max_abs": _py(self.max_abs),
            "mean_abs": _py(self.mean_abs),
            "pearson": _py(self.pearson),
            "pearson_cell_min": _py(self.pearson_cell_min),
            "cosine_min": _py(self.cosine_min),
            "cosine_mean": _py(self.cosine_mean),
            "allclose": self.allclose,
            "n_elements_outside": self.n_elements_outside,
            "n_cells_outside": self.n_cells_outside,
            "n_nonfinite_mismatch": self.n_nonfinite_mismatch,
            "per_dim_mean_abs": [_py(v) for v in self.per_dim_mean_abs],
            "histogram": {
                "edges": [float(e) for e in HIST_EDGES],
                "counts": [int(c) for c in self.hist_counts],
                "zeros": int(self.hist_zeros),
            },
            "failures": list(self.failures),
        }


def _py(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _array_metrics(pred: _Source, ref: _Source, name: str, pred_idx, ref_idx, contract: Contract,
                   judged: bool, cells: dict, cancel: Callable[[], bool] | None = None) -> ArrayResult:
    n = len(pred_idx)
    d = pred.shape(name)[1]
    chunk = max(1, _CHUNK_ELEMENTS // max(d, 1))
    cell_max = np.zeros(n)
    cell_tol = np.zeros(n)
    cell_r = np.full(n, np.nan)
    cell_cos = np.full(n, np.nan)
    dim_sum = np.zeros(d)
    hist = np.zeros(len(HIST_EDGES) - 1, dtype=np.int64)
    zeros = 0
    total_abs = 0.0
    n_out = 0
    n_nonfinite = 0
    n_valid = 0
    shift_p = shift_r = None
    sp = sr = spp = srr = spr = 0.0
    for start in range(0, n, chunk):
        if cancel is not None and cancel():
            from napari_dynaclr.errors import Cancelled

            raise Cancelled("verification cancelled")
        stop = min(n, start + chunk)
        a = pred.rows(name, pred_idx[start:stop])
        b = ref.rows(name, ref_idx[start:stop])
        fa, fb = np.isfinite(a), np.isfinite(b)
        both = fa & fb
        # non-finite: equal NaN/inf on both sides counts as equal (assert_allclose's equal_nan)
        same_nonfinite = ~fa & ~fb & ((np.isnan(a) & np.isnan(b)) | (a == b))
        mismatch = ~both & ~same_nonfinite
        n_nonfinite += int(mismatch.sum())
        diff = np.where(both, np.abs(a - b), np.where(mismatch, np.inf, 0.0))
        limit = contract.atol + contract.rtol * np.abs(np.where(fb, b, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(diff == 0, 0.0, diff / limit)
        outside = diff > limit
        n_out += int(outside.sum())
        cell_max[start:stop] = diff.max(axis=1) if d else 0.0
        cell_tol[start:stop] = ratio.max(axis=1) if d else 0.0
        finite_diff = np.where(np.isfinite(diff), diff, 0.0)
        total_abs += float(finite_diff.sum())
        dim_sum += finite_diff.sum(axis=0)
        zeros += int((diff == 0).sum())
        hist += np.histogram(np.clip(diff[(diff > 0) & np.isfinite(diff)], HIST_EDGES[0], HIST_EDGES[-1]),
                             bins=HIST_EDGES)[0]
        hist[-1] += int(np.isinf(diff).sum())
        # Pearson over all elements (shifted sums, float64), on elements finite on both sides
        av, bv = np.where(both, a, 0.0), np.where(both, b, 0.0)
        if shift_p is None and both.any():
            shift_p, shift_r = float(a[both].mean()), float(b[both].mean())
        if shift_p is not None:
            ac, bc = np.where(both, a - shift_p, 0.0), np.where(both, b - shift_r, 0.0)
            sp += float(ac.sum()); sr += float(bc.sum())
            spp += float((ac * ac).sum()); srr += float((bc * bc).sum()); spr += float((ac * bc).sum())
            n_valid += int(both.sum())
        # per cell: Pearson across dimensions and cosine
        with np.errstate(divide="ignore", invalid="ignore"):
            am = av - av.mean(axis=1, keepdims=True)
            bm = bv - bv.mean(axis=1, keepdims=True)
            cell_r[start:stop] = (am * bm).sum(1) / np.sqrt((am * am).sum(1) * (bm * bm).sum(1))
            cell_cos[start:stop] = (av * bv).sum(1) / np.sqrt((av * av).sum(1) * (bv * bv).sum(1))
        rows_bad = ~both.all(axis=1)
        cell_r[start:stop][rows_bad] = np.nan
        cell_cos[start:stop][rows_bad] = np.nan
    if n_valid > 1:
        cov = spr - sp * sr / n_valid
        vp, vr = spp - sp * sp / n_valid, srr - sr * sr / n_valid
        pearson = cov / math.sqrt(vp * vr) if vp > 0 and vr > 0 else float("nan")
    else:
        pearson = float("nan")
    if n and d:
        max_abs = float(cell_max.max())
        mean_abs = total_abs / (n * d) if not n_nonfinite else float("inf")
        per_dim = dim_sum / n
    else:
        max_abs = mean_abs = float("nan")
        per_dim = np.zeros(d)
    label = name
    if name == "X":
        label = f"X ({pred.x_holds})"
    key = name
    cells[f"{key}:max_abs"] = cell_max
    cells[f"{key}:tol_ratio"] = cell_tol
    cells[f"{key}:pearson"] = cell_r
    cells[f"{key}:cosine"] = cell_cos
    allclose = n_out == 0 and n_nonfinite == 0
    failures = []
    if judged:
        if not allclose:
            failures.append(
                f"{name}: {n_out + n_nonfinite:,} of {n * d:,} values outside atol={contract.atol:g}, "
                f"rtol={contract.rtol:g} in {int((cell_tol > 1).sum()):,} cells (max |Δ| {max_abs:.3g})"
            )
        exact = max_abs == 0
        if not exact and not (pearson >= contract.min_pearson):
            failures.append(f"{name}: Pearson r {pearson:.6f} < {contract.min_pearson:g}")
    return ArrayResult(
        name=name,
        label=label,
        shape_prediction=pred.shape(name),
        shape_reference=ref.shape(name),
        judged=judged,
        max_abs=max_abs,
        mean_abs=mean_abs,
        pearson=pearson,
        pearson_cell_min=float(np.nanmin(cell_r)) if np.isfinite(cell_r).any() else float("nan"),
        cosine_min=float(np.nanmin(cell_cos)) if np.isfinite(cell_cos).any() else float("nan"),
        cosine_mean=float(np.nanmean(cell_cos)) if np.isfinite(cell_cos).any() else float("nan"),
        allclose=allclose,
        n_elements_outside=n_out + n_nonfinite,
        n_cells_outside=int((cell_tol > 1).sum()),
        n_nonfinite_mismatch=n_nonfinite,
        per_dim_mean_abs=per_dim,
        hist_counts=hist,
        hist_zeros=zeros,
        failures=failures,
    )


# ---------------------------------------------------------------------------------------------- report


@dataclasses.dataclass
class VerifyReport:
    """The result of :func:`compare_stores`. ``cells`` has one row per aligned cell (prediction order)."""

    prediction: str
    reference: str
    contract: Contract
    rows: RowsResult
    arrays: dict[str, ArrayResult]
    arrays_only_in_prediction: list[str]
    arrays_only_in_reference: list[str]
    arrays_not_comparable: dict[str, str]
    obs_compared: list[str]
    obs_mismatches: dict[str, int]
    cells: pd.DataFrame
    only_in_prediction: pd.DataFrame
    only_in_reference: pd.DataFrame
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def judged_arrays(self) -> list[str]:
        return [k for k, a in self.arrays.items() if a.judged]

    def worst_cells(self, n: int = 5, by: str = "tol_ratio") -> pd.DataFrame:
        """The *n* aligned cells with the largest *by* (``tol_ratio``, ``max_abs`` or ``<array>:<stat>``)."""
        if self.cells.empty or n <= 0:
            return self.cells.iloc[:0]
        return self.cells.sort_values(by, ascending=False, kind="stable").head(n)

    def to_dict(self, worst: int = 20, examples: int = 20) -> dict:
        def records(df: pd.DataFrame) -> list[dict]:
            return [{k: _py(v) for k, v in r.items()} for r in df.to_dict(orient="records")]

        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "passed": self.passed,
            "failures": list(self.failures),
            "prediction": self.prediction,
            "reference": self.reference,
            "contract": self.contract.to_dict(),
            "rows": {
                **self.rows.to_dict(),
                "only_in_prediction": records(self.only_in_prediction.head(examples)),
                "only_in_reference": records(self.only_in_reference.head(examples)),
            },
            "obs": {"compared": list(self.obs_compared), "mismatched_rows": dict(self.obs_mismatches)},
            "arrays": {k: a.to_dict() for k, a in self.arrays.items()},
            "arrays_only_in_prediction": list(self.arrays_only_in_prediction),
            "arrays_only_in_reference": list(self.arrays_only_in_reference),
            "arrays_not_comparable": dict(self.arrays_not_comparable),
            "worst_cells": records(self.worst_cells(worst)),
        }

    def to_json(self, worst: int = 20, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(worst=worst), indent=indent, allow_nan=False)

    def format(self, worst: int = 5) -> str:
        return format_report(self, worst=worst)


def compare_stores(prediction, reference, contract: Contract | None = None, *,
                   cancel: Callable[[], bool] | None = None) -> VerifyReport:
    """Compare *prediction* with *reference* (store paths or AnnData objects) under *contract*.

    Raises :class:`StoreError` (exit code 2) when a store is unreadable or the two are incompatible:
    no common rows, or a judged array (``X``, ``X_projections`` ...) with a different number of columns.
    """
    contract = contract or Contract()
    pred = _source(prediction, "prediction")
    ref = _source(reference, "reference")
    if pred.label == ref.label == "<AnnData>":
        pred.label, ref.label = "prediction", "reference"
    pred_idx, ref_idx, only_pred, only_ref, rows = align_rows(pred.obs, ref.obs, labels=(pred.label, ref.label))
    if rows.n_common == 0:
        raise StoreError(
            f"no common rows: none of the {rows.n_prediction} rows of {pred.label} matches one of the "
            f"{rows.n_reference} rows of {ref.label} on ({', '.join(rows.key_columns)})"
        )
    failures: list[str] = []
    # arrays
    names_p, names_r = list(pred.arrays), list(ref.arrays)
    common = sorted((k for k in names_p if k in ref.arrays), key=lambda k: (k != "X", is_reduction(k)))
    only_p = [k for k in names_p if k not in ref.arrays]
    only_r = [k for k in names_r if k not in pred.arrays]
    not_comparable: dict[str, str] = {}
    judged_names = []
    for k in common:
        judged = not is_reduction(k) or contract.judge_reductions
        sp, sr = pred.shape(k), ref.shape(k)
        if sp[1] != sr[1]:
            msg = f"{k} has {sp[1]} columns in {pred.label} but {sr[1]} in {ref.label}"
            if judged:
                raise StoreError(f"incompatible stores: {msg}")
            not_comparable[k] = msg
        elif judged:
            judged_names.append(k)
    if pred.x_holds != ref.x_holds and "X" in common:
        raise StoreError(
            f"incompatible stores: X holds {pred.x_holds} in {pred.label} but {ref.x_holds} in {ref.label}"
        )
    if not judged_names:
        raise StoreError(f"nothing to compare: {pred.label} and {ref.label} share no embedding array")
    for k in only_r:
        if not is_reduction(k) or contract.judge_reductions:
            failures.append(f"{k} is in the reference but not in the prediction")
    # rows
    if rows.n_only_in_prediction or rows.n_only_in_reference:
        msg = (f"rows present on one side only: {rows.n_only_in_reference:,} only in the reference, "
               f"{rows.n_only_in_prediction:,} only in the prediction")
        if not contract.allow_missing:
            failures.append(msg)
    if contract.require_same_order and rows.order_differs:
        failures.append("row order differs from the reference")
    # obs columns
    obs_cols = [c for c in OBS_COLUMNS if c in pred.obs.columns and c in ref.obs.columns]
    obs_mismatch = {}
    mismatch_any = np.zeros(len(pred_idx), dtype=bool)
    for c in obs_cols:
        a = pd.to_numeric(pred.obs[c], errors="coerce").to_numpy(np.float64)[pred_idx]
        b = pd.to_numeric(ref.obs[c], errors="coerce").to_numpy(np.float64)[ref_idx]
        bad = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        if bad.any():
            obs_mismatch[c] = int(bad.sum())
            mismatch_any |= bad
    if obs_mismatch and contract.check_obs:
        failures.append("obs columns differ on aligned rows: "
                        + ", ".join(f"{c} ({n:,} rows)" for c, n in obs_mismatch.items()))
    # per-cell table
    keys = rows.key_columns
    kp = _key_frame(pred.obs, keys, pred.label).iloc[pred_idx].reset_index(drop=True)
    cells: dict[str, Any] = {k: kp[k].to_numpy() for k in keys}
    for c in ("z", "y", "x"):
        src = ref.obs if c in ref.obs.columns else pred.obs if c in pred.obs.columns else None
        if src is not None:
            idx = ref_idx if src is ref.obs else pred_idx
            cells[c] = pd.to_numeric(src[c], errors="coerce").to_numpy(np.float64)[idx]
    cells["prediction_row"] = pred_idx
    cells["reference_row"] = ref_idx
    if obs_cols:
        cells["obs_mismatch"] = mismatch_any
    arrays: dict[str, ArrayResult] = {}
    for k in common:
        if k in not_comparable:
            continue
        res = _array_metrics(pred, ref, k, pred_idx, ref_idx, contract, k in judged_names, cells, cancel)
        arrays[k] = res
        failures.extend(res.failures)
    frame = pd.DataFrame(cells)
    judged_cols = [f"{k}:tol_ratio" for k in judged_names]
    frame["tol_ratio"] = frame[judged_cols].max(axis=1)
    frame["max_abs"] = frame[[f"{k}:max_abs" for k in judged_names]].max(axis=1)
    return VerifyReport(
        prediction=pred.label,
        reference=ref.label,
        contract=contract,
        rows=rows,
        arrays=arrays,
        arrays_only_in_prediction=only_p,
        arrays_only_in_reference=only_r,
        arrays_not_comparable=not_comparable,
        obs_compared=obs_cols,
        obs_mismatches=obs_mismatch,
        cells=frame,
        only_in_prediction=only_pred,
        only_in_reference=only_ref,
        failures=failures,
    )


# ------------------------------------------------------------------------------ helpers for the viewer


def _cell_keys(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame({"fov_name": frame["fov_name"].astype(str).str.lstrip("/").to_numpy(dtype=object)})
    for k in keys[1:]:
        out[k] = pd.to_numeric(frame[k], errors="coerce").to_numpy(np.float64)
    return out


def map_cell_values(report: VerifyReport, table: pd.DataFrame, column: str = "max_abs") -> np.ndarray:
    """``report.cells[column]`` for each row of *table* (any frame with fov_name/track_id/t[/id]); NaN
    for rows the report has no aligned cell for. Vectorised (a merge), for colouring a Points layer."""
    keys = [k for k in report.rows.key_columns if k in table.columns]
    if not all(k in keys for k in REQUIRED_KEYS):
        raise StoreError(f"the table lacks column(s) {', '.join(k for k in REQUIRED_KEYS if k not in keys)}")
    left = _cell_keys(table, keys)
    left["_pos"] = np.arange(len(left))
    right = _cell_keys(report.cells, keys)
    right["_v"] = report.cells[column].to_numpy(np.float64)
    right = right.drop_duplicates(keys, keep="first")
    m = left.merge(right, on=keys, how="left", sort=False).sort_values("_pos")
    return m["_v"].to_numpy(np.float64)


def find_cell(table: pd.DataFrame, fov_name: str, track_id, t, id=None) -> int | None:
    """Row position of a cell in *table* (fov_name/track_id/t[/id] columns), or None."""
    if not all(k in table.columns for k in REQUIRED_KEYS):
        return None
    mask = (table["fov_name"].astype(str).str.lstrip("/").to_numpy() == str(fov_name).lstrip("/"))
    mask &= pd.to_numeric(table["track_id"], errors="coerce").to_numpy() == float(track_id)
    mask &= pd.to_numeric(table["t"], errors="coerce").to_numpy() == float(t)
    if id is not None and "id" in table.columns and not (isinstance(id, float) and math.isnan(id)):
        with_id = mask & (pd.to_numeric(table["id"], errors="coerce").to_numpy() == float(id))
        if with_id.any():
            mask = with_id
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


# ------------------------------------------------------------------------------------------ formatting


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan" if v is not None and math.isnan(v) else ("inf" if v is not None else "-")
    return format(v, spec)


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_report(report: VerifyReport, worst: int = 5) -> str:
    c, r = report.contract, report.rows
    out = [
        f"prediction: {report.prediction} ({r.n_prediction:,} rows)",
        f"reference:  {report.reference} ({r.n_reference:,} rows)",
        f"contract:   atol={c.atol:g} rtol={c.rtol:g} min Pearson r={c.min_pearson:g}"
        + (" allow-missing" if c.allow_missing else "") + (" judge-reductions" if c.judge_reductions else ""),
        f"rows:       {r.n_common:,} aligned on ({', '.join(r.key_columns)}); "
        f"{r.n_only_in_reference:,} only in reference, {r.n_only_in_prediction:,} only in prediction; "
        f"order {'DIFFERS' if r.order_differs else 'same'}",
    ]
    if r.order_differs and r.first_order_difference:
        f = r.first_order_difference
        cell = " ".join(f"{k}={v}" for k, v in f["cell"].items())
        out.append(f"            first out-of-order cell: {cell} (prediction row {f['prediction_row']}, "
                   f"reference row {f['reference_row']})")
    if r.duplicate_keys_prediction or r.duplicate_keys_reference:
        out.append(f"            duplicate keys: {r.duplicate_keys_prediction} in prediction, "
                   f"{r.duplicate_keys_reference} in reference (matched in order of appearance)")
    for label, df in (("only in reference", report.only_in_reference),
                      ("only in prediction", report.only_in_prediction)):
        if len(df):
            shown = [" ".join(f"{k}={_py(v)}" for k, v in row.items() if k != "row")
                     for row in df.head(5).to_dict(orient="records")]
            out.append(f"  {label}: " + "; ".join(shown) + (f" (+{len(df) - 5} more)" if len(df) > 5 else ""))
    if report.obs_compared:
        out.append("obs:        " + ("identical " if not report.obs_mismatches else "DIFFER ")
                   + f"({', '.join(report.obs_compared)})"
                   + ("" if not report.obs_mismatches else ": " + ", ".join(
                       f"{k} in {n:,} rows" for k, n in report.obs_mismatches.items())))
    out.append("")
    header = ["array", "dims", "max |Δ|", "mean |Δ|", "Pearson r", "min cell r", "min cos", "outside: values/cells",
              "verdict"]
    rows = []
    for a in report.arrays.values():
        verdict = "reported" if not a.judged else ("PASS" if a.passed else "FAIL")
        rows.append([
            a.label, str(a.shape_prediction[1]), _fmt(a.max_abs), _fmt(a.mean_abs), _fmt(a.pearson, ".7f"),
            _fmt(a.pearson_cell_min, ".4f"), _fmt(a.cosine_min, ".4f"),
            f"{a.n_elements_outside:,}/{a.n_cells_outside:,}", verdict,
        ])
    out += _table(header, rows, right={1, 2, 3, 4, 5, 6, 7})
    for k, why in report.arrays_not_comparable.items():
        out.append(f"{k}: not compared ({why})")
    if report.arrays_only_in_prediction or report.arrays_only_in_reference:
        out.append(f"arrays only in prediction: {', '.join(report.arrays_only_in_prediction) or '-'}; "
                   f"only in reference: {', '.join(report.arrays_only_in_reference) or '-'}")
    if worst > 0 and len(report.cells):
        out.append("")
        out.append(f"worst {min(worst, len(report.cells))} cells (by |Δ| / (atol + rtol·|ref|)):")
        judged = report.judged_arrays
        keys = report.rows.key_columns
        header = keys + [f"{k} max|Δ|" for k in judged] + [f"{judged[0]} cos"] + ["tol ratio"]
        rows = []
        for rec in report.worst_cells(worst).to_dict(orient="records"):
            rows.append([str(_py(rec[k])) for k in keys]
                        + [_fmt(rec[f"{k}:max_abs"]) for k in judged]
                        + [_fmt(rec[f"{judged[0]}:cosine"], ".6f"), _fmt(rec["tol_ratio"], ".3g")])
        out += ["  " + s for s in _table(header, rows, right=set(range(1, len(header))))]
    out.append("")
    if report.passed:
        out.append(f"PASS: {', '.join(report.judged_arrays)} within the contract")
    else:
        out.append("FAIL:")
        out += [f"  - {f}" for f in report.failures]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- CLI


def contract_from_args(args) -> Contract:
    return Contract(
        atol=args.atol,
        rtol=args.rtol,
        min_pearson=args.min_pearson,
        allow_missing=bool(getattr(args, "allow_missing", False)),
        judge_reductions=bool(getattr(args, "judge_reductions", False)),
        require_same_order=bool(getattr(args, "same_order", False)),
    )


def cli_run(args) -> int:
    """``napari-dynaclr verify``: print the report; 0 pass, 1 fail; raise StoreError (→ 2) on bad input."""
    contract = contract_from_args(args)
    worst = int(getattr(args, "worst", 5) or 0)
    report = compare_stores(args.prediction, args.reference, contract)
    print(format_report(report, worst=worst))
    if getattr(args, "json", None) is not None:
        path = Path(args.json)
        try:
            path.write_text(report.to_json(worst=max(worst, 20)) + "\n")
        except OSError as exc:
            raise DynaclrError(f"cannot write {path}: {exc.strerror or exc}") from exc
        print(f"report written to {path}", file=sys.stderr)
    return 0 if report.passed else 1


__all__ = [
    "Contract", "VerifyReport", "ArrayResult", "RowsResult", "compare_stores", "align_rows", "format_report",
    "map_cell_values", "find_cell", "cli_run", "is_reduction", "HIST_EDGES", "KEY_COLUMNS",
]

