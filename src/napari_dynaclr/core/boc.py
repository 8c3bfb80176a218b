"""Bag-of-Channels (BoC) prediction settings and geometry, as VisCy's ``MultiExperimentDataModule`` computes them
(``channels_per_sample: 1``): one sample per cell-index row (cell, timepoint, channel).

No torch here: the per-experiment z window (from the plate's focus statistics), the pixel-size scale factors,
the border clamp, the label-free rule of the z reduction and the index arrays of the nearest-exact resize and
the centre crop are plain numpy, so a run is planned (and refused) before the model is built.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.core.config import PRECISIONS, _pair, check_cpu_backend
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


@dataclasses.dataclass
class BocConfig:
    """Everything a BoC prediction needs (VisCy ``MultiExperimentDataModule`` + ``EmbeddingWriter`` + trainer).

    The cells come from a cell-index parquet (*cell_index_path*) or are built from plates and tracks with a
    VisCy collection YAML (*collection_path*; *data_path* / *tracks_path* replace its experiments' paths).
    """

    cell_index_path: Path | None = None
    collection_path: Path | None = None
    collection: dict | None = None  # a collection given as a mapping (the CLI's experiment flags)
    data_path: Path | None = None  # with a collection: the plate of every experiment
    tracks_path: Path | None = None  # with a collection: the tracks folder of every experiment
    focus_channel: str | None = None
    reference_pixel_size_xy_um: float | None = None
    reference_pixel_size_z_um: float | None = None
    z_window: int = 1
    z_extraction_window: int | None = None
    z_focus_offset: float = 0.5
    yx_patch_size: tuple[int, int] = (192, 192)
    final_yx_patch_size: tuple[int, int] = (160, 160)
    max_border_shift: int = -1
    normalizations: list[BocNormalization] = dataclasses.field(default_factory=list)
    z_reduction: bool = False  # BatchedChannelWiseZReductiond among the normalisations
    include_wells: list[str] | None = None
    exclude_fovs: list[str] | None = None
    batch_size: int = 128
    ckpt_path: Path | None = None
    encoder: EncoderConfig | None = None
    output_path: Path | None = None
    overwrite: bool = False
    embedding_key: str = "features"
    pca_kwargs: dict | None = None
    umap_kwargs: dict | None = None
    phate_kwargs: dict | None = None
    accelerator: str = "auto"
    devices: int | str | list = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    num_workers: int = 2
    cpu_backend: str = "auto"  # CPU encoder kernels: auto (the fastest exact one), openvino, onednn, eager
    allow_nonfinite: bool = False
    config_path: Path | None = None

    def __post_init__(self):
        for key in ("cell_index_path", "collection_path", "data_path", "tracks_path"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, Path(value))
        given = [x is not None for x in (self.cell_index_path, self.collection_path, self.collection)]
        if sum(given) != 1:
            raise ConfigError("give one source of cells: a cell index (--cell-index), or a plate and tracks with the "
                              "experiment metadata (--collection, or --channels with --markers)")
        self.yx_patch_size = _pair(self.yx_patch_size, "yx_patch_size")
        self.final_yx_patch_size = _pair(self.final_yx_patch_size, "final_yx_patch_size")
        for name in ("z_window", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.z_extraction_window is not None and (
            not isinstance(self.z_extraction_window, int) or self.z_extraction_window < 1
        ):
            raise ConfigError(f"z_extraction_window must be a positive integer, got {self.z_extraction_window!r}")
        if self.z_window > self.reduced_depth:
            after = " after the z reduction" if self.z_reduction and self.extraction_depth > 1 else ""
            raise ConfigError(f"z_window {self.z_window} is larger than the {self.reduced_depth} slice(s) extracted"
                              f"{after} (z_extraction_window {self.extraction_depth})")
        if not 0.0 <= float(self.z_focus_offset) <= 1.0:
            raise ConfigError(f"z_focus_offset must lie in [0, 1], got {self.z_focus_offset!r}")
        for y, name in zip(self.yx_patch_size, ("y", "x")):
            if y < 2:
                raise ConfigError(f"yx_patch_size {list(self.yx_patch_size)} is too small ({name})")
        if any(f > i for f, i in zip(self.final_yx_patch_size, self.yx_patch_size)) or min(
            self.final_yx_patch_size
        ) < 1:
            raise ConfigError(f"final_yx_patch_size {list(self.final_yx_patch_size)} must lie within "
                              f"yx_patch_size {list(self.yx_patch_size)}")
        for name in ("reference_pixel_size_xy_um", "reference_pixel_size_z_um"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not float(value) > 0 or not math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number (micrometres), got {value!r}")
        if not isinstance(self.max_border_shift, int) or isinstance(self.max_border_shift, bool):
            raise ConfigError(f"max_border_shift must be an integer, got {self.max_border_shift!r}")
        if self.embedding_key not in ("features", "projections"):
            raise ConfigError(f"embedding_key must be 'features' or 'projections', got {self.embedding_key!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        check_cpu_backend(self.cpu_backend)
        if len(self.normalizations) > 1:
            raise ConfigError("a BoC prediction takes at most one NormalizeSampled (keys [channel_0])")

    @classmethod
    def plain(cls, cell_index=None, collection=None, plate=None, tracks=None, channels=None, markers=None,
              pixel_size=None, perturbation_wells=None, interval_minutes=None, start_hpi=None, z_window=1,
              z_extraction_window=None, z_focus_offset=0.5, focus_channel=None, reference_pixel_size=None,
              patch_size=(192, 192), final_patch_size=None, norm_level="timepoint_statistics", z_reduction=None,
              **fields) -> BocConfig:
        """The common case without a predict.yml (the CLI's flags). Cells from *cell_index*, from *collection*
        (a collection YAML; *plate* / *tracks* replace its paths), or from *plate* + *tracks* with one experiment
        per channel of *channels* (``<marker>`` named by *markers*, *pixel_size* ``[xy, z]`` in um,
        *perturbation_wells* ``{label: [wells]}``). *z_reduction* defaults to on for a one-slice model."""
        collection_doc = None
        if channels:
            if cell_index is not None or collection is not None:
                raise ConfigError("--channels/--markers describe the experiments of --plate/--tracks; they cannot be "
                                  "combined with --cell-index or --collection")
            collection_doc = flag_collection(plate, tracks, channels, markers, pixel_size, perturbation_wells,
                                              interval_minutes, start_hpi)
        elif markers or pixel_size or perturbation_wells:
            raise ConfigError("--markers, --pixel-size and --perturbation-wells need --channels (the plate's channels, "
                              "one experiment each)")
        ref = list(reference_pixel_size or [])
        if len(ref) > 2:
            raise ConfigError("--reference-pixel-size takes one or two values (xy [z], micrometres)")
        patch = _square(patch_size, "--patch-size")
        final = _square(final_patch_size, "--final-patch-size") if final_patch_size is not None else patch
        norms = [] if norm_level == "none" else [BocNormalization(level=norm_level)]
        return cls(cell_index_path=cell_index, collection_path=collection, collection=collection_doc,
                   data_path=plate if collection is not None else None,
                   tracks_path=tracks if collection is not None else None,
                   focus_channel=focus_channel, reference_pixel_size_xy_um=ref[0] if ref else None,
                   reference_pixel_size_z_um=ref[1] if len(ref) > 1 else None, z_window=z_window,
                   z_extraction_window=z_extraction_window, z_focus_offset=z_focus_offset, yx_patch_size=patch,
                   final_yx_patch_size=final, normalizations=norms,
                   z_reduction=(z_window == 1) if z_reduction is None else bool(z_reduction), **fields)

    @property
    def extraction_depth(self) -> int:
        """Slices read per sample before the z reduction and crop (VisCy: z_extraction_window or z_window)."""
        return self.z_extraction_window or self.z_window

    @property
    def reduced_depth(self) -> int:
        """Slices left after the z reduction (1 when it applies to a multi-slice window)."""
        return 1 if self.z_reduction and self.extraction_depth > 1 else self.extraction_depth

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.final_yx_patch_size

    @property
    def half_patch(self) -> tuple[int, int]:
        return self.yx_patch_size[0] // 2, self.yx_patch_size[1] // 2

    @property
    def border_shift(self) -> int:
        """VisCy's ``max_border_shift``: -1 means ``max(yx_patch_size // 4)``."""
        if self.max_border_shift >= 0:
            return self.max_border_shift
        return max(p // 4 for p in self.yx_patch_size)

    def with_overrides(self, **changes) -> BocConfig:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {shorten(unknown)} for a Bag-of-Channels prediction")
        return dataclasses.replace(self, **changes)

    def asks_several_devices(self) -> bool:
        from napari_dynaclr.core.config import PredictConfig

        return PredictConfig.asks_several_devices(self)  # same trainer settings, same answer

    def experiments(self) -> list:
        """The experiments of a run without a cell index (its collection YAML, or the experiment flags), their
        paths resolved as the run reads them."""
        from napari_dynaclr.core.collection import load_collection, parse_collection

        if self.collection is not None:
            return parse_collection(self.collection, Path.cwd(), "the experiment flags", self.data_path,
                                    self.tracks_path)
        return load_collection(self.collection_path, self.data_path, self.tracks_path)

    def input_paths(self) -> dict[str, Path | None]:
        """What a run reads, resolved as the run resolves it (an output may never be, contain or lie inside any of
        these): the plates and tracks of a collection's experiments, those a cell index names."""
        from napari_dynaclr.core.cell_index import index_inputs

        paths = {"cell index": self.cell_index_path, "collection": self.collection_path, "plate": self.data_path,
                 "tracks": self.tracks_path, "checkpoint": self.ckpt_path, "config": self.config_path}
        if self.cell_index_path is not None:
            paths.update(index_inputs(self.cell_index_path))
        else:
            for i, exp in enumerate(self.experiments()):  # (a bad collection is refused here, before any work)
                paths[f"plate {i} ({exp.name})"], paths[f"tracks {i} ({exp.name})"] = exp.data_path, exp.tracks_path
        return paths


def _square(value, flag: str) -> tuple[int, int]:
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(vals) <= 2:
        raise ConfigError(f"{flag} takes one or two values, got {vals}")
    return _pair(vals * (2 // len(vals)), flag)


def flag_collection(plate, tracks, channels, markers, pixel_size, perturbation_wells, interval_minutes,
                     start_hpi) -> dict:
    """A collection mapping (one experiment per channel) from the CLI's experiment flags."""
    if plate is None or tracks is None:
        raise ConfigError("--channels with --markers need --plate and --tracks")
    markers = list(markers or [])
    if len(markers) != len(channels):
        raise ConfigError(f"--markers needs one marker per channel of --channels ({len(channels)}), got "
                          f"{len(markers)}: the marker names what a channel images and decides its z reduction")
    if not perturbation_wells:
        raise ConfigError("--perturbation-wells is missing (e.g. mock=A/1 infected=A/2,B/1): VisCy's cell index "
                          "keeps only the wells it lists")
    px = list(pixel_size or [])
    if len(px) > 2:
        raise ConfigError("--pixel-size takes one or two values (xy [z], micrometres)")
    stem = Path(str(plate)).name.removesuffix(".zarr")
    exp = {"data_path": str(plate), "tracks_path": str(tracks), "perturbation_wells": perturbation_wells}
    if px:
        exp["pixel_size_xy_um"] = px[0]
    if len(px) > 1:
        exp["pixel_size_z_um"] = px[1]
    if interval_minutes is not None:
        exp["interval_minutes"] = interval_minutes
    if start_hpi is not None:
        exp["start_hpi"] = start_hpi
    return {"experiments": [{"name": f"{stem}_{m}", "channels": [{"name": c, "marker": m}], **exp}
                            for c, m in zip(channels, markers)]}


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


def experiment_geometry(cfg: BocConfig, z_total: int, focus_mean: float | None, pixel_xy: float | None,
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
