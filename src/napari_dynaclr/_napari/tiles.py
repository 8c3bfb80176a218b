"""Gallery tiles: multichannel patches tinted and added as napari's additive blending shows them."""

from __future__ import annotations

import numpy as np


def composite(patches: np.ndarray, colors) -> np.ndarray:
    """(N, C, Y, X) patches → (N, Y, X, 3) uint8 tiles: each channel stretched between its 1st and 99th
    percentile over all tiles, tinted with its colour and added (napari's additive blending)."""
    n, c, h, w = patches.shape
    out = np.zeros((n, h, w, 3), dtype=np.float32)
    for ch in range(c):
        values = patches[:, ch]
        finite = values[np.isfinite(values)]
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / ((hi - lo) or 1.0), 0, 1)
        out += scaled[..., None] * np.asarray(colors[ch % len(colors)], dtype=np.float32)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)
