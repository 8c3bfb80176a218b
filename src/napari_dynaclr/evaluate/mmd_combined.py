"""VisCy's ``compute-mmd --combined`` (``run_mmd_combined``, commit 4b62365): batch effects between experiments.

Each store of ``input_paths`` is one experiment, named by its first row's ``experiment`` (as VisCy names it,
before ``obs_filter``). ``obs_filter`` keeps rows of each store. Then, for every marker in sorted order that at
least two experiments have, for every pair of those experiments (in ``input_paths`` order):

1. each experiment's rows of that marker, as float32, minus their float32 mean (centred within the pair's
   marker, never across experiments);
2. the conditions: the sorted intersection of the two experiments' ``group_by`` values (no ``comparisons``);
3. per condition, then per time bin: A = the condition's rows of the first experiment, B those of the second,
   **both** restricted to the bin; edges ``arange(0, max_h + size, size)`` with ``max_h`` = the smaller of the two
   experiments' largest ``hours_post_perturbation`` (of that marker), or ``temporal_bins`` as given;
4. VisCy's comparison step (:func:`napari_dynaclr.evaluate.mmd.compare_rows`: ``default_rng(seed)``, the
   ``max_cells`` draws, ``balance_samples``, ``min_cells``) with each row's own median-heuristic bandwidth
   (``share_bandwidth_from`` is not used in this mode, as in VisCy).

The CSV ``combined_mmd_results.csv`` has VisCy's columns :data:`COMBINED_COLUMNS`. Refused before any work (one
line naming the store): a missing column or embedding, two stores of one experiment name (VisCy would keep only
the last), no marker shared by two experiments, no condition shared by a pair, no row that can reach
``min_cells``, NaN/Inf embeddings in a compared marker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from napari_dynaclr.errors import ConfigError, DynaclrError
from napari_dynaclr.evaluate.mmd import (
    HOURS,
    MMDResult,
    bin_edges,
    canceller,
    check_finite,
    compare_rows,
    drawn_sizes,
    filter_rows,
    nan_rows_note,
    same_width,
    store_embedding,
)
from napari_dynaclr.evaluate.mmd_config import MMDCombinedConfig

#: VisCy's combined CSV columns, in its order
COMBINED_COLUMNS = ("marker", "exp_a", "exp_b", "condition", "hours_bin_start", "hours_bin_end", "n_a", "n_b",
                    "mmd2", "p_value", "bandwidth", "effect_size", "activity_zscore", "embedding_key")
COMBINED_CSV = "combined_mmd_results.csv"


@dataclass
class Experiment:
    """One store of ``input_paths`` after ``obs_filter``: its experiment name, label (path), obs and embedding."""

    name: str
    label: str
    obs: pd.DataFrame
    X: np.ndarray

    def marker_rows(self, marker: str) -> np.ndarray:
        return np.flatnonzero((self.obs["marker"] == marker).to_numpy())


@dataclass
class PairFacet:
    """One marker and pair of experiments: positions of the marker's rows in each, and per (condition, bin) the
    rows of A and B (positions within the marker's rows)."""

    marker: str
    exp_a: Experiment
    exp_b: Experiment
    rows_a: np.ndarray
    rows_b: np.ndarray
    tasks: list[tuple[object, tuple[float, float] | None, np.ndarray, np.ndarray]]


def read_experiments(stores: list[tuple[str, object]], cfg: MMDCombinedConfig) -> tuple[list[Experiment], list[str]]:
    """The stores (``(label, AnnData)``) as named, filtered experiments, and notes. See the module for refusals."""
    experiments, notes, seen = [], [], {}
    for label, adata in stores:
        X = store_embedding(label, adata, cfg, experiment=True)
        obs = adata.obs
        name = str(obs["experiment"].iloc[0])
        if name in seen:
            raise ConfigError(f"{seen[name]} and {label} are both experiment {name!r} (a store is named by its first "
                              "row's experiment, as in VisCy); --combined compares experiments pairwise: give each "
                              "store its own experiment, or use --pooled")
        seen[name] = label
        others = sorted(set(map(str, pd.unique(obs["experiment"].dropna()))) - {name})
        if others:
            notes.append(f"{label} also holds experiment(s) {', '.join(others)}: compared as {name!r} (VisCy names "
                         "a store by its first row)")
        try:
            keep = filter_rows(obs, cfg.obs_filter, allow_empty=True)
        except DynaclrError as exc:
            raise type(exc)(f"{label}: {exc}") from None
        if len(keep) == 0:
            notes.append(f"obs_filter keeps no cell of {label} ({name}): left out, as VisCy does")
            continue
        experiments.append(Experiment(name, label, obs.iloc[keep], X[keep]))
    if len(experiments) < 2:
        raise ConfigError(f"obs_filter {cfg.obs_filter} keeps cells of {len(experiments)} of the {len(stores)} "
                          "stores; --combined compares two or more experiments: check the values")
    same_width([(e.label, e.X) for e in experiments], cfg.embedding_label)
    return experiments, notes


def _conditions(values_a: np.ndarray, values_b: np.ndarray) -> list:
    shared = {v for v in pd.unique(values_a) if not pd.isna(v)} & {v for v in pd.unique(values_b) if not pd.isna(v)}
    return sorted(shared)


def plan_combined(experiments: list[Experiment], cfg: MMDCombinedConfig) -> tuple[list[PairFacet], list[str]]:
    """Every marker × pair facet with its (condition, bin) rows, checked before any distance is computed."""
    by_marker: dict[str, list[Experiment]] = {}
    for exp in experiments:
        for marker in pd.unique(exp.obs["marker"].to_numpy()):
            by_marker.setdefault(str(marker), []).append(exp)
    if all(len(members) < 2 for members in by_marker.values()):
        markers = "; ".join(f"{e.name}: {', '.join(sorted(map(str, pd.unique(e.obs['marker'].to_numpy()))))}"
                            for e in experiments)
        raise ConfigError(f"no marker is in two of the experiments ({markers}); --combined compares one marker "
                          "across experiments")
    notes, facets = [], []
    group = cfg.group_by
    for marker, members in sorted(by_marker.items()):
        if len(members) < 2:
            notes.append(f"marker {marker!r} is only in {members[0].name}: not compared")
            continue
        for ea, eb in combinations(members, 2):
            ia, ib = ea.marker_rows(marker), eb.marker_rows(marker)
            oa, ob = ea.obs.iloc[ia], eb.obs.iloc[ib]
            ga, gb = oa[group].to_numpy(), ob[group].to_numpy()
            conditions = _conditions(ga, gb)
            if not conditions:
                notes.append(f"{marker}: {ea.name} and {eb.name} share no value of {group!r}: no row")
            bins: list = [None]
            if cfg.temporal:
                ha, hb = oa[HOURS].to_numpy(dtype=float), ob[HOURS].to_numpy(dtype=float)
                for exp, hours in ((ea, ha), (eb, hb)):
                    if not np.isfinite(hours).any():
                        raise ConfigError(f"{exp.label}: obs column {HOURS!r} holds no finite value for marker "
                                          f"{marker!r}; fill it in to use time bins")
                bins = bin_edges(cfg, float(min(np.nanmax(ha), np.nanmax(hb))))
            tasks = []
            for condition in conditions:
                for b in bins:
                    in_a = ga == condition
                    in_b = gb == condition
                    if b is not None:
                        in_a = in_a & (ha >= b[0]) & (ha < b[1])
                        in_b = in_b & (hb >= b[0]) & (hb < b[1])
                    tasks.append((condition, b, np.flatnonzero(in_a), np.flatnonzero(in_b)))
            facets.append(PairFacet(marker, ea, eb, ia, ib, tasks))
    tasks = [t for f in facets for t in f.tasks]
    if not tasks:
        raise ConfigError(f"no pair of experiments shares a value of {group!r} for a shared marker; --combined "
                          "compares each condition across experiments")
    s = cfg.mmd
    if not any(min(drawn_sizes(len(ra), len(rb), s)) >= s.min_cells for _, _, ra, rb in tasks):
        most = max(min(len(ra), len(rb)) for _, _, ra, rb in tasks)
        per = "condition, marker and time bin" if cfg.temporal else "condition and marker"
        raise ConfigError(f"no row can be computed: at most {most} cells per {per} in both experiments, fewer than "
                          f"mmd.min_cells {s.min_cells}; lower mmd.min_cells")
    for exp in experiments:
        rows = [f.rows_a for f in facets if f.exp_a is exp] + [f.rows_b for f in facets if f.exp_b is exp]
        if rows:
            try:
                check_finite(exp.X, np.concatenate(rows), cfg.embedding_label)
            except DynaclrError as exc:
                raise type(exc)(f"{exp.label}: {exc}") from None
    return facets, notes


def centred(X: np.ndarray) -> np.ndarray:
    """VisCy's centring: the rows as float32 minus their float32 mean."""
    X = X.astype(np.float32)
    return X - X.mean(axis=0)


def run_mmd_combined(stores: list[tuple[str, object]], cfg: MMDCombinedConfig,
                     progress: Callable[[int, int, str], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> MMDResult:
    """VisCy's ``run_mmd_combined`` over *stores* (``(label, AnnData)``, the stores of ``input_paths``): see the
    module. *progress* and *cancel* as in :func:`~napari_dynaclr.evaluate.mmd.run_mmd`."""
    experiments, notes = read_experiments(stores, cfg)
    facets, plan_notes = plan_combined(experiments, cfg)
    notes += plan_notes
    check = canceller(cancel)
    total, done = sum(len(f.tasks) for f in facets), 0
    records, nan_notes = [], []
    for facet in facets:
        Xa = centred(facet.exp_a.X[facet.rows_a])
        pool = np.concatenate([Xa, centred(facet.exp_b.X[facet.rows_b])])
        for condition, b, ra, rb in facet.tasks:
            if check is not None:
                check()
            n_a, n_b, metrics = compare_rows(pool, ra, rb + len(Xa), cfg.mmd, None, check)
            rec = {"marker": facet.marker, "exp_a": facet.exp_a.name, "exp_b": facet.exp_b.name,
                   "condition": condition, "hours_bin_start": b[0] if b else float("nan"),
                   "hours_bin_end": b[1] if b else float("nan"), "n_a": n_a, "n_b": n_b, **metrics,
                   "embedding_key": cfg.embedding_label}
            if np.isnan(metrics["mmd2"]):
                where = f" [{b[0]:g}, {b[1]:g}) h" if b else ""
                nan_notes.append(f"{condition} at {facet.marker} {facet.exp_a.name} vs {facet.exp_b.name}{where}: "
                                 f"n_a {n_a}, n_b {n_b}")
            records.append(rec)
            done += 1
            if progress is not None:
                progress(done, total, str(condition))
    notes += nan_rows_note(nan_notes, len(records), cfg.mmd.min_cells)
    return MMDResult(table=pd.DataFrame(records, columns=list(COMBINED_COLUMNS)), notes=notes,
                     file_name=COMBINED_CSV)
