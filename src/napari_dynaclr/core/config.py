"""Prediction settings, from a VisCy ``predict.yml`` (LightningCLI layout) or from plain arguments."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.core.normalize import (
    Normalization,
    NormalizeSampled,
    check_keys,
    from_viscy,
)
from napari_dynaclr.errors import ConfigError, shorten

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


# --------------------------------------------------------------------------------------------------
# VisCy predict.yml

_MODULE_NAMES = {"ContrastiveModule"}
_ENCODER_NAMES = {"ContrastiveEncoder"}
_DATA_NAMES = {"TripletDataModule"}
_WRITER_NAMES = {"EmbeddingWriter"}
_TOP_KEYS = {"seed_everything", "trainer", "model", "data", "return_predictions", "ckpt_path", "launcher", "benchmark"}
_DATA_USED = {
    "data_path", "tracks_path", "source_channel", "z_range", "initial_yx_patch_size", "final_yx_patch_size",
    "batch_size", "num_workers", "normalizations", "fit_include_wells", "fit_exclude_fovs", "predict_cells",
    "include_fov_names", "include_track_ids", "z_window_size",
}
_DATA_IGNORED = {  # training-only or loader tuning: accepted and ignored, as VisCy ignores them in predict
    "split_ratio", "augmentations", "augment_validation", "time_interval", "return_negative",
    "persistent_workers", "prefetch_factor", "pin_memory", "cache_pool_bytes", "caching",
}
_WRITER_ARGS = {
    "output_path", "write_interval", "embedding_key", "umap_kwargs", "phate_kwargs", "pca_kwargs", "overwrite",
}


# --------------------------------------------------------------------------------------------------
# safe YAML: size, encoding, alias expansion

MAX_CONFIG_BYTES = 10 * 1024 * 1024  # a predict.yml is a few KB
MAX_YAML_VALUES = 100_000  # values counted with repetition (an alias repeats what it points to)
MAX_YAML_DEPTH = 100


def load_predict_yaml(path: str | Path) -> PredictConfig:
    """Parse a VisCy ``predict.yml`` (unchanged) into a :class:`PredictConfig`.

    Relative paths (data, tracks, checkpoint, output) resolve against the config file's folder.
    A file over 10 MB, not UTF-8, not YAML, or expanding (through aliases) to more than 100,000 values
    is a :class:`ConfigError`, as is any wrongly typed value.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 2**20} MB ({size} bytes); a predict.yml "
                              "is a few KB: refusing")
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:  # grew since stat
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 2**20} MB; a predict.yml is a few KB: refusing")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not valid YAML: {_clip(first, 200)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML nests deeper than {MAX_YAML_DEPTH} levels; refusing") from None
    except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-02-30
        raise ConfigError(f"{path} is not valid YAML: {_clip(str(exc), 200)}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path} must be a mapping with 'model', 'data' and 'trainer' sections")
    cfg = parse_predict_config(doc, base_dir=path.parent, source=str(path))
    cfg.config_path = path
    return cfg


def _children(node):
    if isinstance(node, Mapping):
        return itertools.chain.from_iterable(node.items())
    return iter(node)


def _is_container(node) -> bool:
    return isinstance(node, (Mapping, list, tuple, set, frozenset))


def check_expansion(doc, source: str = "config") -> None:
    """Refuse a document that, counting every value each time it is reached (YAML aliases make one
    object appear many times: a "billion laughs" file of 2 KB), holds more than :data:`MAX_YAML_VALUES`
    values or nests deeper than :data:`MAX_YAML_DEPTH` (a self-referencing alias nests forever).

    The walk keeps one iterator per level and stops at the limit, so it never expands the document.
    """
    if not _is_container(doc):
        return
    count = 1
    stack = [_children(doc)]
    while stack:
        child = next(stack[-1], _END)
        if child is _END:
            stack.pop()
            continue
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError(
                f"{source}: the YAML expands to more than {MAX_YAML_VALUES} values (aliases?); refusing"
            )
        if _is_container(child):
            if len(stack) >= MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{source}: the YAML nests deeper than {MAX_YAML_DEPTH} levels (a recursive alias?); refusing"
                )
            stack.append(_children(child))


_END = object()


# --------------------------------------------------------------------------------------------------
# the typed schema of the sections we read (pydantic): every value is checked before it is used.
# Scalars are strict (a quoted "2" is not an integer, 1 is not a bool); lists accept any sequence.
# Unknown keys are let through here and reported by the hand checks (their messages predate the schema).

_REPR = reprlib.Repr(maxlevel=2, maxtuple=4, maxlist=4, maxdict=4, maxset=4, maxstring=48, maxother=48,
                     maxlong=48)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief(value) -> str:
    """A short repr (never builds the full repr of a big value)."""
    try:
        return _clip(_REPR.repr(value))
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
        return f"<{type(value).__name__}>"


def _expect(text: str, default=None):
    return Field(default, description=text)


PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Number = StrictInt | StrictFloat
IntPair = Annotated[list[StrictInt], Field(min_length=2, max_length=2)]
IntTriple = Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
Names = StrictStr | list[StrictStr]
Kwargs = dict[StrictStr, Any] | None


class _Schema(BaseModel):
    model_config = ConfigDict(extra="allow", validate_default=False)


class _TopSchema(_Schema):
    ckpt_path: StrictStr | None = _expect("a checkpoint path (string) or null")
    seed_everything: StrictInt | StrictBool | None = _expect("an integer, true/false or null")
    return_predictions: StrictBool | None = _expect("true, false or null")


class _ModuleSchema(_Schema):  # ContrastiveModule: only the encoder and ckpt_path are used
    ckpt_path: StrictStr | None = _expect("a checkpoint path (string) or null")


class _EncoderSchema(_Schema):  # viscy ContrastiveEncoder (see architecture.EncoderConfig)
    backbone: StrictStr = _expect("a backbone name (string)")
    in_channels: StrictInt = _expect("an integer")
    in_stack_depth: StrictInt = _expect("an integer")
    stem_kernel_size: IntTriple = _expect("three positive integers [z, y, x]")
    stem_stride: IntTriple = _expect("three positive integers [z, y, x]")
    embedding_dim: PositiveInt = _expect("a positive integer")
    projection_dim: PositiveInt = _expect("a positive integer")
    drop_path_rate: Number = _expect("a number")
    pretrained: StrictBool = _expect("true or false")


class _DataSchema(_Schema):  # viscy TripletDataModule
    data_path: StrictStr = _expect("a path (string)")
    tracks_path: StrictStr = _expect("a path (string)")
    source_channel: Names = _expect("a channel name or a list of channel names (strings)")
    z_range: IntPair = _expect("two integers [start, stop]")
    initial_yx_patch_size: StrictInt | IntPair = _expect("two integers [y, x]")
    final_yx_patch_size: StrictInt | IntPair | None = _expect("two integers [y, x]")
    batch_size: PositiveInt = _expect("a positive integer")
    num_workers: NonNegativeInt | None = _expect("a non-negative integer")
    normalizations: list[Any] | None = _expect("a list of {class_path, init_args} mappings")
    fit_include_wells: list[StrictStr] | None = _expect("a list of well names (strings) or null")
    fit_exclude_fovs: list[StrictStr] | None = _expect("a list of FOV names (strings) or null")
    predict_cells: StrictBool = _expect("true or false")
    include_fov_names: list[StrictStr] | None = _expect("a list of FOV names (strings) or null")
    include_track_ids: list[StrictInt] | None = _expect("a list of integer track ids or null")
    z_window_size: PositiveInt | None = _expect("a positive integer or null")
    # accepted and ignored (training-only or loader tuning), typed as VisCy types them
    split_ratio: Number = _expect("a number")
    augmentations: list[Any] | None = _expect("a list of transforms or null")
    augment_validation: StrictBool = _expect("true or false")
    time_interval: Literal["any"] | StrictInt = _expect("'any' or an integer")
    return_negative: StrictBool = _expect("true or false")
    persistent_workers: StrictBool = _expect("true or false")
    prefetch_factor: NonNegativeInt | None = _expect("a non-negative integer or null")
    pin_memory: StrictBool = _expect("true or false")
    cache_pool_bytes: NonNegativeInt = _expect("a non-negative integer")
    caching: StrictBool = _expect("true or false")


class _NormalizationSchema(_Schema):  # one entry of data.init_args.normalizations
    class_path: StrictStr = _expect("a class path (string)")
    init_args: dict[Any, Any] | None = _expect("a mapping or null")


class _NormalizationArgsSchema(_Schema):  # the inner args; from_viscy checks names and values
    keys: Names = _expect("a channel name or a list of channel names (strings)")
    level: StrictStr = _expect("a statistics level (string)")
    subtrahend: StrictStr = _expect("a statistic name (string)")
    divisor: StrictStr = _expect("a statistic name (string)")
    data_range: StrictStr = _expect("a data range (string)")
    lower: Number = _expect("a percentile (number)")
    upper: Number = _expect("a percentile (number)")
    b_min: Number | None = _expect("a number or null")
    b_max: Number | None = _expect("a number or null")
    clip: StrictBool = _expect("true or false")
    relative: StrictBool = _expect("true or false")
    channel_wise: StrictBool = _expect("true or false")
    allow_missing_keys: StrictBool = _expect("true or false")
    remove_meta: StrictBool = _expect("true or false")
    dtype: StrictStr | None = _expect("a dtype name (string) or null")


class _WriterSchema(_Schema):  # viscy EmbeddingWriter
    output_path: StrictStr | None = _expect("a path (string) or null")
    write_interval: Literal["batch", "epoch", "batch_and_epoch"] = _expect("'batch', 'epoch' or 'batch_and_epoch'")
    embedding_key: StrictStr = _expect("'features' or 'projections'")
    umap_kwargs: Kwargs = _expect("a mapping of UMAP arguments or null")
    pca_kwargs: Kwargs = _expect("a mapping of PCA arguments or null")
    phate_kwargs: Kwargs = _expect("a mapping of PHATE arguments or null")
    overwrite: StrictBool = _expect("true or false")


class _TrainerSchema(_Schema):  # lightning Trainer: the arguments we use
    accelerator: StrictStr = _expect("an accelerator name (string: auto, cpu, gpu, cuda, mps)")
    devices: StrictInt | StrictStr | list[StrictInt] = _expect("an integer, a string or a list of device indices")
    strategy: StrictStr = _expect("a strategy name (string)")
    num_nodes: PositiveInt = _expect("a positive integer")
    precision: StrictStr | StrictInt = _expect(f"one of {', '.join(PRECISIONS)}")
    callbacks: list[Any] | dict[Any, Any] | None = _expect("a list of {class_path, init_args} mappings")


class _UmapSchema(_Schema):
    n_components: PositiveInt = _expect("a positive integer")
    n_neighbors: Annotated[StrictInt, Field(ge=2)] = _expect("an integer >= 2")
    normalize: StrictBool = _expect("true or false")


class _PcaSchema(_Schema):
    n_components: PositiveInt | None = _expect("a positive integer or null")
    normalize_features: StrictBool = _expect("true or false")


class _PhateSchema(_Schema):
    n_components: PositiveInt = _expect("a positive integer")
    knn: PositiveInt = _expect("a positive integer")
    scale_embeddings: StrictBool = _expect("true or false")
    subsample: PositiveInt | None = _expect("a positive integer or null")


def _check_types(schema: type[BaseModel], values: Mapping, where: str, source: str | None) -> None:
    """Validate *values* against *schema*; the first problem becomes a one-line :class:`ConfigError`
    ``<source>: <where>.<key>: expected <what>, got <value>`` (no ``<source>:`` when *source* is None)."""
    try:
        schema.model_validate(dict(values))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        keys = list(dict.fromkeys(e["loc"][0] if e["loc"] else "" for e in errors))
        key = keys[0]
        field = schema.model_fields.get(key) if isinstance(key, str) else None
        what = f"expected {field.description}" if field is not None and field.description else errors[0]["msg"]
        path = ".".join(p for p in (where, str(key)) if p)
        got = _brief(values[key]) if isinstance(values, Mapping) and key in values else "?"
        more = f" (+{len(keys) - 1} more problem{'s' if len(keys) > 2 else ''})" if len(keys) > 1 else ""
        head = f"{source}: " if source else ""
        raise ConfigError(f"{head}{path}: {what}, got {got}{more}") from None


def _cls_name(node, where: str, allowed: set[str], source: str) -> dict:
    if not isinstance(node, Mapping) or "class_path" not in node:
        raise ConfigError(f"{source}: '{where}' needs a 'class_path' (and 'init_args')")
    if not isinstance(node["class_path"], str):
        got = _brief(node["class_path"])
        raise ConfigError(f"{source}: {where}.class_path: expected a class path (string), got {got}")
    name = node["class_path"].rsplit(".", 1)[-1]
    if name not in allowed:
        raise ConfigError(
            f"{source}: unsupported {where}.class_path {_clip(repr(node['class_path']), 120)} "
            f"(expected {' or '.join(sorted(allowed))})"
        )
    args = node.get("init_args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError(f"{source}: '{where}.init_args' must be a mapping")
    return dict(args)


def _normalizations(entries, source: str) -> list[Normalization]:
    """``data.init_args.normalizations`` → normalisation objects; a problem names its entry."""
    out = []
    for i, entry in enumerate(entries or []):
        where = f"data.init_args.normalizations[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: {where}: expected a {{class_path, init_args}} mapping, got {_brief(entry)}")
        if "class_path" not in entry:
            raise ConfigError(f"{source}: {where}: normalization entry has no 'class_path'")
        _check_types(_NormalizationSchema, entry, where, source)
        _check_types(_NormalizationArgsSchema, entry.get("init_args") or {}, f"{where}.init_args", source)
        try:
            out.append(from_viscy(entry))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {where}: invalid arguments ({_clip(str(exc), 120)})") from None
    return out


def parse_predict_config(doc: Mapping, base_dir: Path = Path("."), source: str = "config") -> PredictConfig:
    base_dir = Path(base_dir)
    check_expansion(doc, source)
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source} must be a mapping with 'model', 'data' and 'trainer' sections")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {_clip(shorten(sorted(map(str, unknown))), 200)}")
    for key in ("model", "data"):
        if key not in doc:
            raise ConfigError(f"{source}: missing '{key}' section")
    _check_types(_TopSchema, doc, "", source)
    model_args = _cls_name(doc["model"], "model", _MODULE_NAMES, source)
    _check_types(_ModuleSchema, model_args, "model.init_args", source)
    encoder = None
    if "encoder" in model_args:
        enc_args = _cls_name(model_args["encoder"], "model.init_args.encoder", _ENCODER_NAMES, source)
        missing = [k for k in ("backbone", "in_channels", "in_stack_depth") if k not in enc_args]
        if missing:
            raise ConfigError(f"{source}: model.init_args.encoder.init_args lacks {', '.join(missing)}")
        _check_types(_EncoderSchema, enc_args, "model.init_args.encoder.init_args", source)
        if enc_args.get("pretrained"):
            raise ConfigError(f"{source}: encoder pretrained=true would download weights; set it to false")
        encoder = EncoderConfig.from_dict(enc_args)
    data = _cls_name(doc["data"], "data", _DATA_NAMES, source)
    unknown = set(data) - _DATA_USED - _DATA_IGNORED
    if unknown:
        raise ConfigError(
            f"{source}: unknown data.init_args key(s) {_clip(shorten(sorted(map(str, unknown))), 200)}"
        )
    missing = [k for k in ("data_path", "tracks_path", "source_channel", "z_range") if data.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: data.init_args lacks {', '.join(missing)}")
    _check_types(_DataSchema, data, "data.init_args", source)
    normalizations = _normalizations(data.get("normalizations"), source)

    trainer = doc.get("trainer") or {}
    if not isinstance(trainer, Mapping):
        raise ConfigError(f"{source}: 'trainer' must be a mapping")
    _check_types(_TrainerSchema, trainer, "trainer", source)
    writer = {}
    callbacks = trainer.get("callbacks") or []
    if isinstance(callbacks, Mapping):
        callbacks = [callbacks]
    for cb in callbacks:
        if isinstance(cb, Mapping) and str(cb.get("class_path", "")).rsplit(".", 1)[-1] in _WRITER_NAMES:
            init_args = cb.get("init_args") or {}
            if not isinstance(init_args, Mapping):
                raise ConfigError(f"{source}: trainer.callbacks[EmbeddingWriter].init_args must be a mapping")
            writer = dict(init_args)
            bad = set(writer) - _WRITER_ARGS
            if bad:
                raise ConfigError(
                    f"{source}: unknown EmbeddingWriter argument(s) {_clip(shorten(sorted(map(str, bad))), 200)}"
                )
            _check_types(_WriterSchema, writer, "trainer.callbacks[EmbeddingWriter]", source)
    ckpt = doc.get("ckpt_path") or model_args.get("ckpt_path")

    def resolve(p):
        if p is None:
            return None
        p = Path(str(p)).expanduser()
        return p if p.is_absolute() else base_dir / p

    include_cells = None
    if data.get("predict_cells"):
        names, ids = data.get("include_fov_names"), data.get("include_track_ids")
        if not names or not ids or len(names) != len(ids):
            raise ConfigError(
                f"{source}: predict_cells needs include_fov_names and include_track_ids of equal length"
            )
        include_cells = [(str(f), int(t)) for f, t in zip(names, ids, strict=True)]
    z_range = data["z_range"]
    zw = data.get("z_window_size")
    if zw is not None and int(zw) != int(z_range[1]) - int(z_range[0]):
        raise ConfigError(f"{source}: z_window_size {zw} differs from the z_range length {z_range}")
    initial = data.get("initial_yx_patch_size", (512, 512))
    final = data.get("final_yx_patch_size", (224, 224))
    num_workers = data.get("num_workers", 1)
    cfg = PredictConfig(
        data_path=resolve(data["data_path"]),
        tracks_path=resolve(data["tracks_path"]),
        data_path_as_given=str(data["data_path"]),
        tracks_path_as_given=str(data["tracks_path"]),
        source_channel=data["source_channel"],
        z_range=z_range,
        initial_yx_patch_size=initial,
        final_yx_patch_size=final,
        batch_size=data.get("batch_size", 16),
        normalizations=normalizations,
        include_wells=data.get("fit_include_wells"),
        exclude_fovs=data.get("fit_exclude_fovs"),
        include_cells=include_cells,
        ckpt_path=resolve(ckpt),
        encoder=encoder,
        output_path=resolve(writer.get("output_path")),
        overwrite=bool(writer.get("overwrite", False)),
        embedding_key=writer.get("embedding_key", "features"),
        pca_kwargs=writer.get("pca_kwargs"),
        umap_kwargs=writer.get("umap_kwargs"),
        phate_kwargs=writer.get("phate_kwargs"),
        accelerator=str(trainer.get("accelerator", "auto")),
        devices=trainer.get("devices", 1),
        strategy=str(trainer.get("strategy", "auto")),
        num_nodes=int(trainer.get("num_nodes", 1)),
        precision=str(trainer.get("precision", "32-true")),
        num_workers=max(1, int(num_workers or 1)),
    )
    check_reduction_kwargs(cfg, source=source)
    return cfg


# --------------------------------------------------------------------------------------------------
# EmbeddingWriter reduction kwargs: names and value types checked before the run, not after it

_REDUCTIONS = (("umap_kwargs", "UMAP", _UmapSchema), ("pca_kwargs", "PCA", _PcaSchema),
               ("phate_kwargs", "PHATE", _PhateSchema))


def _own_parameters(func) -> set[str]:
    import inspect

    return {
        name for i, (name, p) in enumerate(inspect.signature(func).parameters.items())
        if i > 0 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)  # 0: the data matrix
    }


def _init_parameters(source_file: Path, class_name: str) -> set[str] | None:
    """The keyword names of ``class_name.__init__`` read from its source (no import); None: unknown."""
    import ast

    try:
        tree = ast.parse(source_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    a = fn.args
                    if a.kwarg is not None:
                        return None
                    return {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs} - {"self"}
    return None


@functools.cache
def _accepted(name: str) -> frozenset[str] | None:
    """The argument names a reduction accepts (None: any name, it cannot be checked here)."""
    import importlib.util
    import inspect
    import sys

    from napari_dynaclr.core import reduce

    if name == "PCA":
        return frozenset(_own_parameters(reduce.pca))
    if name == "UMAP":
        own = _own_parameters(reduce.umap)
        # umap-learn's signature, read from its source when umap is not imported yet: importing it
        # (numba) takes seconds and the napari process must stay free of it
        theirs = None
        if "umap" not in sys.modules:
            spec = importlib.util.find_spec("umap")
            if spec is not None and spec.origin:
                theirs = _init_parameters(Path(spec.origin).with_name("umap_.py"), "UMAP")
        if theirs is None:
            try:
                import umap as umap_learn
            except ImportError:
                return None
            params = inspect.signature(umap_learn.UMAP.__init__).parameters.values()
            if any(p.kind is p.VAR_KEYWORD for p in params):
                return None
            theirs = {p.name for p in params} - {"self"}
        return frozenset(own | theirs)
    # PHATE: our wrapper's parameters + phate.PHATE's (verbose is set by the wrapper)
    own = _own_parameters(reduce.phate)
    if importlib.util.find_spec("phate") is None:
        theirs = _PHATE_ARGS
    else:
        try:
            import phate as phate_lib

            params = inspect.signature(phate_lib.PHATE.__init__).parameters.values()
        except Exception:  # noqa: BLE001 - a broken optional install: fall back to the known names
            params = None
        if params is None:
            theirs = _PHATE_ARGS
        elif any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        else:
            theirs = {p.name for p in params} - {"self"}
    return frozenset((own | set(theirs)) - {"verbose"})


# phate.PHATE's arguments (phate 1.0), used when the optional package is not installed
_PHATE_ARGS = frozenset({
    "n_components", "knn", "decay", "n_landmark", "t", "gamma", "n_pca", "mds_solver", "knn_dist", "knn_max",
    "mds_dist", "mds", "n_jobs", "random_state", "potential_method", "alpha_decay", "njobs", "k", "a",
})


def check_reduction_kwargs(cfg: PredictConfig, source: str | None = None) -> None:
    """Check ``cfg.umap_kwargs`` / ``pca_kwargs`` / ``phate_kwargs`` before a run: each a mapping or None,
    every name accepted by the reduction (UMAP: ``umap.UMAP`` + our ``normalize``; PCA: ``n_components``,
    ``normalize_features``; PHATE: our wrapper + ``phate.PHATE``), component/neighbour counts positive
    integers; PHATE asked for needs the optional ``phate`` package. A problem is a one-line
    :class:`ConfigError` naming the key (and *source*, the config file)."""
    if source is None and cfg.config_path is not None:
        source = str(cfg.config_path)
    prefix = f"{source}: trainer.callbacks[EmbeddingWriter]." if source else ""
    for attr, label, schema in _REDUCTIONS:
        kwargs = getattr(cfg, attr)
        if kwargs is None:
            continue
        where = f"{prefix}{attr}"
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {label} arguments or null, got {_brief(kwargs)}")
        names = [k for k in kwargs if not isinstance(k, str)]
        if names:
            raise ConfigError(f"{where}: argument names must be strings, got {_brief(names[0])}")
        accepted = _accepted(label) if kwargs else None
        if accepted is not None:
            for key in kwargs:
                if key not in accepted:
                    import difflib

                    close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.6)
                    listed = close + sorted(accepted - set(close))
                    raise ConfigError(
                        f"{where}: unknown argument {_brief(key)} for {label} (accepted: {shorten(listed, 12)})"
                    )
        _check_types(schema, kwargs, f"trainer.callbacks[EmbeddingWriter].{attr}" if source else attr, source)
        if label == "PHATE":
            import importlib.util

            if importlib.util.find_spec("phate") is None:  # the run would fail after the whole prediction
                raise ConfigError(f"{where}: PHATE is asked for but the optional 'phate' package is not installed "
                                  "(pip install phate, or set phate_kwargs to null)")
