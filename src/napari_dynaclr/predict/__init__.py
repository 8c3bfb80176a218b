"""Prediction: plan → batches → one device or several (Lightning) → AnnData store.

``plan`` and ``batches`` need no torch; the backends import it when they run. The napari plugin runs all of
this in its work process (:mod:`napari_dynaclr.child`, ``python -m napari_dynaclr.child``); ``client`` is
that process's GUI-side counterpart.
"""

from napari_dynaclr.predict.batches import BatchResult, EmbeddingAccumulator, read_ahead
from napari_dynaclr.predict.plan import PredictionPlan, plan_prediction
from napari_dynaclr.predict.run import (
    Planned,
    RunSummary,
    Stage,
    prediction_events,
    run_prediction,
)
from napari_dynaclr.predict.single import predict_batches, resolve_device

__all__ = [
    "BatchResult", "EmbeddingAccumulator", "Planned", "PredictionPlan", "RunSummary", "Stage", "plan_prediction",
    "predict_batches", "prediction_events", "read_ahead", "resolve_device", "run_prediction",
]
