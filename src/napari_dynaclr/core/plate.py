"""HCS OME-Zarr plates (iohub): FOV order, channels and per-FOV normalisation statistics, as VisCy reads them."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_dynaclr.errors import DynaclrError, PlateError, shorten


@dataclasses.dataclass
class FOV:
    """One field of view: ``name`` is ``"row/col/fov"`` without leading slash."""

    name: str
    position: object  # iohub Position
    shape: tuple[int, int, int, int, int]  # T, C, Z, Y, X
    dtype: object

    @property
    def image(self):
        return self.position["0"]

    @property
    def normalization(self) -> dict | None:
        return self.position.zattrs.get("normalization")

    @property
    def scale(self) -> list[float]:
        """TCZYX scale of the full-resolution array (1.0 where unknown)."""
        try:
            return [float(v) for v in self.position.scale]
        except Exception:
            return [1.0] * 5


class Plate:
    """A read-only HCS plate with FOVs in VisCy's order (rows, columns, FOVs sorted as strings).

    ``include_wells`` (e.g. ``["A/1"]``) and ``exclude_fovs`` (e.g. ``["A/1/0"]``) are VisCy's
    ``fit_include_wells`` / ``fit_exclude_fovs``, which VisCy also applies when predicting.
    """

    def __init__(
        self,
        path: str | Path,
        include_wells: Sequence[str] | None = None,
        exclude_fovs: Sequence[str] | None = None,
    ):
        self.path = Path(path)
        self._plate = open_plate(self.path)
        try:
            self._open(include_wells, exclude_fovs)
        except BaseException:
            self.close()
            raise

    def _open(self, include_wells: Sequence[str] | None, exclude_fovs: Sequence[str] | None) -> None:
        where = f"plate {self.path}"
        try:
            self.channel_names: list[str] = list(self._plate.channel_names)
            wells = [name for name, _ in self._plate.wells()]
            if include_wells is not None:
                unknown = [w for w in include_wells if w not in wells]
                if unknown:
                    raise PlateError(
                        f"well(s) {shorten(unknown)} not in plate {self.path} (wells: {shorten(wells, 8)})"
                    )
            self.fovs: list[FOV] = []
            all_fovs = []
            for well_name, well in self._plate.wells():
                where = f"well {well_name} of plate {self.path}"
                for _, pos in well.positions():
                    name = pos.zgroup.name.strip("/")
                    where = f"FOV {name} of plate {self.path}"
                    all_fovs.append(name)
                    if not is_selected(name, include_wells, exclude_fovs):
                        continue
                    if "0" not in pos.array_keys():
                        bad = find_bad_metadata(self.path / name, max_depth=1)
                        raise PlateError(bad or f"FOV {name} of plate {self.path} has no full-resolution array '0'")
                    arr = pos["0"]
                    shape = tuple(int(s) for s in arr.shape)
                    self._check_fov(name, pos, shape, arr.dtype)
                    self.fovs.append(FOV(name, pos, shape, arr.dtype))
        except DynaclrError:
            raise
        except Exception as exc:  # unreadable or invalid metadata (a JSON file, a missing key...)
            raise metadata_error(self.path, where, exc) from exc
        self.all_fov_names: list[str] = all_fovs  # before the well/FOV selection
        if exclude_fovs is not None:
            unknown = [f for f in exclude_fovs if f not in all_fovs]
            if unknown:
                raise PlateError(f"FOV(s) {shorten(unknown)} to exclude are not in plate {self.path} "
                                 f"(FOVs: {shorten(all_fovs, 8)})")
        if not self.fovs:
            raise PlateError(f"plate {self.path} has no FOVs left to predict (after well/FOV selection)")

    def _check_fov(self, name: str, pos, shape: tuple, dtype) -> None:
        """The FOV's full-resolution array against the plate's channel list: 5-D TCZYX, one plane per listed
        channel, real numbers, and the same channel names (when the FOV lists its own)."""
        channels = ", ".join(str(c) for c in self.channel_names)
        if len(shape) != 5:
            raise PlateError(f"FOV {name}: image array '0' has shape {shape}, expected 5-D TCZYX")
        if shape[1] != len(self.channel_names):
            raise PlateError(
                f"FOV {name}: image array '0' has C={shape[1]} but plate {self.path} lists "
                f"{len(self.channel_names)} channel(s) ({channels}); its planes cannot be matched to channels"
            )
        if 0 in shape:
            raise PlateError(f"FOV {name}: image array '0' is empty (shape {shape})")
        kind = np.dtype(dtype).kind
        if kind not in "biuf":
            raise PlateError(f"FOV {name}: image array '0' has dtype {dtype}, expected integers or floats")
        axes = _axis_types(pos)
        if axes is not None and axes != ["time", "channel", "space", "space", "space"]:
            raise PlateError(f"FOV {name}: axes are {', '.join(axes)}, expected TCZYX (time, channel, 3 x space)")
        own = _fov_channel_names(pos)
        if own is not None and own != [str(c) for c in self.channel_names]:
            raise PlateError(
                f"FOV {name} lists channels {', '.join(own)} but plate {self.path} lists {channels} "
                "(its first FOV's); the channels would be mixed up"
            )

    @property
    def attrs(self) -> dict:
        """The plate-level attributes (e.g. ``focus_slice``), {} when unreadable."""
        try:
            return dict(self._plate.zattrs)
        except Exception:  # noqa: BLE001 - no attributes is the same as none
            return {}

    def check_fov_names(self, names, key: str) -> None:
        """Refuse FOV *names* (``row/col/fov``, leading/trailing ``/`` ignored) that the plate does not have,
        or that the well/FOV selection leaves out; *key* names the setting that lists them."""
        names = list(dict.fromkeys(str(n).strip("/") for n in names))
        unknown = [n for n in names if n not in self.all_fov_names]
        if unknown:
            what = f"FOV {unknown[0]}" if len(unknown) == 1 else f"FOVs {shorten(unknown)}"
            raise PlateError(f"{what} named in {key} {'does' if len(unknown) == 1 else 'do'} not exist in plate "
                             f"{self.path} (FOVs: {shorten(self.all_fov_names, 8)})")
        selected = {f.name for f in self.fovs}
        left_out = [n for n in names if n not in selected]
        if left_out:
            raise PlateError(f"FOV(s) {shorten(left_out)} named in {key} are left out by the well/FOV selection "
                             "(fit_include_wells / fit_exclude_fovs, --include-wells / --exclude-fovs)")

    def fov(self, name: str) -> FOV:
        for f in self.fovs:
            if f.name == name:
                return f
        raise PlateError(f"FOV {name!r} not in plate {self.path} (FOVs: {shorten([f.name for f in self.fovs])})")

    def channel_indices(self, names: Sequence[str]) -> list[int]:
        missing = [n for n in names if n not in self.channel_names]
        if missing:
            raise PlateError(
                f"channel(s) {shorten([repr(m) for m in missing])} not in plate {self.path}; available channels: "
                f"{', '.join(self.channel_names)}"
            )
        return [self.channel_names.index(n) for n in names]

    def close(self):
        try:
            self._plate.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_hcs_plate(path: str | Path) -> bool:
    """Cheap check (no array reads) that *path* is an OME-Zarr HCS plate (NGFF 0.4 or 0.5 metadata)."""
    from napari_dynaclr.core.zattrs import group_attributes

    attrs = group_attributes(path)
    return attrs is not None and ("plate" in attrs or "plate" in (attrs.get("ome") or {}))


def open_plate(path: Path):
    """Open *path* read-only as an iohub HCS plate, with a clear error for anything else."""
    from iohub.ngff import open_ome_zarr

    from napari_dynaclr.core.inputs import check_input_folder

    path = check_input_folder(path, "plate", PlateError, expected="an OME-Zarr directory")
    try:
        node = open_ome_zarr(path, mode="r")
    except Exception as exc:
        bad = find_bad_metadata(path, max_depth=0)
        if bad is None and is_hcs_plate(path):
            bad = find_bad_metadata(path)
        if bad is not None:
            raise PlateError(bad) from exc
        raise PlateError(f"{path} is not an OME-Zarr store ({type(exc).__name__}: {first_line(exc)})") from exc
    kind = type(node).__name__
    if kind != "Plate":
        try:
            node.close()
        except Exception:
            pass
        what = {"Position": "a single FOV (Position)", "TiledPosition": "a single FOV"}.get(kind, kind)
        raise PlateError(f"{path} is {what}, not an HCS plate (rows/columns/FOVs)")
    return node


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), at most 200 characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


#: zarr metadata files (v3, v2) of a group or an array
METADATA_FILES = ("zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata")


def _check_metadata_file(f: Path) -> str | None:
    """Why metadata file *f* is unusable (unreadable, not JSON, not a JSON object), or None."""
    try:
        text = f.read_bytes()
    except OSError as exc:
        return f"cannot read {f}: {exc.strerror or first_line(exc)}"
    try:
        obj = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        return f"{f} is not valid JSON ({first_line(exc)})"
    if not isinstance(obj, dict):
        return f"{f} does not hold a JSON object"
    required = _REQUIRED_KEYS.get(f.name, ())
    if f.name == "zarr.json" and obj.get("node_type") == "array":
        required = (*required, "shape", "data_type", "chunk_grid", "codecs")
    missing = [k for k in required if k not in obj]
    if missing:
        return f"{f} is not valid zarr metadata (no {', '.join(repr(k) for k in missing)})"
    return None


_REQUIRED_KEYS = {"zarr.json": ("zarr_format", "node_type"), ".zgroup": ("zarr_format",),
                  ".zarray": ("zarr_format", "shape", "chunks", "dtype")}


def find_bad_metadata(root: str | Path, max_depth: int = 4) -> str | None:
    """The first unusable metadata file of a plate, as a one-line description, or None.

    Looks at the metadata files (``zarr.json``, ``.zattrs``…) of the plate (depth 0), its rows (1), wells
    (2), FOVs (3) and the FOVs' arrays (4), in sorted order, without reading any chunk.
    """
    root = Path(root)
    level = [root]
    for depth in range(max_depth + 1):
        nxt = []
        for d in level:
            for name in METADATA_FILES:
                f = d / name
                if os.path.lexists(f):
                    why = _check_metadata_file(f)
                    if why is not None:
                        return why
            if depth < max_depth:
                try:
                    subdirs = sorted(e.path for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
                except OSError as exc:
                    return f"cannot list {d}: {exc.strerror or first_line(exc)}"
                nxt.extend(Path(p) for p in subdirs)
        level = nxt
    return None


def metadata_error(root: Path, where: str, exc: BaseException) -> PlateError:
    """A :class:`PlateError` for a failure while reading a plate's metadata: the bad file when one is found,
    else the part of the plate being read and the library's message."""
    bad = find_bad_metadata(root)
    if bad is not None:
        return PlateError(bad)
    return PlateError(f"cannot read the metadata of {where} ({type(exc).__name__}: {first_line(exc)})")


def _axis_types(pos) -> list[str] | None:
    """The FOV's axis types (``time``, ``channel``, ``space``) when all five are declared, else None."""
    try:
        types = [getattr(a, "type", None) for a in pos.axes]
    except Exception:
        return None
    if len(types) != 5 or not all(isinstance(t, str) for t in types):
        return None
    return [t.lower() for t in types]


def _fov_channel_names(pos) -> list[str] | None:
    """The channel names the FOV's own (omero) metadata lists, or None when it lists none."""
    try:
        names = pos.channel_names
    except Exception:
        return None
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        return None
    return list(names)


async def _list_keys(store, prefix: str) -> list[str]:
    return [k async for k in store.list_prefix(prefix)]


def missing_chunks(fov: FOV, timepoints: Sequence[int], channels: Sequence[int],
                   z_range: tuple[int, int]) -> tuple[int, int] | None:
    """``(missing, needed)``: how many of the full-resolution chunks (shards, for sharded arrays) holding
    *timepoints* x *channels* x *z_range* (all of Y and X) are absent from the store. zarr reads an absent
    chunk as the fill value (0), silently. One listing of the array's keys; the chunks are enumerated only
    when fewer are stored than the array has. None when the store cannot be listed (not a zarr array)."""
    try:
        import zarr
        from zarr.core.sync import sync

        arr = fov.image
        h = getattr(arr, "native", arr)
        if not isinstance(h, zarr.Array):
            return None
        shape = tuple(int(s) for s in h.shape)
        outer = tuple(int(c) for c in (h.shards or h.chunks))
        grid = [math.ceil(s / c) for s, c in zip(shape, outer, strict=True)]
        total = math.prod(grid)
        store, path = h.store_path.store, h.store_path.path
        prefix = f"{path}/" if path else ""
        keys = set(sync(_list_keys(store, prefix)))
        encode = h.metadata.encode_chunk_key
    except Exception:
        return None
    ct, cc, cz = outer[0], outer[1], outer[2]
    z0, z1 = int(z_range[0]), int(z_range[1])
    axes = [
        sorted({int(t) // ct for t in timepoints}),
        sorted({int(c) // cc for c in channels}),
        range(z0 // cz, (max(z1, z0 + 1) - 1) // cz + 1),
        range(grid[3]),
        range(grid[4]),
    ]
    needed = math.prod(len(a) for a in axes)
    stored = sum(1 for k in keys if k.rsplit("/", 1)[-1] not in METADATA_FILES)
    if stored >= total:
        return 0, needed
    missing = sum(1 for coords in itertools.product(*axes) if prefix + encode(coords) not in keys)
    return missing, needed


def is_selected(fov_name: str, include_wells: Sequence[str] | None = None,
                exclude_fovs: Sequence[str] | None = None) -> bool:
    """Whether VisCy's ``fit_include_wells`` / ``fit_exclude_fovs`` keep FOV ``"row/col/fov"``."""
    well = fov_name.rsplit("/", 1)[0]
    return (include_wells is None or well in include_wells) and (exclude_fovs is None or fov_name not in exclude_fovs)


def plate_info(path: str | Path, include_wells: Sequence[str] | None = None,
               exclude_fovs: Sequence[str] | None = None) -> dict:
    """Channels, wells, FOV names (all, and those the well/FOV selection keeps) and the first FOV's
    shape/dtype, each FOV's shape (for widgets and summaries)."""
    with Plate(path) as plate:
        first = plate.fovs[0]
        return {
            "channels": plate.channel_names,
            "fovs": [f.name for f in plate.fovs],
            "selected": [f.name for f in plate.fovs if is_selected(f.name, include_wells, exclude_fovs)],
            "wells": sorted({f.name.rsplit("/", 1)[0] for f in plate.fovs}),
            "shape": first.shape,
            "shapes": {f.name: f.shape for f in plate.fovs},
            "dtype": str(first.dtype),
        }
