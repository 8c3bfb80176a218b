"""The typed schema of a VisCy predict.yml (pydantic): every value of the sections we read is checked before
it is used, with one line naming the key; and the EmbeddingWriter's reduction arguments, checked against
the libraries that take them before any work starts.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from napari_dynaclr.core.settings import PRECISIONS, brief
from napari_dynaclr.errors import ConfigError, Wording, shorten

# --------------------------------------------------------------------------------------------------
# the typed schema of the sections we read (pydantic): every value is checked before it is used.
# Scalars are strict (a quoted "2" is not an integer, 1 is not a bool); lists accept any sequence.
# Unknown keys are let through here and reported by the hand checks (their messages predate the schema).

def _expect(text: str, default=None):
    return Field(default, description=text)


PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Number = StrictInt | StrictFloat
IntPair = Annotated[list[StrictInt], Field(min_length=2, max_length=2)]
IntTriple = Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
Names = StrictStr | list[StrictStr]
Kwargs = dict[StrictStr, Any] | None


class Schema(BaseModel):
    model_config = ConfigDict(extra="allow", validate_default=False)


class TopSchema(Schema):
    ckpt_path: StrictStr | None = _expect("a checkpoint path (string) or null")
    seed_everything: StrictInt | StrictBool | None = _expect("an integer, true/false or null")
    return_predictions: StrictBool | None = _expect("true, false or null")


class ModuleSchema(Schema):  # ContrastiveModule: only the encoder and ckpt_path are used
    ckpt_path: StrictStr | None = _expect("a checkpoint path (string) or null")


class EncoderSchema(Schema):  # viscy ContrastiveEncoder (see architecture.EncoderConfig)
    backbone: StrictStr = _expect("a backbone name (string)")
    in_channels: StrictInt = _expect("an integer")
    in_stack_depth: StrictInt = _expect("an integer")
    stem_kernel_size: IntTriple = _expect("three positive integers [z, y, x]")
    stem_stride: IntTriple = _expect("three positive integers [z, y, x]")
    embedding_dim: PositiveInt = _expect("a positive integer")
    projection_dim: PositiveInt = _expect("a positive integer")
    drop_path_rate: Number = _expect("a number")
    pretrained: StrictBool = _expect("true or false")


class DataSchema(Schema):  # viscy TripletDataModule
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


class NormalizationSchema(Schema):  # one entry of data.init_args.normalizations
    class_path: StrictStr = _expect("a class path (string)")
    init_args: dict[Any, Any] | None = _expect("a mapping or null")


class NormalizationArgsSchema(Schema):  # the inner args; from_viscy checks names and values
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


class WriterSchema(Schema):  # viscy EmbeddingWriter
    output_path: StrictStr | None = _expect("a path (string) or null")
    write_interval: Literal["batch", "epoch", "batch_and_epoch"] = _expect("'batch', 'epoch' or 'batch_and_epoch'")
    embedding_key: StrictStr = _expect("'features' or 'projections'")
    umap_kwargs: Kwargs = _expect("a mapping of UMAP arguments or null")
    pca_kwargs: Kwargs = _expect("a mapping of PCA arguments or null")
    phate_kwargs: Kwargs = _expect("a mapping of PHATE arguments or null")
    overwrite: StrictBool = _expect("true or false")


class TrainerSchema(Schema):  # lightning Trainer: the arguments we use
    accelerator: StrictStr = _expect("an accelerator name (string: auto, cpu, gpu, cuda, mps)")
    devices: StrictInt | StrictStr | list[StrictInt] = _expect("an integer, a string or a list of device indices")
    strategy: StrictStr = _expect("a strategy name (string)")
    num_nodes: PositiveInt = _expect("a positive integer")
    precision: StrictStr | StrictInt = _expect(f"one of {', '.join(PRECISIONS)}")
    callbacks: list[Any] | dict[Any, Any] | None = _expect("a list of {class_path, init_args} mappings")


class UmapSchema(Schema):
    n_components: PositiveInt = _expect("a positive integer")
    n_neighbors: Annotated[StrictInt, Field(ge=2)] = _expect("an integer >= 2")
    normalize: StrictBool = _expect("true or false")


class PcaSchema(Schema):
    n_components: PositiveInt | None = _expect("a positive integer or null")
    normalize_features: StrictBool = _expect("true or false")


class PhateSchema(Schema):
    n_components: PositiveInt = _expect("a positive integer")
    knn: PositiveInt = _expect("a positive integer")
    scale_embeddings: StrictBool = _expect("true or false")
    subsample: PositiveInt | None = _expect("a positive integer or null")



def check_types(schema: type[BaseModel], values: Mapping, where: str, source: str | None) -> None:
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
        got = brief(values[key]) if isinstance(values, Mapping) and key in values else "?"
        more = f" (+{len(keys) - 1} more problem{'s' if len(keys) > 2 else ''})" if len(keys) > 1 else ""
        head = f"{source}: " if source else ""
        raise ConfigError(f"{head}{path}: {what}, got {got}{more}") from None


# --------------------------------------------------------------------------------------------------
# EmbeddingWriter reduction kwargs: names and value types checked before the run, not after it

_REDUCTIONS = (("umap_kwargs", "UMAP", UmapSchema), ("pca_kwargs", "PCA", PcaSchema),
               ("phate_kwargs", "PHATE", PhateSchema))


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
    """The argument names a reduction accepts (None: any name, it cannot be checked here): our wrapper's own
    arguments (the fields of its schema: :mod:`napari_dynaclr.core.reduce`'s wrappers take exactly these and
    the library's) and the library's. Nothing here imports umap-learn: napari's process checks a predict.yml
    too, and importing umap (numba) takes seconds; its signature is read from its source."""
    import importlib.util
    import inspect
    import sys

    own = set(next(s for _, label, s in _REDUCTIONS if label == name).model_fields)
    if name == "PCA":
        return frozenset(own)
    if name == "UMAP":
        loaded = sys.modules.get("umap")
        if loaded is None:
            spec = importlib.util.find_spec("umap")
            if spec is None or not spec.origin:
                return None  # not installed: the run says so
            theirs = _init_parameters(Path(spec.origin).with_name("umap_.py"), "UMAP")
        else:
            params = inspect.signature(loaded.UMAP.__init__).parameters.values()
            theirs = None if any(p.kind is p.VAR_KEYWORD for p in params) else {p.name for p in params} - {"self"}
        return None if theirs is None else frozenset(own | theirs)
    # PHATE: our wrapper's parameters + phate.PHATE's (verbose is set by the wrapper)
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


def check_reduction_kwargs(cfg, source: str | None = None) -> None:
    """Check ``cfg.umap_kwargs`` / ``pca_kwargs`` / ``phate_kwargs`` before a run: each a mapping or None,
    every name accepted by the reduction (UMAP: ``umap.UMAP`` + our ``normalize``; PCA: ``n_components``,
    ``normalize_features``; PHATE: our wrapper + ``phate.PHATE``), component/neighbour counts positive
    integers; PHATE asked for needs the optional ``phate`` package. A problem is a one-line
    :class:`ConfigError` naming the key (in a predict.yml's words when *source*, the config file, is given)."""
    if source is not None:
        try:
            return check_reduction_kwargs(cfg)
        except ConfigError as exc:
            raise yaml_error(exc, source) from None
    for attr, label, schema in _REDUCTIONS:
        kwargs = getattr(cfg, attr)
        if kwargs is None:
            continue
        where = f"{{@{attr}}}"
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {label} arguments or null, got {brief(kwargs)}")
        names = [k for k in kwargs if not isinstance(k, str)]
        if names:
            raise ConfigError(f"{where}: argument names must be strings, got {brief(names[0])}")
        accepted = _accepted(label) if kwargs else None
        if accepted is not None:
            for key in kwargs:
                if key not in accepted:
                    import difflib

                    close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.6)
                    listed = close + sorted(accepted - set(close))
                    raise ConfigError(
                        f"{where}: unknown argument {brief(key)} for {label} (accepted: {shorten(listed, 12)})"
                    )
        check_types(schema, kwargs, where, None)
        if label == "PHATE":
            import importlib.util

            if importlib.util.find_spec("phate") is None:  # the run would fail after the whole prediction
                raise ConfigError(f"{where}: PHATE is asked for but the optional 'phate' package is not installed "
                                  "(pip install phate, or set phate_kwargs to null)")


# --------------------------------------------------------------------------------------------------
# a predict.yml's words

#: where a predict.yml holds each setting (the data module's keys are ours, VisCy's names where they differ)
_WRITER_KEYS = ("output_path", "embedding_key", "umap_kwargs", "pca_kwargs", "phate_kwargs", "overwrite")
_TRAINER_KEYS = ("accelerator", "devices", "strategy", "num_nodes", "precision")
_CLASSIC_NAMES = {"include_wells": "fit_include_wells", "exclude_fovs": "fit_exclude_fovs",
                  "include_cells": "include_fov_names/include_track_ids"}


class YamlWording(Wording):
    """A predict.yml's words: each setting by its place in the file (``data.init_args.z_range``)."""

    def __init__(self, kind: str | None = "tracks"):
        self.kind = kind

    def name(self, key: str) -> str:
        if key in _WRITER_KEYS:
            return f"trainer.callbacks[EmbeddingWriter].{key}"
        if key in _TRAINER_KEYS:
            return f"trainer.{key}"
        if key == "ckpt_path":
            return key
        if key == "encoder":
            return "model.init_args.encoder"
        return "data.init_args." + (_CLASSIC_NAMES.get(key, key) if self.kind == "tracks" else key)


def yaml_error(exc: ConfigError, source: str, kind: str | None = "tracks") -> ConfigError:
    """*exc* in a predict.yml's words, prefixed by the file (its remedy kept as it is)."""
    text = YamlWording(kind).render(exc.message)
    if not text.startswith(f"{source}: "):
        text = f"{source}: {text}"
    return type(exc)(text, key=exc.key, remedy=exc.remedy)
