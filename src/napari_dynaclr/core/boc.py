"""Bag-of-Channels (BoC) normalisation and geometry, as VisCy's ``MultiExperimentDataModule`` computes them
(``channels_per_sample: 1``): one sample per cell-index row (cell, timepoint, channel). The settings are the
run's (:class:`~napari_dynaclr.core.config.PredictConfig` with a
:class:`~napari_dynaclr.core.sources.CellIndexSource`).

No torch here: the per-experiment z window (from the plate's focus statistics), the pixel-size scale factors,
the border clamp, the label-free rule of the z reduction and the index arrays of the nearest-exact resize and
the centre crop are plain numpy, so a run is planned (and refused) before the model is built.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from napari_dynaclr.errors import ConfigError, shorten

#: statistics a BoC ``NormalizeSampled`` can use (the cell index's ``norm_<stat>`` columns)
BOC_STATS = ("mean", "std", "median", "iqr", "max", "min")
BOC_LEVELS = ("timepoint_statistics", "fov_statistics", "dataset_statistics")


@dataclasses.dataclass(frozen=True)
class BocNormalization:
    """``NormalizeSampled(keys=[channel_0], level, subtrahend, divisor)``: ``(x - s) / (d + 1e-8)`` per row."""

    level: str = "timepoint_statistics"
    subtrahend: str = "mean"
    divisor: str = "std"

    def __post_init__(self):
        if self.level not in BOC_LEVELS:
            raise ConfigError(f"NormalizeSampled level {self.level!r} is not one of {', '.join(BOC_LEVELS)}")
        for name in (self.subtrahend, self.divisor):
            if name not in BOC_STATS:
                raise ConfigError(f"NormalizeSampled statistic {name!r} is not one of {', '.join(BOC_STATS)}")




# ------------------------------------------------------------------------------------------------------ geometry

@dataclasses.dataclass(frozen=True)
class ExperimentGeometry:
    """Where and how one experiment's samples are read (VisCy ``ExperimentRegistry`` + ``_slice_patch``)."""

    z_range: tuple[int, int]  # [zs, ze) of the focus-placed window
    scale: tuple[float, float, float]  # (z, y, x) = reference / float32 pixel size
    read_z: tuple[int, int]  # slices actually read (scaled depth, centred on the window)
    read_half: tuple[int, int]  # half-size (y, x) of the read window, round(half * scale)
    resize: bool  # nearest-exact resize to target (any scale != 1.0)
    target: tuple[int, int, int]  # (z, y, x) after the resize


def z_window(z_total: int, depth: int, focus_mean: float | None, offset: float) -> tuple[int, int]:
    """VisCy's focus-placed z window ``[zs, ze)``: centre ``round(focus)`` (``Z // 2`` without focus data)."""
    extent = min(depth, z_total)
    zc = round(focus_mean) if focus_mean is not None else z_total // 2
    zs = max(0, zc - int(extent * offset))
    ze = min(z_total, zs + extent)
    zs = max(0, ze - extent)
    return zs, ze


def scale_factor(reference: float | None, pixel: float | None) -> float:
    """``reference / float(float32 pixel)``; 1.0 when the reference is unset."""
    if reference is None:
        return 1.0
    return float(reference) / float(np.float32(pixel))


def experiment_geometry(cfg, z_total: int, focus_mean: float | None, pixel_xy: float | None,
                        pixel_z: float | None) -> ExperimentGeometry:
    zs, ze = z_window(z_total, cfg.extraction_depth, focus_mean, cfg.z_focus_offset)
    sz = scale_factor(cfg.reference_pixel_size_z_um, pixel_z)
    sy = sx = scale_factor(cfg.reference_pixel_size_xy_um, pixel_xy)
    hy, hx = cfg.half_patch
    n_z = round((ze - zs) * sz)
    zm = (zs + ze) // 2
    z0 = zm - n_z // 2
    resize = (sz, sy, sx) != (1.0, 1.0, 1.0)
    target = (cfg.z_extraction_window or (ze - zs), cfg.yx_patch_size[0], cfg.yx_patch_size[1])
    return ExperimentGeometry((zs, ze), (sz, sy, sx), (z0, z0 + n_z), (round(hy * sy), round(hx * sx)),
                              resize, target)


def nearest_exact_index(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each output position of torch's ``nearest-exact`` resize along one axis:
    ``min(floor((dst + 0.5) * float32(in / out)), in - 1)`` in float32."""
    scale = np.float32(size_in) / np.float32(size_out)
    src = np.floor((np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return np.minimum(src, size_in - 1)


def centre_start(size: int, roi: int) -> int:
    """MONAI's centre crop start: ``size // 2 - roi // 2``."""
    return size // 2 - roi // 2


# ----------------------------------------------------------------------------------------- rows and the border

def clamp_rows(y: np.ndarray, x: np.ndarray, height: int, width: int, half: tuple[int, int],
               max_shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VisCy's border rule on float32 centroids: ``(keep, y_centre, x_centre)``.

    Rows outside the image are dropped; the rest are clamped to ``[h, size - h]`` and dropped when the
    shift exceeds *max_shift*; the patch centre is the truncated clamped value.
    """
    y = np.asarray(y, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32)
    hy, hx = half
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    yc = np.clip(y, np.float32(hy), np.float32(height - hy))
    xc = np.clip(x, np.float32(hx), np.float32(width - hx))
    keep = inside & (np.abs(yc - y) <= max_shift) & (np.abs(xc - x) <= max_shift)
    return keep, yc.astype(np.int64), xc.astype(np.int64)


_FLUORESCENCE = re.compile(r"\bEX\d+.*\bEM\d+", re.IGNORECASE)
_LABEL_FREE_WORDS = re.compile(r"\b(bf|dic|pol|phc)\b", re.IGNORECASE)


def is_label_free(marker: str) -> bool:
    """VisCy's channel-name rule on the *marker*: label-free (middle slice) or not (max over z).

    A fluorescence name (``raw GFP EX488 EM525-45``) is not label-free; otherwise the substrings ``phase``,
    ``brightfield``, ``retardance`` or the words ``bf``, ``dic``, ``pol``, ``phc`` make it label-free.
    """
    marker = str(marker)
    if _FLUORESCENCE.search(marker):
        return False
    low = marker.lower()
    return any(s in low for s in ("phase", "brightfield", "retardance")) or bool(_LABEL_FREE_WORDS.search(marker))


def check_selection(names: Sequence[str] | None, known: Sequence[str], what: str, where: str) -> None:
    if names is None:
        return
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{what} {shorten(unknown)} not in {where} (known: {shorten(sorted(known), 8)})")
