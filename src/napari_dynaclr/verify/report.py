"""The comparison and its report: :func:`compare_stores` runs the steps, :func:`format_report` prints them.

:func:`compare_stores` loads both sides (:mod:`~napari_dynaclr.verify.sources`), aligns their rows
(:mod:`~napari_dynaclr.verify.align`), checks that the stores are comparable, measures ``X`` and every
``obsm`` array both have (:mod:`~napari_dynaclr.verify.metrics`), compares the obs columns both have beyond
the keys (``parent_*``, ``z``, ``y``, ``x``) exactly on aligned rows, and returns a :class:`VerifyReport`
with a per-cell table (JSON with :meth:`VerifyReport.to_json`). :func:`map_cell_values` and
:func:`find_cell` look cells up for the viewer; :func:`format_report` renders the text the CLI prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_dynaclr.errors import StoreError
from napari_dynaclr.verify.align import (
    REQUIRED_KEYS,
    STRING_KEYS,
    RowsResult,
    align_rows,
    json_value,
    key_frame,
)
from napari_dynaclr.verify.metrics import ArrayResult, Contract, array_metrics, is_reduction
from napari_dynaclr.verify.sources import load_source

#: Other obs columns compared exactly on aligned rows when both stores have them.
OBS_COLUMNS = ("parent_track_id", "parent_id", "z", "y", "x")
SCHEMA = "napari-dynaclr/verify"
SCHEMA_VERSION = 1


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
    def notes(self) -> list[str]:
        """What a PASS does not say (e.g. values too small for the tolerance to test their scale)."""
        return [n for a in self.arrays.values() for n in a.notes]

    @property
    def text_columns(self) -> list[str]:
        """The key columns held as text (``fov_name``; ``experiment`` in Bag-of-Channels stores) in :attr:`cells`
        and the one-sided rows: their values are strings. Every other column of these tables holds numbers."""
        return [k for k in self.rows.key_columns if k in STRING_KEYS]

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
            return [{k: json_value(v) for k, v in r.items()} for r in df.to_dict(orient="records")]

        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "passed": self.passed,
            "failures": list(self.failures),
            "notes": self.notes,
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
    pred = load_source(prediction, "prediction")
    ref = load_source(reference, "reference")
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
    kp = key_frame(pred.obs, keys, pred.label).iloc[pred_idx].reset_index(drop=True)
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
        res = array_metrics(pred, ref, k, pred_idx, ref_idx, contract, k in judged_names, cells, cancel)
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


def _cell_keys(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame({"fov_name": frame["fov_name"].astype(str).str.lstrip("/").to_numpy(dtype=object)})
    for k in keys[1:]:
        if k in STRING_KEYS:
            out[k] = frame[k].astype(str).to_numpy(dtype=object)
        else:
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


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan" if v is not None and math.isnan(v) else ("inf" if v is not None else "-")
    return format(v, spec)


def _text_table(frame: pd.DataFrame, formatters: dict[str, Callable[[Any], str]],
                left: Sequence[str] = ()) -> list[str]:
    """*frame* as text lines: header, a rule of dashes, one line per row.

    Cells are formatted by ``formatters[column]`` (``str`` for other columns); columns are two spaces apart
    (pandas' one plus a ``col_space`` one wider than the column) and right-aligned, but for the *left* ones.
    """
    cells = pd.DataFrame({c: frame[c].map(formatters.get(c, str)) for c in frame.columns})
    width = {c: max([len(c), *cells[c].str.len()]) for c in cells.columns}
    rule = pd.DataFrame([{c: "-" * w for c, w in width.items()}])
    names = {c: c.ljust(width[c]) if c in left else c for c in cells.columns}  # a left-aligned header
    text = pd.concat([rule, cells], ignore_index=True).rename(columns=names).to_string(
        index=False,
        col_space=[w + (1 if i else 0) for i, w in enumerate(width.values())],
        formatters={names[c]: f"{{:<{width[c]}}}".format for c in left},
    )
    return [line.rstrip() for line in text.splitlines()]


def _summary_lines(report: VerifyReport) -> list[str]:
    """The stores, the contract, the rows (one-sided ones: the first 5 of each side) and the obs columns."""
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
            shown = [" ".join(f"{k}={json_value(v)}" for k, v in row.items() if k != "row")
                     for row in df.head(5).to_dict(orient="records")]
            out.append(f"  {label}: " + "; ".join(shown) + (f" (+{len(df) - 5} more)" if len(df) > 5 else ""))
    if report.obs_compared:
        out.append("obs:        " + ("identical " if not report.obs_mismatches else "DIFFER ")
                   + f"({', '.join(report.obs_compared)})"
                   + ("" if not report.obs_mismatches else ": " + ", ".join(
                       f"{k} in {n:,} rows" for k, n in report.obs_mismatches.items())))
    return out


def _arrays_lines(report: VerifyReport) -> list[str]:
    """One table row per compared array, then the arrays not compared or on one side only."""
    table = pd.DataFrame([
        {
            "array": a.label,
            "dims": a.shape_prediction[1],
            "max |Δ|": a.max_abs,
            "mean |Δ|": a.mean_abs,
            "Pearson r": a.pearson,
            "min cell r": a.pearson_cell_min,
            "min cos": a.cosine_min,
            "outside: values/cells": f"{a.n_elements_outside:,}/{a.n_cells_outside:,}",
            "verdict": "reported" if not a.judged else ("PASS" if a.passed else "FAIL"),
        }
        for a in report.arrays.values()
    ])
    formatters = {"max |Δ|": _fmt, "mean |Δ|": _fmt, "Pearson r": lambda v: _fmt(v, ".7f"),
                  "min cell r": lambda v: _fmt(v, ".4f"), "min cos": lambda v: _fmt(v, ".4f")}
    out = _text_table(table, formatters, left=("array", "verdict"))
    for a in report.arrays.values():
        if a.n_nonfinite_prediction or a.n_nonfinite_reference:
            out.append(f"{a.name}: NaN/Inf values: {a.n_nonfinite_prediction:,} in the prediction, "
                       f"{a.n_nonfinite_reference:,} in the reference ({a.n_nonfinite_both:,} alike on both sides; "
                       f"{a.n_compared:,} values finite on both sides)")
    for k, why in report.arrays_not_comparable.items():
        out.append(f"{k}: not compared ({why})")
    if report.arrays_only_in_prediction or report.arrays_only_in_reference:
        out.append(f"arrays only in prediction: {', '.join(report.arrays_only_in_prediction) or '-'}; "
                   f"only in reference: {', '.join(report.arrays_only_in_reference) or '-'}")
    return out


def _worst_lines(report: VerifyReport, worst: int) -> list[str]:
    """The *worst* cells by tolerance ratio: keys, max |Δ| of each judged array, cosine of the first."""
    judged = report.judged_arrays
    keys = report.rows.key_columns
    columns = {k: k for k in keys}
    columns.update({f"{k}:max_abs": f"{k} max|Δ|" for k in judged})
    columns.update({f"{judged[0]}:cosine": f"{judged[0]} cos", "tol_ratio": "tol ratio"})
    table = report.worst_cells(worst)[list(columns)].rename(columns=columns)
    formatters = {k: lambda v: str(json_value(v)) for k in keys}
    formatters.update({f"{k} max|Δ|": _fmt for k in judged})
    formatters[f"{judged[0]} cos"] = lambda v: _fmt(v, ".6f")
    formatters["tol ratio"] = _fmt
    return [f"worst {min(worst, len(report.cells))} cells (by |Δ| / (atol + rtol·|ref|)):"] + [
        "  " + line for line in _text_table(table, formatters, left=report.text_columns)
    ]


def format_report(report: VerifyReport, worst: int = 5) -> str:
    """The report as the text ``napari-dynaclr verify`` prints, listing the *worst* cells (none with 0)."""
    out = _summary_lines(report) + [""] + _arrays_lines(report)
    if worst > 0 and len(report.cells):
        out += [""] + _worst_lines(report, worst)
    out.append("")
    if report.passed:
        out.append(f"PASS: {', '.join(report.judged_arrays)} within the contract")
    else:
        out.append("FAIL:")
        out += [f"  - {f}" for f in report.failures]
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)
