"""Batches of a plan as the model receives them (torch tensors, read and normalised ahead in threads), and
the check that no NaN/Inf embedding passes for a result. What a run reports per batch, and the arrays it
fills, are in :mod:`napari_dynaclr.predict.events` (no torch: napari's process receives them)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from napari_dynaclr.errors import NonfiniteEmbeddings, Remedy
from napari_dynaclr.predict.plan import PredictionPlan
from napari_dynaclr.predict.transforms import normalised_batch

__all__ = ["NonfiniteEmbeddings", "check_embeddings", "describe_cell",
           "nonfinite_rows", "read_ahead"]


def nonfinite_rows(features: np.ndarray, projections: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows holding a NaN/Inf feature or projection."""
    return ~(np.isfinite(features).all(axis=1) & np.isfinite(projections).all(axis=1))


def describe_cell(plan: PredictionPlan, row: int) -> str:
    """``FOV A/1/0, track_id 3, t=2`` of cell *row* of the plan."""
    r = plan.cells.iloc[row]
    return f"FOV {r['fov_name']}, track_id {int(r['track_id'])}, t={int(r['t'])}"


def check_embeddings(plan: PredictionPlan, start: int, features: np.ndarray, projections: np.ndarray,
                     where: str) -> int:
    """The number of rows (cells ``start…``) with NaN/Inf embeddings; refused with
    :class:`NonfiniteEmbeddings` (the count and the first cell) unless ``allow_nonfinite``."""
    bad = nonfinite_rows(features, projections)
    n_bad = int(bad.sum())
    if n_bad and not plan.config.allow_nonfinite:
        first = describe_cell(plan, start + int(np.flatnonzero(bad)[0]))
        raise NonfiniteEmbeddings(
            f"the model gave NaN/Inf embeddings for {n_bad} of {len(bad)} cells of {where} (first: {first}); "
            "their patches are finite, so the weights or the precision overflow (set {@precision} to 32-true)",
            remedy=Remedy("allow_nonfinite", purpose="to write them as NaN rows", joint="; "),
        )
    return n_bad


def load_batch(plan, i: int):
    """The model's input for batch *i* of a classic or a Bag-of-Channels plan: a normalised float32 torch tensor
    (B, C, Z, Y, X), as VisCy feeds the model. Cells whose patch holds NaN/Inf are refused with a
    :class:`~napari_dynaclr.errors.PlateError` naming the first one, unless ``allow_nonfinite`` (then counted in
    the plan's ``nonfinite``)."""
    import torch

    if isinstance(plan, PredictionPlan):
        return normalised_batch(plan, i)
    return torch.from_numpy(plan.read_batch(i))  # a Bag-of-Channels plan reads normalised inputs


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
        x = load_batch(plan, i)
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
