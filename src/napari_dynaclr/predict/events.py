"""What a prediction job reports while it runs: the plan's cells (:class:`Planned`), each predicted batch
(:class:`BatchResult`), the named steps after prediction (:class:`Stage`) and the run's summary
(:class:`RunSummary`), plus the arrays a receiver fills from the batches (:class:`EmbeddingAccumulator`).

The napari plugin's work process sends these objects to napari's process, which unpickles them: this module
imports neither torch nor the engine (the import contracts in pyproject.toml say so).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.core.architecture import EncoderConfig


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
    n_nonfinite_rows: int = 0  # rows written as NaN/Inf (only with allow_nonfinite)
    n_nonfinite_inputs: int = 0  # cells whose patch held NaN/Inf (only with allow_nonfinite)
    n_missing_chunks: int = 0  # image chunks absent from the plate, read as 0 (only with allow_nonfinite)
    backend: dict = dataclasses.field(default_factory=dict)  # encoder kernels: backend, reason, probe_max_abs

    def describe_backend(self) -> str:
        """E.g. ``encoder: openvino (max |Δ| 2.4e-06 vs eager on the first cells)``; empty for Lightning runs."""
        if not self.backend:
            return ""
        probe = self.backend.get("probe_max_abs")
        if self.backend["backend"] == "eager":
            extra = f" ({self.backend.get('reason')})"
        else:
            extra = f" (max |Δ| {probe:.1e} vs eager on the first cells)" if probe is not None else ""
        return f"encoder: {self.backend['backend']}{extra}"

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
    #: 2-D preview coordinates of *features* (:class:`~napari_dynaclr.predict.preview.StreamingProjector`),
    #: filled by napari's work process for the dock's streaming scatter; None elsewhere
    preview: np.ndarray | None = None


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
