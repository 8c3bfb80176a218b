"""The plan of a run by its data source: torch-free, so napari's process previews a run's cells with the same
plan as the run (:func:`napari_dynaclr._napari.workers.preview_cells`)."""

from __future__ import annotations

from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.predict.boc_plan import plan_boc
from napari_dynaclr.predict.plan import plan_prediction

#: the planner of each data source (by its ``kind``): every plan has the same interface, so everything after
#: planning is one engine
PLANNERS = {"tracks": plan_prediction, "boc": plan_boc}


def plan_for(cfg: PredictConfig, encoder=None):
    """The plan of *cfg*, by its data source (:data:`PLANNERS`)."""
    return PLANNERS[cfg.source.kind](cfg, encoder)
