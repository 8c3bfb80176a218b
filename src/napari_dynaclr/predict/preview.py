"""Preview coordinates while a prediction streams (PCA on the first batch, applied to the rest).

Computed in napari's work process (:mod:`napari_dynaclr.child` fills :attr:`BatchResult.preview
<napari_dynaclr.predict.events.BatchResult.preview>`): napari's process never imports scikit-learn for a
prediction (≈ 0.65 s of imports, in a thread that held the GIL long enough to freeze the viewer for ≈ 0.25 s at
the first batch)."""

from __future__ import annotations

import numpy as np


class StreamingProjector:
    """2-D preview coordinates while predicting: PCA fitted on the first batch with three finite rows,
    applied to the rest. Rows that are not finite (a run allowing non-finite values) get NaN coordinates,
    so the scatter hides them."""

    def __init__(self):
        self._pca = None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        finite = np.isfinite(X).all(axis=1) if X.ndim == 2 else np.zeros(len(X), dtype=bool)
        if self._pca is None and finite.sum() >= 3:
            from sklearn.decomposition import PCA

            self._pca = PCA(n_components=2, random_state=42).fit(X[finite])
        out = np.full((len(X), 2), np.nan, dtype=np.float32)
        if self._pca is None:
            out[finite, : min(2, X.shape[1])] = X[finite, :2]
        elif finite.any():
            out[finite] = self._pca.transform(X[finite])
        return out
