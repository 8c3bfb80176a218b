"""Prediction settings, from a VisCy ``predict.yml`` (LightningCLI layout) or from plain arguments."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.core.normalize import (
    Normalization,
    NormalizeSampled,
    check_keys,
    from_viscy,
)
from napari_dynaclr.errors import ConfigError, shorten

CPU_BACKENDS = ("auto", "openvino", "onednn", "eager")


def check_cpu_backend(value) -> str:
    """The CPU encoder kernels (:mod:`napari_dynaclr.model.fast_cpu`): auto, openvino, onednn or eager."""
    if value not in CPU_BACKENDS:
        raise ConfigError(f"cpu_backend {value!r} is not one of {', '.join(CPU_BACKENDS)}")
    return value

PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true")


@dataclasses.dataclass
class PredictConfig:
    """Everything a prediction needs (VisCy ``TripletDataModule`` + ``EmbeddingWriter`` + trainer)."""

    data_path: Path
    tracks_path: Path
    source_channel: list[str]
    z_range: tuple[int, int]
    initial_yx_patch_size: tuple[int, int] = (160, 160)
    final_yx_patch_size: tuple[int, int] | None = None  # None: same as initial
    batch_size: int = 16
    normalizations: list[Normalization] = dataclasses.field(default_factory=list)
    include_wells: list[str] | None = None
    exclude_fovs: list[str] | None = None
    include_cells: list[tuple[str, int]] | None = None  # VisCy predict_cells pairs
    ckpt_path: Path | None = None
    encoder: EncoderConfig | None = None
    output_path: Path | None = None
    overwrite: bool = False
    embedding_key: str = "features"
    pca_kwargs: dict | None = None
    umap_kwargs: dict | None = None
    phate_kwargs: dict | None = None
    accelerator: str = "auto"
    devices: int | str | list = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    num_workers: int = 2
    cpu_backend: str = "auto"  # CPU encoder kernels: auto (the fastest exact one), openvino, onednn, eager
    allow_nonfinite: bool = False  # NaN/Inf pixels or embeddings: refused unless allowed (then counted, reported)
    config_path: Path | None = None  # the predict.yml this came from (an input: never overwritten)
    # the paths exactly as given (VisCy writes them into uns unresolved)
    data_path_as_given: str | None = None
    tracks_path_as_given: str | None = None

    def __post_init__(self):
        self.data_path = Path(self.data_path)
        self.tracks_path = Path(self.tracks_path)
        if self.data_path_as_given is None:
            self.data_path_as_given = str(self.data_path)
        if self.tracks_path_as_given is None:
            self.tracks_path_as_given = str(self.tracks_path)
        if isinstance(self.source_channel, str):
            self.source_channel = [self.source_channel]
        self.source_channel = [str(c) for c in self.source_channel]
        if not self.source_channel:
            raise ConfigError("source_channel is empty: name at least one channel")
        if len(set(self.source_channel)) != len(self.source_channel):
            raise ConfigError(f"source_channel lists a channel twice: {self.source_channel}")
        self.z_range = _pair(self.z_range, "z_range")
        if not (0 <= self.z_range[0] < self.z_range[1]):
            raise ConfigError(f"z_range {list(self.z_range)} must satisfy 0 <= start < stop (stop exclusive)")
        self.initial_yx_patch_size = _pair(self.initial_yx_patch_size, "initial_yx_patch_size")
        if self.final_yx_patch_size is not None:
            self.final_yx_patch_size = _pair(self.final_yx_patch_size, "final_yx_patch_size")
        for p in self.patch_size:
            if p < 2:
                raise ConfigError(f"patch size {list(self.patch_size)} is too small")
        if any(f > i for f, i in zip(self.patch_size, self.initial_yx_patch_size, strict=True)):
            raise ConfigError(
                f"final_yx_patch_size {list(self.patch_size)} is larger than initial_yx_patch_size "
                f"{list(self.initial_yx_patch_size)}"
            )
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.embedding_key not in ("features", "projections"):
            raise ConfigError(f"embedding_key must be 'features' or 'projections', got {self.embedding_key!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        check_cpu_backend(self.cpu_backend)
        self.normalizations = [
            n if not isinstance(n, Mapping) else from_viscy(n) for n in (self.normalizations or [])
        ]
        check_keys(self.normalizations, self.source_channel)

    @classmethod
    def plain(cls, data_path, tracks_path, source_channel, z_range, patch_size, norm_level: str = "fov_statistics",
              **fields) -> PredictConfig:
        """The common case without a predict.yml (CLI flags, the napari dock's fields): square patches of
        *patch_size* (one or two values, initial = final), every channel z-scored with its *norm_level*
        statistics (``"none"``: no normalisation), batches of 32."""
        if isinstance(source_channel, str):
            source_channel = [source_channel]
        patch = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (patch_size,)
        if not 1 <= len(patch) <= 2:
            raise ConfigError(f"patch size takes one or two values, got {list(patch)}")
        patch = patch * (2 // len(patch))
        norms = [] if norm_level == "none" else default_normalizations(source_channel, norm_level)
        fields.setdefault("batch_size", 32)
        return cls(data_path=data_path, tracks_path=tracks_path, source_channel=source_channel, z_range=z_range,
                   initial_yx_patch_size=patch, final_yx_patch_size=patch, normalizations=norms, **fields)

    def with_overrides(self, **changes) -> PredictConfig:
        """A copy with *changes* applied and validated like a new config (the CLI's flags, the dock's
        fields on top of a predict.yml). An unknown name is a :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {shorten(unknown)}")
        for key in ("data_path", "tracks_path"):  # another folder: record it as given now
            if key in changes and f"{key}_as_given" not in changes and Path(changes[key]) != getattr(self, key):
                changes[f"{key}_as_given"] = None
        return dataclasses.replace(self, **changes)

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
        return {"plate": self.data_path, "tracks": self.tracks_path, "checkpoint": self.ckpt_path,
                "config": self.config_path}

    @property
    def patch_size(self) -> tuple[int, int]:
        """The YX size fed to the model."""
        return self.final_yx_patch_size or (
            2 * (self.initial_yx_patch_size[0] // 2), 2 * (self.initial_yx_patch_size[1] // 2)
        )

    @property
    def z_depth(self) -> int:
        return self.z_range[1] - self.z_range[0]


def _pair(value, name) -> tuple[int, int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        vals = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} must be two integers, got {value!r}") from None
    if len(vals) != 2:
        raise ConfigError(f"{name} must be two integers, got {list(vals)}")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            raise ConfigError(f"{name} must be two integers, got {list(vals)}")
        out.append(int(v))
    return out[0], out[1]


def default_normalizations(channels: Sequence[str], level: str = "fov_statistics") -> list[Normalization]:
    """z-score every channel with its FOV statistics (the plain-flags default)."""
    return [NormalizeSampled(keys=tuple(channels), level=level, subtrahend="mean", divisor="std")]
