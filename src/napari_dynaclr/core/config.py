"""The run's settings: one typed model (:class:`PredictConfig`, pydantic) for every model family, validated once
when it is made — from a VisCy ``predict.yml`` (:mod:`~napari_dynaclr.core.predict_yml`), the command line's
flags or the napari dock's fields, which all give it the same dict — and again whenever a setting changes.

The families differ only in their data source (``source``: :class:`~napari_dynaclr.core.sources.TracksSource`
for the classic models, :class:`~napari_dynaclr.core.sources.CellIndexSource` for Bag-of-Channels); everything
else — checkpoint, encoder, output, reductions, trainer, batches, selection, experiment metadata — is defined
here once. A problem is one :class:`~napari_dynaclr.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import InstanceOf, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.core.experiment import ExperimentMetadata
from napari_dynaclr.core.normalize import Normalization, NormalizeSampled
from napari_dynaclr.core.settings import CPU_BACKENDS, PRECISIONS, Settings, expect, one_of, positive_int
from napari_dynaclr.core.sources import SOURCES, CellIndexSource, DataSource, TracksSource
from napari_dynaclr.errors import ConfigError, shorten

__all__ = ["CPU_BACKENDS", "PRECISIONS", "CellIndexSource", "ExperimentMetadata", "PredictConfig", "TracksSource",
           "check_cpu_backend", "default_normalizations"]


def check_cpu_backend(value) -> str:
    """The CPU encoder kernels (:mod:`napari_dynaclr.model.fast_cpu`): auto, openvino, onednn or eager."""
    return one_of(value, CPU_BACKENDS, "cpu_backend")


class PredictConfig(Settings):
    """Everything a prediction needs: the data source (the family's part) and the common settings
    (VisCy's ``EmbeddingWriter`` + trainer + the batches, the FOV selection and the experiment metadata)."""

    source: DataSource
    experiment: ExperimentMetadata | None = expect("experiment metadata (a collection or flags) or null")
    ckpt_path: Path | None = expect("a checkpoint path or null")
    encoder: InstanceOf[EncoderConfig] | None = expect("an encoder config or null (inferred from the weights)")
    output_path: Path | None = expect("an output store path or null")
    overwrite: StrictBool = expect("true or false", False)
    embedding_key: str = expect("'features' or 'projections'", "features")
    pca_kwargs: dict | None = expect("a mapping of PCA arguments or null")
    umap_kwargs: dict | None = expect("a mapping of UMAP arguments or null")
    phate_kwargs: dict | None = expect("a mapping of PHATE arguments or null")
    accelerator: StrictStr = expect("an accelerator name (string: auto, cpu, gpu, cuda)", "auto")
    devices: StrictInt | StrictStr | list[StrictInt] = expect("an integer, a string or a list of device indices", 1)
    strategy: StrictStr = expect("a strategy name (string)", "auto")
    num_nodes: int = expect("a positive integer", 1)
    precision: str = expect(f"one of {', '.join(PRECISIONS)}", "32-true")
    batch_size: int = expect("a positive integer", 16)
    num_workers: int = expect("a positive integer (threads reading batches ahead)", 2)
    cpu_backend: str = expect(f"one of {', '.join(CPU_BACKENDS)}", "auto")
    allow_nonfinite: StrictBool = expect("true or false", False)  # NaN/Inf pixels or embeddings: counted, not refused
    include_wells: list[StrictStr] | None = expect("a list of well names (strings) or null")
    exclude_fovs: list[StrictStr] | None = expect("a list of FOV names (strings) or null")
    config_path: Path | None = expect("the predict.yml path or null")  # an input: never overwritten

    @model_validator(mode="before")
    @classmethod
    def _family_batch_size(cls, data):
        if isinstance(data, Mapping) and data.get("batch_size") is None:
            source = data.get("source")
            kind = source.get("kind") if isinstance(source, Mapping) else getattr(source, "kind", None)
            data = {**data, "batch_size": SOURCES[kind].default_batch_size if kind in SOURCES else 16}
        return data

    @field_validator("batch_size", "num_nodes", "num_workers", mode="before")
    @classmethod
    def _positive(cls, value, info):
        return positive_int(value, info.field_name)

    @field_validator("embedding_key", mode="before")
    @classmethod
    def _embedding_key(cls, value):
        if value not in ("features", "projections"):
            raise ConfigError(f"{{@embedding_key}} must be 'features' or 'projections', got {value!r}")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value):
        return one_of(value, PRECISIONS, "precision")

    @field_validator("cpu_backend", mode="before")
    @classmethod
    def _cpu_backend(cls, value):
        return check_cpu_backend(value)

    @model_validator(mode="after")
    def _check(self):
        from napari_dynaclr.core.schema import check_reduction_kwargs

        self.source.check(self)
        check_reduction_kwargs(self)  # before any work: a bad argument never fails after the prediction
        return self

    # ------------------------------------------------------------------ making one

    @classmethod
    def build(cls, source, **settings) -> PredictConfig:
        """A config from *source* (a source, or its fields with ``kind``) and flat *settings*: each name goes
        where it belongs (the common settings, the source, the experiment metadata)."""
        src = dict(source.fields()) if isinstance(source, Settings) else dict(source)
        top, exp = _route(SOURCES[src.get("kind", "tracks")], settings, src, None)
        return cls.model_validate({"source": src, **({"experiment": exp} if exp is not None else {}), **top})

    @classmethod
    def classic(cls, data_path, tracks_path, source_channel, z_range, initial_yx_patch_size=(160, 160),
                final_yx_patch_size=None, **settings) -> PredictConfig:
        """A classic run (a plate and its tracks), VisCy's ``TripletDataModule`` arguments in their order."""
        return cls.build({"kind": "tracks", "data_path": data_path, "tracks_path": tracks_path,
                          "source_channel": source_channel, "z_range": z_range,
                          "initial_yx_patch_size": initial_yx_patch_size, "final_yx_patch_size": final_yx_patch_size},
                         **settings)

    @classmethod
    def plain(cls, data_path, tracks_path, source_channel, z_range, patch_size, norm_level: str = "fov_statistics",
              **settings) -> PredictConfig:
        """The common case without a predict.yml (CLI flags, the napari dock's fields): square patches of
        *patch_size* (one or two values, initial = final), every channel z-scored with its *norm_level*
        statistics (``"none"``: no normalisation), batches of 32."""
        if isinstance(source_channel, str):
            source_channel = [source_channel]
        patch = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (patch_size,)
        if not 1 <= len(patch) <= 2:
            raise ConfigError(f"{{@initial_yx_patch_size}} takes one or two values, got {list(patch)}")
        patch = patch * (2 // len(patch))
        settings.setdefault("normalizations", [] if norm_level == "none" else default_normalizations(
            source_channel, norm_level))
        settings.setdefault("batch_size", 32)
        return cls.classic(data_path, tracks_path, source_channel, z_range, patch, patch, **settings)

    @classmethod
    def boc(cls, **settings) -> PredictConfig:
        """A Bag-of-Channels run (VisCy's ``MultiExperimentDataModule``) from flat settings."""
        return cls.build({"kind": "boc"}, **settings)

    def with_overrides(self, **changes) -> PredictConfig:
        """A copy with *changes* (flat names, routed as :meth:`build` routes them) validated like a new config
        (the CLI's flags, the dock's fields on top of a predict.yml). An unknown name is a :class:`ConfigError`."""
        src = self.source.fields()
        for key in ("data_path", "tracks_path"):  # another plate or tracks: recorded as given now
            if key in changes and f"{key}_as_given" in src and f"{key}_as_given" not in changes \
                    and changes[key] != src[key]:
                src[f"{key}_as_given"] = None
        exp = self.experiment.fields() if self.experiment is not None else None
        top, exp = _route(type(self.source), changes, src, exp)
        values = {**self.fields(), "source": src, "experiment": exp, **top}
        return type(self).model_validate(values)

    # ------------------------------------------------------------------ what a run is

    @property
    def family(self) -> str:
        """``classic`` or ``bag_of_channels`` (the source's)."""
        return self.source.family

    def asks_several_devices(self) -> bool:
        """Whether the trainer settings ask for several devices or nodes (napari predicts on one)."""
        devices = self.devices
        if isinstance(devices, (list, tuple)):
            return len(devices) > 1 or int(self.num_nodes) > 1
        if str(devices).lower() in ("auto", "-1"):
            return str(self.accelerator).lower() in ("gpu", "cuda") or int(self.num_nodes) > 1
        try:
            return int(devices) > 1 or int(self.num_nodes) > 1
        except (TypeError, ValueError):
            return int(self.num_nodes) > 1

    def input_paths(self) -> dict[str, Path | None]:
        """What a run reads: an output may never be, contain or lie inside any of these."""
        paths = dict(self.source.input_paths(self))
        if self.experiment is not None:
            paths["collection"] = self.experiment.collection_path
        return {**paths, "checkpoint": self.ckpt_path, "config": self.config_path}


def _route(source_cls, settings: Mapping, src: dict, exp: dict | None) -> tuple[dict, dict | None]:
    """Split flat *settings* into the common ones (returned), the source's (into *src*) and the experiment
    metadata's (into *exp*, made when needed); a name none of them has is a :class:`ConfigError`."""
    top = {}
    unknown = []
    for key, value in settings.items():
        if key in ("source", "kind"):
            unknown.append(key)
        elif key in PredictConfig.model_fields:
            top[key] = value
        elif key in source_cls.model_fields:
            src[key] = value
        elif key in ExperimentMetadata.model_fields:
            exp = {**(exp or {}), key: value}
        else:
            unknown.append(key)
    if unknown:
        what = " for a Bag-of-Channels prediction" if source_cls is CellIndexSource else ""
        raise ConfigError(f"unknown setting(s) {shorten(sorted(unknown))}{what}")
    if "experiment" in top:
        exp = top.pop("experiment")
        exp = exp.fields() if isinstance(exp, ExperimentMetadata) else exp
    if exp is not None and not any(v is not None for v in exp.values()):
        exp = None
    return top, exp


def default_normalizations(channels: Sequence[str], level: str = "fov_statistics") -> list[Normalization]:
    """z-score every channel with its FOV statistics (the plain-flags default)."""
    return [NormalizeSampled(keys=tuple(channels), level=level, subtrahend="mean", divisor="std")]
