"""The whole prediction job, shared by the CLI, the napari child process and the benchmarks:
checkpoint → plan → batches (one device, or several through Lightning) → reductions → AnnData store.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

import numpy as np

from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.errors import Cancelled, ConfigError, DynaclrWarning, Remedy
from napari_dynaclr.predict.batches import NonfiniteEmbeddings, describe_cell, nonfinite_rows
from napari_dynaclr.predict.events import BatchResult, EmbeddingAccumulator, Planned, RunSummary, Stage
from napari_dynaclr.predict.planners import plan_for
from napari_dynaclr.predict.single import predict_batches, resolve_device


def prediction_events(cfg: PredictConfig, device: str | None = None, cancel: threading.Event | None = None,
                      write: bool = True):
    """The whole job as a generator: checkpoint → plan → batches → reductions → AnnData store.

    Yields :class:`Planned`, one :class:`BatchResult` per batch, then :class:`Stage` events, and returns
    ``(RunSummary, AnnData)``. The CLI (:func:`run_prediction`) and the napari plugin's work process
    (:mod:`napari_dynaclr.child`) both run it. Data errors are raised before the model is built.
    Setting *cancel* (or closing the generator) stops between batches; nothing is written then.

    With *write*, the output is checked and locked for the whole run before anything else happens
    (:class:`~napari_dynaclr.core.output.OutputGuard`: never an input, never anything but an embedding
    store, one writer, atomic replacement).
    """
    from napari_dynaclr.core.output import OutputGuard

    if not write or _secondary_rank():  # (other ranks of a Lightning run never write)
        return (yield from _events(cfg, device, cancel, write, None))
    if cfg.output_path is None:
        raise ConfigError("no output path", remedy=Remedy("output_path", None, joint=": "))
    with OutputGuard(cfg.output_path, cfg.overwrite, cfg.input_paths()) as guard:
        return (yield from _events(cfg, device, cancel, write, guard))


def _secondary_rank() -> bool:
    """A process that Lightning (or SLURM, torchrun) started for rank > 0 of a run."""
    import os

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "0")
        if value.isdigit() and int(value) > 0:
            return True
    return False


def _events(cfg: PredictConfig, device, cancel, write: bool, guard):
    """:func:`prediction_events`' body (*guard*: the held output guard when writing)."""
    from napari_dynaclr.core.provenance import store_uns
    from napari_dynaclr.core.reduce import apply_reductions
    from napari_dynaclr.core.store import build_anndata, write_store
    from napari_dynaclr.model.checkpoint import (
        model_from_state_dict,
        read_state_dict,
        resolve_config,
    )
    from napari_dynaclr.predict.lightning import wants_lightning

    if cfg.ckpt_path is None:
        raise ConfigError("no checkpoint", remedy=Remedy("ckpt_path", None, joint=": "))
    cancel = cancel or threading.Event()
    state_dict = read_state_dict(cfg.ckpt_path)
    encoder = resolve_config(state_dict, cfg.encoder)
    plan = plan_for(cfg, encoder)  # data errors before the model
    try:
        for note in check_settings_fit(cfg, plan.n_cells, encoder):
            warnings.warn(note, stacklevel=3)
        loaded = model_from_state_dict(state_dict, cfg.encoder, cfg.ckpt_path)
    except BaseException:
        plan.close()
        raise
    del state_dict
    t0 = time.perf_counter()
    backend_info: dict = {}
    try:
        multi = wants_lightning(cfg)
        dev = "lightning" if multi else resolve_device(device or cfg.accelerator)
        yield Planned(plan.index_frame(), plan.n_batches, loaded.config, dev)
        if multi:
            from napari_dynaclr.predict.lightning import predict_with_lightning

            done: list[BatchResult] = []
            features, projections, dev = predict_with_lightning(plan, loaded.model, cfg, on_batch=done.append)
            yield from done
        else:
            acc = EmbeddingAccumulator(plan.n_cells, loaded.config.num_features, loaded.config.projection_dim)
            for res in predict_batches(plan, loaded.model, dev, cancel=cancel, backend_info=backend_info):
                acc.add(res)
                yield res
            features, projections = acc.features, acc.projections
        obs = plan.index_frame()
        predict_seconds = time.perf_counter() - t0
        if cancel.is_set():
            raise Cancelled("prediction cancelled")
        bad_rows = nonfinite_rows(features, projections)  # every path (Lightning too), unfilled rows too
        n_bad = int(bad_rows.sum())
        first_bad = describe_cell(plan, int(np.flatnonzero(bad_rows)[0])) if n_bad else ""
        inputs, missing = plan.nonfinite, plan.missing_chunks
        recorded = plan.inputs()
    finally:
        plan.close()
    if n_bad and not cfg.allow_nonfinite:
        raise NonfiniteEmbeddings(
            f"{n_bad} of {len(bad_rows)} embedding rows are NaN/Inf (first: {first_bad}); nothing is written",
            remedy=Remedy("allow_nonfinite", purpose="to write them as NaN rows"),
        )
    yield Stage("reducing")
    uns = store_uns(cfg, recorded, cfg.output_path if write else None)
    adata = build_anndata(obs, features, projections, cfg.embedding_key, uns, layout=cfg.source.obs_layout)
    reductions = apply_reductions(adata, cfg.pca_kwargs, cfg.umap_kwargs, cfg.phate_kwargs)
    if n_bad:
        adata.uns["nonfinite_rows"] = n_bad
    if cancel.is_set():
        raise Cancelled("prediction cancelled")
    if write:
        yield Stage("writing")
        write_store(adata, cfg.output_path, overwrite=cfg.overwrite, guard=guard)
    _warn_nonfinite(n_bad, len(bad_rows), first_bad, inputs, reductions, adata)
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
        n_nonfinite_rows=n_bad,
        n_nonfinite_inputs=inputs.cells,
        n_missing_chunks=sum(m for m, _ in missing.values()),
        backend=backend_info,
    )
    return summary, adata


def check_settings_fit(cfg, n_cells: int, encoder: EncoderConfig) -> list[str]:
    """The settings whose validity depends on the planned data, checked after planning and before the model
    is built (a :class:`ConfigError` when one cannot run): the reductions asked for against the number of
    cells and the embedding width (:func:`napari_dynaclr.core.reduce.check_reduction_sizes`). Returns the
    notes on what runs but not as asked (VisCy's reduced ``n_neighbors``/``knn``).

    The reductions' arguments were checked when the config was made (its validation); the plan itself has
    already checked the FOV and well names, the channels, the z range and the patch size against the plate and
    the encoder. Rows that turn out NaN/Inf (only with ``allow_nonfinite``) are left out of the reductions; with
    fewer finite rows than a reduction needs, it still fails after the prediction.
    """
    from napari_dynaclr.core.reduce import check_reduction_sizes

    width = encoder.num_features if cfg.embedding_key == "features" else encoder.projection_dim
    return check_reduction_sizes(n_cells, width, cfg.pca_kwargs, cfg.umap_kwargs, cfg.phate_kwargs)


def _warn_nonfinite(n_bad: int, n_rows: int, first_bad: str, inputs, reductions: list[str], adata) -> None:
    """One warning, at the end, for what ``allow_nonfinite`` let through: cells with NaN/Inf pixels, NaN/Inf
    embedding rows (written as such) and the reductions computed without them."""
    parts = []
    if inputs.cells:
        parts.append(f"{inputs.cells} cell(s) had NaN/Inf in their normalised patch (first: {inputs.first})")
    if n_bad:
        parts.append(f"{n_bad} of {n_rows} embedding rows are NaN/Inf and are written as such (first: {first_bad})")
        if reductions:
            from napari_dynaclr.core.reduce import finite_rows

            n_ok = int(finite_rows(adata.X).sum())
            parts.append(f"{', '.join(reductions)} computed on the {n_ok} finite rows (NaN for the others)")
    if parts:
        warnings.warn(DynaclrWarning("; ".join(parts) + " ({@allow_nonfinite})"), stacklevel=3)


def run_prediction(
    cfg: PredictConfig,
    device: str | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    cancel: threading.Event | None = None,
    write: bool = True,
):
    """Run :func:`prediction_events` to the end, calling *on_batch* per batch; return ``(RunSummary, AnnData)``.

    Several devices or nodes (``cfg.devices > 1``, ``num_nodes > 1``) go through Lightning
    (:mod:`napari_dynaclr.predict.lightning`); the store is the same as a single-device run's.
    """
    events = prediction_events(cfg, device, cancel, write)
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            return stop.value
        if on_batch is not None and isinstance(ev, BatchResult):
            on_batch(ev)
