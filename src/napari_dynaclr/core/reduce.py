"""Dimensionality reductions with VisCy's parameters (``EmbeddingWriter`` pca/umap/phate kwargs).

All run on ``adata.X`` in VisCy's order UMAP → PHATE → PCA and store ``obsm["X_umap"|"X_phate"|"X_pca"]``.
A requested reduction that cannot run is a :class:`~napari_dynaclr.errors.ConfigError` with the reason (VisCy
logs a failing PCA/PHATE and leaves it out; a store without the reduction asked for is not written here).
Rows of ``X`` holding NaN/Inf (written only with ``allow_nonfinite``) are left out of the fit and get NaN
coordinates; the others are computed exactly as without them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from napari_dynaclr.errors import ConfigError

log = logging.getLogger(__name__)

#: EmbeddingWriter kwargs for "UMAP/PCA please" (VisCy's defaults and its predict.yml's PCA size)
DEFAULT_UMAP_KWARGS = {"n_components": 2, "n_neighbors": 15}
DEFAULT_PCA_KWARGS = {"n_components": 8}


def pca(X: np.ndarray, n_components: int | None = None, normalize_features: bool = True, **_ignored):
    """StandardScaler → sklearn PCA(random_state=42), as VisCy's ``compute_pca``."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    data = StandardScaler().fit_transform(X) if normalize_features else X
    return PCA(n_components=n_components, random_state=42).fit_transform(data)


def umap(X: np.ndarray, n_components: int = 2, n_neighbors: int = 15, normalize: bool = True, **extra):
    """StandardScaler → umap.UMAP(random_state=42), as VisCy's ``_fit_transform_umap``.

    Extra umap-learn arguments (``min_dist``, ``metric``…) are passed through (VisCy rejects them).
    """
    import umap as umap_learn

    if n_neighbors >= X.shape[0]:
        n_neighbors = min(15, X.shape[0] // 2)
    if n_neighbors < 2:
        raise ConfigError(f"UMAP needs at least 4 cells, got {X.shape[0]}")
    data = _scaled(X) if normalize else X
    extra.setdefault("random_state", 42)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*random_state.*")
        return umap_learn.UMAP(n_components=n_components, n_neighbors=n_neighbors, **extra).fit_transform(data)


def phate(X: np.ndarray, n_components: int = 2, knn: int = 5, decay: int = 40, knn_dist: str = "cosine",
          scale_embeddings: bool = False, random_state: int = 42, n_pca: int = 50, subsample=None,
          n_jobs: int = 1, **extra):
    """PHATE with VisCy's ``compute_phate`` defaults (needs the optional ``phate`` package)."""
    try:
        import phate as phate_lib
    except ImportError:
        raise RuntimeError("the optional 'phate' package is not installed (pip install phate)") from None
    if knn >= X.shape[0]:
        knn = max(2, X.shape[0] // 2)
    data = _scaled(X) if scale_embeddings else X
    op = phate_lib.PHATE(n_components=n_components, knn=knn, decay=decay, knn_dist=knn_dist,
                         random_state=random_state, n_pca=n_pca, n_jobs=n_jobs, verbose=0, **extra)
    if subsample is not None and subsample < X.shape[0]:
        rng = np.random.default_rng(random_state)
        idx = rng.choice(X.shape[0], subsample, replace=False)
        op.fit(data[idx])
        return op.transform(data)
    return op.fit_transform(data)


def _scaled(X):
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(X)


def apply_reductions(adata, pca_kwargs: Mapping | None = None, umap_kwargs: Mapping | None = None,
                     phate_kwargs: Mapping | None = None) -> list[str]:
    """Add the requested reductions to ``adata.obsm`` (VisCy order); return the keys added.

    A reduction that cannot run raises :class:`ConfigError` naming it and the reason. Rows of ``adata.X``
    with NaN/Inf are left out of the fit and get NaN coordinates (see :func:`finite_rows`).
    """
    added = []
    for kw, name in ((umap_kwargs, "umap"), (phate_kwargs, "phate"), (pca_kwargs, "pca")):
        if kw is None:
            continue
        if not isinstance(kw, Mapping):
            raise ConfigError(f"{name}_kwargs must be a mapping or null, got {kw!r}")
        func = {"umap": umap, "phate": phate, "pca": pca}[name]
        adata.obsm[f"X_{name}"] = _on_finite_rows(func, np.asarray(adata.X), name.upper(), f"{name}_kwargs", kw)
        added.append(f"X_{name}")
    return added


#: the fewest rows umap-learn and PHATE run on (measured: umap-learn 0.5.12 and phate 2.0.0 fail below, with
#: VisCy's clamping of n_neighbors / knn to cells // 2; PCA runs on one row)
MIN_ROWS = {"UMAP": 4, "PHATE": 4}


def check_reduction_sizes(n_rows: int, n_features: int, pca_kwargs: Mapping | None = None,
                          umap_kwargs: Mapping | None = None, phate_kwargs: Mapping | None = None) -> list[str]:
    """Refuse, before any embedding is computed, a requested reduction that cannot run on *n_rows* embeddings
    of *n_features* values (a :class:`ConfigError` naming the reduction, the argument and the numbers);
    return the notes for what runs but not as asked (VisCy reduces ``n_neighbors``/``knn`` to ``cells // 2``
    when they reach the number of cells).

    The limits, found by running the libraries on 1-11 rows: sklearn PCA ``n_components <= min(rows,
    features)``; umap-learn needs ``n_neighbors`` (after VisCy's reduction) >= 2, i.e. 4 rows, and its default
    spectral initialisation ``n_components <= rows - 2`` (scipy's ``eigsh`` needs ``n_components + 1 < rows``);
    PHATE needs 4 rows to fit (its ``subsample`` when smaller) and ``n_components`` <= those rows.
    """
    notes: list[str] = []
    cells = f"{n_rows} cell{'s' if n_rows != 1 else ''}"
    if pca_kwargs is not None:
        k = pca_kwargs.get("n_components")
        top = min(n_rows, n_features)
        if k is not None and k > top:
            raise ConfigError(f"PCA (pca_kwargs) cannot run: n_components={k} but PCA gives at most min(cells, "
                              f"features) = min({n_rows}, {n_features}) = {top} components for this run's {cells}; "
                              "lower n_components (--pca) or leave PCA out")
    if umap_kwargs is not None:
        k = umap_kwargs.get("n_components", DEFAULT_UMAP_KWARGS["n_components"])
        nn = umap_kwargs.get("n_neighbors", DEFAULT_UMAP_KWARGS["n_neighbors"])
        if nn >= n_rows:
            if min(15, n_rows // 2) < 2:
                raise ConfigError(f"UMAP (umap_kwargs) cannot run: it needs at least {MIN_ROWS['UMAP']} cells, this "
                                  f"run has {n_rows}; leave UMAP out")
            notes.append(f"UMAP n_neighbors={nn} reaches the {cells}: reduced to {min(15, n_rows // 2)} "
                         "(cells // 2, as VisCy does)")
        if umap_kwargs.get("init", "spectral") == "spectral" and k > n_rows - 2:
            raise ConfigError(f"UMAP (umap_kwargs) cannot run: n_components={k} needs at least {k + 2} cells "
                              f"(umap-learn's spectral initialisation), this run has {n_rows}; lower n_components")
    if phate_kwargs is not None:
        k = phate_kwargs.get("n_components", 2)
        knn = phate_kwargs.get("knn", 5)
        sub = phate_kwargs.get("subsample")
        fit = min(sub, n_rows) if sub is not None else n_rows
        what = f"{fit} cells" if sub is None or sub >= n_rows else f"subsample={sub} cells"
        if fit < MIN_ROWS["PHATE"]:
            raise ConfigError(f"PHATE (phate_kwargs) cannot run: it needs at least {MIN_ROWS['PHATE']} cells to fit, "
                              f"this run gives it {what}; leave PHATE out" + (" or raise subsample" if sub else ""))
        if k > fit:
            raise ConfigError(f"PHATE (phate_kwargs) cannot run: n_components={k} but PHATE gives at most as many "
                              f"components as the {what} it fits; lower n_components")
        if knn >= n_rows:
            notes.append(f"PHATE knn={knn} reaches the {cells}: reduced to {max(2, n_rows // 2)} "
                         "(cells // 2, as VisCy does)")
    return notes


def finite_rows(X: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of *X* without NaN/Inf."""
    return np.isfinite(X).all(axis=1)


def _on_finite_rows(func, X: np.ndarray, label: str, source: str, kwargs: Mapping) -> np.ndarray:
    """*func*(X, **kwargs) on the finite rows of *X*, NaN for the others (all rows: unchanged call).
    Failures become a :class:`ConfigError` naming *label*, *source* (where it was asked for) and the reason."""
    ok = finite_rows(X)
    n_ok = int(ok.sum())
    if n_ok == 0:
        raise ConfigError(f"{label} ({source}) cannot run: none of the {len(X)} embedding rows is finite")
    try:
        coords = np.asarray(func(X if n_ok == len(X) else X[ok], **dict(kwargs)))
    except ConfigError as exc:
        raise ConfigError(f"{label} ({source}) cannot run: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:  # sklearn/umap/phate: too few cells, bad arguments, missing package...
        raise ConfigError(f"{label} ({source}) cannot run: {_first_line(exc)}") from exc
    if n_ok == len(X):
        return coords
    out = np.full((len(X), *coords.shape[1:]), np.nan, dtype=np.result_type(coords.dtype, np.float32))
    out[ok] = coords
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# on demand (the napari explorer)

REDUCTIONS = ("PCA", "UMAP", "PHATE")
CLUSTERINGS = ("KMeans", "HDBSCAN")


def available_reductions() -> list[str]:
    import importlib.util

    return [m for m in REDUCTIONS if m != "PHATE" or importlib.util.find_spec("phate") is not None]


def compute_reduction(X: np.ndarray, method: str, n_components: int = 2, **kwargs) -> tuple[str, np.ndarray]:
    """(obsm key, coordinates) with VisCy's parameters."""
    method = method.upper()
    X = np.asarray(X, dtype=np.float32)
    funcs = {"PCA": pca, "UMAP": umap, "PHATE": phate}
    if method not in funcs:
        raise ConfigError(f"unknown reduction {method!r}; use one of {', '.join(REDUCTIONS)}")
    kwargs = {"n_components": n_components, **kwargs}
    return f"X_{method.lower()}", _on_finite_rows(funcs[method], X, method, "on demand", kwargs)


def compute_clusters(X: np.ndarray, method: str, n_clusters: int = 8, min_cluster_size: int = 5,
                     random_state: int = 42) -> pd.Categorical:
    """KMeans or HDBSCAN (scikit-learn) labels as a categorical (HDBSCAN noise = −1)."""
    X = np.asarray(X, dtype=np.float32)
    if method.lower() == "kmeans":
        from sklearn.cluster import KMeans

        k = max(1, min(int(n_clusters), len(X)))
        labels = KMeans(n_clusters=k, random_state=random_state, n_init="auto").fit_predict(X)
    elif method.lower() == "hdbscan":
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=max(2, int(min_cluster_size)), copy=True).fit_predict(X)
    else:
        raise ConfigError(f"unknown clustering {method!r}; use one of {', '.join(CLUSTERINGS)}")
    return pd.Categorical(np.asarray(labels, dtype=np.int64))
