"""What the inputs say about the experiment (one settings model for both model families): a VisCy collection
YAML, or the flags ``--experiment``, ``--markers``, ``--perturbation-wells``, ``--interval-minutes``,
``--start-hpi``, ``--pixel-size``.

- A classic run writes them as obs columns — ``experiment``, ``marker``, ``perturbation``,
  ``hours_post_perturbation``, in VisCy's order, after VisCy's own columns — exactly those the inputs give
  (:meth:`ExperimentMetadata.obs_columns`), so that VisCy's ``dynaclr compute-mmd`` runs on the store.
- A Bag-of-Channels run built from a plate and its tracks takes its experiments from them (one per channel),
  as VisCy's ``build-cell-index`` does (:meth:`ExperimentMetadata.experiments`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import StrictStr, field_validator

from napari_dynaclr.core.settings import Settings, expect
from napari_dynaclr.errors import ConfigError, shorten

#: the obs columns experiment metadata gives a classic store, in VisCy's order (its Bag-of-Channels obs)
EXPERIMENT_COLUMNS = ("experiment", "marker", "perturbation", "hours_post_perturbation")


class ExperimentMetadata(Settings):
    """The experiment's metadata: from a collection YAML (*collection_path*) and/or flags (a flag wins)."""

    collection_path: Path | None = expect("a collection YAML path or null")
    experiment_name: StrictStr | None = expect("an experiment name (string) or null")
    markers: list[StrictStr] | None = expect("a list of marker names (strings) or null")
    perturbation_wells: dict[StrictStr, list[StrictStr]] | None = expect(
        "a mapping of perturbation labels to lists of wells, e.g. {mock: [A/1]}")
    interval_minutes: float | None = expect("a positive number of minutes or null")
    start_hpi: float | None = expect("a number of hours or null")
    pixel_size: list[float] | None = expect("one or two positive numbers (xy [z], micrometres) or null")

    @field_validator("markers")
    @classmethod
    def _markers(cls, value):
        if value is not None and (not value or not all(value)):
            raise ConfigError(f"{{@markers}} must name at least one marker (non-empty strings), got {value!r}")
        return value

    @field_validator("perturbation_wells")
    @classmethod
    def _wells(cls, value):
        if value is not None and (not value or not all(value.values())):
            raise ConfigError("{@perturbation_wells} must give each perturbation a list of wells "
                              f"(e.g. mock=A/1 infected=A/2,B/1), got {value!r}")
        return value

    @field_validator("interval_minutes")
    @classmethod
    def _interval(cls, value):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ConfigError(f"{{@interval_minutes}} must be a positive number of minutes, got {value!r}")
        return value

    @field_validator("start_hpi")
    @classmethod
    def _start(cls, value):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{{@start_hpi}} must be a finite number of hours, got {value!r}")
        return value

    @field_validator("pixel_size")
    @classmethod
    def _pixel(cls, value):
        if value is None:
            return value
        if not 1 <= len(value) <= 2:
            raise ConfigError(f"{{@pixel_size}} takes one or two values (xy [z], micrometres), got {value!r}")
        if not all(math.isfinite(v) and v > 0 for v in value):
            raise ConfigError(f"{{@pixel_size}} must be positive numbers of micrometres, got {value!r}")
        return value

    # ------------------------------------------------------------------ Bag of Channels

    def check_for_cells(self, plate, tracks, channels) -> None:
        """The checks of :meth:`experiments` that need no file: a collection, or flags describing the plate's
        channels (one experiment each)."""
        if self.collection_path is not None:
            if channels or self.markers or self.pixel_size or self.perturbation_wells:
                raise ConfigError("{@source_channel}/{@markers} describe the experiments of {@data_path}/"
                                  "{@tracks_path}; they cannot be combined with {@cell_index_path} or "
                                  "{@collection_path}")
            return
        if not channels:
            raise ConfigError("{@markers}, {@pixel_size} and {@perturbation_wells} need {@source_channel} (the "
                              "plate's channels, one experiment each)")
        if plate is None or tracks is None:
            raise ConfigError("{@source_channel} with {@markers} need {@data_path} and {@tracks_path}")
        markers = list(self.markers or [])
        if len(markers) != len(channels):
            raise ConfigError(f"{{@markers}} needs one marker per channel of {{@source_channel}} ({len(channels)}), "
                              f"got {len(markers)}: the marker names what a channel images and decides its z "
                              "reduction", key="markers")
        if not self.perturbation_wells:
            raise ConfigError("{@perturbation_wells} is missing (e.g. mock=A/1 infected=A/2,B/1): VisCy's cell "
                              "index keeps only the wells it lists")

    def collection(self, plate, tracks, channels) -> dict:
        """A collection mapping (one experiment per channel) from the flags."""
        self.check_for_cells(plate, tracks, channels)
        stem = self.experiment_name or Path(str(plate)).name.removesuffix(".zarr")
        exp = {"data_path": str(plate), "tracks_path": str(tracks),
               "perturbation_wells": {k: list(v) for k, v in self.perturbation_wells.items()}}
        px = list(self.pixel_size or [])
        if px:
            exp["pixel_size_xy_um"] = px[0]
        if len(px) > 1:
            exp["pixel_size_z_um"] = px[1]
        if self.interval_minutes is not None:
            exp["interval_minutes"] = self.interval_minutes
        if self.start_hpi is not None:
            exp["start_hpi"] = self.start_hpi
        return {"experiments": [{"name": f"{stem}_{m}", "channels": [{"name": c, "marker": m}], **exp}
                                for c, m in zip(channels, self.markers, strict=True)]}

    def experiments(self, plate=None, tracks=None, channels=None) -> list:
        """The experiments of a Bag-of-Channels run (:class:`~napari_dynaclr.core.collection.Experiment`): the
        collection's (*plate* / *tracks* replace its paths), or one per channel of the plate from the flags."""
        from napari_dynaclr.core.collection import load_collection, parse_collection

        if self.collection_path is not None:
            return load_collection(self.collection_path, plate, tracks)
        return parse_collection(self.collection(plate, tracks, channels), Path.cwd(), "the experiment flags")

    # ------------------------------------------------------------------ classic stores

    def check_for_classic(self) -> None:
        if self.pixel_size is not None:
            raise ConfigError("{@pixel_size} is used by Bag-of-Channels runs (patches rescaled to the model's pixel "
                              "size); a classic run reads patches at the plate's pixel size")
        if self.start_hpi is not None and self.interval_minutes is None and self.collection_path is None:
            raise ConfigError("{@start_hpi} needs {@interval_minutes} (the time between timepoints) to give "
                              "hours_post_perturbation")

    def obs_columns(self, fov_names: np.ndarray, t: np.ndarray, plate: Path, channels: Sequence[str]) -> dict:
        """The obs columns the metadata gives each cell of a classic run (``fov_name``, ``t`` per cell), in
        :data:`EXPERIMENT_COLUMNS` order; only those the inputs say (no column is invented)."""
        self.check_for_classic()
        exp = self._collection_experiment(plate, channels) if self.collection_path is not None else None
        out: dict = {}
        name = self.experiment_name or (exp.name if exp is not None else None)
        if name:
            out["experiment"] = np.full(len(t), name, dtype=object)
        marker = self._marker(exp, channels)
        if marker:
            out["marker"] = np.full(len(t), marker, dtype=object)
        wells = self.perturbation_wells or (exp.perturbation_wells if exp is not None else None)
        if wells:
            out["perturbation"] = _perturbations(fov_names, wells)
        interval = self.interval_minutes if self.interval_minutes is not None else (
            exp.interval_minutes if exp is not None else None)
        if interval is not None:
            start = self.start_hpi if self.start_hpi is not None else (exp.start_hpi if exp is not None else 0.0)
            out["hours_post_perturbation"] = (start + np.asarray(t, dtype=np.float64) * interval / 60.0
                                              ).astype(np.float32)
        return out

    def _marker(self, exp, channels: Sequence[str]) -> str | None:
        if self.markers:
            if len(self.markers) != 1:
                raise ConfigError(f"{{@markers}}: a classic store has one marker per cell (what the model's channels "
                                  f"image, e.g. the reporter); give one, got {shorten(self.markers)}")
            return self.markers[0]
        if exp is None:
            return None
        listed = list(dict.fromkeys(ch.marker for ch in exp.channels if ch.name in channels))
        if len(listed) > 1:
            raise ConfigError(f"experiment {exp.name} gives the run's channels several markers ({shorten(listed)}); "
                              "name the store's marker with {@markers}")
        return listed[0] if listed else None

    def _collection_experiment(self, plate: Path, channels: Sequence[str]):
        """The collection's experiment of a classic run: the one named by *experiment_name*, else the one(s)
        imaging *plate* (and, of several, those listing one of the run's channels)."""
        from napari_dynaclr.core.collection import load_collection

        experiments = load_collection(self.collection_path)
        where = f"collection {self.collection_path}"
        if self.experiment_name is not None:
            named = [e for e in experiments if e.name == self.experiment_name]
            if not named:
                raise ConfigError(f"{where} has no experiment {self.experiment_name!r} (experiments: "
                                  f"{shorten([e.name for e in experiments])})", key="experiment_name")
            return named[0]
        mine = [e for e in experiments if _same_path(e.data_path, plate)]
        if len(mine) > 1:
            mine = [e for e in mine if any(ch.name in channels for ch in e.channels)] or mine
        if not mine and len(experiments) == 1:
            mine = experiments
        if len(mine) != 1:
            which = shorten([e.name for e in (mine or experiments)])
            raise ConfigError(f"{where}: {'several experiments' if mine else 'no experiment'} for plate {plate} "
                              f"({which}); choose one with {{@experiment_name}}", key="experiment_name")
        return mine[0]


def _same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return Path(a) == Path(b)


def _perturbations(fov_names: np.ndarray, wells: dict) -> np.ndarray:
    """Each cell's perturbation label from its well (``fov_name`` up to the last ``/``)."""
    of_well = {str(w): str(label) for label, ws in wells.items() for w in ws}
    names = np.asarray(fov_names, dtype=object)
    uniq, inverse = np.unique(names.astype(str), return_inverse=True)
    well_of = [f.rsplit("/", 1)[0] for f in uniq]
    missing = sorted({w for w in well_of if w not in of_well})
    if missing:
        raise ConfigError(f"well(s) {shorten(missing)} predicted but not in {{@perturbation_wells}} "
                          f"({shorten(sorted(of_well))}): give their perturbation, or leave them out with "
                          "{@include_wells}", key="perturbation_wells")
    labels = np.array([of_well[w] for w in well_of], dtype=object)
    return labels[inverse]
