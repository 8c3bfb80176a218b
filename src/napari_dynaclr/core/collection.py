"""VisCy's collection YAML (``viscy_data.collection``): the experiment metadata a cell index is built from —
plate, tracks, one or more channels with their marker, perturbation wells, time axis, pixel sizes.

Every value is checked before any plate is opened; a problem is one line naming the experiment and the key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

from napari_dynaclr.errors import ConfigError, shorten


@dataclasses.dataclass(frozen=True)
class Channel:
    name: str  # the plate's channel name
    marker: str
    wells: tuple[str, ...] | None = None  # None: every well


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    data_path: Path
    tracks_path: Path
    channels: tuple[Channel, ...]
    perturbation_wells: dict
    interval_minutes: float = 30.0
    start_hpi: float = 0.0
    organelle: str = ""
    microscope: str = ""
    pixel_size_xy_um: float | None = None
    pixel_size_z_um: float | None = None
    exclude_fovs: tuple[str, ...] = ()
    data_path_as_given: str = ""
    tracks_path_as_given: str = ""

    def perturbation(self, well: str) -> str:
        for label, wells in self.perturbation_wells.items():
            if well in wells:
                return str(label)
        return "unknown"

    @property
    def declared_wells(self) -> set[str]:
        return {w for wells in self.perturbation_wells.values() for w in wells}


_KEYS = {"name", "data_path", "tracks_path", "channels", "perturbation_wells", "interval_minutes", "start_hpi",
         "marker", "organelle", "microscope", "pixel_size_xy_um", "pixel_size_z_um", "moi", "date", "exclude_fovs",
         "description"}


def load_collection(path: str | Path, data_path: Path | None = None, tracks_path: Path | None = None
                    ) -> list[Experiment]:
    """Read a collection YAML; *data_path* / *tracks_path* (the ``--plate`` / ``--tracks`` flags) replace every
    experiment's paths. Relative paths resolve against the file's folder (``${datasets_root}`` is substituted).
    The file is read by :func:`napari_dynaclr.core.inputs.load_yaml`, with every YAML input's limits."""
    from napari_dynaclr.core.inputs import load_yaml

    path = Path(path)
    doc = load_yaml(path, "collection file", ConfigError)
    return parse_collection(doc, path.parent, str(path), data_path, tracks_path)


def parse_collection(doc, base_dir: Path = Path("."), source: str = "collection", data_path: Path | None = None,
                     tracks_path: Path | None = None) -> list[Experiment]:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("experiments"), list) or not doc["experiments"]:
        raise ConfigError(f"{source}: needs a non-empty 'experiments' list")
    root = doc.get("datasets_root")
    out: list[Experiment] = []
    for i, exp in enumerate(doc["experiments"]):
        where = f"{source}: experiments[{i}]"
        if not isinstance(exp, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        name = exp.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: missing 'name' (a non-empty string)")
        where = f"{source}: experiment {name}"
        unknown = sorted(set(map(str, exp)) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {shorten(unknown)}")
        if any(e.name == name for e in out):
            raise ConfigError(f"{where}: the name is used twice (experiment names must be unique)")
        paths = {}
        for key, override in (("data_path", data_path), ("tracks_path", tracks_path)):
            given = exp.get(key)
            if override is not None:
                paths[key] = (Path(override), str(override))
                continue
            if not isinstance(given, str) or not given:
                raise ConfigError(f"{where}: missing '{key}' (a path; or give --plate/--tracks)")
            text = given.replace("${datasets_root}", str(root)) if root is not None else given
            p = Path(text).expanduser()
            paths[key] = (p if p.is_absolute() else base_dir / p, given)
        channels = _channels(exp.get("channels"), where)
        pw = exp.get("perturbation_wells")
        if not isinstance(pw, Mapping) or not pw or not all(
            isinstance(v, list) and all(isinstance(w, str) for w in v) for v in pw.values()
        ):
            raise ConfigError(f"{where}: perturbation_wells must map each perturbation to a list of wells "
                              "(e.g. {{mock: [A/1]}})")
        out.append(Experiment(
            name=name, data_path=paths["data_path"][0], tracks_path=paths["tracks_path"][0], channels=channels,
            perturbation_wells={str(k): list(v) for k, v in pw.items()},
            interval_minutes=_number(exp, "interval_minutes", 30.0, where, positive=True),
            start_hpi=_number(exp, "start_hpi", 0.0, where),
            organelle=_text(exp, "organelle", where), microscope=_text(exp, "microscope", where),
            pixel_size_xy_um=_pixel(exp, "pixel_size_xy_um", where),
            pixel_size_z_um=_pixel(exp, "pixel_size_z_um", where),
            exclude_fovs=tuple(_strings(exp.get("exclude_fovs"), "exclude_fovs", where)),
            data_path_as_given=paths["data_path"][1], tracks_path_as_given=paths["tracks_path"][1],
        ))
    return out


def _channels(value, where: str) -> tuple[Channel, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: missing 'channels' (a list of {{name, marker}})")
    out = []
    for j, ch in enumerate(value):
        if not isinstance(ch, Mapping) or not isinstance(ch.get("name"), str) or not ch["name"]:
            raise ConfigError(f"{where}: channels[{j}] needs a 'name' (the plate's channel name)")
        marker = ch.get("marker")
        if not isinstance(marker, str) or not marker:
            raise ConfigError(f"{where}: channel {ch['name']!r} has no 'marker' (what it images, e.g. Phase3D, "
                              "G3BP1)")
        wells = ch.get("wells")
        wells = tuple(_strings(wells, f"channel {ch['name']!r} wells", where)) if wells else None
        out.append(Channel(ch["name"], marker, wells))
    return tuple(out)


def _strings(value, key: str, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return list(value)


def _text(exp: Mapping, key: str, where: str) -> str:
    value = exp.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _number(exp: Mapping, key: str, default: float, where: str, positive: bool = False) -> float:
    value = exp.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}: {key} must be positive, got {value!r}")
    return float(value)


def _pixel(exp: Mapping, key: str, where: str) -> float | None:
    value = exp.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive number of micrometres, got {value!r}")
    return float(value)
