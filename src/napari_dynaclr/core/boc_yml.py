"""The data section of VisCy's Bag-of-Channels predict.yml (``dynaclr.data.datamodule.MultiExperimentDataModule``,
as ``dynaclr prepare-eval-configs`` generates it), checked key by key and turned into the run's settings (a
:class:`~napari_dynaclr.core.sources.CellIndexSource` and the batches).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import StrictBool, StrictStr

from napari_dynaclr.core.boc import BocNormalization
from napari_dynaclr.core.schema import (
    IntPair,
    NonNegativeInt,
    Number,
    PositiveInt,
    Schema,
    StrictInt,
    _expect,
    check_types,
)
from napari_dynaclr.core.settings import brief, clip
from napari_dynaclr.errors import ConfigError, shorten


class BocDataSchema(Schema):  # dynaclr MultiExperimentDataModule
    cell_index_path: StrictStr = _expect("a path (string)")
    z_window: PositiveInt = _expect("a positive integer")
    z_extraction_window: PositiveInt | None = _expect("a positive integer or null")
    z_focus_offset: Number = _expect("a number in [0, 1]")
    yx_patch_size: IntPair = _expect("two integers [y, x]")
    final_yx_patch_size: IntPair = _expect("two integers [y, x]")
    batch_size: PositiveInt = _expect("a positive integer")
    num_workers: NonNegativeInt = _expect("a non-negative integer")
    channels_per_sample: StrictInt | list[StrictStr] | None = _expect("1 (Bag of Channels)")
    normalizations: list[Any] | None = _expect("a list of {class_path, init_args} mappings")
    include_wells: list[StrictStr] | None = _expect("a list of well names (strings) or null")
    exclude_fovs: list[StrictStr] | None = _expect("a list of FOV names (strings) or null")
    focus_channel: StrictStr | None = _expect("a channel name (string) or null")
    reference_pixel_size_xy_um: Number | None = _expect("a positive number (micrometres) or null")
    reference_pixel_size_z_um: Number | None = _expect("a positive number (micrometres) or null")
    max_border_shift: StrictInt = _expect("an integer (-1: a quarter of the patch)")
    shuffle_val: StrictBool = _expect("true or false")
    pin_memory: StrictBool = _expect("true or false")


_USED = {"cell_index_path", "z_window", "z_extraction_window", "z_focus_offset", "yx_patch_size",
         "final_yx_patch_size", "batch_size", "num_workers", "channels_per_sample", "normalizations", "include_wells",
         "exclude_fovs", "focus_channel", "reference_pixel_size_xy_um", "reference_pixel_size_z_um",
         "max_border_shift"}
#: MultiExperimentDataModule arguments that only matter for training (sampling, augmentation, splits) or for
#: VisCy's loader: accepted and ignored, as VisCy's predict stage ignores them
_IGNORED = {"val_experiments", "split_ratio", "tau_range", "tau_decay_rate", "batch_group_by", "stratify_by", "leaky",
            "temporal_enrichment", "temporal_window_hours", "temporal_global_fraction", "group_weights",
            "channel_dropout_channels", "channel_dropout_prob", "augmentations", "cache_pool_bytes", "seed",
            "positive_cell_source", "positive_match_columns", "positive_channel_source", "label_columns",
            "shuffle_val", "pin_memory", "prefetch_factor", "buffer_size"}


def boc_settings(data: Mapping, base_dir: Path, source: str) -> tuple[dict, dict]:
    """``data.init_args`` of a MultiExperimentDataModule predict.yml, checked: ``(source fields, common settings)``
    of the run's config (a :class:`~napari_dynaclr.core.sources.CellIndexSource`; the batches and the FOV
    selection are common)."""
    unknown = sorted(set(map(str, data)) - _USED - _IGNORED)
    if unknown:
        raise ConfigError(f"{source}: unknown data.init_args key(s) {clip(shorten(unknown), 200)}")
    for key in ("cell_index_path", "z_window"):
        if data.get(key) is None:
            raise ConfigError(f"{source}: data.init_args lacks {key}")
    check_types(BocDataSchema, data, "data.init_args", source)
    cps = data.get("channels_per_sample")
    if cps != 1:
        raise ConfigError(f"{source}: data.init_args.channels_per_sample: only 1 (Bag of Channels: one channel per "
                          f"sample) is supported, got {brief(cps)}")
    norms, reduction = _normalizations(data.get("normalizations"), source)
    path = Path(str(data["cell_index_path"])).expanduser()
    fields = {
        "kind": "boc",
        "cell_index_path": path if path.is_absolute() else Path(base_dir) / path,
        "focus_channel": data.get("focus_channel"),
        "reference_pixel_size_xy_um": data.get("reference_pixel_size_xy_um"),
        "reference_pixel_size_z_um": data.get("reference_pixel_size_z_um"),
        "z_window": data["z_window"],
        "z_extraction_window": data.get("z_extraction_window"),
        "z_focus_offset": float(data.get("z_focus_offset", 0.5)),
        "yx_patch_size": tuple(data.get("yx_patch_size", (192, 192))),
        "final_yx_patch_size": tuple(data.get("final_yx_patch_size", (160, 160))),
        "max_border_shift": data.get("max_border_shift", -1),
        "normalizations": norms,
        "z_reduction": reduction,
    }
    common = {"include_wells": data.get("include_wells"), "exclude_fovs": data.get("exclude_fovs"),
              "batch_size": data.get("batch_size", 128), "num_workers": max(1, int(data.get("num_workers") or 1))}
    return fields, common


def _normalizations(entries, source: str) -> tuple[list[BocNormalization], bool]:
    """``NormalizeSampled(keys=[channel_0], level, subtrahend, divisor)`` and ``BatchedChannelWiseZReductiond``
    (the z reduction the eval-config generator appends); anything else is refused by name."""
    norms, reduction = [], False
    for i, entry in enumerate(entries or []):
        where = f"{source}: data.init_args.normalizations[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("class_path"), str):
            raise ConfigError(f"{where}: expected a {{class_path, init_args}} mapping, got {brief(entry)}")
        name = entry["class_path"].rsplit(".", 1)[-1]
        args = entry.get("init_args") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"{where}.init_args: expected a mapping, got {brief(args)}")
        keys = args.get("keys", ["channel_0"])
        keys = [keys] if isinstance(keys, str) else keys
        if keys != ["channel_0"]:
            raise ConfigError(f"{where}: keys must be [channel_0] (the one channel of a Bag-of-Channels sample), "
                              f"got {brief(keys)}")
        if name == "BatchedChannelWiseZReductiond":
            extra = sorted(set(args) - {"keys", "allow_missing_keys"})
            if extra:
                raise ConfigError(f"{where}: unknown argument(s) {shorten(extra)}")
            reduction = True
        elif name == "NormalizeSampled":
            extra = sorted(set(args) - {"keys", "level", "subtrahend", "divisor", "allow_missing_keys", "remove_meta"})
            if extra:
                raise ConfigError(f"{where}: unknown argument(s) {shorten(extra)}")
            try:
                norms.append(BocNormalization(args.get("level", "fov_statistics"), args.get("subtrahend", "mean"),
                                              args.get("divisor", "std")))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        else:
            raise ConfigError(f"{where}: {entry['class_path']!r} is not supported in a Bag-of-Channels prediction "
                              "(NormalizeSampled, BatchedChannelWiseZReductiond)")
    return norms, reduction
