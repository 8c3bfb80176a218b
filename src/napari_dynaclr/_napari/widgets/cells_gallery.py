"""The Cells tab's gallery: which cells a selection shows, their patches cut in the work process, and tiles.

:func:`gallery_cells` (a job for a worker thread) has the work process pick at most :data:`GALLERY_SIZE` cells
covering the selection (:func:`~napari_dynaclr.evaluate.representative_sample`: a PCA and k-means, which would
hold napari's GIL in a thread) and cut their patches exactly as the run feeds the model; :func:`qimage` turns a
tinted tile (:func:`~napari_dynaclr._napari.tiles.composite`) into a Qt image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtGui import QImage

from napari_dynaclr._napari import workers

GALLERY_SIZE = 64


def qimage(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(rgb)
    h, w, _ = rgb.shape
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def gallery_cells(cfg, token, X, keys: pd.DataFrame, projection: str, cancel=None):
    """(worker thread) the work process picks up to 64 cells covering the selection (*X*: the table's embedding
    matrix, held there under *token*), then cuts their patches."""
    rows = keys["row"].to_numpy()
    picked = yield from workers.sample_job(token, X, rows, GALLERY_SIZE, cancel=cancel)
    order = pd.Series(np.arange(len(rows)), index=rows)
    cells = keys.iloc[order.loc[picked].to_numpy()]
    key = workers.gallery_keys(cells)
    index, patches = yield from workers.gallery_job(cfg, cells[key], projection, cancel=cancel)
    # the cells the run would not predict (too near the border) are left out: keep rows and tiles aligned
    lookup = pd.Series(cells["row"].to_numpy(), index=pd.MultiIndex.from_frame(cells[key].astype({"fov_name": str})))
    kept = lookup.reindex(pd.MultiIndex.from_frame(index[key].astype({"fov_name": str})))
    return kept.to_numpy(dtype=np.int64), len(rows), index, patches
