"""The whole pseudotime run of a config on one store: onsets, a template per flavour, the alignment in each mode,
response groups, the evaluation against annotations and the track timings — VisCy's calls in VisCy's order.

The tracking table is the store's obs (``fov_name, track_id, t, parent_track_id``; −1 when the store has no
parent column) with the annotation columns joined as VisCy's ``load_annotation_anndata`` joins them
(:func:`~napari_dynaclr.evaluate.annotations.join_annotations`: on ``fov_name, id`` or ``fov_name, t,
track_id``), and the store's own ``predicted_*`` columns. The template's z-score uses every cell of the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_dynaclr.errors import AnnotationError, Cancelled, ConfigError, StoreError, shorten
from napari_dynaclr.evaluate.pseudotime import metrics
from napari_dynaclr.evaluate.pseudotime.align import (
    TrackAlignment,
    align_tracks_to_template,
    alignments_to_frame,
    classify_response_groups,
)
from napari_dynaclr.evaluate.pseudotime.config import PseudotimeConfig
from napari_dynaclr.evaluate.pseudotime.onsets import KEY, align_tracks, filter_fovs
from napari_dynaclr.evaluate.pseudotime.template import Template, build_template

TRACK_COLUMNS = ("fov_name", "track_id", "t")


@dataclass
class ModeResult:
    """One alignment mode of one template: VisCy's per-frame table, per-track results, groups, evaluation."""

    per_frame: pd.DataFrame
    alignments: list[TrackAlignment]
    response_groups: pd.DataFrame
    evaluation: dict | None
    pseudotime_track_timing: pd.DataFrame


@dataclass
class FlavorResult:
    template: Template
    modes: dict[str, ModeResult] = field(default_factory=dict)


@dataclass
class PseudotimeResult:
    """What :func:`run_pseudotime` returns; :meth:`to_dict` is the JSON layout of the conformance kit."""

    aligned: pd.DataFrame
    annotation_track_timing: pd.DataFrame | None
    flavors: dict[str, FlavorResult]
    notes: list[str] = field(default_factory=list)

    @property
    def t_perturb(self) -> pd.DataFrame:
        return self.aligned.groupby(KEY, sort=True)["t_perturb"].first().reset_index()

    def to_dict(self) -> dict:
        out = {"t_perturb": records(self.t_perturb), "aligned_df_rows": int(len(self.aligned))}
        if self.annotation_track_timing is not None:
            out["annotation_track_timing"] = records(self.annotation_track_timing)
        for name, flavor in self.flavors.items():
            tpl = flavor.template
            section = {
                "template_shape": list(tpl.template.shape), "template": tpl.template.tolist(),
                "template_cell_ids": [list(c) for c in tpl.cell_ids], "n_input_tracks": tpl.n_input_tracks,
                "explained_variance": tpl.explained_variance,
                "time_calibration": None if tpl.time_calibration is None else tpl.time_calibration.tolist(),
                "template_labels": None if tpl.labels is None else
                {c: {k: v.tolist() for k, v in d.items()} for c, d in tpl.labels.items()},
                "zscore_mean_first5": tpl.zscore_mean[:5].tolist(), "zscore_std_first5": tpl.zscore_std[:5].tolist(),
            }
            for mode, res in flavor.modes.items():
                section[mode] = {
                    "per_frame": records(res.per_frame),
                    "per_track": [_per_track(a) for a in res.alignments],
                    "response_groups": records(res.response_groups),
                    **({"evaluation": res.evaluation} if res.evaluation is not None else {}),
                    "pseudotime_track_timing": records(res.pseudotime_track_timing),
                }
            out[name] = section
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _per_track(a: TrackAlignment) -> dict:
    return {"cell_uid": a.cell_uid, "fov_name": a.fov_name, "track_id": a.track_id, "dtw_cost": _num(a.dtw_cost),
            "length_normalized_cost": _num(a.length_normalized_cost), "path_skew": _num(a.path_skew),
            "warping_path": a.warping_path.tolist()}


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: numpy scalars as Python numbers, NaN/inf as None."""
    out = []
    for rec in frame.to_dict(orient="records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, (float, np.floating)):
                row[k] = _num(v)
            elif isinstance(v, np.integer):
                row[k] = int(v)
            elif v is None or v is pd.NA:
                row[k] = None
            else:
                row[k] = v if isinstance(v, (int, str, bool)) else str(v)
        out.append(row)
    return out


def tracking_table(obs: pd.DataFrame, annotations: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """obs' track keys (``fov_name`` as text) with *columns* from the store's obs or joined from *annotations*."""
    from napari_dynaclr.evaluate.annotations import join_annotations

    missing = [c for c in TRACK_COLUMNS if c not in obs.columns]
    if missing:
        raise StoreError(f"the store's obs lacks {', '.join(missing)}: pseudotime needs fov_name, track_id and t "
                         "per cell (every EmbeddingWriter store has them)")
    table = pd.DataFrame({"fov_name": obs["fov_name"].astype(str).to_numpy(),
                          "track_id": obs["track_id"].to_numpy(), "t": obs["t"].to_numpy(),
                          "parent_track_id": obs["parent_track_id"].to_numpy() if "parent_track_id" in obs.columns
                          else np.full(len(obs), -1)})
    for col in columns:
        if annotations is not None and col in annotations.columns:
            table[col] = join_annotations(obs, annotations, col).to_numpy()
        elif col in obs.columns:
            table[col] = obs[col].to_numpy()
    return table


def _evaluation(per_frame: pd.DataFrame, table: pd.DataFrame, cfg: PseudotimeConfig) -> dict | None:
    col = cfg.align_tracks.infection_col
    if col not in table.columns:
        return None
    joined = per_frame.merge(table[[*TRACK_COLUMNS, col]].drop_duplicates(list(TRACK_COLUMNS)),
                             on=list(TRACK_COLUMNS), how="left")
    query = filter_fovs(joined, cfg.align_tracks.fov_pattern)
    positive = cfg.align_tracks.infected_value
    rho, n_tracks = metrics.onset_concordance(query, "pseudotime", col, positive)
    return {"pseudotime_vs_annotation_auc": _num(metrics.pseudotime_vs_annotation_auc(query, "pseudotime", col,
                                                                                       positive)),
            "onset_concordance": {"spearman_rho": _num(rho), "n_tracks": int(n_tracks)},
            "per_timepoint_auc": records(metrics.per_timepoint_auc(query, "pseudotime", col, positive))}


def run_pseudotime(X: np.ndarray, obs: pd.DataFrame, annotations: pd.DataFrame | None, cfg: PseudotimeConfig,
                   progress: Callable[[int, int, str], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> PseudotimeResult:
    """Run *cfg* on the embedding *X* (one row per obs row). *progress*: ``(steps done, steps, what)`` after
    each template and each alignment; *cancel*: polled between and inside steps (raises ``Cancelled``).
    Raises :class:`ConfigError` / :class:`AnnotationError` for input that cannot give a pseudotime."""
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(obs):
        raise StoreError(f"the embedding has shape {X.shape} but obs has {len(obs)} rows")
    if not np.isfinite(X).all():
        raise ConfigError(f"{int((~np.isfinite(X).all(axis=1)).sum())} cells have NaN/Inf embeddings (a prediction "
                          "with --allow-nonfinite?); the z-score over the store would be NaN; leave them out")
    at = cfg.align_tracks
    if at.source == "annotation" and (annotations is None or at.infection_col not in annotations.columns):
        where = "no annotation CSV was given" if annotations is None else \
            f"the annotation CSV has no column {at.infection_col!r} (columns: {shorten(annotations.columns)})"
        raise AnnotationError(f"onsets are read from annotations (align_tracks.source: annotation) but {where}; "
                              "give one with that column or set align_tracks.infection_col")
    columns = list(dict.fromkeys([at.infection_col, at.column, *(cfg.build_template.propagate_columns or [])]))
    table = tracking_table(obs, annotations, columns)
    if at.column not in table.columns:
        raise AnnotationError(f"align_tracks.source: prediction reads obs column {at.column!r}, which the store "
                              "lacks; apply a classifier first (napari-dynaclr evaluate classifier --apply)")
    aligned = align_tracks(table, at.frame_interval_minutes, at.source, at.infection_col, at.infected_value,
                           at.min_track_timepoints, at.fov_pattern)
    if aligned.empty:
        in_query = filter_fovs(table, at.fov_pattern)
        raise AnnotationError(f"no track has a cell with {at.column} == {at.infected_value!r} (and at least "
                              f"{at.min_track_timepoints} rows) among the {in_query.groupby(KEY).ngroups} tracks of "
                              f"the FOVs matching {at.fov_pattern!r}: nothing to build a template from; check "
                              "align_tracks.infected_value, fov_pattern and the annotations")
    signal = metrics.annotation_signal(aligned, at.column, at.infected_value)
    timing = metrics.compute_track_timing(signal, "signal")
    bt, da = cfg.build_template, cfg.dtw_align_tracks
    steps = len(bt.flavors) * (1 + len(da.modes))
    done, notes, flavors = 0, [], {}

    def step(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps, what)
        if cancel is not None and cancel():
            raise Cancelled("pseudotime cancelled")

    for name, flavor in bt.flavors.items():
        n_pca = flavor if isinstance(flavor, int) else None
        variance = flavor if isinstance(flavor, float) else None
        template = build_template(X, obs, aligned, cfg.dataset_id, n_pca, variance, bt.dba_max_iter, bt.dba_tol,
                                  bt.dba_init, bt.crop_window, bt.propagate_columns, bt.random_state, cancel)
        step(f"template {name}")
        if len(template) < 2:
            raise ConfigError(f"the {name!r} template has {len(template)} frame: a pseudotime needs two; "
                              "raise build_template.crop_window")
        result = FlavorResult(template)
        for subsequence in da.modes:
            alignments = align_tracks_to_template(X, obs, table, template, cfg.dataset_id, da.min_track_timepoints,
                                                  da.psi, subsequence, cancel=cancel)
            frame = alignments_to_frame(alignments, template.time_calibration)
            crg = cfg.classify_response_groups
            groups = classify_response_groups(alignments, crg.cost_percentile_threshold,
                                              crg.speed_clustering_method, crg.speed_quantile)
            timed = frame.merge(aligned[[*TRACK_COLUMNS, "t_relative_minutes"]], on=list(TRACK_COLUMNS), how="inner")
            pt_timing = metrics.compute_track_timing(timed.rename(columns={"pseudotime": "signal"}), "signal",
                                                     signal_type="continuous")
            result.modes[da.mode_name(subsequence)] = ModeResult(frame, alignments, groups,
                                                                 _evaluation(frame, table, cfg), pt_timing)
            step(f"{name} {da.mode_name(subsequence)}")
            short = sum(len(a.timepoints) < len(template) for a in alignments)
            if short:
                notes.append(f"{name} {da.mode_name(subsequence)}: {short} of {len(alignments)} tracks are shorter "
                             f"than the {len(template)}-frame template")
        flavors[name] = result
    return PseudotimeResult(aligned=aligned, annotation_track_timing=timing, flavors=flavors, notes=notes)
