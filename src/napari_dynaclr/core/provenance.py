"""A store knows where it came from: what a run records in the store's ``uns``, and how an opened store finds
its plate (and tracks) again. Qt-free: the napari plugin and any script use :func:`find_inputs`.

``uns`` of a store we write:

- VisCy's own keys, unchanged: ``data_path`` and ``tracks_path`` exactly as the predict.yml (or the flags) gave
  them — a classic run only, as VisCy's ``EmbeddingWriter`` writes them;
- ``uns["dynaclr"]``, additive: ``version`` (of napari-dynaclr), ``family`` (``classic`` or
  ``bag_of_channels``), ``channels`` and ``markers`` (when known), ``inputs`` — for each input of the run
  (``plate``, ``tracks``, ``cell_index``, ``collection``, ``checkpoint``, ``config``) a mapping of ``given`` (as
  given), ``path`` (absolute) and ``from_store`` (relative to the store's folder); tracks given in memory (a
  napari Tracks layer) as ``table`` (e.g. ``napari Tracks layer 'A/1/0 tracks'``) and ``fovs`` — and for a
  Bag-of-Channels run ``experiments``: per experiment its ``plate`` (the same three paths), ``channel`` and ``marker``.

Finding an input (:func:`find_inputs`), first hit wins: the recorded absolute path; the recorded path relative
to the store, from where the store is now (the store and the plate moved together with their folder); for a
store written by VisCy or an older version (only ``data_path`` as given, relative to the predict.yml's folder)
that path relative to the store's folder, each of its parents, and the working folder. Otherwise: not found,
with the paths tried.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

#: the inputs recorded by role (the run's ``input_paths`` names them with spaces)
ROLES = ("plate", "tracks", "cell_index", "collection", "checkpoint", "config")


def entry(path, given=None, store: Path | None = None) -> dict:
    """How a store records one input: as ``given``, absolute ``path``, and ``from_store`` (relative to the folder
    of *store*, when there is one and the two share a root)."""
    absolute = os.path.abspath(os.path.expanduser(str(path)))
    out = {"given": str(given if given is not None else path), "path": absolute}
    if store is not None:
        try:
            out["from_store"] = os.path.relpath(absolute, os.path.abspath(Path(store).parent))
        except ValueError:  # another drive
            pass
    return out


def viscy_uns(cfg) -> dict:
    """VisCy's ``uns``: a classic run's ``data_path``/``tracks_path`` as given (a Bag-of-Channels run has none)."""
    src = cfg.source
    out = {}
    for key in ("data_path", "tracks_path"):
        given = getattr(src, f"{key}_as_given", None)
        if given:
            out[key] = str(given)
    return out


def store_uns(cfg, run_inputs: Mapping, store: Path | None) -> dict:
    """The ``uns`` a run writes (VisCy's keys + ``dynaclr``); *run_inputs*: the plan's
    (:meth:`~napari_dynaclr.predict.plan.PredictionPlan.inputs`): ``channels``, ``markers``, ``experiments``."""
    from napari_dynaclr import __version__

    inputs = {}
    src = cfg.source
    given = {"plate": getattr(src, "data_path_as_given", None), "tracks": getattr(src, "tracks_path_as_given", None)}
    for name, path in cfg.input_paths().items():
        role = name.replace(" ", "_")
        if role in ROLES and path is not None:
            inputs[role] = entry(path, given.get(role), store)
    table = getattr(src, "tracks_table", None)
    if table is not None:  # tracks given in memory (a napari Tracks layer): no path, what they were and their FOVs
        inputs["tracks"] = {"table": table.where, "fovs": table.fov_names()}
    record = {"version": str(__version__), "family": cfg.family, "inputs": inputs}
    for key in ("channels", "markers"):
        values = [str(v) for v in run_inputs.get(key) or []]
        if values:
            record[key] = values
    experiments = {}
    for name, exp in (run_inputs.get("experiments") or {}).items():
        experiments[str(name)] = {"plate": entry(exp["plate"], exp.get("given"), store),
                                  "channel": str(exp["channel"]), "marker": str(exp["marker"])}
    if experiments:
        record["experiments"] = experiments
    return {**viscy_uns(cfg), "dynaclr": record}


# ------------------------------------------------------------------------------------------------ finding them


@dataclasses.dataclass
class FoundInput:
    """One input of a store, looked for: *path* (None: not found), *how* it was found, the paths *tried*."""

    role: str
    path: Path | None = None
    how: str = ""
    tried: list = dataclasses.field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.path is not None

    def reason(self) -> str:
        """Why it was not found (empty when found)."""
        if self.found:
            return ""
        if not self.tried:
            return f"the store records no {self.role}"
        shown = ", ".join(str(p) for p in self.tried[:6]) + (f" (+{len(self.tried) - 6} more)" if len(self.tried) > 6
                                                              else "")
        return f"{self.role} not found (tried {shown})"


@dataclasses.dataclass
class FoundInputs:
    """The inputs of a store: its plate(s) (by experiment; ``""`` for a classic run), tracks and the run's
    config (its predict.yml: the settings the model's inputs were cut with)."""

    store: Path
    family: str | None
    plates: dict
    tracks: FoundInput
    config: FoundInput = dataclasses.field(default_factory=lambda: FoundInput("config"))

    @property
    def plate(self) -> Path | None:
        """The (first) plate found."""
        return next((f.path for f in self.plates.values() if f.found), None)

    def reason(self) -> str:
        """Why no plate was found (empty when one was): what the store records and the paths tried."""
        if self.plate is not None:
            return ""
        if not self.plates:
            return f"store {self.store} records no plate (neither uns['data_path'] nor uns['dynaclr'])"
        return "; ".join(f.reason() for f in self.plates.values())


def _look(role: str, record: Mapping | None, given, store: Path) -> FoundInput:
    """Look for one input from its *record* (``path``, ``from_store``) and/or VisCy's *given* path."""
    out = FoundInput(role)

    def hit(path: Path, how: str) -> bool:
        if path in out.tried:
            return False
        out.tried.append(path)
        if path.exists():
            out.path, out.how = path, how
            return True
        return False

    folder = Path(os.path.abspath(store)).parent
    if record:
        if record.get("path") and hit(Path(str(record["path"])), "the recorded path"):
            return out
        if record.get("from_store") and hit(Path(os.path.normpath(folder / str(record["from_store"]))),
                                            "recorded relative to the store (moved with it)"):
            return out
        given = given or record.get("given")
    if given:
        p = Path(str(given)).expanduser()
        if p.is_absolute():
            hit(p, "the path as given")
            return out
        for base in (folder, *folder.parents):
            if hit(Path(os.path.normpath(base / p)), f"as given, relative to {base}"):
                return out
        hit(Path.cwd() / p, "as given, relative to the working folder")
    return out


def find_inputs(store_path, uns: Mapping | None = None) -> FoundInputs:
    """Find the plate(s), tracks and config of the store at *store_path* (its ``uns``, read when not given)."""
    store = Path(store_path)
    if uns is None:
        uns = read_uns(store)
    record = uns.get("dynaclr") if isinstance(uns.get("dynaclr"), Mapping) else {}
    inputs = record.get("inputs") if isinstance(record.get("inputs"), Mapping) else {}
    plates = {}
    for name, exp in (record.get("experiments") or {}).items():
        if isinstance(exp, Mapping):
            plates[str(name)] = _look(f"plate of experiment {name}", exp.get("plate"), None, store)
    if not plates and (inputs.get("plate") or uns.get("data_path")):
        plates[""] = _look("plate", inputs.get("plate"), uns.get("data_path"), store)
    tracks = _look("tracks", inputs.get("tracks"), uns.get("tracks_path"), store)
    config = _look("config", inputs.get("config"), None, store)
    return FoundInputs(store, record.get("family"), plates, tracks, config)


def read_uns(store: Path) -> dict:
    """A store's ``uns`` (empty when it has none or cannot be read)."""
    try:
        import zarr
        from anndata.io import read_elem

        group = zarr.open_group(store, mode="r")
        return dict(read_elem(group["uns"])) if "uns" in group else {}
    except Exception:  # noqa: BLE001 - a store that cannot be read has no inputs to find
        return {}
