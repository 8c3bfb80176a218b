"""The prediction engine shared by the CLI and the napari widget.

``plan_prediction`` validates everything up front (channels, z-range, patch vs image and model, tracks,
normalisation statistics) and fixes the cell order and batch partition exactly as VisCy does.
``predict_batches`` streams :class:`BatchResult` objects: batches are read and normalised in background
threads while the model runs, the run can be cancelled between batches, and nothing is written.
``run_prediction`` is the whole job: checkpoint → plan → batches → AnnData store (atomic).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .architecture import EncoderConfig, patch_multiple
from .config import PredictConfig
from .errors import Cancelled, ConfigError, PlateError, TracksError
from .normalize import StatsTable, normalize_batch
from .patches import PatchReader, sampled_affine
from .plate import Plate
from .tracks import build_cell_table


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


# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BatchResult:
    """One predicted batch: rows [start, stop) of the plan's cell table."""

    index: int
    start: int
    stop: int
    features: np.ndarray
    projections: np.ndarray
    n_batches: int
    n_cells: int
    elapsed: float


def resolve_device(device: str | None = "auto") -> str:
    import torch

    device = (device or "auto").lower()
    if device in ("auto", "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        if device == "gpu":
            raise ConfigError("device 'gpu' requested but CUDA is not available")
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if device.startswith("cuda") or device in ("cpu", "mps"):
        return device
    raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def _precision_context(precision: str, device: str):
    import torch

    dev_type = device.split(":")[0]
    if precision == "bf16-mixed":
        return torch.autocast(dev_type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        if dev_type == "cpu":
            raise ConfigError("precision 16-mixed needs a GPU; use bf16-mixed or 32-true on CPU")
        return torch.autocast(dev_type, dtype=torch.float16)
    return contextlib.nullcontext()


def predict_batches(
    plan: PredictionPlan,
    model,
    device: str = "auto",
    precision: str | None = None,
    loader_threads: int | None = None,
    prefetch: int = 2,
    cancel: threading.Event | None = None,
    batches: list[int] | None = None,
    channels_last: bool = False,
) -> Iterator[BatchResult]:
    """Run *model* over the plan's batches (or the given batch indices), yielding results in order.

    Batches are read and normalised ``prefetch`` ahead by ``loader_threads`` threads. Setting *cancel*
    stops between batches with :class:`Cancelled`; closing the generator also stops cleanly.
    """
    import torch

    dev = resolve_device(device)
    precision = precision or plan.config.precision
    true_dtype = {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(precision)
    model = model.to(dev).eval()
    if true_dtype is not None:
        model = model.to(true_dtype)
    if channels_last:  # 2-D convolutions only: the 3-D stem's 5-D weight has no channels_last layout
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    order = list(range(plan.n_batches)) if batches is None else list(batches)
    pin = dev.startswith("cuda")
    threads = max(1, loader_threads or plan.config.num_workers)
    t0 = time.perf_counter()
    batches_in = read_ahead(plan, order, threads, prefetch, pin_memory=pin)
    try:
        with torch.inference_mode(), _precision_context(precision, dev):
            for i, x in batches_in:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("prediction cancelled")
                x = x.to(dev, non_blocking=pin)
                if true_dtype is not None:
                    x = x.to(true_dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                feats, projs = model(x)
                start, stop = plan.batch_bounds(i)
                yield BatchResult(
                    index=i,
                    start=start,
                    stop=stop,
                    features=feats.float().cpu().numpy(),
                    projections=projs.float().cpu().numpy(),
                    n_batches=plan.n_batches,
                    n_cells=plan.n_cells,
                    elapsed=time.perf_counter() - t0,
                )
    finally:
        batches_in.close()


def read_ahead(plan: PredictionPlan, indices, threads: int = 2, prefetch: int = 2, pin_memory: bool = False):
    """Yield ``(i, normalised batch tensor)`` for batch *indices* in order, ``prefetch`` batches ahead.

    Batches are read and normalised by *threads* background threads; the reader is told which cells
    are coming, so each plane leaves its cache after its last cell. Closing the generator cancels the
    pending reads and empties the cache.
    """
    indices = list(indices)
    if not indices:
        return
    rows = [np.arange(*plan.batch_bounds(i)) for i in indices]
    plan.reader.expect(plan.cells.iloc[np.concatenate(rows)])

    def load(i):
        x = plan.load_batch(i)
        return x.pin_memory() if pin_memory else x

    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dynaclr-read")
    pending: deque = deque()
    it = iter(indices)
    try:
        for i in it:
            pending.append((i, pool.submit(load, i)))
            if len(pending) > prefetch:
                break
        while pending:
            i, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load, nxt)))
            yield i, fut.result()
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        plan.reader.expect(None)
        plan.reader.clear()


class EmbeddingAccumulator:
    """Preallocated output arrays filled batch by batch (memory = the final arrays only).

    Rows start as NaN (so a row never filled cannot pass for an embedding) and are written up front, so the
    process memory is allocated once, before the first batch.
    """

    def __init__(self, n_cells: int, feature_dim: int, projection_dim: int):
        self.features = np.full((n_cells, feature_dim), np.nan, dtype=np.float32)
        self.projections = np.full((n_cells, projection_dim), np.nan, dtype=np.float32)
        self.filled = np.zeros(n_cells, dtype=bool)

    def add(self, res: BatchResult) -> None:
        self.features[res.start : res.stop] = res.features
        self.projections[res.start : res.stop] = res.projections
        self.filled[res.start : res.stop] = True

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())


@dataclasses.dataclass
class RunSummary:
    output_path: Path | None
    n_cells: int
    n_batches: int
    n_fovs: int
    predict_seconds: float  # checkpoint → embeddings (no reductions, no writing)
    seconds: float  # including reductions
    device: str
    encoder: EncoderConfig
    obsm_keys: list[str]

    @property
    def cells_per_second(self) -> float:
        return self.n_cells / self.predict_seconds if self.predict_seconds else float("nan")


@dataclasses.dataclass
class Planned:
    """First event of a run: the cells that will be predicted (obs rows in store order)."""

    obs: pd.DataFrame
    n_batches: int
    encoder: EncoderConfig
    device: str


@dataclasses.dataclass
class Stage:
    """A named step after prediction: ``"reducing"``, ``"writing"``."""

    name: str


def prediction_events(cfg: PredictConfig, device: str | None = None, cancel: threading.Event | None = None,
                      write: bool = True, loaded=None, reduce: Callable | None = None):
    """The whole job as a generator: checkpoint → plan → batches → reductions → AnnData store.

    Yields :class:`Planned`, one :class:`BatchResult` per batch, then :class:`Stage` events, and returns
    ``(RunSummary, AnnData)``. The CLI (:func:`run_prediction`) and the napari widget (in a thread worker)
    both run it. Data errors are raised before the model is built. *loaded*: an already loaded
    :class:`~napari_dynaclr.model.LoadedModel` (the widget reuses the one it checked). Setting *cancel*
    (or closing the generator) stops between batches; nothing is written then.
    *reduce*: ``reduce(adata, cfg)`` adds the reductions instead of :func:`~napari_dynaclr.reduce.apply_reductions`
    (the napari job computes UMAP/PHATE in a child process, :func:`napari_dynaclr.jobs.gui_reductions`).
    """
    from .distributed import wants_lightning
    from .model import model_from_state_dict, read_state_dict, resolve_config
    from .reduce import apply_reductions
    from .store import build_anndata, check_output_path, uns_for, write_store

    if write:
        if cfg.output_path is None:
            raise ConfigError("no output path: give --output (or EmbeddingWriter output_path)")
        check_output_path(cfg.output_path, cfg.overwrite)
    if cfg.ckpt_path is None and loaded is None:
        raise ConfigError("no checkpoint: give --ckpt-path (or ckpt_path in the config)")
    cancel = cancel or threading.Event()
    if loaded is None:
        state_dict = read_state_dict(cfg.ckpt_path)
        plan = plan_prediction(cfg, resolve_config(state_dict, cfg.encoder))  # data errors before the model
        try:
            loaded = model_from_state_dict(state_dict, cfg.encoder, cfg.ckpt_path)
        except BaseException:
            plan.close()
            raise
        del state_dict
    else:
        plan = plan_prediction(cfg, loaded.config)
    t0 = time.perf_counter()
    try:
        multi = wants_lightning(cfg)
        dev = "lightning" if multi else resolve_device(device or cfg.accelerator)
        yield Planned(plan.index_frame(), plan.n_batches, loaded.config, dev)
        if multi:
            from .distributed import predict_with_lightning

            done: list[BatchResult] = []
            features, projections, dev = predict_with_lightning(plan, loaded.model, cfg, on_batch=done.append)
            yield from done
        else:
            acc = EmbeddingAccumulator(plan.n_cells, loaded.config.num_features, loaded.config.projection_dim)
            for res in predict_batches(plan, loaded.model, dev, cancel=cancel):
                acc.add(res)
                yield res
            features, projections = acc.features, acc.projections
        obs = plan.index_frame()
        predict_seconds = time.perf_counter() - t0
    finally:
        plan.close()
    if cancel.is_set():
        raise Cancelled("prediction cancelled")
    yield Stage("reducing")
    adata = build_anndata(obs, features, projections, cfg.embedding_key, uns_for(cfg))
    if reduce is None:
        apply_reductions(adata, cfg.pca_kwargs, cfg.umap_kwargs, cfg.phate_kwargs)
    else:
        reduce(adata, cfg)
    if cancel.is_set():
        raise Cancelled("prediction cancelled")
    if write:
        yield Stage("writing")
        write_store(adata, cfg.output_path, overwrite=cfg.overwrite)
    summary = RunSummary(
        cfg.output_path if write else None,
        plan.n_cells,
        plan.n_batches,
        int(obs["fov_name"].nunique()),
        predict_seconds,
        time.perf_counter() - t0,
        dev,
        loaded.config,
        sorted(adata.obsm.keys()),
    )
    return summary, adata


def run_prediction(
    cfg: PredictConfig,
    device: str | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    cancel: threading.Event | None = None,
    write: bool = True,
):
    """Run :func:`prediction_events` to the end, calling *on_batch* per batch; return ``(RunSummary, AnnData)``.

    Several devices or nodes (``cfg.devices > 1``, ``num_nodes > 1``) go through Lightning
    (:mod:`napari_dynaclr.distributed`); the store is the same as a single-device run's.
    """
    events = prediction_events(cfg, device, cancel, write)
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            return stop.value
        if on_batch is not None and isinstance(ev, BatchResult):
            on_batch(ev)
