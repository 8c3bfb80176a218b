"""Patch extraction: read each (FOV, t) region once, crop every cell of a batch from memory.

VisCy reads one patch per cell (``image[t, channels, z0:z1, y-hy:y+hy, x-hx:x+hx]``). We produce the same
arrays but group a batch's cells by (FOV, t): whole planes (selected channels × z-range × Y × X) are read
once and kept in a small LRU cache shared by the read-ahead threads; planes too large for the cache are
read as the bounding box of the group's patches. No padding is ever applied (the border filter
guarantees every patch fits).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
import pandas as pd


class PatchReader:
    """Crop ``(B, C, Z, 2*hy, 2*hx)`` float32 patches for rows of a cell table.

    Parameters
    ----------
    fovs : the plate's FOV list (``cells.fov_index`` indexes it)
    channel_indices : plate channel indices in ``source_channel`` order
    z_range : (z0, z1), end exclusive
    patch_size : initial YX patch size; the crop is ``2*(p//2)``
    final_size : YX size after a centre crop (VisCy legacy behaviour when smaller than patch_size)
    cache_bytes : LRU budget for whole planes
    """

    def __init__(
        self,
        fovs: Sequence,
        channel_indices: Sequence[int],
        z_range: tuple[int, int],
        patch_size: tuple[int, int],
        final_size: tuple[int, int] | None = None,
        cache_bytes: int = 512 * 2**20,
    ):
        self.fovs = list(fovs)
        self.channels = list(channel_indices)
        self.z0, self.z1 = int(z_range[0]), int(z_range[1])
        self.hy, self.hx = int(patch_size[0]) // 2, int(patch_size[1]) // 2
        self.final = tuple(final_size) if final_size is not None else (2 * self.hy, 2 * self.hx)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple[int, int], Future] = OrderedDict()
        self._cache_used = 0
        self._lock = threading.Lock()
        self.bytes_read = 0

    @property
    def patch_shape(self) -> tuple[int, int, int, int]:
        return (len(self.channels), self.z1 - self.z0, *self.final)

    def _plane_nbytes(self, fov) -> int:
        _, _, _, h, w = fov.shape
        return len(self.channels) * (self.z1 - self.z0) * h * w * 4

    def _read_region(self, fov, t: int, ys: slice, xs: slice) -> np.ndarray:
        img = fov.image
        ch = self.channels
        zs = slice(self.z0, self.z1)
        if ch == list(range(ch[0], ch[-1] + 1)):
            out = np.asarray(img[t, ch[0] : ch[-1] + 1, zs, ys, xs])
        else:
            out = np.stack([np.asarray(img[t, c, zs, ys, xs]) for c in ch])
        self.bytes_read += out.nbytes
        return out.astype(np.float32, copy=False)

    def _plane(self, fov_index: int, t: int) -> np.ndarray:
        key = (fov_index, t)
        with self._lock:
            fut = self._cache.get(key)
            owner = fut is None
            if owner:
                fut = self._cache[key] = Future()
            else:
                self._cache.move_to_end(key)
        if not owner:
            return fut.result()  # read (or being read) by another thread
        try:
            plane = self._read_region(self.fovs[fov_index], t, slice(None), slice(None))
        except BaseException as exc:
            with self._lock:
                self._cache.pop(key, None)
            fut.set_exception(exc)
            raise
        fut.set_result(plane)
        with self._lock:
            self._cache_used += plane.nbytes
            while self._cache_used > self.cache_bytes and len(self._cache) > 1:
                old_key, old = next(iter(self._cache.items()))
                if old_key == key or not old.done():
                    break
                del self._cache[old_key]
                if old.exception() is None:
                    self._cache_used -= old.result().nbytes
        return plane

    def read(self, cells: pd.DataFrame) -> np.ndarray:
        """Patches for the rows of *cells* (columns ``fov_index``, ``t``, ``y``, ``x``), in row order."""
        n = len(cells)
        c, z, fy, fx = self.patch_shape
        out = np.empty((n, c, z, fy, fx), dtype=np.float32)
        hy, hx = self.hy, self.hx
        oy, ox = (2 * hy - fy) // 2, (2 * hx - fx) // 2  # centre-crop offsets (MONAI: (size-roi)//2)
        fov_idx = cells["fov_index"].to_numpy()
        ts = cells["t"].to_numpy()
        ys = cells["y"].to_numpy()
        xs = cells["x"].to_numpy()
        order = np.lexsort((ts, fov_idx))
        keys = np.stack([fov_idx[order], ts[order]], axis=1)
        bounds = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
        for group in np.split(order, bounds):
            f, t = int(fov_idx[group[0]]), int(ts[group[0]])
            fov = self.fovs[f]
            if self._plane_nbytes(fov) <= self.cache_bytes // 4:
                region, y0, x0 = self._plane(f, t), 0, 0
            else:
                y0 = int(ys[group].min()) - hy
                x0 = int(xs[group].min()) - hx
                y1 = int(ys[group].max()) + hy
                x1 = int(xs[group].max()) + hx
                region = self._read_region(fov, t, slice(y0, y1), slice(x0, x1))
            for i in group:
                yy = int(ys[i]) - hy - y0 + oy
                xx = int(xs[i]) - hx - x0 + ox
                out[i] = region[:, :, yy : yy + fy, xx : xx + fx]
        return out
