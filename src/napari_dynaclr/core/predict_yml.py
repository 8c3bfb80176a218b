"""VisCy's ``predict.yml`` (LightningCLI layout: ``class_path``/``init_args``), read safely and turned into a
:class:`~napari_dynaclr.core.config.PredictConfig`. Relative paths resolve against the file's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.inputs import check_expansion, load_yaml
from napari_dynaclr.core.normalize import Normalization, from_viscy
from napari_dynaclr.core.schema import (
    DataSchema,
    EncoderSchema,
    ModuleSchema,
    NormalizationArgsSchema,
    NormalizationSchema,
    TopSchema,
    TrainerSchema,
    WriterSchema,
    check_types,
    yaml_error,
)
from napari_dynaclr.core.settings import brief, clip
from napari_dynaclr.errors import ConfigError, shorten

# --------------------------------------------------------------------------------------------------
# VisCy predict.yml

_MODULE_NAMES = {"ContrastiveModule"}
_ENCODER_NAMES = {"ContrastiveEncoder"}
_DATA_NAMES = {"TripletDataModule", "MultiExperimentDataModule"}
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


def load_predict_yaml(path: str | Path) -> PredictConfig:
    """Parse a VisCy ``predict.yml`` (unchanged) into a :class:`PredictConfig`.

    Relative paths (data, tracks, checkpoint, output) resolve against the config file's folder.
    The file is read by :func:`napari_dynaclr.core.inputs.load_yaml` (a regular readable file of at most
    10 MB, UTF-8, YAML, at most 100,000 values once aliases are expanded); a problem there, or any wrongly
    typed value, is a :class:`ConfigError`.
    """
    path = Path(path)
    doc = load_yaml(path, "config file", ConfigError)
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path} must be a mapping with 'model', 'data' and 'trainer' sections")
    return parse_predict_config(doc, base_dir=path.parent, source=str(path), config_path=path)


def _cls_name(node, where: str, allowed: set[str], source: str) -> dict:
    if not isinstance(node, Mapping) or "class_path" not in node:
        raise ConfigError(f"{source}: '{where}' needs a 'class_path' (and 'init_args')")
    if not isinstance(node["class_path"], str):
        got = brief(node["class_path"])
        raise ConfigError(f"{source}: {where}.class_path: expected a class path (string), got {got}")
    name = node["class_path"].rsplit(".", 1)[-1]
    if name not in allowed:
        raise ConfigError(
            f"{source}: unsupported {where}.class_path {clip(repr(node['class_path']), 120)} "
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
            raise ConfigError(f"{source}: {where}: expected a {{class_path, init_args}} mapping, got {brief(entry)}")
        if "class_path" not in entry:
            raise ConfigError(f"{source}: {where}: normalization entry has no 'class_path'")
        check_types(NormalizationSchema, entry, where, source)
        check_types(NormalizationArgsSchema, entry.get("init_args") or {}, f"{where}.init_args", source)
        try:
            out.append(from_viscy(entry))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {where}: invalid arguments ({clip(str(exc), 120)})") from None
    return out


def parse_predict_config(doc: Mapping, base_dir: Path = Path("."), source: str = "config",
                         config_path: Path | None = None) -> PredictConfig:
    """A predict.yml's mapping as the run's config (*config_path*: the file, an input of the run)."""
    base_dir = Path(base_dir)
    check_expansion(doc, source, ConfigError)
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source} must be a mapping with 'model', 'data' and 'trainer' sections")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {clip(shorten(sorted(map(str, unknown))), 200)}")
    for key in ("model", "data"):
        if key not in doc:
            raise ConfigError(f"{source}: missing '{key}' section")
    check_types(TopSchema, doc, "", source)
    model_args = _cls_name(doc["model"], "model", _MODULE_NAMES, source)
    check_types(ModuleSchema, model_args, "model.init_args", source)
    encoder = None
    if "encoder" in model_args:
        enc_args = _cls_name(model_args["encoder"], "model.init_args.encoder", _ENCODER_NAMES, source)
        missing = [k for k in ("backbone", "in_channels", "in_stack_depth") if k not in enc_args]
        if missing:
            raise ConfigError(f"{source}: model.init_args.encoder.init_args lacks {', '.join(missing)}")
        check_types(EncoderSchema, enc_args, "model.init_args.encoder.init_args", source)
        if enc_args.get("pretrained"):
            raise ConfigError(f"{source}: encoder pretrained=true would download weights; set it to false")
        encoder = EncoderConfig.from_dict(enc_args)
    data = _cls_name(doc["data"], "data", _DATA_NAMES, source)
    run = {**run_settings(doc, base_dir, source, model_args), "config_path": config_path}
    if str(doc["data"]["class_path"]).rsplit(".", 1)[-1] == "MultiExperimentDataModule":
        from napari_dynaclr.core.boc_yml import boc_settings

        fields, common = boc_settings(data, base_dir, source)
        return build_from_yaml(fields, source, encoder=encoder, **common, **run)
    unknown = set(data) - _DATA_USED - _DATA_IGNORED
    if unknown:
        raise ConfigError(
            f"{source}: unknown data.init_args key(s) {clip(shorten(sorted(map(str, unknown))), 200)}"
        )
    missing = [k for k in ("data_path", "tracks_path", "source_channel", "z_range") if data.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: data.init_args lacks {', '.join(missing)}")
    check_types(DataSchema, data, "data.init_args", source)
    normalizations = _normalizations(data.get("normalizations"), source)
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
    tracks = {
        "kind": "tracks",
        "data_path": resolve_path(data["data_path"], base_dir),
        "tracks_path": resolve_path(data["tracks_path"], base_dir),
        "data_path_as_given": str(data["data_path"]),
        "tracks_path_as_given": str(data["tracks_path"]),
        "source_channel": data["source_channel"],
        "z_range": z_range,
        "initial_yx_patch_size": data.get("initial_yx_patch_size", (512, 512)),
        "final_yx_patch_size": data.get("final_yx_patch_size", (224, 224)),
        "normalizations": normalizations,
        "include_cells": include_cells,
    }
    return build_from_yaml(tracks, source, encoder=encoder, batch_size=data.get("batch_size", 16),
                           include_wells=data.get("fit_include_wells"), exclude_fovs=data.get("fit_exclude_fovs"),
                           num_workers=max(1, int(data.get("num_workers", 1) or 1)), **run)


def build_from_yaml(source_fields: Mapping, source: str, **settings) -> PredictConfig:
    """The config of a predict.yml; a problem names the setting where the file has it."""
    try:
        return PredictConfig.build(source_fields, **settings)
    except ConfigError as exc:
        raise yaml_error(exc, source, source_fields.get("kind")) from None


def resolve_path(p, base_dir: Path) -> Path | None:
    """A path of a config: relative ones resolve against the config file's folder."""
    if p is None:
        return None
    p = Path(str(p)).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def run_settings(doc: Mapping, base_dir: Path, source: str, model_args: Mapping) -> dict:
    """The trainer, EmbeddingWriter and checkpoint settings of a predict.yml (any data module), checked."""
    trainer = doc.get("trainer") or {}
    if not isinstance(trainer, Mapping):
        raise ConfigError(f"{source}: 'trainer' must be a mapping")
    check_types(TrainerSchema, trainer, "trainer", source)
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
                    f"{source}: unknown EmbeddingWriter argument(s) {clip(shorten(sorted(map(str, bad))), 200)}"
                )
            check_types(WriterSchema, writer, "trainer.callbacks[EmbeddingWriter]", source)
    ckpt = doc.get("ckpt_path") or model_args.get("ckpt_path")

    return {
        "ckpt_path": resolve_path(ckpt, base_dir),
        "output_path": resolve_path(writer.get("output_path"), base_dir),
        "overwrite": bool(writer.get("overwrite", False)),
        "embedding_key": writer.get("embedding_key", "features"),
        "pca_kwargs": writer.get("pca_kwargs"),
        "umap_kwargs": writer.get("umap_kwargs"),
        "phate_kwargs": writer.get("phate_kwargs"),
        "accelerator": str(trainer.get("accelerator", "auto")),
        "devices": trainer.get("devices", 1),
        "strategy": str(trainer.get("strategy", "auto")),
        "num_nodes": int(trainer.get("num_nodes", 1)),
        "precision": str(trainer.get("precision", "32-true")),
    }
