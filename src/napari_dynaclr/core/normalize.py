"""Batch normalisations, reproducing VisCy's transforms bit for bit (float32, torch ops as VisCy runs them).

* :class:`NormalizeSampled` — ``(x - s) / (d + 1e-8)`` with ``s, d`` read from the cell's own FOV
  attributes ``normalization[channel][level][stat]`` (cast to float32), level ``fov_statistics``,
  ``dataset_statistics`` or ``timepoint_statistics`` (per cell's t).
* :class:`MinMaxSampled` — VisCy's ``MinMaxSampled``: clamp to ``[lo, hi]`` then map to ``[-1, 1]``.
* :class:`ScaleIntensityRangePercentiles` — MONAI's ``ScaleIntensityRangePercentilesd`` with
  ``channel_wise=False``: percentiles pooled over the whole batch tensor of that channel.

Normalisations are applied per batch and per channel in list order, then channels are concatenated back
in ``source_channel`` order. Integer data is promoted to float32 first (VisCy crashes on uint16 with
percentile scaling; results for float input are unchanged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from napari_dynaclr.errors import ConfigError, PlateError, shorten

LEVELS = ("fov_statistics", "dataset_statistics", "timepoint_statistics")


@dataclasses.dataclass(frozen=True)
class NormalizeSampled:
    keys: tuple[str, ...]
    level: str = "fov_statistics"
    subtrahend: str = "mean"
    divisor: str = "std"

    def stat_names(self) -> tuple[str, ...]:
        return (self.subtrahend, self.divisor)


@dataclasses.dataclass(frozen=True)
class MinMaxSampled:
    keys: tuple[str, ...]
    level: str = "fov_statistics"
    data_range: str = "p1_p99"

    def stat_names(self) -> tuple[str, ...]:
        lo, hi = {"p1_p99": ("p1", "p99"), "p5_p95": ("p5", "p95"), "min_max": ("min", "max")}[self.data_range]
        return (lo, hi)


@dataclasses.dataclass(frozen=True)
class ScaleIntensityRangePercentiles:
    keys: tuple[str, ...]
    lower: float = 50.0
    upper: float = 99.0
    b_min: float | None = 0.0
    b_max: float | None = 1.0
    clip: bool = False
    relative: bool = False


Normalization = NormalizeSampled | MinMaxSampled | ScaleIntensityRangePercentiles

_CLASSES = {
    "NormalizeSampled": NormalizeSampled,
    "MinMaxSampled": MinMaxSampled,
    "ScaleIntensityRangePercentilesd": ScaleIntensityRangePercentiles,
    "ScaleIntensityRangePercentiles": ScaleIntensityRangePercentiles,
}
_IGNORED_ARGS = {"remove_meta", "allow_missing_keys", "channel_wise", "dtype"}


def from_viscy(spec: Mapping) -> Normalization:
    """Build a normalisation from a VisCy config entry ``{class_path, init_args}``."""
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise ConfigError(f"normalization entry {spec!r} has no 'class_path'")
    class_path = str(spec["class_path"])
    name = class_path.rsplit(".", 1)[-1]
    if name not in _CLASSES:
        raise ConfigError(
            f"unsupported normalization class_path {class_path!r}; supported: "
            "NormalizeSampled, MinMaxSampled, ScaleIntensityRangePercentilesd"
        )
    cls = _CLASSES[name]
    args = dict(spec.get("init_args") or {})
    if args.get("channel_wise"):
        raise ConfigError(f"{class_path}: channel_wise=true is not supported (VisCy configs use false)")
    if args.get("dtype") not in (None, "float32", "torch.float32", "numpy.float32"):
        raise ConfigError(f"{class_path}: dtype={args['dtype']!r} is not supported (float32 only)")
    for k in _IGNORED_ARGS:
        args.pop(k, None)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(args) - fields
    if unknown:
        raise ConfigError(f"{class_path}: unknown argument(s) {shorten(sorted(unknown))}")
    if "keys" not in args:
        raise ConfigError(f"{class_path}: missing 'keys'")
    keys = args.pop("keys")
    args["keys"] = (keys,) if isinstance(keys, str) else tuple(keys)
    norm = cls(**args)
    if isinstance(norm, (NormalizeSampled, MinMaxSampled)) and norm.level not in LEVELS:
        raise ConfigError(f"{class_path}: level {norm.level!r} is not one of {', '.join(LEVELS)}")
    if isinstance(norm, MinMaxSampled) and norm.data_range not in ("p1_p99", "p5_p95", "min_max"):
        raise ConfigError(f"{class_path}: data_range {norm.data_range!r} is not p1_p99, p5_p95 or min_max")
    if isinstance(norm, ScaleIntensityRangePercentiles):
        if not (0 <= norm.lower <= 100 and 0 <= norm.upper <= 100):
            raise ConfigError(f"{class_path}: percentiles must lie in [0, 100]")
    return norm


class StatsTable:
    """Per-FOV (and per-timepoint) float32 statistics needed by a list of normalisations.

    ``lookup(norm_idx, key, fov_index, t)`` → two float32 arrays (subtrahend/lo, divisor/hi) per cell.
    Missing statistics raise a :class:`PlateError` naming FOV, channel, level and statistic.
    """

    def __init__(self, fovs: Sequence, norms: Sequence[Normalization], used: Sequence[int] | None = None):
        """*used*: indices of the FOVs that have cells (others need no statistics)."""
        used = set(range(len(fovs)) if used is None else used)
        self._values: dict[tuple, list] = {}
        for ni, norm in enumerate(norms):
            if isinstance(norm, ScaleIntensityRangePercentiles):
                continue
            for key in norm.keys:
                self._values[(ni, key)] = [
                    _fov_stats(fov, key, norm.level, norm.stat_names()) if i in used else None
                    for i, fov in enumerate(fovs)
                ]

    def lookup(self, ni: int, key: str, fov_index: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_fov = self._values[(ni, key)]
        a = np.empty(len(fov_index), dtype=np.float32)
        b = np.empty(len(fov_index), dtype=np.float32)
        for i, (f, tt) in enumerate(zip(fov_index, t, strict=True)):
            v = per_fov[f]
            if isinstance(v, dict):  # timepoint level
                try:
                    v = v[int(tt)]
                except KeyError:
                    raise PlateError(
                        f"normalization of channel {key!r}: no timepoint_statistics for t={int(tt)}"
                    ) from None
            a[i], b[i] = v
        return a, b


def _fov_stats(fov, channel: str, level: str, stats: tuple[str, str]):
    """float32 (subtrahend, divisor) of one FOV (a dict t -> pair for timepoint statistics)."""
    norm = fov.normalization
    where = f"FOV {fov.name}"
    if not norm:
        raise PlateError(
            f"{where} has no 'normalization' attributes; run `viscy preprocess` on the plate or choose "
            "a percentile normalisation"
        )
    if not isinstance(norm, Mapping):
        raise PlateError(f"{where}: 'normalization' attribute is not a mapping")
    if channel not in norm:
        raise PlateError(
            f"{where}: no normalization statistics for channel {channel!r} (has: {shorten(list(norm))})"
        )
    per_channel = norm[channel]
    if not isinstance(per_channel, Mapping):
        raise PlateError(f"{where}: normalization[{channel!r}] is not a mapping")
    if level not in per_channel:
        raise PlateError(f"{where}: channel {channel!r} has no {level} (has: {shorten(list(per_channel))})")
    block = per_channel[level]
    if not isinstance(block, Mapping):
        raise PlateError(f"{where}: channel {channel!r} {level} is not a mapping")

    def pick(d, ctx):
        if not isinstance(d, Mapping):
            raise PlateError(f"{where}: channel {channel!r} {ctx} is not a mapping")
        out = []
        for s in stats:
            if s not in d:
                raise PlateError(
                    f"{where}: channel {channel!r} {ctx} has no statistic {s!r} (has: {shorten(list(d), 8)})"
                )
            value = d[s]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise PlateError(f"{where}: channel {channel!r} {ctx} {s!r} is not a number: {value!r}")
            try:
                v = float(value)
            except OverflowError:  # an integer beyond any float
                v = float("inf")
            with np.errstate(over="ignore"):  # a value beyond float32 is refused below, not warned about
                v32 = np.float32(v)
            if not np.isfinite(v) or not np.isfinite(v32):
                raise PlateError(f"{where}: channel {channel!r} {ctx} {s!r} is {v} (not finite in float32)")
            out.append(np.float32(v))
        return tuple(out)

    if level == "timepoint_statistics":
        out = {}
        for t, d in block.items():
            try:
                key = int(t)
            except (TypeError, ValueError):
                raise PlateError(f"{where}: channel {channel!r} {level} has a non-integer timepoint {t!r}") from None
            out[key] = pick(d, f"{level}[{t}]")
        return out
    return pick(block, level)


def check_keys(norms: Sequence[Normalization], source_channel: Sequence[str]) -> None:
    for norm in norms:
        missing = [k for k in norm.keys if k not in source_channel]
        if missing:
            raise ConfigError(
                f"{type(norm).__name__} keys {shorten(missing)} are not among source_channel "
                f"{list(source_channel)}"
            )
