"""Patch extraction: read each (FOV, t) region once, crop every cell of a batch from memory.

VisCy reads one patch per cell (``image[t, channels, z0:z1, y-hy:y+hy, x-hx:x+hx]`` through tensorstore).
We produce the same arrays but group a batch's cells by (FOV, t):

* whole planes (selected channels x z-range x Y x X) are read once and kept in an LRU cache shared by the
  read-ahead threads (a plane being read by one thread is awaited, not read again, by the others);
* :meth:`PatchReader.expect` tells the reader which cells are coming, so a plane is dropped as soon as its
  last cell is cropped: the cache holds only the planes still needed (a few per FOV), whatever the plate
  size, with ``cache_bytes`` as a hard cap;
* planes too large for the cache are read as the bounding box of the group's patches, or patch by patch
  when the patches are sparse in that box;
* cropping is one numpy copy per cell (the GIL is released during the copy); with an affine
  (:class:`napari_dynaclr.predict.transforms.SampledAffine`) the ``(x - subtrahend) / (divisor + 1e-8)``
  of ``NormalizeSampled`` is fused into the crop (same float32 operations in the same order as
  :func:`napari_dynaclr.predict.transforms.normalize_batch`, hence bit-identical results).

No padding is ever applied (the border filter guarantees every patch fits). Any failure to read pixels (a
corrupt, truncated or unreadable chunk: blosc/numcodecs/zarr ``RuntimeError``, ``ValueError``, ``OSError``...)
is a one-line :class:`~napari_dynaclr.errors.PlateError` naming the FOV, the timepoint and the channel.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

import numpy as np
import pandas as pd

from napari_dynaclr.errors import PlateError


class Affine(Protocol):
    """Per-cell, per-channel ``(x - sub) / div`` fused into the crop: float32 ``(B, C)`` arrays
    (:class:`napari_dynaclr.predict.transforms.SampledAffine`)."""

    sub: np.ndarray
    div: np.ndarray


class PatchReader:
    """Crop ``(B, C, Z, 2*hy, 2*hx)`` float32 patches for rows of a cell table.

    Parameters
    ----------
    fovs : the plate's FOV list (``cells.fov_index`` indexes it)
    channel_indices : plate channel indices in ``source_channel`` order
    z_range : (z0, z1), end exclusive
    patch_size : initial YX patch size; the crop is ``2*(p//2)``
    final_size : YX size after a centre crop (VisCy legacy behaviour when smaller than patch_size)
    cache_bytes : hard cap of the plane cache; planes larger than a quarter of it are never cached
    channel_names : names of *channel_indices* (for error messages); plate indices are named otherwise
    """

    def __init__(
        self,
        fovs: Sequence,
        channel_indices: Sequence[int],
        z_range: tuple[int, int],
        patch_size: tuple[int, int],
        final_size: tuple[int, int] | None = None,
        cache_bytes: int = 512 * 2**20,
        channel_names: Sequence[str] | None = None,
    ):
        self.fovs = list(fovs)
        self.channels = [int(c) for c in channel_indices]
        if channel_names is not None and len(channel_names) == len(self.channels):
            self.channel_names = [str(n) for n in channel_names]
        else:
            self.channel_names = [f"index {c}" for c in self.channels]
        self.z0, self.z1 = int(z_range[0]), int(z_range[1])
        self.hy, self.hx = int(patch_size[0]) // 2, int(patch_size[1]) // 2
        self.final = tuple(final_size) if final_size is not None else (2 * self.hy, 2 * self.hx)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple[int, int], Future] = OrderedDict()
        self._cache_used = 0
        self._lock = threading.Lock()
        self._images: dict[int, object] = {}
        self._remaining: Counter | None = None
        self.bytes_read = 0
        self.reads = 0
        lo, hi = min(self.channels), max(self.channels)
        span = hi - lo + 1
        # read a contiguous channel span once and reorder in memory unless it would read mostly unused channels
        if self.channels == list(range(lo, hi + 1)):
            self._chan_read = ("slice", slice(lo, hi + 1), None)
        elif span <= 2 * len(self.channels):
            self._chan_read = ("span", slice(lo, hi + 1), [c - lo for c in self.channels])
        else:
            self._chan_read = ("each", None, None)

    # ---------------------------------------------------------------------------------------- planning

    @property
    def patch_shape(self) -> tuple[int, int, int, int]:
        return (len(self.channels), self.z1 - self.z0, *self.final)

    def expect(self, cells: pd.DataFrame | None) -> None:
        """Declare the cells that will be read (any order, any batching): each (FOV, t) plane is then
        evicted as soon as its last expected cell is cropped. ``None`` goes back to plain LRU."""
        with self._lock:
            if cells is None:
                self._remaining = None
                return
            keys = zip(cells["fov_index"].to_numpy().tolist(), cells["t"].to_numpy().tolist(), strict=True)
            self._remaining = Counter(keys)

    @property
    def cached_planes(self) -> int:
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        return self._cache_used

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cache_used = 0

    # ----------------------------------------------------------------------------------------- reading

    def _image(self, fov_index: int):
        """The image array of a FOV, opened once (iohub re-opens ``position["0"]`` on every access, ~2 ms)."""
        img = self._images.get(fov_index)
        if img is None:
            img = self._images[fov_index] = self.fovs[fov_index].image
        return img

    def _plane_nbytes(self, fov) -> int:
        _, _, _, h, w = fov.shape
        itemsize = max(4, np.dtype(fov.dtype).itemsize)
        return len(self.channels) * (self.z1 - self.z0) * h * w * itemsize

    def _read_region(self, fov_index: int, t: int, ys: slice, xs: slice) -> np.ndarray:
        try:
            img = self._image(fov_index)
            zs = slice(self.z0, self.z1)
            how, cs, reorder = self._chan_read
            if how == "each":
                out = np.stack([np.asarray(img[t, c, zs, ys, xs]) for c in self.channels])
            else:
                out = np.asarray(img[t, cs, zs, ys, xs])
        except MemoryError:
            raise
        except Exception as exc:  # corrupt/truncated/unreadable chunk: blosc, numcodecs, zarr, OSError...
            raise self._read_error(fov_index, t, ys, xs, exc) from exc
        if reorder is not None:
            out = out[reorder]
        self.bytes_read += out.nbytes
        self.reads += 1
        return out.astype(np.float32, copy=False)

    def _read_error(self, fov_index: int, t: int, ys: slice, xs: slice, exc: Exception) -> PlateError:
        """One line naming the FOV, t and the channel that fails (each channel is read again on its own to
        find it) with the first line of the library's message."""
        from napari_dynaclr.core.plate import first_line

        name = getattr(self.fovs[fov_index], "name", str(fov_index))
        zs = slice(self.z0, self.z1)
        try:
            img = self._image(fov_index)
        except Exception as again:
            return PlateError(f"cannot read FOV {name} (t={t}): {first_line(again)}")
        for c, cname in zip(self.channels, self.channel_names, strict=True):
            try:
                np.asarray(img[t, c, zs, ys, xs])
            except MemoryError:
                raise
            except Exception as again:
                return PlateError(f"cannot read FOV {name} (t={t}, channel {cname}): {first_line(again)}")
        return PlateError(
            f"cannot read FOV {name} (t={t}, channels {', '.join(self.channel_names)}): {first_line(exc)}"
        )

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
            plane = self._read_region(fov_index, t, slice(None), slice(None))
        except BaseException as exc:
            with self._lock:
                if self._cache.get(key) is fut:
                    del self._cache[key]
            fut.set_exception(exc)
            raise
        fut.set_result(plane)
        with self._lock:
            if self._cache.get(key) is fut:
                self._cache_used += plane.nbytes
                self._evict_lru(keep=key)
        return plane

    def _evict_lru(self, keep) -> None:
        """Drop least recently used finished planes until under budget (lock held)."""
        for old_key in list(self._cache):
            if self._cache_used <= self.cache_bytes:
                break
            old = self._cache[old_key]
            if old_key == keep or not old.done():
                continue
            del self._cache[old_key]
            if old.exception() is None:
                self._cache_used -= old.result().nbytes

    def _done_with(self, fov_index: int, t: int, n: int) -> None:
        """*n* cells of plane (fov_index, t) were cropped: drop the plane if no expected cell is left."""
        if self._remaining is None:
            return
        key = (fov_index, t)
        with self._lock:
            left = self._remaining.get(key, 0) - n
            if left > 0:
                self._remaining[key] = left
                return
            self._remaining.pop(key, None)
            fut = self._cache.get(key)
            if fut is not None and fut.done():
                del self._cache[key]
                if fut.exception() is None:
                    self._cache_used -= fut.result().nbytes

    def _group_regions(self, f: int, t: int, ys: np.ndarray, xs: np.ndarray):
        """Yield ``(region, y0, x0, member_mask)`` covering the cells of one (FOV, t) group."""
        fov = self.fovs[f]
        hy, hx = self.hy, self.hx
        if self._plane_nbytes(fov) <= self.cache_bytes // 4:
            yield self._plane(f, t), 0, 0, None
            return
        y0, y1 = int(ys.min()) - hy, int(ys.max()) + hy
        x0, x1 = int(xs.min()) - hx, int(xs.max()) + hx
        if (y1 - y0) * (x1 - x0) <= 2 * len(ys) * (2 * hy) * (2 * hx):
            yield self._read_region(f, t, slice(y0, y1), slice(x0, x1)), y0, x0, None
            return
        for k in range(len(ys)):  # sparse cells in a large plane: one patch each (VisCy's reads)
            y, x = int(ys[k]), int(xs[k])
            mask = np.zeros(len(ys), dtype=bool)
            mask[k] = True
            yield self._read_region(f, t, slice(y - hy, y + hy), slice(x - hx, x + hx)), y - hy, x - hx, mask

    def windows(self, cells: pd.DataFrame):
        """Yield ``(row, window)`` for the rows of *cells* (grouped by plane, not in row order): *window* is a
        read-only view ``(C, Z, 2*hy, 2*hx)`` into the cached plane (or region) — no copy, the caller selects
        what it needs from it (the Bag-of-Channels plan: z reduction, resize and crop as one selection)."""
        if len(cells) == 0:
            return
        hy, hx = self.hy, self.hx
        fov_idx = cells["fov_index"].to_numpy()
        ts = cells["t"].to_numpy()
        ys = cells["y"].to_numpy()
        xs = cells["x"].to_numpy()
        order = np.lexsort((ts, fov_idx))
        fo, to = fov_idx[order], ts[order]
        bounds = np.flatnonzero((np.diff(fo) != 0) | (np.diff(to) != 0)) + 1
        for group in np.split(order, bounds):
            f, t = int(fov_idx[group[0]]), int(ts[group[0]])
            for region, y0, x0, mask in self._group_regions(f, t, ys[group], xs[group]):
                members = group if mask is None else group[mask]
                for i in members.tolist():
                    yy, xx = int(ys[i]) - hy - y0, int(xs[i]) - hx - x0
                    yield i, region[:, :, yy : yy + 2 * hy, xx : xx + 2 * hx]
            self._done_with(f, t, len(group))

    def read(self, cells: pd.DataFrame, affine: Affine | None = None) -> np.ndarray:
        """Patches for the rows of *cells* (columns ``fov_index``, ``t``, ``y``, ``x``), in row order.

        With *affine*, each patch is normalised as it is cropped (``(patch - sub) / div`` per channel).
        """
        n = len(cells)
        c, z, fy, fx = self.patch_shape
        out = np.empty((n, c, z, fy, fx), dtype=np.float32)
        if n == 0:
            return out
        hy, hx = self.hy, self.hx
        oy, ox = (2 * hy - fy) // 2, (2 * hx - fx) // 2  # centre-crop offsets (MONAI: (size-roi)//2)
        fov_idx = cells["fov_index"].to_numpy()
        ts = cells["t"].to_numpy()
        ys = cells["y"].to_numpy()
        xs = cells["x"].to_numpy()
        if affine is not None:
            sub = affine.sub.reshape(n, c, 1, 1, 1)
            div = affine.div.reshape(n, c, 1, 1, 1)
        order = np.lexsort((ts, fov_idx))
        fo, to = fov_idx[order], ts[order]
        bounds = np.flatnonzero((np.diff(fo) != 0) | (np.diff(to) != 0)) + 1
        for group in np.split(order, bounds):
            f, t = int(fov_idx[group[0]]), int(ts[group[0]])
            gy, gx = ys[group], xs[group]
            for region, y0, x0, mask in self._group_regions(f, t, gy, gx):
                members = group if mask is None else group[mask]
                for i in members.tolist():
                    yy = int(ys[i]) - hy - y0 + oy
                    xx = int(xs[i]) - hx - x0 + ox
                    patch = region[:, :, yy : yy + fy, xx : xx + fx]
                    if affine is None:
                        out[i] = patch
                    else:
                        dst = out[i]
                        np.subtract(patch, sub[i], out=dst)
                        np.divide(dst, div[i], out=dst)
            self._done_with(f, t, len(group))
        return out
