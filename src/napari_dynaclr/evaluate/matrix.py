"""The embedding matrix an evaluation works on, checked once: a store's ``X`` may be sparse (scipy or anndata's
sparse datasets), lazy (zarr) or a plain array; the evaluations need a dense 2-D array of numbers with at least one
column. VisCy densifies a sparse ``X`` the same way (``adata.X.toarray()`` in ``train_linear_classifier``).
"""

from __future__ import annotations

import numpy as np

from napari_dynaclr.errors import StoreError


def embedding_matrix(X, label: str = "X") -> np.ndarray:
    """*X* as a dense 2-D numpy array; a :class:`StoreError` naming *label* (the store, or ``X``) when it has
    no column, is not 2-D or does not hold numbers."""
    if hasattr(X, "toarray"):  # scipy sparse matrix / array
        X = X.toarray()
    elif hasattr(X, "to_memory"):  # anndata's backed sparse dataset
        X = X.to_memory().toarray()
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise StoreError(f"{label}: the embeddings (X) are {arr.ndim}-D with shape {arr.shape}, expected cells x "
                         "features")
    if arr.shape[1] == 0:
        raise StoreError(f"{label}: the embeddings (X) have 0 columns ({arr.shape[0]} rows): there is nothing to "
                         "compare")
    if arr.dtype.kind not in "biuf":
        raise StoreError(f"{label}: the embeddings (X) hold {arr.dtype} values, expected numbers")
    return arr
