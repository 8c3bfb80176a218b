"""The pseudotime configuration: the arguments of VisCy's calls, one section per call (the layout of the
conformance kit's ``pseudotime.yaml``)::

    dataset_id: my_dataset            # the template's z-score key and the first part of each cell_uid
    embedding_key: null               # ours: an obsm key instead of .X (VisCy always warps .X)
    align_tracks: {frame_interval_minutes: 30, source: annotation, infection_col: infection_state,
                   infected_value: infected, min_track_timepoints: 3, fov_pattern: B/1}
    build_template: {crop_window: 4, propagate_columns: [infection_state], random_state: 42, dba_max_iter: 30,
                     dba_tol: 1.0e-5, dba_init: medoid, flavors: {raw: null, pca: 8}}
    dtw_align_tracks: {min_track_timepoints: 3, subsequence: true, psi: null}
    classify_response_groups: {cost_percentile_threshold: 75, speed_clustering_method: quantile,
                               speed_quantile: 0.5}

A flavour is a template built with ``pca_n_components`` (an integer), ``pca_variance_threshold`` (a number
between 0 and 1) or no PCA (null). ``subsequence`` may be a list (``[true, false]``) to align in both modes;
each mode is a section of the result (``subsequence``, ``global_psi_default`` or ``global_psi_<psi>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from napari_dynaclr.evaluate.yaml_config import StrictModel, compose_yaml, validate_config

Number = StrictInt | StrictFloat
Fraction = Annotated[StrictFloat, Field(gt=0, lt=1)]


class AlignTracksSettings(StrictModel):
    frame_interval_minutes: Annotated[Number, Field(gt=0)]
    source: Literal["annotation", "prediction"] = "annotation"
    infection_col: StrictStr = "infection_state"
    infected_value: StrictStr = "infected"
    min_track_timepoints: Annotated[StrictInt, Field(ge=1)] = 3
    fov_pattern: StrictStr | list[StrictStr] | None = None

    @property
    def column(self) -> str:
        """The column onsets are read from (``predicted_<col>`` with ``source: prediction``)."""
        return f"predicted_{self.infection_col}" if self.source == "prediction" else self.infection_col


class BuildTemplateSettings(StrictModel):
    crop_window: Annotated[StrictInt, Field(ge=1)] | None = None
    propagate_columns: list[StrictStr] | None = None
    random_state: Annotated[StrictInt, Field(ge=0)] = 42
    dba_max_iter: Annotated[StrictInt, Field(ge=1)] = 30
    dba_tol: Annotated[Number, Field(ge=0)] = 1e-5
    dba_init: Literal["medoid", "first"] = "medoid"
    flavors: Annotated[dict[StrictStr, Annotated[StrictInt, Field(ge=1)] | Fraction | None],
                       Field(min_length=1)] = {"pca": 20}


class DTWAlignSettings(StrictModel):
    min_track_timepoints: Annotated[StrictInt, Field(ge=2)] = 3
    subsequence: StrictBool | Annotated[list[StrictBool], Field(min_length=1)] = True
    psi: Annotated[StrictInt, Field(ge=0)] | None = None

    @field_validator("subsequence")
    @classmethod
    def _distinct(cls, value):
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("list each mode once: true (subsequence), false (global) or both")
        return value

    @property
    def modes(self) -> list[bool]:
        return list(self.subsequence) if isinstance(self.subsequence, list) else [self.subsequence]

    def mode_name(self, subsequence: bool) -> str:
        if subsequence:
            return "subsequence"
        return "global_psi_default" if self.psi is None else f"global_psi_{self.psi}"


class ResponseGroupSettings(StrictModel):
    cost_percentile_threshold: Annotated[Number, Field(ge=0, le=100)] = 75.0
    speed_clustering_method: Literal["quantile", "kmeans"] = "quantile"
    speed_quantile: Annotated[Number, Field(ge=0, le=1)] = 0.5


class PseudotimeConfig(StrictModel):
    dataset_id: StrictStr
    embedding_key: StrictStr | None = None
    align_tracks: AlignTracksSettings
    build_template: BuildTemplateSettings = BuildTemplateSettings()
    dtw_align_tracks: DTWAlignSettings = DTWAlignSettings()
    classify_response_groups: ResponseGroupSettings = ResponseGroupSettings()


def load_pseudotime_config(path: str | Path) -> PseudotimeConfig:
    """Read and validate a pseudotime YAML (``base:`` files composed as VisCy does). Raises ConfigError."""
    return validate_config(PseudotimeConfig, compose_yaml(path), f"config {path}")
