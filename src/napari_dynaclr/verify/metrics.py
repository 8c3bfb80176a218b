"""Per-array metrics: how far the prediction's ``X`` or ``obsm`` array is from the reference's, and the contract.

:func:`array_metrics` reads the aligned rows chunk by chunk and measures max and mean ``|Δ|``, ``|Δ|`` per
cell (max) and per dimension (mean), a log-binned histogram of ``|Δ|``, Pearson r over all elements and per
cell, cosine similarity per cell, and numpy's ``allclose`` rule ``|p - r| <= atol + rtol * |r|`` (``r`` =
reference) with how many elements and cells break it. A judged array fails whenever it holds NaN/Inf: on one
side only (or a different NaN/Inf on each side), and the same NaN/Inf on both sides too (NaN/Inf embeddings are
not a result: all-NaN against all-NaN compares nothing, and is said so). Equal NaN/Inf still count as equal in
the metrics (|Δ| 0), so the rest of the report describes the finite values.
The :class:`Contract` says what "reproduced" means; its defaults are VisCy's GPU reproducibility contract
(``test_inference_reproducibility``): ``atol=0.02, rtol=1e-2``, Pearson r >= 0.999, no missing rows.
Reductions (``X_pca``, ``X_umap`` ...) are measured but judged only with ``judge_reductions``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from napari_dynaclr.errors import Cancelled
from napari_dynaclr.verify.align import json_value
from napari_dynaclr.verify.contract import Contract
from napari_dynaclr.verify.sources import Source

#: obsm keys holding dimensionality reductions: reported, judged only with ``judge_reductions``.
REDUCTION_PREFIXES = ("X_pca", "X_umap", "X_phate", "X_tsne", "X_diffmap", "X_draw_graph")
#: |Δ| histogram: log-spaced bins from 1e-10 to 1e3 (10 per decade); exact zeros are counted apart.
HIST_EDGES = np.logspace(-10, 3, 131)

_CHUNK_ELEMENTS = 1 << 22  # rows per chunk = this / n_dims


def is_reduction(name: str) -> bool:
    """Whether obsm key *name* holds a dimensionality reduction (judged only with ``judge_reductions``)."""
    return name.startswith(REDUCTION_PREFIXES)


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
    n_nonfinite_prediction: int = 0  # NaN/Inf values in the prediction's aligned rows
    n_nonfinite_reference: int = 0
    n_nonfinite_both: int = 0  # the same NaN/Inf on both sides
    n_compared: int = 0  # values finite on both sides
    max_abs_value: float = float("nan")  # the largest |value| of either side (finite values compared)
    norm_ratio: float = float("nan")  # ||prediction|| / ||reference|| over the values compared
    notes: list[str] = dataclasses.field(default_factory=list)  # what the verdict does not say (not failures)

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
            "max_abs": json_value(self.max_abs),
            "mean_abs": json_value(self.mean_abs),
            "pearson": json_value(self.pearson),
            "pearson_cell_min": json_value(self.pearson_cell_min),
            "cosine_min": json_value(self.cosine_min),
            "cosine_mean": json_value(self.cosine_mean),
            "allclose": self.allclose,
            "n_elements_outside": self.n_elements_outside,
            "n_cells_outside": self.n_cells_outside,
            "n_nonfinite_mismatch": self.n_nonfinite_mismatch,
            "n_nonfinite_prediction": self.n_nonfinite_prediction,
            "n_nonfinite_reference": self.n_nonfinite_reference,
            "n_nonfinite_both": self.n_nonfinite_both,
            "n_compared": self.n_compared,
            "per_dim_mean_abs": [json_value(v) for v in self.per_dim_mean_abs],
            "histogram": {
                "edges": [float(e) for e in HIST_EDGES],
                "counts": [int(c) for c in self.hist_counts],
                "zeros": int(self.hist_zeros),
            },
            "failures": list(self.failures),
            "max_abs_value": json_value(self.max_abs_value),
            "norm_ratio": json_value(self.norm_ratio),
            "notes": list(self.notes),
        }


def array_metrics(pred: Source, ref: Source, name: str, pred_idx, ref_idx, contract: Contract,
                  judged: bool, cells: dict, cancel: Callable[[], bool] | None = None) -> ArrayResult:
    """Metrics of array *name* over the aligned rows ``pred_idx``/``ref_idx``, read in chunks.

    Adds the per-cell columns ``<name>:max_abs``, ``:tol_ratio``, ``:pearson`` and ``:cosine`` to *cells*;
    *judged* arrays get failures when outside *contract*. *cancel* is polled between chunks.
    """
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
    nf_pred = nf_ref = nf_both = 0  # NaN/Inf values: in the prediction, in the reference, equal on both
    only_pred = only_ref = 0  # NaN/Inf on one side, finite on the other
    cells_nf_pred = cells_nf_ref = cells_nf_both = 0
    shift_p = shift_r = None
    sp = sr = spp = srr = spr = 0.0
    top = 0.0  # max |value| of both sides, finite values compared
    sq_p = sq_r = 0.0  # squared norms of both sides, same values
    for start in range(0, n, chunk):
        if cancel is not None and cancel():
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
        nf_pred += int((~fa).sum())
        nf_ref += int((~fb).sum())
        nf_both += int(same_nonfinite.sum())
        only_pred += int((~fa & fb).sum())
        only_ref += int((fa & ~fb).sum())
        cells_nf_pred += int((~fa & fb).any(axis=1).sum()) if d else 0
        cells_nf_ref += int((fa & ~fb).any(axis=1).sum()) if d else 0
        cells_nf_both += int(same_nonfinite.any(axis=1).sum()) if d else 0
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, NaN: masked by both
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
        if av.size:
            top = max(top, float(np.abs(av).max()), float(np.abs(bv).max()))
            sq_p += float((av * av).sum())
            sq_r += float((bv * bv).sum())
        if shift_p is None and both.any():
            shift_p, shift_r = float(a[both].mean()), float(b[both].mean())
        if shift_p is not None:
            ac, bc = np.where(both, a - shift_p, 0.0), np.where(both, b - shift_r, 0.0)
            sp += float(ac.sum())
            sr += float(bc.sum())
            spp += float((ac * ac).sum())
            srr += float((bc * bc).sum())
            spr += float((ac * bc).sum())
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
    if n and d and not n_valid and not n_nonfinite:  # all NaN/Inf alike on both sides: nothing compared
        max_abs = mean_abs = float("nan")
        per_dim = np.full(d, np.nan)
    elif n and d:
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
        if n and d and not n_valid:
            failures.append(
                f"{name}: no value is finite on both sides ({nf_pred:,} of {n * d:,} NaN/Inf in the prediction, "
                f"{nf_ref:,} in the reference): nothing was compared"
            )
        if only_pred:
            failures.append(f"{name}: {only_pred:,} values are NaN/Inf in the prediction but finite in the reference "
                            f"({cells_nf_pred:,} cells)")
        if only_ref:
            failures.append(f"{name}: {only_ref:,} values are NaN/Inf in the reference but finite in the prediction "
                            f"({cells_nf_ref:,} cells)")
        differ = n_nonfinite - only_pred - only_ref
        if differ:
            failures.append(f"{name}: {differ:,} values are a different NaN/Inf on each side")
        if nf_both and n_valid:
            failures.append(f"{name}: {nf_both:,} values are NaN/Inf in both stores ({cells_nf_both:,} cells); "
                            "NaN/Inf embeddings are not a reproduction")
        n_out_finite = n_out - n_nonfinite  # (a NaN/Inf mismatch is outside too: reported above)
        if n_out_finite:
            failures.append(
                f"{name}: {n_out_finite:,} of {n * d:,} values outside atol={contract.atol:g}, "
                f"rtol={contract.rtol:g} in {int((cell_tol > 1).sum()):,} cells (max |Δ| {max_abs:.3g})"
            )
        exact = max_abs == 0
        if n_valid and not exact and not (pearson >= contract.min_pearson):
            failures.append(f"{name}: Pearson r {pearson:.6f} < {contract.min_pearson:g}")
    norm_ratio = math.sqrt(sq_p / sq_r) if sq_r > 0 else (1.0 if sq_p == 0 else float("inf"))
    notes = []
    if judged and n_valid and top <= contract.atol:  # |p - r| <= atol holds for any such values
        notes.append(f"{name}: all |values| are below atol={contract.atol:g} (largest {top:.3g}); the tolerance does "
                     f"not test scale — the prediction/reference norm ratio is {norm_ratio:.2f}")
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
        n_elements_outside=n_out,  # NaN/Inf mismatches included (their |Δ| is inf)
        n_cells_outside=int((cell_tol > 1).sum()),
        n_nonfinite_mismatch=n_nonfinite,
        per_dim_mean_abs=per_dim,
        hist_counts=hist,
        hist_zeros=zeros,
        failures=failures,
        n_nonfinite_prediction=nf_pred,
        n_nonfinite_reference=nf_ref,
        n_nonfinite_both=nf_both,
        n_compared=n_valid,
        max_abs_value=top if n_valid else float("nan"),
        norm_ratio=norm_ratio if n_valid else float("nan"),
        notes=notes,
    )
