"""VisCy's ``compute-mmd --pooled`` (``run_mmd_pooled``, commit 4b62365): several stores pooled, compared as one.

1. The stores of ``input_paths`` are concatenated as VisCy does, ``anndata.concat(join="outer",
   label="source_experiment")`` (obs columns joined, a ``source_experiment`` column ``"0"``, ``"1"``, … naming
   the store), then ``obs_filter`` keeps its rows, then ``condition_aliases`` renames the ``group_by`` values
   (``{canonical: [variant, …]}``; other values stay).
2. The per-experiment analysis (:func:`napari_dynaclr.evaluate.mmd.run_mmd`) without the experiment facet:
   markers sorted, then time bins (``max_h`` over the whole pooled, filtered obs; only B binned), then the
   comparisons; ``share_bandwidth_from`` as there.
3. ``q_value``: Benjamini–Hochberg over all rows (VisCy: statsmodels ``multipletests(..., "fdr_bh")``; here
   :func:`scipy.stats.false_discovery_control`, the same adjustment), a NaN p-value counted as 1, its q-value
   NaN again.

The CSV ``pooled_mmd_results.csv`` has VisCy's per-experiment columns without ``experiment``, then ``q_value``.
Each store must have the ``group_by`` and ``marker`` columns (and ``hours_post_perturbation`` with time bins)
and the embedding, of one width: VisCy's outer join would fill what one store lacks with NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from napari_dynaclr.errors import StoreError
from napari_dynaclr.evaluate.mmd import RESULT_COLUMNS, MMDResult, filter_rows, run_mmd, same_width, store_embedding
from napari_dynaclr.evaluate.mmd_config import MMDPooledConfig

#: VisCy's pooled CSV columns, in its order
POOLED_COLUMNS = (*(c for c in RESULT_COLUMNS if c != "experiment"), "q_value")
POOLED_CSV = "pooled_mmd_results.csv"


def bh_q_values(p_values) -> np.ndarray:
    """VisCy's ``q_value``: Benjamini–Hochberg adjusted p-values (``q_(i) = min_{j ≥ i} p_(j)·n/j``, at most 1)
    over every row, a NaN p-value counted as 1 and given a NaN q-value; all NaN when no p-value is finite."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=float)
    missing = np.isnan(p)
    if missing.all():
        return np.full(len(p), np.nan)
    q = false_discovery_control(np.where(missing, 1.0, p), method="bh")
    q[missing] = np.nan
    return q


def pool_stores(stores: list[tuple[str, object]], cfg: MMDPooledConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """The pooled obs and embedding of *stores* (``(label, AnnData)`` in ``input_paths`` order): concatenated,
    filtered and aliased as in VisCy (see the module). Raises :class:`ConfigError` / :class:`StoreError`
    naming the store for a missing column or embedding, or embeddings of different widths."""
    import warnings

    import anndata as ad

    same_width([(label, store_embedding(label, adata, cfg)) for label, adata in stores], cfg.embedding_label)
    if cfg.embedding_key is None:
        names = {label: list(map(str, adata.var_names)) for label, adata in stores}
        first_label, first = next(iter(names.items()))
        for label, var in names.items():
            if var != first:
                raise StoreError(f"{label}: its X columns (var names) differ from those of {first_label}; pooling "
                                  "would join them as VisCy does, filling the gaps with NaN; pool stores of one model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-unique obs names: made unique below, as VisCy does
        pooled = ad.concat([adata for _, adata in stores], join="outer", label="source_experiment")
        pooled.obs_names_make_unique()
    keep = filter_rows(pooled.obs, cfg.obs_filter)
    obs = pooled.obs.iloc[keep].copy()
    X = store_embedding("the pooled stores", pooled, cfg)[keep]
    if cfg.condition_aliases:
        alias = {v: canonical for canonical, variants in cfg.condition_aliases.items() for v in variants}
        obs[cfg.group_by] = obs[cfg.group_by].astype(object).map(lambda x: alias.get(x, x))
    return obs, X


def run_mmd_pooled(stores: list[tuple[str, object]], cfg: MMDPooledConfig,
                   progress: Callable[[int, int, str], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> MMDResult:
    """VisCy's ``run_mmd_pooled`` over *stores* (``(label, AnnData)``, the stores of ``input_paths``): see the
    module. *progress* and *cancel* as in :func:`~napari_dynaclr.evaluate.mmd.run_mmd`."""
    obs, X = pool_stores(stores, cfg)
    result = run_mmd(obs, X, cfg.model_copy(update={"obs_filter": None}), progress, cancel, by_experiment=False)
    table = result.table.drop(columns="experiment")
    table["q_value"] = bh_q_values(table["p_value"].to_numpy())
    return MMDResult(table=table[list(POOLED_COLUMNS)], notes=result.notes, file_name=POOLED_CSV)
