"""The data source of a run: what makes the model families differ (a discriminated union on ``kind``).

- :class:`TracksSource` (``kind: tracks``, the classic models, VisCy's ``TripletDataModule``): a plate and its
  tracks (any layout of :mod:`napari_dynaclr.core.track_layouts`, or a table in memory), the channels in model
  order, the z range, the patch sizes, the normalisations, VisCy's ``predict_cells``.
- :class:`CellIndexSource` (``kind: boc``, the Bag-of-Channels models, VisCy's ``MultiExperimentDataModule``):
  one sample per cell, timepoint and channel, from VisCy's cell-index parquet, or built from plates and tracks
  with the experiment metadata (a collection YAML, with ``data_path``/``tracks_path`` replacing its paths, or
  the flags: ``source_channel`` + :class:`~napari_dynaclr.core.experiment.ExperimentMetadata`); the z window
  from the focus, the model's pixel size, the patch sizes, VisCy's normalisation and z reduction.

Everything else a run needs is common (:class:`~napari_dynaclr.core.config.PredictConfig`). A source answers
what differs: its checks against the rest of the settings (:meth:`check`), the paths it reads
(:meth:`input_paths`), its family and obs layout; the predict layer plans it by its ``kind``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, InstanceOf, field_validator, model_validator

from napari_dynaclr.core.boc import BocNormalization
from napari_dynaclr.core.normalize import check_keys, from_viscy
from napari_dynaclr.core.settings import Settings, expect, pair
from napari_dynaclr.core.track_layouts import TracksTable, open_tracks
from napari_dynaclr.errors import ConfigError


class PlateInputs(Settings):
    """What both sources may read from: a plate, its tracks, and which of its channels."""

    data_path: Path | None = expect("a path to an HCS OME-Zarr plate")
    tracks_path: Path | None = expect("a path to the tracks (a folder or a table)")
    source_channel: list[str] | None = expect("a channel name or a list of channel names (strings)")
    final_yx_patch_size: tuple[int, int] | None = expect("two integers [y, x]: the patch fed to the model")

    @field_validator("source_channel", mode="before")
    @classmethod
    def _channels(cls, value):
        if value is None:
            return value
        if isinstance(value, str):
            value = [value]
        value = [str(c) for c in value]
        if not value:
            raise ConfigError("{@source_channel} is empty: name at least one channel")
        if len(set(value)) != len(value):
            raise ConfigError(f"{{@source_channel}} lists a channel twice: {value}")
        return value

    @field_validator("final_yx_patch_size", mode="before")
    @classmethod
    def _final(cls, value):
        return None if value is None else pair(value, "final_yx_patch_size")

    def plate_inputs(self) -> dict[str, Path | None]:
        return {"plate": self.data_path, "tracks": self.tracks_path}


class TracksSource(PlateInputs):
    """A classic run's cells: the tracked cells of a plate (VisCy's ``TripletDataModule``)."""

    kind: Literal["tracks"] = "tracks"
    family: ClassVar[str] = "classic"
    obs_layout: ClassVar[str] = "classic"
    default_batch_size: ClassVar[int] = 16

    #: the fields the napari dock's plate fields edit
    plate_fields: ClassVar[tuple[str, ...]] = ("data_path", "tracks_path", "source_channel", "z_range",
                                               "initial_yx_patch_size", "final_yx_patch_size", "normalizations")

    tracks_table: InstanceOf[TracksTable] | None = expect("a TracksTable (tracks in memory) or null")
    z_range: tuple[int, int] = expect("two integers [start, stop]")
    initial_yx_patch_size: tuple[int, int] = expect("two integers [y, x]", (160, 160))
    normalizations: list[Any] = expect("a list of normalisations", [])
    include_cells: list[tuple[str, int]] | None = expect("a list of (fov_name, track_id) pairs or null")
    # the paths exactly as given (VisCy writes them into uns unresolved)
    data_path_as_given: str | None = expect("a path as given (string) or null")
    tracks_path_as_given: str | None = expect("a path as given (string) or null")

    @model_validator(mode="before")
    @classmethod
    def _as_given(cls, data):
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("data_path", "tracks_path"):
                if data.get(f"{key}_as_given") is None and data.get(key) is not None:
                    data[f"{key}_as_given"] = str(data[key])
        return data

    @field_validator("z_range", "initial_yx_patch_size", mode="before")
    @classmethod
    def _pairs(cls, value, info):
        return pair(value, info.field_name)

    @field_validator("normalizations", mode="before")
    @classmethod
    def _normalizations(cls, value):
        return [n if not isinstance(n, Mapping) else from_viscy(n) for n in (value or [])]

    @model_validator(mode="after")
    def _check(self):
        if self.data_path is None:
            raise ConfigError("{@data_path} is missing: give the plate (an HCS OME-Zarr store)")
        if self.tracks_path is None and self.tracks_table is None:
            raise ConfigError("{@tracks_path} is missing: give the tracks (a folder or a table file)")
        if self.tracks_path is not None and self.tracks_table is not None:
            raise ConfigError("give the tracks once: {@tracks_path} or a tracks table, not both")
        if not self.source_channel:
            raise ConfigError("{@source_channel} is empty: name at least one channel")
        if not 0 <= self.z_range[0] < self.z_range[1]:
            raise ConfigError(f"{{@z_range}} {list(self.z_range)} must satisfy 0 <= start < stop (stop exclusive)")
        if min(self.patch_size) < 2:
            raise ConfigError(f"patch size {list(self.patch_size)} is too small", key="initial_yx_patch_size")
        if any(f > i for f, i in zip(self.patch_size, self.initial_yx_patch_size, strict=True)):
            raise ConfigError(f"{{@final_yx_patch_size}} {list(self.patch_size)} is larger than "
                              f"{{@initial_yx_patch_size}} {list(self.initial_yx_patch_size)}")
        check_keys(self.normalizations, self.source_channel)
        return self

    @property
    def patch_size(self) -> tuple[int, int]:
        """The YX size fed to the model."""
        return self.final_yx_patch_size or (
            2 * (self.initial_yx_patch_size[0] // 2), 2 * (self.initial_yx_patch_size[1] // 2)
        )

    @property
    def z_depth(self) -> int:
        return self.z_range[1] - self.z_range[0]

    def describe(self) -> str:
        tracks = self.tracks_path.name if self.tracks_path is not None else self.tracks_table.where
        return f"plate {self.data_path.name}, tracks {tracks}, channels {', '.join(self.source_channel)}"

    def tracks(self):
        """The tracks, opened in their layout (:func:`~napari_dynaclr.core.track_layouts.open_tracks`)."""
        return self.tracks_table if self.tracks_table is not None else open_tracks(self.tracks_path)

    def check(self, settings) -> None:
        if settings.experiment is not None:
            settings.experiment.check_for_classic()

    def input_paths(self, settings) -> dict[str, Path | None]:
        """What a run reads (an output may never be, contain or lie inside any of these)."""
        return self.plate_inputs()

    def channels(self) -> list[str]:
        return list(self.source_channel)


PositiveNumber = Annotated[float, Field(gt=0)]


class CellIndexSource(PlateInputs):
    """A Bag-of-Channels run's samples (VisCy's ``MultiExperimentDataModule``, ``channels_per_sample: 1``): from
    a cell index (*cell_index_path*), or built from plates and tracks with the run's experiment metadata."""

    kind: Literal["boc"] = "boc"
    family: ClassVar[str] = "bag_of_channels"
    obs_layout: ClassVar[str] = "boc"
    default_batch_size: ClassVar[int] = 128

    plate_fields: ClassVar[tuple[str, ...]] = ()  # (its samples come from a cell index or the experiments)

    cell_index_path: Path | None = expect("a path to a cell-index parquet or null")
    focus_channel: str | None = expect("a channel name (string) or null")
    reference_pixel_size_xy_um: float | None = expect("a positive number (micrometres) or null")
    reference_pixel_size_z_um: float | None = expect("a positive number (micrometres) or null")
    z_window: int = expect("a positive integer", 1)
    z_extraction_window: int | None = expect("a positive integer or null")
    z_focus_offset: float = expect("a number in [0, 1]", 0.5)
    yx_patch_size: tuple[int, int] = expect("two integers [y, x]", (192, 192))
    max_border_shift: int = expect("an integer (-1: a quarter of the patch)", -1)
    normalizations: list[InstanceOf[BocNormalization]] = expect("at most one NormalizeSampled", [])
    z_reduction: bool = expect("true or false", False)

    @field_validator("yx_patch_size", mode="before")
    @classmethod
    def _patch(cls, value):
        return pair(value, "yx_patch_size")

    @field_validator("z_window", "z_extraction_window", mode="before")
    @classmethod
    def _depths(cls, value, info):
        if value is None and info.field_name == "z_extraction_window":
            return value
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{{@{info.field_name}}} must be a positive integer, got {value!r}")
        return value

    @field_validator("reference_pixel_size_xy_um", "reference_pixel_size_z_um", mode="before")
    @classmethod
    def _reference(cls, value, info):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not value > 0 or not math.isfinite(value)):
            raise ConfigError(f"{{@{info.field_name}}} must be a positive number (micrometres), got {value!r}")
        return value

    @field_validator("z_focus_offset", mode="before")
    @classmethod
    def _offset(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{{@z_focus_offset}} must lie in [0, 1], got {value!r}")
        return float(value)

    @field_validator("max_border_shift", mode="before")
    @classmethod
    def _shift(cls, value):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{{@max_border_shift}} must be an integer, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.z_window > self.reduced_depth:
            after = " after the z reduction" if self.z_reduction and self.extraction_depth > 1 else ""
            raise ConfigError(f"{{@z_window}} {self.z_window} is larger than the {self.reduced_depth} slice(s) "
                              f"extracted{after} ({{@z_extraction_window}} {self.extraction_depth})")
        for y, name in zip(self.yx_patch_size, ("y", "x"), strict=True):
            if y < 2:
                raise ConfigError(f"{{@yx_patch_size}} {list(self.yx_patch_size)} is too small ({name})")
        final = self.patch_size
        if any(f > i for f, i in zip(final, self.yx_patch_size, strict=True)) or min(final) < 1:
            raise ConfigError(f"{{@final_yx_patch_size}} {list(final)} must lie within {{@yx_patch_size}} "
                              f"{list(self.yx_patch_size)}")
        if len(self.normalizations) > 1:
            raise ConfigError("a BoC prediction takes at most one NormalizeSampled (keys [channel_0])",
                              key="normalizations")
        return self

    def check(self, settings) -> None:
        """One source of cells: the cell index, or plates with the experiment metadata."""
        if (self.cell_index_path is None) == (settings.experiment is None):
            raise ConfigError("give one source of cells: a cell index ({@cell_index_path}), or a plate and tracks "
                              "with the experiment metadata ({@collection_path}, or {@source_channel} with "
                              "{@markers})", key="cell_index_path")
        if self.cell_index_path is not None and (self.data_path or self.tracks_path or self.source_channel):
            raise ConfigError("a cell index names its plates, tracks and channels: {@data_path}, {@tracks_path} and "
                              "{@source_channel} cannot be combined with {@cell_index_path}", key="cell_index_path")
        if settings.experiment is not None:
            settings.experiment.check_for_cells(self.data_path, self.tracks_path, self.source_channel)

    def describe(self) -> str:
        given = self.cell_index_path or self.data_path
        origin = f"from {Path(str(given)).name}" if given is not None else "from the collection's plates"
        return (f"Bag of Channels: samples {origin} (one per cell, timepoint and channel; z window from the focus, "
                "pixel-size rescaling, VisCy's normalisation)")

    def experiments(self, settings) -> list:
        """The experiments the cells are built from (no cell index)."""
        return settings.experiment.experiments(self.data_path, self.tracks_path, self.source_channel)

    def input_paths(self, settings) -> dict[str, Path | None]:
        """What a run reads, resolved as the run resolves it (an output may never be, contain or lie inside any
        of these): the plates (and tracks) a cell index names, or those of the experiments."""
        from napari_dynaclr.core.cell_index import index_inputs

        paths = {"cell index": self.cell_index_path, **self.plate_inputs()}
        if self.cell_index_path is not None:
            paths.update(index_inputs(self.cell_index_path))
        else:
            for i, exp in enumerate(self.experiments(settings)):  # (a bad collection is refused here, before any work)
                paths[f"plate {i} ({exp.name})"], paths[f"tracks {i} ({exp.name})"] = exp.data_path, exp.tracks_path
        return paths

    def channels(self) -> list[str]:
        return list(self.source_channel or [])

    @property
    def extraction_depth(self) -> int:
        """Slices read per sample before the z reduction and crop (VisCy: z_extraction_window or z_window)."""
        return self.z_extraction_window or self.z_window

    @property
    def reduced_depth(self) -> int:
        """Slices left after the z reduction (1 when it applies to a multi-slice window)."""
        return 1 if self.z_reduction and self.extraction_depth > 1 else self.extraction_depth

    @property
    def patch_size(self) -> tuple[int, int]:
        """The YX size fed to the model (VisCy's default 160 x 160)."""
        return self.final_yx_patch_size or (160, 160)

    @property
    def half_patch(self) -> tuple[int, int]:
        return self.yx_patch_size[0] // 2, self.yx_patch_size[1] // 2

    @property
    def border_shift(self) -> int:
        """VisCy's ``max_border_shift``: -1 means ``max(yx_patch_size // 4)``."""
        if self.max_border_shift >= 0:
            return self.max_border_shift
        return max(p // 4 for p in self.yx_patch_size)


DataSource = Annotated[TracksSource | CellIndexSource, Field(discriminator="kind")]
#: the source classes by ``kind``
SOURCES = {cls.model_fields["kind"].default: cls for cls in (TracksSource, CellIndexSource)}
