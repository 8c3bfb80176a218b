"""DTW pseudotime of cell tracks as VisCy's ``dynaclr.pseudotime`` computes it (commit 4b62365), with its
numbers: onsets from annotations, a DBA template, subsequence or global DTW alignment, response groups and the
evaluation against annotations. Qt-free and torch-free; scikit-learn and scipy are imported where used.

The API (a napari dock builds on it)::

    cfg = load_pseudotime_config(path)                      # or PseudotimeConfig.model_validate({...})
    result = run_pseudotime(X, obs, annotations, cfg, progress=None, cancel=None) -> PseudotimeResult
    result.to_dict()                                       # the JSON layout of the conformance kit
    aligned = align_tracks(table, frame_interval_minutes, ...)   # onsets (t_perturb, t_relative_minutes)
    template = build_template(X, obs, aligned, dataset_id, pca_n_components=20, ...) -> Template
    alignments = align_tracks_to_template(X, obs, table, template, dataset_id, ...) -> [TrackAlignment]
    alignments_to_frame(alignments, template.time_calibration) -> per-frame DataFrame
    classify_response_groups(alignments) -> DataFrame
"""

from napari_dynaclr.evaluate.pseudotime.align import (
    TrackAlignment,
    align_tracks_to_template,
    alignments_to_frame,
    classify_response_groups,
)
from napari_dynaclr.evaluate.pseudotime.config import PseudotimeConfig, load_pseudotime_config
from napari_dynaclr.evaluate.pseudotime.onsets import align_tracks
from napari_dynaclr.evaluate.pseudotime.run import (
    FlavorResult,
    ModeResult,
    PseudotimeResult,
    run_pseudotime,
    tracking_table,
)
from napari_dynaclr.evaluate.pseudotime.template import Template, build_template

__all__ = [
    "FlavorResult", "ModeResult", "PseudotimeConfig", "PseudotimeResult", "Template", "TrackAlignment",
    "align_tracks", "align_tracks_to_template", "alignments_to_frame", "build_template", "classify_response_groups",
    "load_pseudotime_config", "run_pseudotime", "tracking_table",
]
