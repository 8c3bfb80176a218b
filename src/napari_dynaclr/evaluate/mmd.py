"""MMD between conditions, per experiment, marker and time bin: VisCy's ``run_mmd_analysis`` and its CSV.

Order of work (VisCy's ``dynaclr.evaluation.mmd.compute_mmd``, commit 4b62365):

1. ``obs_filter`` keeps the rows with ``obs[col] == value`` for every key; the embedding (``.X`` or
   ``obsm[embedding_key]``) keeps its dtype.
2. Experiments in order of first appearance (one ``"unknown"`` when obs has no ``experiment``), then every
   marker of the filtered obs in sorted order, then the time bins, then the comparisons in config order.
3. A = the experiment's and marker's ``cond_a`` rows. B likewise; with time bins only B is restricted to
   ``[start, end)`` of ``hours_post_perturbation``. Edges: ``temporal_bins`` as given, or
   ``arange(0, max_h + size, size)`` with ``max_h`` over the whole filtered obs.
4. ``share_bandwidth_from`` names a comparison: its median-heuristic bandwidth (both groups whole, both binned
   with time bins, no subsampling) is used by every comparison of that facet when both groups have at least
   ``min_cells`` rows; a label that names no comparison is ignored (a note says so).
5. Per comparison a new ``default_rng(seed)`` draws ``max_cells`` rows of A, then of B (then both down to the
   smaller size with ``balance_samples``); fewer than ``min_cells`` rows → NaN metrics with ``n_a``/``n_b``;
   else the permutation test of :mod:`napari_dynaclr.evaluate.mmd_kernel` at the same seed.

Refused before any work (:class:`ConfigError`, one line): obs without ``marker``, the ``group_by`` column,
``hours_post_perturbation`` (time bins) or an ``obs_filter`` column; a missing ``embedding_key``; NaN/Inf
embeddings; an ``obs_filter`` that keeps nothing; a condition that is no value of ``group_by``; a comparison
of which no row can be computed (too few cells everywhere). Rows VisCy leaves NaN stay NaN and are listed in
:attr:`MMDResult.notes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_dynaclr.errors import Cancelled, ConfigError, DynaclrError, StoreError, shorten
from napari_dynaclr.evaluate.mmd_config import Comparison, MMDAnalysis, MMDBase, MMDSettings
from napari_dynaclr.evaluate.mmd_kernel import median_heuristic, mmd_permutation_test

#: VisCy's CSV columns, in its order
RESULT_COLUMNS = ("experiment", "marker", "cond_a", "cond_b", "label", "hours_bin_start", "hours_bin_end", "n_a",
                  "n_b", "mmd2", "p_value", "bandwidth", "effect_size", "activity_zscore", "map_value",
                  "map_p_value", "embedding_key")
HOURS = "hours_post_perturbation"
#: how to give a store the obs columns MMD needs (our predict path, or by hand)
HOW_TO_ADD = {
    "marker": "the reporter each embedding images; predict with --markers (Bag of Channels) or a --collection "
              "file, or add the column to the store's obs",
    "experiment": "a dataset id; predict with a --collection file, or add the column to the store's obs",
    HOURS: "hours after the perturbation, t·interval/60 + hours at t=0; predict with --interval-minutes and "
           "--start-hpi (Bag of Channels) or a --collection file, or add the column to the store's obs",
}
GROUP_HOW = ("the condition of each cell, e.g. mapped from its well; predict with --perturbation-wells or a "
             "--collection file, or add the column to the store's obs")


@dataclass
class MMDResult:
    """What :func:`run_mmd` returns: VisCy's result table (one row per experiment, marker, bin and
    comparison) and plain-language notes (NaN rows, an unused ``share_bandwidth_from``)."""

    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    #: the CSV's name where it is fixed (``pooled_mmd_results.csv``, ``combined_mmd_results.csv``)
    file_name: str | None = None

    @property
    def experiment(self) -> str:
        return str(self.table["experiment"].iloc[0]) if len(self.table) else "unknown"

    @property
    def csv_name(self) -> str:
        """VisCy's file name: :attr:`file_name`, else ``{experiment of the first row}_mmd_results.csv``."""
        return self.file_name or f"{self.experiment}_mmd_results.csv"

    @property
    def n_nan(self) -> int:
        return int(self.table["mmd2"].isna().sum())

    def to_csv(self) -> str:
        return self.table.to_csv(index=False)

    def to_records(self) -> list[dict]:
        """The rows as JSON-ready records with VisCy's column names (NaN → None)."""
        out = []
        for rec in self.table.to_dict(orient="records"):
            out.append({k: (None if isinstance(v, float) and not np.isfinite(v) else
                            v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()})
        return out


def select_embedding(adata, embedding_key: str | None) -> np.ndarray:
    """``.X`` (None) or ``obsm[embedding_key]`` as a dense array, in its own dtype (VisCy's
    ``_extract_embeddings``). Raises :class:`ConfigError` for an unknown key, :class:`StoreError` for a matrix
    that is not cells × numbers."""
    from napari_dynaclr.evaluate.matrix import embedding_matrix

    if embedding_key is None:
        if adata.X is None:
            raise StoreError("the store has no X matrix; set embedding_key to one of its obsm keys "
                             f"({shorten(adata.obsm.keys())})")
        return embedding_matrix(adata.X, "X")
    if embedding_key not in adata.obsm:
        raise ConfigError(f"embedding_key {embedding_key!r} is not in the store's obsm (keys: "
                          f"{shorten(list(adata.obsm.keys())) or 'none'}); use one of them, or null for .X")
    return embedding_matrix(adata.obsm[embedding_key], f"obsm[{embedding_key!r}]")


def _require(obs: pd.DataFrame, column: str, why: str, how: str) -> None:
    if column not in obs.columns:
        raise ConfigError(f"{why} needs obs column {column!r}, which the store lacks (columns: "
                          f"{shorten(obs.columns, 8)}); add it: {how}")


def store_embedding(label: str, adata, analysis: MMDBase, experiment: bool = False) -> np.ndarray:
    """The checks one store of ``input_paths`` must pass (the obs columns the analysis reads, ``experiment`` too
    with *experiment*, the embedding), each error naming the store *label*; returns its embedding."""
    try:
        obs = adata.obs
        if len(obs) == 0:
            raise StoreError("the store has no cells")
        if experiment:
            _require(obs, "experiment", "--combined (it names each store by its experiment)",
                     HOW_TO_ADD["experiment"])
        _require(obs, analysis.group_by, f"group_by {analysis.group_by!r}", GROUP_HOW)
        _require(obs, "marker", "MMD (it compares conditions per marker)", HOW_TO_ADD["marker"])
        if analysis.temporal:
            which = "temporal_bin_size" if analysis.temporal_bin_size is not None else "temporal_bins"
            _require(obs, HOURS, which, HOW_TO_ADD[HOURS])
        if obs["marker"].isna().any():
            raise ConfigError(f"obs column 'marker' is empty for {int(obs['marker'].isna().sum())} cells; give "
                              "every cell a marker")
        return select_embedding(adata, analysis.embedding_key)
    except DynaclrError as exc:
        raise type(exc)(f"{label}: {exc}") from None


def same_width(embeddings: list[tuple[str, np.ndarray]], what: str) -> None:
    """Refuse stores whose embeddings (*what*: ``X`` or an obsm key) differ in width."""
    widths = {label: X.shape[1] for label, X in embeddings}
    if len(set(widths.values())) > 1:
        raise StoreError(f"the stores' {what} embeddings differ in width ("
                         + ", ".join(f"{label}: {w}" for label, w in widths.items())
                         + "); compare stores of one model")


def filter_rows(obs: pd.DataFrame, obs_filter: dict[str, str] | None, allow_empty: bool = False) -> np.ndarray:
    """The positions of the rows *obs_filter* keeps (``obs[col] == value`` for every key); an unknown column, or
    (unless *allow_empty*) a filter that keeps nothing, is refused."""
    keep = np.ones(len(obs), dtype=bool)
    for col, value in (obs_filter or {}).items():
        _require(obs, col, "obs_filter", "or remove the key from obs_filter")
        keep &= (obs[col] == value).to_numpy()
    if obs_filter and not keep.any() and not allow_empty:
        raise ConfigError(f"obs_filter {obs_filter} keeps no cell of the store; check the values")
    return np.flatnonzero(keep)


@dataclass
class _Facet:
    """One experiment × marker × bin and the comparisons run in it."""

    experiment: str | None  # None: pooled (no experiment facet)
    marker: str
    bin: tuple[float, float] | None
    rows_a: dict[str, np.ndarray]   # per comparison label: stored positions of A
    rows_b: dict[str, np.ndarray]
    shared: tuple[np.ndarray, np.ndarray] | None  # the rows of the share_bandwidth_from comparison


def bin_edges(analysis: MMDBase, max_h: float) -> list[tuple[float, float]] | None:
    """VisCy's ``_resolve_bin_edges``: ``temporal_bins`` as given, or ``arange(0, max_h + size, size)`` (the
    arange end can drop cells at exactly ``max_h``); None without time bins."""
    if analysis.temporal_bins is not None:
        edges = [float(e) for e in analysis.temporal_bins]
    elif analysis.temporal_bin_size is not None:
        size = float(analysis.temporal_bin_size)
        edges = list(np.arange(0, max_h + size, size))
    else:
        return None
    return list(zip(edges[:-1], edges[1:]))


def _counts(n: int, settings) -> int:
    return n if settings.max_cells is None else min(n, settings.max_cells)


def plan_mmd(obs: pd.DataFrame, analysis: MMDAnalysis, by_experiment: bool = True) -> list[_Facet]:
    """Check *obs* against *analysis* and lay out every facet (rows of A and B per comparison), before any
    distance is computed. Positions index *obs*. *by_experiment* False: no experiment facet (VisCy's pooled
    mode; the facets' experiment is None). Raises :class:`ConfigError` (see the module)."""
    keep = filter_rows(obs, analysis.obs_filter)
    _require(obs, analysis.group_by, f"group_by {analysis.group_by!r}", GROUP_HOW)
    _require(obs, "marker", "MMD (it compares conditions per marker)", HOW_TO_ADD["marker"])
    if analysis.temporal:
        which = "temporal_bin_size" if analysis.temporal_bin_size is not None else "temporal_bins"
        _require(obs, HOURS, which, HOW_TO_ADD[HOURS])
    sub = obs.iloc[keep]
    markers_col = sub["marker"]
    if markers_col.isna().any():
        raise ConfigError(f"obs column 'marker' is empty for {int(markers_col.isna().sum())} cells; give every cell "
                          "a marker (or leave them out with obs_filter)")
    group = sub[analysis.group_by]
    present = set(pd.unique(group.dropna().astype(str)))
    for comp in analysis.comparisons:
        for key in ("cond_a", "cond_b"):
            value = getattr(comp, key)
            if not (group == value).any():
                raise ConfigError(f"comparison {comp.label!r}: {key} {value!r} is not a value of obs column "
                                  f"{analysis.group_by!r} (values: {shorten(sorted(present)) or 'none'})")
    hours = sub[HOURS].to_numpy(dtype=float) if analysis.temporal else None
    if hours is not None and not np.isfinite(hours).any():
        raise ConfigError(f"obs column {HOURS!r} holds no finite value; fill it in to use time bins")
    bins = bin_edges(analysis, float(np.nanmax(hours))) if analysis.temporal else None
    pooled = not by_experiment
    by_experiment = by_experiment and "experiment" in sub.columns
    exp_values = pd.unique(sub["experiment"].to_numpy()) if by_experiment else ["unknown"]
    markers = sorted(pd.unique(markers_col.to_numpy()))
    group_v = group.to_numpy()
    by_label = {c.label: c for c in analysis.comparisons}
    shared_comp = by_label.get(analysis.mmd.share_bandwidth_from) if analysis.mmd.share_bandwidth_from else None
    facets = []
    for experiment in exp_values:
        in_exp = (sub["experiment"] == experiment).to_numpy() if by_experiment else np.ones(len(sub), dtype=bool)
        for marker in markers:
            base = in_exp & (markers_col == marker).to_numpy()
            for b in (bins if bins is not None else [None]):
                in_bin = base if b is None else base & (hours >= b[0]) & (hours < b[1])
                rows_a = {c.label: keep[base & (group_v == c.cond_a)] for c in analysis.comparisons}
                rows_b = {c.label: keep[in_bin & (group_v == c.cond_b)] for c in analysis.comparisons}
                shared = None
                if shared_comp is not None:
                    shared = (keep[in_bin & (group_v == shared_comp.cond_a)],
                              keep[in_bin & (group_v == shared_comp.cond_b)])
                facets.append(_Facet(None if pooled else str(experiment),
                                     str(marker), b, rows_a, rows_b, shared))
    _check_computable(facets, analysis)
    return facets


def drawn_sizes(n_a: int, n_b: int, settings: MMDSettings) -> tuple[int, int]:
    """The group sizes the comparison step keeps of *n_a* and *n_b* rows (``max_cells``, ``balance_samples``)."""
    na, nb = _counts(n_a, settings), _counts(n_b, settings)
    if settings.balance_samples:
        na = nb = min(na, nb)
    return na, nb


def _sizes(comp: Comparison, facet: _Facet, settings) -> tuple[int, int]:
    return drawn_sizes(len(facet.rows_a[comp.label]), len(facet.rows_b[comp.label]), settings)


def _check_computable(facets: list[_Facet], analysis: MMDAnalysis) -> None:
    s = analysis.mmd
    for comp in analysis.comparisons:
        sizes = [_sizes(comp, f, s) for f in facets]
        if any(a >= s.min_cells and b >= s.min_cells for a, b in sizes):
            continue
        most_a, most_b = max(a for a, _ in sizes), max(b for _, b in sizes)
        per_a = "experiment and marker" if facets[0].experiment is not None else "marker"
        per_b = per_a.replace(" and", ",") + " and time bin" if analysis.temporal else per_a
        short = [f"{k} {v!r} has at most {n} cells per {per}" for k, v, n, per in
                 (("cond_a", comp.cond_a, most_a, per_a), ("cond_b", comp.cond_b, most_b, per_b))
                 if n < s.min_cells]
        raise ConfigError(f"comparison {comp.label!r}: {' and '.join(short)}, fewer than mmd.min_cells "
                          f"{s.min_cells}: no row can be computed; lower mmd.min_cells or drop the comparison")


def _subsample(rows: np.ndarray, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_n is None or len(rows) <= max_n:
        return rows
    return rows[rng.choice(len(rows), max_n, replace=False)]


def _nan_row_note(rec: dict, min_cells: int) -> str:
    where = rec["marker"] if rec.get("experiment") is None else f"{rec['experiment']}/{rec['marker']}"
    if not pd.isna(rec["hours_bin_start"]):
        where += f" [{rec['hours_bin_start']:g}, {rec['hours_bin_end']:g}) h"
    return f"{rec['label']} at {where}: n_a {rec['n_a']}, n_b {rec['n_b']} (< min_cells {min_cells})"


METRICS = ("mmd2", "p_value", "bandwidth", "effect_size", "activity_zscore")


def check_finite(X: np.ndarray, rows: np.ndarray, what: str) -> None:
    """Refuse NaN/Inf embeddings among the *rows* of *X* a run reads (:class:`ConfigError` naming *what*)."""
    used = np.unique(rows)
    bad = used[~np.isfinite(X[used]).all(axis=1)] if len(used) else used
    if len(bad):
        raise ConfigError(f"{len(bad)} of the compared cells have NaN/Inf embeddings in {what} "
                          "(a prediction with --allow-nonfinite?); MMD over them is undefined; leave them out")


def canceller(cancel: Callable[[], bool] | None) -> Callable[[], None] | None:
    """A check raising :class:`~napari_dynaclr.errors.Cancelled` once *cancel* returns True (None: no check)."""
    if cancel is None:
        return None

    def check() -> None:
        if cancel():
            raise Cancelled("MMD cancelled")
    return check


def compare_rows(X: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, settings: MMDSettings,
                 bandwidth: float | None = None, check: Callable[[], None] | None = None) -> tuple[int, int, dict]:
    """VisCy's ``_run_one_comparison`` on the rows *rows_a* and *rows_b* of *X*: a new ``default_rng(seed)``
    draws ``max_cells`` of A then of B (then both down to the smaller size with ``balance_samples``); fewer than
    ``min_cells`` → NaN metrics; else the permutation test with *bandwidth* (None: the median heuristic of the
    drawn rows). Returns ``(n_a, n_b, {mmd2, p_value, bandwidth, effect_size, activity_zscore})``."""
    rng = np.random.default_rng(settings.seed)
    a = _subsample(rows_a, settings.max_cells, rng)
    b = _subsample(rows_b, settings.max_cells, rng)
    if settings.balance_samples:
        k = min(len(a), len(b))
        a, b = _subsample(a, k, rng), _subsample(b, k, rng)
    metrics = dict.fromkeys(METRICS, float("nan"))
    if len(a) >= settings.min_cells and len(b) >= settings.min_cells:
        Xa, Xb = X[a], X[b]
        bw = bandwidth if bandwidth is not None else median_heuristic(Xa, Xb)
        test = mmd_permutation_test(Xa, Xb, settings.n_permutations, bw, settings.seed, cancel=check)
        metrics = {"mmd2": test.mmd2, "p_value": test.p_value, "bandwidth": test.bandwidth,
                   "effect_size": test.effect_size, "activity_zscore": test.activity_zscore}
    return len(a), len(b), metrics


def nan_rows_note(nan_notes: list[str], n_rows: int, min_cells: int) -> list[str]:
    """The note listing the NaN rows (none when there are none)."""
    if not nan_notes:
        return []
    return [f"{len(nan_notes)} of {n_rows} rows are NaN (fewer than min_cells {min_cells} cells, as VisCy gives "
            "them): " + "; ".join(nan_notes[:6]) + (" …" if len(nan_notes) > 6 else "")]


def run_mmd(obs: pd.DataFrame, X: np.ndarray, analysis: MMDAnalysis,
            progress: Callable[[int, int, str], None] | None = None,
            cancel: Callable[[], bool] | None = None, by_experiment: bool = True) -> MMDResult:
    """VisCy's per-experiment MMD analysis of the embedding *X* (one row per obs row) — see the module.

    *progress*: ``progress(done, total, label)`` after each comparison. *cancel*: polled between and inside
    comparisons; when it returns True, :class:`~napari_dynaclr.errors.Cancelled` is raised. *by_experiment*
    False: every experiment pooled (VisCy's ``run_mmd_pooled``; the rows' experiment is None).
    """
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(obs):
        raise StoreError(f"the embedding has shape {X.shape} but obs has {len(obs)} rows")
    facets = plan_mmd(obs, analysis, by_experiment)
    check_finite(X, np.concatenate([r for f in facets for r in (*f.rows_a.values(), *f.rows_b.values())]),
                 analysis.embedding_label)
    check = canceller(cancel)
    s = analysis.mmd
    notes: list[str] = []
    if s.share_bandwidth_from and s.share_bandwidth_from not in {c.label for c in analysis.comparisons}:
        notes.append(f"share_bandwidth_from {s.share_bandwidth_from!r} names no comparison: every comparison used "
                     "its own bandwidth (as VisCy does)")
    total, done = len(facets) * len(analysis.comparisons), 0
    records, nan_notes = [], []
    for facet in facets:
        shared_bw = None
        if facet.shared is not None and min(len(facet.shared[0]), len(facet.shared[1])) >= s.min_cells:
            shared_bw = median_heuristic(X[facet.shared[0]], X[facet.shared[1]])
        for comp in analysis.comparisons:
            if check is not None:
                check()
            n_a, n_b, metrics = compare_rows(X, facet.rows_a[comp.label], facet.rows_b[comp.label], s, shared_bw,
                                             check)
            rec = {"experiment": facet.experiment, "marker": facet.marker, "cond_a": comp.cond_a,
                   "cond_b": comp.cond_b, "label": comp.label,
                   "hours_bin_start": facet.bin[0] if facet.bin else float("nan"),
                   "hours_bin_end": facet.bin[1] if facet.bin else float("nan"), "n_a": n_a, "n_b": n_b}
            if np.isnan(metrics["mmd2"]):
                nan_notes.append(_nan_row_note(rec, s.min_cells))
            records.append({**rec, **metrics, "map_value": float("nan"), "map_p_value": float("nan"),
                            "embedding_key": analysis.embedding_label})
            done += 1
            if progress is not None:
                progress(done, total, comp.label)
    notes += nan_rows_note(nan_notes, len(records), s.min_cells)
    return MMDResult(table=pd.DataFrame(records, columns=list(RESULT_COLUMNS)), notes=notes)
