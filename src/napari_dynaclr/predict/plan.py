"""The plan of a prediction: plate, tracks and settings checked against each other and the encoder, with
VisCy's cell order and batch partition fixed. No model and no torch at import time: the napari preview
plans with it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np  # noqa: E402
import pandas as pd

from napari_dynaclr.core.architecture import EncoderConfig, patch_multiple
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.normalize import StatsTable
from napari_dynaclr.core.patches import PatchReader
from napari_dynaclr.core.plate import Plate
from napari_dynaclr.core.tracks import build_cell_table
from napari_dynaclr.errors import ConfigError, PlateError, TracksError
from napari_dynaclr.predict.transforms import normalize_batch, sampled_affine


@dataclasses.dataclass
class PredictionPlan:
    """A validated prediction: plate, ordered cell table, batch partition, reader and statistics."""

    config: PredictConfig
    plate: Plate
    cells: pd.DataFrame
    channel_indices: list[int]
    stats: StatsTable
    reader: PatchReader
    fov_counts: dict

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_cells / self.batch_size)

    def batch_bounds(self, i: int) -> tuple[int, int]:
        start = i * self.batch_size
        return start, min(start + self.batch_size, self.n_cells)

    def read_batch(self, i: int) -> np.ndarray:
        """Raw float32 patches (B, C, Z, Y, X) of batch *i*."""
        start, stop = self.batch_bounds(i)
        return self.reader.read(self.cells.iloc[start:stop])

    def load_batch(self, i: int):
        """Normalised float32 torch tensor (B, C, Z, Y, X) of batch *i*, as VisCy feeds the model."""
        import torch

        start, stop = self.batch_bounds(i)
        rows = self.cells.iloc[start:stop]
        fov_index, t = rows["fov_index"].to_numpy(), rows["t"].to_numpy()
        cfg = self.config
        affine = sampled_affine(cfg.normalizations, cfg.source_channel, self.stats, fov_index, t)
        if affine is not None:  # NormalizeSampled fused into the crop: one pass, bit-identical
            return torch.from_numpy(self.reader.read(rows, affine))
        x = torch.from_numpy(self.reader.read(rows))
        return normalize_batch(x, cfg.source_channel, cfg.normalizations, self.stats, fov_index, t)

    def index_frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """obs-style rows (VisCy index columns) for cells [start, stop)."""
        return self.cells.iloc[start:stop].drop(columns=["fov_index"]).reset_index(drop=True)

    def close(self):
        self.plate.close()


def plan_prediction(cfg: PredictConfig, encoder: EncoderConfig | None = None) -> PredictionPlan:
    """Open the plate and tracks and check them against the config and the encoder."""
    plate = Plate(cfg.data_path, cfg.include_wells, cfg.exclude_fovs)
    try:
        return _plan(cfg, plate, encoder)
    except BaseException:
        plate.close()
        raise


def _plan(cfg: PredictConfig, plate: Plate, encoder: EncoderConfig | None) -> PredictionPlan:
    channel_indices = plate.channel_indices(cfg.source_channel)
    z0, z1 = cfg.z_range
    ph, pw = cfg.initial_yx_patch_size
    for fov in plate.fovs:
        _, _, nz, h, w = fov.shape
        if z1 > nz:
            raise PlateError(f"z_range [{z0}, {z1}] exceeds FOV {fov.name} with Z={nz} (stop is exclusive)")
        if 2 * (ph // 2) >= h or 2 * (pw // 2) >= w:
            raise PlateError(
                f"patch {ph}x{pw} does not fit FOV {fov.name} image of {h}x{w} (YX); choose a smaller patch"
            )
    if encoder is not None:
        _check_encoder(cfg, encoder)
    cells, counts = build_cell_table(plate.fovs, cfg.tracks_path, cfg.initial_yx_patch_size, cfg.include_cells)
    if cells.empty:
        total = sum(c["csv_rows"] for c in counts.values())
        raise TracksError(
            f"no cells to predict: all {total} tracked rows lie within {ph // 2}x{pw // 2} px of the image "
            "border (or outside the selected cells); nothing is written"
        )
    used = sorted(set(cells["fov_index"].tolist()))
    stats = StatsTable(plate.fovs, cfg.normalizations, used)
    reader = PatchReader(
        plate.fovs, channel_indices, cfg.z_range, cfg.initial_yx_patch_size, cfg.patch_size
    )
    return PredictionPlan(cfg, plate, cells, channel_indices, stats, reader, counts)


def _check_encoder(cfg: PredictConfig, enc: EncoderConfig) -> None:
    if len(cfg.source_channel) != enc.in_channels:
        raise ConfigError(
            f"the model takes {enc.in_channels} channel(s) but source_channel has {len(cfg.source_channel)}: "
            f"{cfg.source_channel}"
        )
    kz, sz = enc.stem_kernel_size[0], enc.stem_stride[0]
    depth = cfg.z_depth
    if depth < kz or (depth - kz) // sz + 1 != enc.stem_out_depth:
        raise ConfigError(
            f"z_range {list(cfg.z_range)} gives {depth} slices but the model's stem expects "
            f"in_stack_depth {enc.in_stack_depth}"
        )
    stride_y, stride_x = enc.stem_stride[1:]
    py, px = cfg.patch_size
    if py % stride_y or px % stride_x:
        raise ConfigError(
            f"patch {py}x{px} is not a multiple of the stem stride {stride_y}x{stride_x}; "
            f"use a multiple of {patch_multiple(enc)}"
        )
    mult = patch_multiple(enc)
    if py < mult or px < mult:
        raise ConfigError(f"patch {py}x{px} is too small for {enc.backbone}; use at least {mult}x{mult}")
    if py % mult or px % mult:
        warnings.warn(
            f"patch {py}x{px} is not a multiple of {mult}; the backbone will crop its feature maps",
            stacklevel=3,
        )
