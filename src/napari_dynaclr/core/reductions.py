"""The reductions and clusterings on offer and the default reduction arguments, without importing a library:
napari's process builds its controls from these, :mod:`napari_dynaclr.core.reduce` runs them (umap-learn,
scikit-learn, phate) in the work process or the CLI."""

from __future__ import annotations

#: EmbeddingWriter kwargs for "UMAP/PCA please" (VisCy's defaults and its predict.yml's PCA size)
DEFAULT_UMAP_KWARGS = {"n_components": 2, "n_neighbors": 15}
DEFAULT_PCA_KWARGS = {"n_components": 8}

#: the reductions and the clusterings the explorer computes on demand
REDUCTIONS = ("PCA", "UMAP", "PHATE")
CLUSTERINGS = ("KMeans", "HDBSCAN")


def available_reductions() -> list[str]:
    """:data:`REDUCTIONS` that can run here (PHATE needs the optional ``phate`` package)."""
    import importlib.util

    return [m for m in REDUCTIONS if m != "PHATE" or importlib.util.find_spec("phate") is not None]
