"""Dimensionality reductions with VisCy's parameters (``EmbeddingWriter`` pca/umap/phate kwargs).

All run on ``adata.X`` in VisCy's order UMAP → PHATE → PCA and store ``obsm["X_umap"|"X_phate"|"X_pca"]``.
A requested reduction that cannot run is a :class:`~napari_dynaclr.errors.ConfigError` with the reason (VisCy
logs a failing PCA/PHATE and leaves it out; a store without the reduction asked for is not written here).
Rows of ``X`` holding NaN/Inf (written only with ``allow_nonfinite``) are left out of the fit and get NaN
coordinates; the others are computed exactly as without them. The names and default arguments are in
:mod:`napari_dynaclr.core.reductions` (no library imported).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from napari_dynaclr.core.reductions import CLUSTERINGS, REDUCTIONS
from napari_dynaclr.errors import ConfigError

log = logging.getLogger(__name__)

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
# on demand (the napari explorer, in the work process)


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
